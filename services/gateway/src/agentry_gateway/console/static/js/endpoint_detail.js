// One endpoint: its settings, the raw key once (right after creation), caller keys, a test-run panel and history.
import { ApiError, api, get, optional, raw, readSse } from "./api.js";
import { busy, dollars, field, h, secretOnce, select, table, when } from "./dom.js";
import { toCents } from "./endpoints.js";
import { takeOnce } from "./once.js";

const SHOWN = ["slug", "workspace_id", "description", "agent_type", "llm_provider", "llm_model", "llm_base_url",
  "has_llm_api_key", "max_tokens", "temperature", "output_format", "max_tool_calls", "timeout_ms", "enable_streaming",
  "async_mode", "auth_mode", "api_key_prefix", "status", "created_at", "updated_at"];

export async function endpointPage(view, id) {
  const { endpoint: ep } = await get(`/api/agent-endpoints/${id}`);
  document.title = `${ep.name} · Agentry`;
  // The raw key only if this page is the one right after creation (or regeneration); taking it forgets it.
  let rawKey = takeOnce(ep.id);
  const keyBox = h("div");
  const showKey = (title, key) => keyBox.replaceChildren(secretOnce("api-key-once", title, key));
  if (rawKey) showKey("Your endpoint's API key", rawKey);

  const runs = h("div");
  // A run reaches the history a moment after it answers: look again shortly after.
  const refreshRuns = () => runHistory(runs, ep.id).then(() => setTimeout(() => runs.isConnected &&
    runHistory(runs, ep.id).catch(() => {}), 1500));

  view.append(
    h("p", {}, h("a", { href: "#/endpoints" }, "← Endpoints")),
    h("div", { class: "row" }, h("h1", {}, ep.name), h("a", { href: `#/endpoints/${ep.id}/edit`, class: "button",
      testid: "endpoint-edit" }, "Edit")),
    keyBox,
    h("p", {}, "Run URL: ", h("code", {}, `${location.origin}/api/run/${ep.slug}`), " · price per run ",
      dollars(ep.price_per_run_cents)),
    testPanel(ep, () => rawKey, refreshRuns),
    h("h2", {}, "Run history"), runs,
    h("h2", {}, "Caller keys"), await keysSection(ep),
    h("h2", {}, "Settings"),
    h("dl", { class: "props" }, SHOWN.flatMap((k) => [h("dt", {}, k), h("dd", {}, format(ep[k]))])),
    h("details", {}, h("summary", {}, "System prompt"), h("pre", { class: "output" }, ep.system_prompt)),
    h("h2", {}, "Danger zone"),
    h("div", { class: "row" },
      h("button", { type: "button", class: "secondary", onclick: async (e) => {
        if (!confirm("Replace the default key? The old one stops working at once.")) return;
        const { api_key } = await busy(e.target, api("POST", `/api/agent-endpoints/${ep.id}/regenerate-key`, {}));
        rawKey = api_key;
        showKey("Your new API key", api_key);
      } }, "Regenerate key"),
      h("button", { type: "button", class: "danger", onclick: async (e) => {
        if (!confirm(`Delete ${ep.name}? Its run URL stops working.`)) return;
        await busy(e.target, api("DELETE", `/api/agent-endpoints/${ep.id}`));
        location.hash = "#/endpoints";
      } }, "Delete endpoint")));
  await refreshRuns();
}

function format(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "string" && /^\d{4}-\d\d-\d\dT/.test(value)) return when(value);
  return String(value);
}

