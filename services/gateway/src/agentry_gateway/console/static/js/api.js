// The public HTTP API, with the signed-in user's JWT. The token lives in this tab's sessionStorage only
// (gone when the tab closes, never in a cookie), and is sent as `Authorization: Bearer` like any API client.

const KEY = "agentry.token";

export const session = {
  get token() { return sessionStorage.getItem(KEY); },
  set(token) { sessionStorage.setItem(KEY, token); },
  clear() { sessionStorage.removeItem(KEY); },
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function errorOf(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON: say what the status says */ }
  const err = body && body.error;
  return new ApiError(response.status, err?.code ?? `http_${response.status}`,
    err?.message ?? `${response.status} ${response.statusText}`);
}

/** fetch with the session; throws ApiError with the API's code and message on any non-2xx. */
export async function raw(method, path, { body, headers = {}, token = session.token } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
  if (token) init.headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    const err = await errorOf(response);
    if (response.status === 401 && token === session.token && !path.startsWith("/api/run/")) {
      session.clear();
      location.hash = "#/signin";
    }
    throw err;
  }
  return response;
}

export async function api(method, path, body, headers) {
  const response = await raw(method, path, { body, headers });
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path) => api("GET", path);

/** GET that answers null when the route does not exist on this gateway (features merged at different times). */
export async function optional(path) {
  try {
    return await get(path);
  } catch (err) {
    if (err.status === 404 && (err.code === "not_found" || err.code === "http_404")) return null;
    throw err;
  }
}

/** Parse a text/event-stream body as it arrives: calls onEvent(name, data) per event. */
export async function readSse(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replaceAll("\r\n", "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (!data.length) continue;
      let parsed = data.join("\n");
      try { parsed = JSON.parse(parsed); } catch { /* plain text data */ }
      onEvent(name, parsed);
    }
  }
}
