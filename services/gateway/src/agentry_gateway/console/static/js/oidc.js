// Single sign-on: OpenID Connect authorization code flow with PKCE (a public client: no client secret in a
// browser). The verifier and state live in this tab's sessionStorage only until the provider sends the owner back.

const PENDING = "agentry.oidc";

const b64url = (bytes) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const random = (n) => b64url(crypto.getRandomValues(new Uint8Array(n)));
export const redirectUri = () => `${location.origin}/console/`;

export async function startSignIn(cfg) {
  const verifier = random(32);
  const state = random(16);
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state }));
  const url = new URL(cfg.authorization_endpoint);
  for (const [k, v] of Object.entries({ response_type: "code", client_id: cfg.client_id, redirect_uri: redirectUri(),
    scope: cfg.scope, state, code_challenge: b64url(new Uint8Array(digest)), code_challenge_method: "S256" })) {
    url.searchParams.set(k, v);
  }
  location.assign(url.toString());
}

/** On the way back from the provider: the token, or null when this page load is not such a return. */
export async function finishSignIn(cfg) {
  const params = new URLSearchParams(location.search);
  if (!params.has("code") && !params.has("error")) return null;
  const pending = JSON.parse(sessionStorage.getItem(PENDING) ?? "null");
  sessionStorage.removeItem(PENDING);
  history.replaceState(null, "", `/console/${location.hash}`); // the code does not stay in the address bar
  if (params.has("error")) throw new Error(`The sign-in was refused: ${params.get("error_description") ?? params.get("error")}`);
  if (!pending || params.get("state") !== pending.state) {
    throw new Error("The sign-in answer does not belong to this tab's request; sign in again.");
  }
  const response = await fetch(cfg.token_endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "authorization_code", code: params.get("code"), redirect_uri: redirectUri(),
      client_id: cfg.client_id, code_verifier: pending.verifier }),
  });
  const tokens = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`The sign-in failed: ${tokens.error_description ?? tokens.error ?? response.status}`);
  // The ID token is a JWT for this client (aud = client id), which the gateway verifies with the provider's JWKS.
  return tokens.id_token ?? tokens.access_token;
}