function testPanel(ep, currentKey, afterRun) {
  const input = h("textarea", { testid: "test-run-input", rows: 3, placeholder: "Input for the agent" });
  const output = h("pre", { class: "output", testid: "test-run-output", "aria-live": "polite" });
  const submit = h("button", { type: "submit", testid: "test-run-submit" }, "Run test");
  const stream = h("input", { type: "checkbox", checked: ep.enable_streaming });
  const show = (...lines) => output.append(lines.join(" ") + "\n");
  const usage = (u) => u && show(`— ${u.tokens_input} tokens in, ${u.tokens_output} out, ${u.iterations} LLM call(s),` +
    ` ${u.latency_ms} ms, cost ${dollars(u.cost_cents)}`);
  const outputText = (o) => (typeof o === "string" ? o : JSON.stringify(o, null, 2));

  async function run() {
    output.replaceChildren();
    let text = input.value;
    try { if (/^\s*\{/.test(text)) text = JSON.parse(text); } catch { /* a string input that looks like JSON */ }
    const key = currentKey();
    if (ep.enable_streaming && stream.checked && (key || ep.auth_mode === "public")) {
      // A streamed run is a real, charged run with the key shown above; the owner's /test answers in one piece.
      const response = await raw("POST", `/api/run/${ep.slug}`, { body: { input: text }, token: key ?? null,
        headers: { Accept: "text/event-stream" } });
      await readSse(response, (name, data) => {
        if (name === "thinking") show(`… thinking (LLM call ${data.iteration ?? ""})`);
        else if (name === "tool_call") show("→ tool", data.name ?? "", JSON.stringify(data.arguments ?? data.args ?? {}));
        else if (name === "tool_result") show("← result", data.error ? `error: ${data.error}` : JSON.stringify(data.result));
        else if (name === "done") { show(outputText(data.output)); usage(data.usage); }
        else if (name === "error") show("Error:", data.message ?? JSON.stringify(data));
      });
    } else {
      show("Running…");
      const result = await api("POST", `/api/agent-endpoints/${ep.id}/test`, { input: text });
      output.replaceChildren();
      for (const call of result.tool_calls ?? []) show("→ tool", call.name ?? "", JSON.stringify(call.arguments ?? {}));
      show(outputText(result.output));
      usage(result.usage);
    }
  }

  const form = h("form", { class: "card", onsubmit: (event) => {
    event.preventDefault();
    busy(submit, run().catch((err) => show("Error:", err instanceof ApiError ? `${err.code}: ${err.message}` : err))
      .then(afterRun));
  } },
  h("h2", {}, "Test run"),
  field("Input", input, "Text, or a JSON object. Test runs are never charged the per-run price (10 per minute)."),
  ep.enable_streaming && (currentKey() || ep.auth_mode === "public")
    ? field(ep.auth_mode === "public" ? "Stream it (a real, priced run)" : "Stream it with the key above (a real, priced run)",
      stream) : null,
  h("div", { class: "row" }, submit), output);
  return form;
}

async function runHistory(container, id, cursor = null, rows = []) {
  const page = await get(`/api/agent-endpoints/${id}/runs?limit=20${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
  rows.push(...page.runs.flatMap(runRows));
  const more = page.next_cursor
    ? h("button", { type: "button", class: "secondary", onclick: () => runHistory(container, id, page.next_cursor, rows) },
      "Older runs")
    : null;
  container.replaceChildren(rows.length
    ? table("runs-table", ["When", "Status", "Kind", { label: "Tokens in/out", num: true }, { label: "Cost", num: true },
      { label: "Latency", num: true }, { label: "LLM calls", num: true }, "Charge", "Details"], rows)
    : h("p", { class: "notice", testid: "runs-table" }, "No runs yet."), more ?? "");
}

function runRows(run) {
  const detail = h("tr", { hidden: true }, h("td", { colspan: 9 }, h("dl", { class: "props" },
    h("dt", {}, "Run id"), h("dd", {}, h("code", {}, run.id)),
    h("dt", {}, "Error"), h("dd", {}, run.error ? JSON.stringify(run.error) : "—"),
    h("dt", {}, "Tool calls"), h("dd", {}, h("pre", { class: "output" }, JSON.stringify(run.tool_calls ?? [], null, 2))))));
  const toggle = h("button", { type: "button", class: "link", "aria-expanded": "false", onclick: () => {
    detail.hidden = !detail.hidden;
    toggle.setAttribute("aria-expanded", String(!detail.hidden));
  } }, "Details");
  const charge = run.is_test ? "test (free)"
    : !run.charge || run.charge.status === "none" ? "free"
      : h("span", { class: `status-${run.charge.status}` }, `${dollars(run.charge.amount_cents)} ${run.charge.status}`);
  return [h("tr", {},
    h("td", {}, when(run.created_at)),
    h("td", { class: `status-${run.status}` }, run.status),
    h("td", {}, run.is_test ? "test" : "run"),
    h("td", { class: "num" }, `${run.tokens_input ?? 0} / ${run.tokens_output ?? 0}`),
    h("td", { class: "num" }, dollars(run.cost_cents)),
    h("td", { class: "num" }, run.latency_ms == null ? "—" : `${run.latency_ms} ms`),
    h("td", { class: "num" }, run.iterations ?? "—"),
    h("td", {}, charge), h("td", {}, toggle)), detail];
}

async function keysSection(ep) {
  const box = h("div");
  const path = `/api/agent-endpoints/${ep.id}/keys`;
  const once = h("div");
  async function refresh() {
    const listed = await optional(path);
    if (!listed) {
      box.replaceChildren(h("p", { class: "notice" }, "Caller keys are not available on this gateway yet; the endpoint " +
        `has one key (prefix ${ep.api_key_prefix ?? "—"}), replaced by "Regenerate key" below.`));
      return;
    }
    const name = h("input", { name: "name", maxlength: 60, required: true });
    const cap = h("input", { name: "spend_cap_cents", type: "number", step: "any", min: 0 });
    const period = select({ name: "spend_cap_period" }, [["month"], ["day"], ["total"]], "month");
    const perMinute = h("input", { name: "rate_limit_per_minute", type: "number", min: 1 });
    const expires = h("input", { name: "expires_at", type: "date" });
    const error = h("p", { class: "error", role: "alert" });
    const create = h("form", { class: "row", onsubmit: async (event) => {
      event.preventDefault();
      const body = { name: name.value.trim() };
      if (cap.value) Object.assign(body, { spend_cap_cents: toCents(cap.value), spend_cap_period: period.value });
      if (perMinute.value) body.rate_limit_per_minute = Number(perMinute.value);
      if (expires.value) body.expires_at = new Date(`${expires.value}T00:00:00`).toISOString();
      try {
        const created = await api("POST", path, body);
        once.replaceChildren(secretOnce("key-once", `Key "${created.key.name}"`, created.api_key));
        await refresh();
      } catch (err) { error.textContent = err.message; }
    } }, field("New key name", name), field("Spend cap ($, optional)", cap), field("Cap period", period),
    field("Runs per minute (optional)", perMinute), field("Expires (optional)", expires),
    h("button", { type: "submit" }, "Create key"), error);
    box.replaceChildren(table("keys-table", ["Name", "Prefix", "Created", "Last used", "Expires", "Spend cap", "Spent", ""],
      listed.keys.map((k) => h("tr", {},
        h("td", {}, k.name), h("td", {}, h("code", {}, k.prefix)), h("td", {}, when(k.created_at)),
        h("td", {}, when(k.last_used_at)), h("td", {}, when(k.expires_at)),
        h("td", {}, k.spend_cap_cents == null ? "—" : `${dollars(k.spend_cap_cents)} / ${k.spend_cap_period}`),
        h("td", {}, dollars(k.spent_cents)),
        h("td", {}, k.revoked_at ? `revoked ${when(k.revoked_at)}` : h("button", { type: "button", class: "danger",
          onclick: async () => {
            if (!confirm(`Revoke key "${k.name}"? Callers using it get 401 at once.`)) return;
            await api("DELETE", `${path}/${k.id}`);
            await refresh();
          } }, "Revoke"))))), once, create);
  }
  await refresh();
  return box;
}
