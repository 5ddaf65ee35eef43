// Usage: runs and cost over time (GET /api/usage), by endpoint or key. The route may not exist on an older
// gateway: then the page says so instead of failing.
import { get, optional } from "./api.js";
import { dollars, field, h, select, table } from "./dom.js";
import { barLineChart } from "./chart.js";

const day = (d) => d.toISOString().slice(0, 10);

export async function usagePage(view) {
  document.title = "Usage · Agentry";
  view.append(h("h1", {}, "Usage"));
  const now = new Date();
  const from = h("input", { type: "date", name: "from", value: day(new Date(now - 29 * 864e5)) });
  const to = h("input", { type: "date", name: "to", value: day(now) });
  const granularity = select({ name: "granularity" }, [["hour"], ["day"], ["month"]], "day");
  const groupBy = select({ name: "group_by" }, [["none", "all"], ["endpoint"], ["key"]], "none");
  const { endpoints } = await get("/api/agent-endpoints");
  const only = select({ name: "endpoint_id" }, [["", "all endpoints"], ...endpoints.map((ep) => [ep.id, ep.name])], "");
  const result = h("div");
  const form = h("form", { class: "row", onsubmit: (e) => { e.preventDefault(); load(); } },
    field("From", from), field("To", to), field("Granularity", granularity), field("Group by", groupBy),
    field("Endpoint", only),
    h("button", { type: "submit" }, "Show"));
  view.append(form, result);
  const names = new Map(endpoints.map((ep) => [ep.id, ep.name]));

  async function load() {
    const end = new Date(`${to.value}T00:00:00Z`);
    end.setUTCDate(end.getUTCDate() + 1);
    const query = new URLSearchParams({ from: `${from.value}T00:00:00Z`, to: end.toISOString(),
      granularity: granularity.value, group_by: groupBy.value });
    if (only.value) query.set("endpoint_id", only.value);
    let usage;
    try {
      usage = await optional(`/api/usage?${query}`);
    } catch (err) {
      result.replaceChildren(h("p", { class: "error", role: "alert" }, err.message));
      return;
    }
    if (!usage) {
      result.replaceChildren(h("div", { class: "notice", testid: "usage-chart", "data-state": "unavailable" },
        "Usage is not available on this gateway yet (GET /api/usage is missing). Run history per endpoint and the " +
        "wallet's transactions show the same runs and charges."));
      return;
    }
    result.replaceChildren(render(usage, groupBy.value, granularity.value, names));
  }
  await load();
}

function render(usage, groupBy, granularity, names) {
  const label = (iso) => (granularity === "hour" ? iso.slice(5, 13).replace("T", " ") + "h"
    : granularity === "month" ? iso.slice(0, 7) : iso.slice(5, 10));
  const byStart = new Map();
  for (const b of usage.buckets) {
    const p = byStart.get(b.start) ?? { label: label(b.start), bar: 0, line: 0 };
    p.bar += b.runs;
    p.line += b.cost_cents ?? 0;
    byStart.set(b.start, p);
  }
  const points = [...byStart.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([, p]) => p);
  const t = usage.totals ?? {};
  const who = (b) => (groupBy === "endpoint" ? names.get(b.endpoint_id) ?? b.endpoint_id : groupBy === "key" ? b.key_id ?? "—" : "");
  return h("div", {},
    h("dl", { class: "props card" },
      h("dt", {}, "Runs"), h("dd", {}, `${t.runs ?? 0} (${t.succeeded ?? 0} succeeded, ${t.failed ?? 0} failed)`),
      h("dt", {}, "LLM cost"), h("dd", {}, dollars(t.cost_cents)),
      h("dt", {}, "Charged"), h("dd", {}, `${dollars(t.charged_cents)} (uncollected ${dollars(t.uncollected_cents)})`)),
    h("figure", { testid: "usage-chart", "data-state": points.length ? "data" : "empty" },
      points.length ? barLineChart(points, { title: "Runs and LLM cost over time", barName: "runs",
        lineName: "cost", lineFormat: (c) => dollars(c) }) : h("p", { class: "notice" }, "No runs in this period."),
      h("figcaption", { class: "hint" }, "Bars: runs. Line: LLM cost.")),
    h("details", {}, h("summary", {}, "As a table"),
      table("usage-table", ["Start", groupBy === "none" ? "" : groupBy, { label: "Runs", num: true },
        { label: "Failed", num: true }, { label: "Tokens in/out", num: true }, { label: "Cost", num: true },
        { label: "Charged", num: true }, { label: "p95 latency", num: true }],
      usage.buckets.map((b) => h("tr", {}, h("td", {}, b.start), h("td", {}, who(b)), h("td", { class: "num" }, b.runs),
        h("td", { class: "num" }, b.failed), h("td", { class: "num" }, `${b.tokens_input} / ${b.tokens_output}`),
        h("td", { class: "num" }, dollars(b.cost_cents)), h("td", { class: "num" }, dollars(b.charged_cents)),
        h("td", { class: "num" }, b.latency_ms_p95 == null ? "—" : `${b.latency_ms_p95} ms`))))));
}
