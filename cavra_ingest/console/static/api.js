// Talks to the public JSON API only, and signs in to it: whatever the console shows, a script can fetch the
// same way.
import { take } from "./early.js";

// --- Sign-in, for a server that requires tokens. The token lives in sessionStorage only (gone with the tab, never in
// localStorage or a URL) and travels as an Authorization header on every API call and export download.
const KEY = "cavra.token";
let pending = null; // one dialog for all the calls that got a 401 at the same time

export function token() {
  return sessionStorage.getItem(KEY);
}

// A signed-in person's cookie session has a CSRF token in a readable cookie (the session cookie is HttpOnly).
function csrfToken() {
  const pair = document.cookie.split("; ").find((item) => item.startsWith("cavra_csrf="));
  return pair ? pair.slice("cavra_csrf=".length) : null;
}

export function authHeaders() {
  const secret = token();
  if (secret) return { Authorization: `Bearer ${secret}` };
  // State-changing calls from a cookie session carry its CSRF token.
  const csrf = csrfToken();
  return csrf ? { "X-CSRF-Token": csrf } : {};
}

// Show the sign-in dialog and resolve once a token was entered (the caller then retries its request). With a
// provider configured the server names its sign-in route (X-Cavra-Sign-In) and the dialog offers it too.
export function askForToken(reason, signInUrl = null) {
  if (pending) return pending;
  const provider = document.getElementById("signin-provider");
  if (signInUrl && signInUrl.startsWith("/auth/")) {
    provider.href = signInUrl;
    provider.hidden = false;
  }
  const dialog = document.getElementById("signin");
  const form = document.getElementById("signin-form");
  const input = document.getElementById("signin-token");
  // The server's 401 text is written for API clients; a person offered a sign-in route gets a sentence instead.
  const offered = !token() && !provider.hidden;
  document.getElementById("signin-reason").textContent = token()
    ? `That token was refused: ${reason}`
    : offered
      ? "Sign in with your company account, or paste an API token below."
      : reason;
  pending = new Promise((resolve) => {
    form.addEventListener(
      "submit",
      (event) => {
        event.preventDefault();
        sessionStorage.setItem(KEY, input.value.trim());
        input.value = "";
        dialog.close();
        pending = null;
        resolve();
        showIdentity();
      },
      { once: true },
    );
  });
  if (!dialog.open) dialog.showModal();
  input.focus();
  return pending;
}

export async function signOut() {
  if (token()) {
    sessionStorage.removeItem(KEY);
    location.reload();
    return;
  }
  // A person's session: the server ends it and says where to go on (the provider's sign-out page, which sends
  // the person back here), so the page does not depend on a form being redirected off this origin.
  const response = await fetch("/auth/logout", {
    method: "POST",
    headers: { Accept: "application/json", ...authHeaders() },
    cache: "no-store",
  });
  const next = response.ok ? (await response.json()).location : null;
  location.assign(typeof next === "string" && next ? next : "/console/");
}

// Say who is signed in (a token's name, or a person) and which tenant the console is looking at (all of them
// for an unbound caller).
export async function showIdentity() {
  const box = document.getElementById("identity");
  if (!token() && !csrfToken()) {
    box.hidden = true;
    return;
  }
  const response = await fetch("/auth/whoami", { headers: { Accept: "application/json", ...authHeaders() } });
  if (!response.ok) {
    box.hidden = true;
    return;
  }
  const who = await response.json();
  const scope = who.tenant_id ? `tenant ${who.tenant_id}${who.workspace_id ? ` / ${who.workspace_id}` : ""}` : "all tenants";
  const name = who.person ? `Signed in as ${who.person}` : who.name || who.token_id;
  document.getElementById("identity-label").textContent = `${name} · ${scope}`;
  box.hidden = false;
}

// Export links are plain downloads, which cannot carry a header: with a token, fetch them and save the blob.
async function download(event) {
  const link = event.target.closest("a[download]");
  if (!link || !token()) return;
  event.preventDefault();
  const response = await fetch(link.href, { headers: authHeaders(), cache: "no-store" });
  if (response.status === 401) {
    await askForToken("Sign in to export.");
    return;
  }
  const url = URL.createObjectURL(await response.blob());
  const save = document.createElement("a");
  save.href = url;
  save.download = new URL(link.href).pathname.slice(1);
  save.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

document.addEventListener("click", download);
document.getElementById("sign-out").addEventListener("click", signOut);
showIdentity();

// --- The JSON calls.
export class ApiError extends Error {
  constructor(status, detail, parameter = null) {
    super(detail);
    this.status = status; // 0 when the API could not be reached at all
    this.detail = detail;
    this.parameter = parameter;
  }
}

export function withQuery(path, params) {
  const query = params ? params.toString() : "";
  return query ? `${path}?${query}` : path;
}

function request(url) {
  return fetch(url, { headers: { Accept: "application/json", ...authHeaders() }, cache: "no-store" });
}

// A promise that never rejects: { body } or { error }, so an answer can wait for its view unobserved.
export function settled(promise) {
  return promise.then((body) => ({ body }), (error) => ({ error }));
}

export async function getJson(path, params) {
  let response;
  try {
    const url = withQuery(path, params);
    response = await take(url);
    // Asked before a token was given: ask again with it (a 401 now means the token is refused).
    if (!response || response.status === 401) response = await request(url);
  } catch {
    throw new ApiError(0, "The API did not answer (network error). Is the server running?");
  }
  let text = "";
  try {
    text = await response.text();
  } catch {
    throw new ApiError(0, "The connection to the API broke while reading its answer.");
  }
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (response.status === 401) {
    // The server requires a token: ask for one, then try again with it.
    await askForToken(
      (body && body.detail) || "This server requires an API token.",
      response.headers.get("X-Cavra-Sign-In"),
    );
    return getJson(path, params);
  }
  if (!response.ok) {
    // The API's one error shape carries a readable `detail` (and `parameter` for bad query arguments).
    const detail = body && typeof body.detail === "string" ? body.detail : `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, detail, (body && (body.parameter || body.field)) || null);
  }
  if (body === null || typeof body !== "object") {
    throw new ApiError(response.status, "The API answered with something that is not a JSON object.");
  }
  return body;
}
