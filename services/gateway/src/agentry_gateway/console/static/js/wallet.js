// Wallet: balance, deposits (manual credit at once, or a Stripe Checkout redirect), transactions, auto-recharge
// and the low-balance alert. Amounts are typed and shown in the wallet's currency; the API speaks cents.
import { ApiError, api, get, optional } from "./api.js";
import { busy, dollars, field, h, table, uuid, when } from "./dom.js";
import { inDollars, toCents } from "./endpoints.js";

export async function walletPage(view) {
  document.title = "Wallet · Agentry";
  const balance = await get("/api/balance");
  const cur = balance.currency ?? "usd";
  view.append(h("h1", {}, "Wallet"),
    h("section", { class: "card", "aria-label": "Balance" },
      h("div", { class: "hint" }, "Balance"),
      h("div", { class: "big", testid: "balance-amount" }, dollars(balance.balance_cents, cur)),
      h("dl", { class: "props" },
        h("dt", {}, "Deposited (lifetime)"), h("dd", {}, dollars(balance.lifetime_deposited_cents, cur)),
        h("dt", {}, "Spent (lifetime)"), h("dd", {}, dollars(balance.lifetime_spent_cents, cur)),
        h("dt", {}, "Uncollected charges"), h("dd", {}, dollars(balance.uncollected_cents, cur)))),
    depositForm(cur));
  const txs = h("div");
  view.append(h("h2", {}, "Transactions"), txs);
  await transactions(txs, cur);
  const deposits = await optional("/api/balance/deposits").catch(() => null);
  if (deposits && deposits.deposits?.length) {
    view.append(h("h2", {}, "Deposits"), table("deposits-table", ["When", { label: "Amount", num: true }, "Status"],
      deposits.deposits.map((d) => h("tr", {}, h("td", {}, when(d.created_at)),
        h("td", { class: "num" }, dollars(d.amount_cents, cur)), h("td", { class: `status-${d.status}` }, d.status)))));
  }
  view.append(await settingsForm("Auto-recharge", "/api/balance/auto-recharge", [
    ["enabled", "Recharge automatically", "checkbox"],
    ["threshold_cents", "When the balance falls below ($)", "money"],
    ["amount_cents", "Recharge by ($)", "money"],
  ], "Charges your saved card (Stripe payment mode) once each time the balance falls below the threshold."),
  await settingsForm("Low-balance alert", "/api/balance/alerts", [
    ["low_balance_cents", "Alert when the balance falls below ($)", "money"],
  ], "Sends a balance.low webhook once each time the balance falls below it."));
}

function depositForm(cur) {
  // One Idempotency-Key per intended deposit: a double click or a retry after a timeout credits once.
  let key = uuid();
  const amount = h("input", { type: "number", testid: "deposit-amount", name: "amount_cents", min: 5, max: 500,
    step: "0.01", required: true, inputmode: "decimal" });
  const error = h("p", { class: "error", role: "alert", testid: "deposit-error" });
  const submit = h("button", { type: "submit", testid: "deposit-submit" }, "Deposit");
  // novalidate: the API's own message (its limits, in dollars) is shown in the page, not a browser bubble.
  return h("form", { class: "card row", novalidate: true, onsubmit: (event) => {
    event.preventDefault();
    error.textContent = "";
    busy(submit, api("POST", "/api/balance/deposit", { amount_cents: toCents(amount.value) }, { "Idempotency-Key": key })
      .then((result) => {
        key = uuid();
        const url = result.deposit?.checkout_url;
        if (url) location.assign(url); // Stripe Checkout; the wallet is credited when Stripe confirms
        else window.dispatchEvent(new HashChangeEvent("hashchange")); // re-render: new balance and transaction
      })
      .catch((err) => {
        error.textContent = err instanceof ApiError ? inDollars(err.message.replace(/^amount_cents: /, "")) : err;
      }));
  } }, field(`Amount (${cur.toUpperCase()})`, amount, "From 5.00 to 500.00"), submit, error);
}

async function transactions(container, cur, cursor = null, rows = []) {
  const page = await get(`/api/balance/transactions?limit=50${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
  rows.push(...page.transactions.map((t) => h("tr", {},
    h("td", {}, when(t.created_at)), h("td", {}, t.kind.replace("_", " ")),
    h("td", { class: "num" }, dollars(t.amount_cents, cur)), h("td", { class: `status-${t.status}` }, t.status ?? ""),
    h("td", {}, t.endpoint_id ? h("a", { href: `#/endpoints/${t.endpoint_id}` }, t.endpoint_id) : ""),
    h("td", {}, t.run_id ? h("code", {}, t.run_id) : ""))));
  const more = page.next_cursor ? h("button", { type: "button", class: "secondary",
    onclick: () => transactions(container, cur, page.next_cursor, rows) }, "Older transactions") : null;
  container.replaceChildren(rows.length
    ? table("transactions-table", ["When", "Kind", { label: "Amount", num: true }, "Status", "Endpoint", "Run"], rows)
    : h("p", { class: "notice", testid: "transactions-table" }, "No transactions yet."), more ?? "");
}

/** A small GET/PUT settings object; absent route → a note instead of a form. */
async function settingsForm(title, path, fields, hint) {
  const section = h("section", { class: "card", "aria-label": title }, h("h2", {}, title));
  let current;
  try {
    current = await optional(path);
  } catch (err) {
    current = err.status === 405 ? null : {};
  }
  if (current === null) {
    section.append(h("p", { class: "notice" }, `${title} is not available on this gateway.`));
    return section;
  }
  const error = h("p", { class: "error", role: "alert" });
  const inputs = fields.map(([name, label, kind]) => [name, kind, kind === "checkbox"
    ? h("input", { type: "checkbox", name, checked: current[name] })
    : h("input", { type: "number", name, step: "0.01", min: 0,
      value: current[name] == null ? "" : (current[name] / 100).toFixed(2) }), label]);
  const save = h("button", { type: "submit" }, "Save");
  section.append(h("p", { class: "hint" }, hint), h("form", { class: "row", onsubmit: (event) => {
    event.preventDefault();
    error.textContent = "";
    const body = Object.fromEntries(inputs.map(([name, kind, el]) =>
      [name, kind === "checkbox" ? el.checked : el.value === "" ? null : toCents(el.value)]));
    busy(save, api("PUT", path, body).then(() => { error.textContent = "Saved."; })
      .catch((err) => { error.textContent = err.message; }));
  } }, inputs.map(([, , el, label]) => field(label, el)), save, error));
  return section;
}
