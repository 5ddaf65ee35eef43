// Endpoints: the list, and the create form with every field of the endpoint contract (ARCHITECTURE §3).
import { ApiError, api, get } from "./api.js";
import { busy, dollars, field, h, select } from "./dom.js";
import { keepOnce } from "./once.js";

export async function endpointsPage(view) {
  document.title = "Endpoints · Agentry";
  const { endpoints } = await get("/api/agent-endpoints");
  view.append(h("div", { class: "row" }, h("h1", {}, "Endpoints"),
    h("a", { href: "#/endpoints/new", testid: "endpoint-create", class: "button" }, "New endpoint")));
  if (!endpoints.length) {
    view.append(h("p", { class: "notice" }, "No endpoints yet. Create one to get an API key and a run URL."));
    return;
  }
  view.append(h("div", { class: "table-wrap" }, h("table", { testid: "endpoints-table" },
    h("thead", {}, h("tr", {}, ["Name", "Slug", "Provider / model", "Price per run", "Status", "Created"]
      .map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, endpoints.map((ep) => h("tr", {},
      h("td", {}, h("a", { href: `#/endpoints/${ep.id}` }, ep.name)),
      h("td", {}, h("code", {}, ep.slug)),
      h("td", {}, `${ep.llm_provider} / ${ep.llm_model}`),
      h("td", { class: "num" }, dollars(ep.price_per_run_cents)),
      h("td", {}, ep.status),
      h("td", {}, new Date(ep.created_at).toLocaleDateString())))))));
}

// [name, label, control factory, hint]; the name is the API field, so a 422 naming it lands here.
const PROVIDERS = ["openai", "anthropic", "gemini", "groq", "custom", "mock"].map((p) => [p]);

function controls(workspaces) {
  const input = (name, attrs = {}) => h("input", { name, ...attrs });
  const area = (name, attrs = {}) => h("textarea", { name, ...attrs });
  return [
    ["name", "Name", input("name", { testid: "endpoint-form-name", maxlength: 100, required: true }), "1–100 characters"],
    ["workspace_id", "Workspace", select({ name: "workspace_id", testid: "endpoint-form-workspace", required: true },
      workspaces.map((w) => [w.id, w.name])), "Its MCP servers are the endpoint's tools"],
    ["system_prompt", "System prompt", area("system_prompt", { testid: "endpoint-form-prompt", required: true,
      rows: 5 }), "1–10000 characters", "wide"],
    ["description", "Description", input("description"), "Optional, ≤ 500 characters", "wide"],
    ["slug", "Slug", input("slug", { placeholder: "from the name", autocapitalize: "off" }),
      "Optional; lowercase letters, digits, dashes; the run URL is /api/run/<slug>"],
    ["agent_type", "Agent type", select({ name: "agent_type" }, [["extractor"], ["actor"], ["pipeline"]], "extractor")],
    ["llm_provider", "LLM provider", select({ name: "llm_provider", testid: "endpoint-form-provider" }, PROVIDERS,
      "openai"), "mock runs offline, for development"],
    ["llm_model", "Model", input("llm_model", { placeholder: "gpt-4o-mini" })],
    ["llm_base_url", "LLM base URL", input("llm_base_url", { type: "url", placeholder: "https://…" }),
      "Required for custom: an OpenAI-compatible API"],
    ["llm_api_key", "LLM API key", input("llm_api_key", { type: "password", autocomplete: "off" }),
      "Optional; write-only, stored encrypted, never shown again"],
    ["max_tokens", "Max tokens", input("max_tokens", { type: "number", placeholder: "4096" }), "100–32768"],
    ["temperature", "Temperature", input("temperature", { type: "number", step: "any", placeholder: "0.3" }), "0–2"],
    ["output_format", "Output format", select({ name: "output_format" }, [["text"], ["json"], ["markdown"]], "text")],
    ["max_tool_calls", "Max tool calls", input("max_tool_calls", { type: "number", placeholder: "10" }), "1–50"],
    ["timeout_ms", "Timeout (ms)", input("timeout_ms", { type: "number", placeholder: "30000" }), "1000–300000"],
    ["auth_mode", "Auth mode", select({ name: "auth_mode" }, [["api_key", "API key"], ["public", "public"]], "api_key")],
    ["price_per_run_cents", "Price per run ($)", input("price_per_run_cents", { type: "number", step: "any", min: 0,
      testid: "endpoint-form-price", placeholder: "0.00" }), "Charged to your wallet per successful run; up to $100"],
    ["enable_streaming", "Stream responses (SSE)", input("enable_streaming", { type: "checkbox" })],
    ["async_mode", "Asynchronous (202 + polling)", input("async_mode", { type: "checkbox" })],
    ["input_schema", "Input JSON Schema", area("input_schema", { rows: 4, placeholder: "{\"type\": \"object\"}" }),
      "Optional", "wide"],
    ["output_schema", "Output JSON Schema", area("output_schema", { rows: 4 }), "Optional; applies to json output",
      "wide"],
    ["budget_cents", "Budget ($)", input("budget_cents", { type: "number", step: "any", min: 0 }),
      "Optional: runs stop (402) once the period's prices reach it"],
    ["budget_period", "Budget period", select({ name: "budget_period" }, [["", "—"], ["day"], ["month"]], "")],
  ];
}

const INTS = new Set(["max_tokens", "max_tool_calls", "timeout_ms"]);
const MONEY = new Set(["price_per_run_cents", "budget_cents"]);
const JSONS = new Set(["input_schema", "output_schema"]);

/** Dollars typed → cents sent. A sub-cent amount is sent as it is, so the API's own 422 names the field. */
export function toCents(text) {
  const cents = Number(text) * 100;
  const whole = Math.round(cents);
  return Number.isFinite(cents) && Math.abs(cents - whole) < 1e-6 ? whole : cents;
}

/** A control's value as the API takes it: undefined when left empty (the contract's default, or unchanged). */
function valueOf(name, el, local) {
  if (el.type === "checkbox") return el.checked;
  const text = el.value.trim();
  if (text === "" && name !== "name" && name !== "system_prompt") return undefined;
  if (INTS.has(name) || name === "temperature") return Number(text);
  if (MONEY.has(name)) return toCents(text);
  if (JSONS.has(name)) {
    try { return JSON.parse(text); } catch { local.push(`${name}: not valid JSON`); return undefined; }
  }
  return name === "system_prompt" ? el.value : text;
}

/** Create: only what the owner filled in (defaults apply to the rest). Edit (`initial` given): only what
 * changed, an emptied optional field as null; the write-only LLM key only when a new one is typed. */
function bodyOf(form, fields, initial) {
  const body = {};
  const local = [];
  for (const [name] of fields) {
    const value = valueOf(name, form.elements[name], local);
    if (!initial) {
      if (value !== undefined && value !== false) body[name] = value;
    } else if (name === "llm_api_key") {
      if (value !== undefined) body[name] = value;
    } else if (JSON.stringify(value ?? null) !== JSON.stringify(initial[name] ?? null)) {
      body[name] = value ?? null;
    }
  }
  return { body, local };
}

function fill(form, fields, ep) {
  for (const [name] of fields) {
    const el = form.elements[name];
    const value = ep[name];
    if (el.type === "checkbox") el.checked = Boolean(value);
    else if (value === null || value === undefined || name === "llm_api_key") el.value = "";
    else if (MONEY.has(name)) el.value = (value / 100).toFixed(2);
    else if (JSONS.has(name)) el.value = JSON.stringify(value, null, 2);
    else el.value = String(value);
  }
}

/** An API message about an amount in cents, with its numbers said in dollars (as the owner typed them). */
export const inDollars = (message) => message.replace(/\b\d+\b/g, (c) => dollars(Number(c)));

/** Put each "field: message" part of an API error at its field; what names no field goes to `general`. */
export function showErrors(form, message, general) {
  for (const old of form.querySelectorAll("[data-testid=field-error]")) old.remove();
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  general.textContent = "";
  let first = null;
  for (const part of message.split("; ")) {
    const m = part.match(/^([a-z_]+)(?:\.[^:]*)?: (.*)$/);
    const el = m && form.elements[m[1]];
    if (!el || !el.closest) { general.textContent += `${part} `; continue; }
    // Money is typed in dollars; the API's limits are in cents: say them in dollars too.
    const text = MONEY.has(m[1]) ? inDollars(m[2]) : m[2];
    const err = h("p", { testid: "field-error", id: `${el.id}-error`, class: "error" }, text);
    el.closest(".field").append(err);
    el.setAttribute("aria-invalid", "true");
    el.setAttribute("aria-describedby", `${el.getAttribute("aria-describedby") ?? ""} ${err.id}`.trim());
    first ??= el;
  }
  (first ?? general).focus?.();
}

function endpointForm(workspaces, initial, submitLabel, send) {
  const fields = controls(workspaces);
  const general = h("p", { class: "error", role: "alert", tabindex: "-1" });
  const submit = h("button", { type: "submit", testid: "endpoint-form-submit" }, submitLabel);
  const form = h("form", { class: "grid", novalidate: true },
    fields.map(([, label, control, hint, wide]) => h("div", { class: wide ? "wide" : null }, field(label, control, hint))),
    h("div", { class: "wide" }, general), h("div", { class: "wide row" }, submit));
  if (initial) {
    fill(form, fields, initial);
    if (initial.has_llm_api_key) form.elements.llm_api_key.placeholder = "stored — type a new one to replace it";
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const { body, local } = bodyOf(form, fields, initial);
    if (local.length) return showErrors(form, local.join("; "), general);
    busy(submit, send(body).catch((err) => {
      if (!(err instanceof ApiError)) throw err;
      const named = err.code === "slug_taken" ? `slug: ${err.message}`
        : err.code === "workspace_not_found" ? `workspace_id: ${err.message}` : err.message;
      showErrors(form, named, general);
    }));
  });
  return form;
}

