// Workspaces and their MCP servers, with each server's live tool list.
import { api, get } from "./api.js";
import { busy, field, h, table, when } from "./dom.js";

export async function workspacesPage(view) {
  document.title = "Workspaces · Agentry";
  const { workspaces } = await get("/api/workspaces");
  const name = h("input", { name: "name", required: true, maxlength: 100 });
  const error = h("p", { class: "error", role: "alert" });
  const rerender = () => window.dispatchEvent(new HashChangeEvent("hashchange"));
  view.append(h("h1", {}, "Workspaces"),
    h("form", { class: "row card", onsubmit: async (e) => {
      e.preventDefault();
      try { await api("POST", "/api/workspaces", { name: name.value.trim() }); rerender(); }
      catch (err) { error.textContent = err.message; }
    } }, field("New workspace name", name), h("button", { type: "submit", testid: "workspace-submit" }, "Create"), error));
  if (!workspaces.length) view.append(h("p", { class: "notice" }, "No workspaces yet."));
  for (const ws of workspaces) view.append(await workspaceCard(ws, rerender));
}

async function workspaceCard(ws, rerender) {
  const base = `/api/workspaces/${ws.id}/servers`;
  const { servers } = await get(base);
  const card = h("section", { class: "card", "aria-label": ws.name }, h("h2", {}, ws.name, " ", h("code", {}, ws.id)));
  const tools = h("div", { "aria-live": "polite" });
  card.append(servers.length ? table("servers-table", ["Server", "URL", "Headers", "Added", ""], servers.map((s) =>
    h("tr", {}, h("td", {}, s.name, " ", h("code", {}, s.slug)), h("td", {}, s.url),
      h("td", {}, s.header_names.join(", ") || "—"), h("td", {}, when(s.created_at)),
      h("td", { class: "row" },
        h("button", { type: "button", class: "secondary", onclick: (e) => busy(e.target, showTools(tools, base, s)) },
          "Tools"),
        h("button", { type: "button", class: "danger", onclick: async () => {
          if (!confirm(`Remove ${s.name}? Its tools leave this workspace's endpoints.`)) return;
          await api("DELETE", `${base}/${s.id}`);
          rerender();
        } }, "Remove"))))) : h("p", { class: "hint" }, "No MCP servers: endpoints here run without tools."), tools);

  const sName = h("input", { name: "name", required: true });
  const url = h("input", { name: "url", type: "url", required: true, placeholder: "https://mcp.example.com/mcp" });
  const headers = h("textarea", { name: "headers", rows: 2, placeholder: "Authorization: Bearer …", autocomplete: "off" });
  const error = h("p", { class: "error", role: "alert" });
  card.append(h("details", {}, h("summary", {}, "Register an MCP server"), h("form", { class: "grid", onsubmit: async (e) => {
    e.preventDefault();
    error.textContent = "";
    const body = { name: sName.value.trim(), url: url.value.trim() };
    const lines = headers.value.split("\n").map((l) => l.trim()).filter(Boolean);
    if (lines.length) body.headers = Object.fromEntries(lines.map((l) => [l.split(":")[0].trim(), l.slice(l.indexOf(":") + 1).trim()]));
    try {
      const created = await api("POST", base, body);
      if (!created.reachable) alert(`Registered, but the server did not answer: ${created.problem ?? "unknown"}`);
      rerender();
    } catch (err) { error.textContent = err.message; }
  } }, field("Name", sName), field("URL (streamable HTTP)", url),
  h("div", { class: "wide" }, field("Headers (one `Name: value` a line)", headers,
    "Secret: stored encrypted; only their names are shown afterwards")),
  h("div", { class: "wide row" }, h("button", { type: "submit" }, "Register"), error))));
  return card;
}

async function showTools(container, base, server) {
  container.replaceChildren(h("p", { class: "hint" }, `Asking ${server.name} for its tools…`));
  try {
    const { tools } = await get(`${base}/${server.id}/tools`);
    container.replaceChildren(h("h3", {}, `Tools of ${server.name} (live)`), tools.length
      ? table("tools-table", ["Model calls it", "Description"], tools.map((t) =>
        h("tr", {}, h("td", {}, h("code", {}, t.llm_name)), h("td", {}, t.description))))
      : h("p", { class: "notice" }, "The server offers no tools."));
  } catch (err) {
    container.replaceChildren(h("p", { class: "error", role: "alert" }, err.message));
  }
}
