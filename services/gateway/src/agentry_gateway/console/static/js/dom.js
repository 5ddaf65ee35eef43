// Building the page: every value goes in as text (textContent), never as HTML, so data cannot inject markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "testid") el.dataset.testid = value;
    else if (key === "class") el.className = value;
    else if (key === "value") el.value = value;
    else if (key === "checked") el.checked = Boolean(value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

let counter = 0;
export const uid = (prefix) => `${prefix}-${++counter}`;

/** A labelled input: `control` is an element; returns the wrapper. The label and hint are tied to it. */
export function field(label, control, hint) {
  control.id ||= uid("f");
  const hintEl = hint ? h("span", { class: "hint", id: `${control.id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  const check = control.type === "checkbox";
  return h("div", { class: check ? "field check" : "field" },
    check ? [control, h("label", { for: control.id }, label)] : [h("label", { for: control.id }, label), control],
    hintEl);
}

export function select(attrs, options, selected) {
  return h("select", attrs, options.map(([value, text]) =>
    h("option", { value, selected: value === selected ? "selected" : null }, text ?? value)));
}

export function table(testid, headers, rows, caption) {
  return h("div", { class: "table-wrap" }, h("table", { testid },
    caption ? h("caption", { class: "hint" }, caption) : null,
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col", class: x.num ? "num" : null }, x.label ?? x)))),
    h("tbody", {}, rows)));
}

export const dollars = (cents, currency = "usd") =>
  new Intl.NumberFormat(undefined, { style: "currency", currency: currency.toUpperCase() }).format((cents ?? 0) / 100);

export const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");

export function toast(text) {
  const el = h("div", { class: "toast", role: "status" }, text);
  document.body.append(el);
  setTimeout(() => el.remove(), 2500);
}

export async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Plain http on another host is not a secure context: fall back to the old selection-based copy.
    const area = h("textarea", { "aria-hidden": "true" });
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  toast("Copied");
}

/** The raw secret, shown once, with a copy button. The caller drops its own reference afterwards. */
export function secretOnce(testid, title, secret) {
  return h("section", { class: "once", role: "alert" },
    h("strong", {}, title),
    h("p", { class: "hint" }, "Copy it now: it is shown only this once and cannot be retrieved again."),
    h("div", { class: "row" }, h("code", { testid }, secret),
      h("button", { type: "button", class: "secondary", testid: `${testid}-copy`, onclick: () => copy(secret) }, "Copy")));
}

export function busy(button, promise) {
  button.disabled = true;
  return promise.finally(() => { button.disabled = false; });
}

export function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}
