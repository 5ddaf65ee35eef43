// Webhooks: create (secret shown once), enable/disable, test, delete, and each one's deliveries with retry.
import { api, get } from "./api.js";
import { busy, field, h, secretOnce, table, when } from "./dom.js";
import { keepOnce, takeOnce } from "./once.js";

const EVENTS = ["run.succeeded", "run.failed", "charge.collected", "charge.uncollected", "balance.low",
  "budget.reached", "key.expiring", "deposit.succeeded"];

export async function webhooksPage(view) {
  document.title = "Webhooks · Agentry";
  const { webhooks } = await get("/api/webhooks");
  const rerender = () => window.dispatchEvent(new HashChangeEvent("hashchange"));
  view.append(h("h1", {}, "Webhooks"));
  const fresh = webhooks.map((w) => [w.id, takeOnce(w.id)]).find(([, s]) => s);
  if (fresh) view.append(secretOnce("webhook-secret-once", "Signing secret of your new webhook", fresh[1]));

  const url = h("input", { name: "url", type: "url", required: true, testid: "webhook-url", placeholder: "https://…" });
  const description = h("input", { name: "description" });
  const boxes = EVENTS.map((e) => h("input", { type: "checkbox", name: "events", value: e, checked: e.startsWith("run.") }));
  const error = h("p", { class: "error", role: "alert" });
  view.append(h("form", { class: "grid card", onsubmit: async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    const body = { url: url.value.trim(), events: boxes.filter((b) => b.checked).map((b) => b.value) };
    if (description.value.trim()) body.description = description.value.trim();
    try {
      const created = await api("POST", "/api/webhooks", body);
      keepOnce(created.webhook.id, created.secret);
      rerender();
    } catch (err) { error.textContent = err.message; }
  } }, h("h2", { class: "wide" }, "New webhook"), field("URL", url), field("Description", description),
  h("fieldset", { class: "wide" }, h("legend", {}, "Events"), h("div", { class: "row" }, boxes.map((b, i) => field(EVENTS[i], b)))),
  h("div", { class: "wide row" }, h("button", { type: "submit", testid: "webhook-submit" }, "Create webhook"), error)));

  if (!webhooks.length) view.append(h("p", { class: "notice" }, "No webhooks yet."));
  for (const w of webhooks) view.append(webhookCard(w, rerender));
}

function webhookCard(w, rerender) {
  const deliveries = h("div");
  const base = `/api/webhooks/${w.id}`;
  const load = async () => {
    const { deliveries: list } = await get(`${base}/deliveries`);
    deliveries.replaceChildren(list.length ? table("deliveries-table", ["Event", "Status", "Attempts", "Last response",
      "Next attempt", "Created", ""], list.map((d) => {
      const last = d.attempts.at(-1);
      return h("tr", {}, h("td", {}, d.event_type), h("td", { class: `status-${d.status}` }, d.status),
        h("td", { class: "num" }, d.attempts.length),
        h("td", {}, last ? `${last.response_status ?? last.error ?? "—"} (${last.latency_ms ?? "—"} ms)` : "—"),
        h("td", {}, when(d.next_attempt_at)), h("td", {}, when(d.created_at)),
        h("td", {}, d.status === "succeeded" ? "" : h("button", { type: "button", class: "secondary",
          onclick: async (e) => { await busy(e.target, api("POST", `${base}/deliveries/${d.id}/retry`)); await load(); } },
        "Retry")));
    })) : h("p", { class: "hint" }, "No deliveries yet."));
  };
  const card = h("section", { class: "card", "aria-label": w.url },
    h("h2", {}, w.url), h("p", { class: "hint" }, `${w.id} · ${w.enabled ? "enabled" : "disabled"} · `,
      w.events.join(", ")),
    h("div", { class: "row" },
      h("button", { type: "button", class: "secondary", onclick: async (e) => {
        await busy(e.target, api("POST", `${base}/test`));
        setTimeout(load, 1000);
      } }, "Send test event"),
      h("button", { type: "button", class: "secondary", onclick: async () => {
        await api("PATCH", base, { enabled: !w.enabled });
        rerender();
      } }, w.enabled ? "Disable" : "Enable"),
      h("button", { type: "button", class: "secondary", onclick: load }, "Refresh deliveries"),
      h("button", { type: "button", class: "danger", onclick: async () => {
        if (!confirm(`Delete the webhook to ${w.url}?`)) return;
        await api("DELETE", base);
        rerender();
      } }, "Delete")),
    h("h3", {}, "Deliveries"), deliveries);
  load().catch((err) => deliveries.replaceChildren(h("p", { class: "error" }, err.message)));
  return card;
}
