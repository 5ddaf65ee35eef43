// The console's shell: hash routes (no server-side routing needed), sign-in, navigation.
import { ApiError, raw, session } from "./api.js";
import { h, field } from "./dom.js";
import { editEndpointPage, endpointsPage, newEndpointPage } from "./endpoints.js";
import { endpointPage } from "./endpoint_detail.js";
import { walletPage } from "./wallet.js";
import { usagePage } from "./usage.js";
import { workspacesPage } from "./workspaces.js";
import { webhooksPage } from "./webhooks.js";
import { finishSignIn, startSignIn } from "./oidc.js";

let config = { oidc: null };

const routes = [
  [/^#\/endpoints\/new$/, newEndpointPage],
  [/^#\/endpoints\/([\w-]+)\/edit$/, editEndpointPage],
  [/^#\/endpoints\/([\w-]+)$/, endpointPage],
  [/^#\/endpoints$/, endpointsPage],
  [/^#\/wallet$/, walletPage],
  [/^#\/usage$/, usagePage],
  [/^#\/workspaces$/, workspacesPage],
  [/^#\/webhooks$/, webhooksPage],
];

const main = () => document.getElementById("main");

function signinPage(view, problem) {
  const token = h("input", { type: "password", testid: "signin-token", autocomplete: "off", required: true,
    spellcheck: "false" });
  const error = h("p", { class: "error", role: "alert" }, problem ?? "");
  const submit = h("button", { type: "submit", testid: "signin-submit" }, "Sign in");
  const form = h("form", { class: "grid", onsubmit: async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      await adopt(token.value.trim());
    } catch (err) {
      error.textContent = err instanceof ApiError ? `Sign-in failed: ${err.message}` : String(err);
    }
  } },
  h("div", { class: "wide" }, field("Access token (JWT)", token,
    "In development: paste the output of `make token`. It is kept in this tab only and forgotten when the tab closes.")),
  h("div", { class: "wide row" }, submit), h("div", { class: "wide" }, error));
  view.append(h("h1", {}, "Sign in"));
  if (config.oidc) {
    view.append(h("p", {}, h("button", { type: "button", testid: "signin-oidc",
      onclick: () => startSignIn(config.oidc).catch((err) => { error.textContent = String(err); }) },
    "Sign in with single sign-on")), h("p", { class: "hint" }, "Or, with a token:"));
  } else if (config.oidc_problem) {
    view.append(h("p", { class: "error" }, `Single sign-on is unavailable: ${config.oidc_problem}.`));
  }
  view.append(form);
  if (!config.oidc) token.focus();
}

/** Keep a token only once the API has accepted it. */
async function adopt(token) {
  await raw("GET", "/api/workspaces", { token });
  session.set(token);
  const before = location.hash;
  location.hash = "#/endpoints";
  if (before === "#/endpoints") render(); // no hashchange when already there: draw it now
}

async function render() {
  const hash = location.hash || "#/endpoints";
  const nav = document.getElementById("nav");
  const view = h("div"); // a page of its own: a slower, superseded render fills a detached node
  main().replaceChildren(view);
  delete main().dataset.ready;
  if (!session.token || hash === "#/signin") {
    nav.hidden = true;
    document.title = "Sign in · Agentry";
    signinPage(view, render.problem);
    render.problem = null;
    main().dataset.ready = "#/signin";
    return;
  }
  nav.hidden = false;
  for (const a of nav.querySelectorAll("a")) {
    if (hash.startsWith(a.getAttribute("href"))) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const match = routes.map(([re, page]) => [hash.match(re), page]).find(([m]) => m);
  if (!match) {
    location.hash = "#/endpoints";
    return;
  }
  const [m, page] = match;
  try {
    await page(view, ...m.slice(1));
  } catch (err) {
    view.append(h("p", { class: "error", role: "alert" }, err.message || String(err)));
  }
  if (view.isConnected) main().dataset.ready = hash; // the page has its data (tests wait for this)
  // Move focus to the new page so keyboard and screen-reader users start at its top.
  main().focus({ preventScroll: true });
}

document.getElementById("signout").addEventListener("click", () => {
  session.clear();
  location.hash = "#/signin";
  location.reload(); // also drops whatever this tab still holds in memory
});
window.addEventListener("hashchange", render);

async function start() {
  config = await fetch("/console/config.json").then((r) => r.json()).catch(() => ({ oidc: null }));
  if (config.oidc) {
    try {
      const token = await finishSignIn(config.oidc);
      if (token) return await adopt(token);
    } catch (err) {
      session.clear();
      render.problem = err instanceof ApiError ? `Sign-in failed: ${err.message}` : err.message;
    }
  }
  render();
}
start();