export async function newEndpointPage(view) {
  document.title = "New endpoint · Agentry";
  view.append(h("h1", {}, "New endpoint"));
  const { workspaces } = await get("/api/workspaces");
  if (!workspaces.length) {
    view.append(h("p", { class: "notice" }, "An endpoint lives in a workspace. ",
      h("a", { href: "#/workspaces" }, "Create a workspace first"), "."));
    return;
  }
  const form = endpointForm(workspaces, null, "Create endpoint", async (body) => {
    const created = await api("POST", "/api/agent-endpoints", body);
    keepOnce(created.endpoint.id, created.api_key); // shown once on the detail page, then forgotten
    location.hash = `#/endpoints/${created.endpoint.id}`;
  });
  view.append(form);
  form.elements.name.focus();
}

export async function editEndpointPage(view, id) {
  const [{ endpoint: ep }, { workspaces }] = await Promise.all([get(`/api/agent-endpoints/${id}`), get("/api/workspaces")]);
  document.title = `Edit ${ep.name} · Agentry`;
  view.append(h("p", {}, h("a", { href: `#/endpoints/${id}` }, `← ${ep.name}`)), h("h1", {}, `Edit ${ep.name}`));
  const form = endpointForm(workspaces, ep, "Save changes", async (body) => {
    if (Object.keys(body).length) await api("PATCH", `/api/agent-endpoints/${id}`, body);
    location.hash = `#/endpoints/${id}`;
  });
  view.append(form);
  form.elements.name.focus();
}
