// The first API calls, made as soon as this file is here: an async module that imports nothing, so it runs
// before the rest of the console has arrived. The config always; for the default view (no query string, so
// no server vocabulary needed) its page and facets, at the URLs list.js asks for (if the
// server's page size differs from state.js's default, the views ask for their own and these go unused).
// api.js hands each answer, once, to the view that asks for the same URL.

const TOKEN_KEY = "cavra.token"; // api.js's: a signed-in tab's calls carry its token from the start
const FRESH_MS = 10_000;
const ahead = new Map();

export function prefetch(url) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { Accept: "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) };
  const response = fetch(url, { headers, cache: "no-store" });
  response.catch(() => {}); // whoever takes it sees the failure
  ahead.set(url, { at: performance.now(), response });
  return response;
}

// The answer on its way for this URL, if any and still fresh; handed out once.
export function take(url) {
  const early = ahead.get(url);
  ahead.delete(url);
  return early && performance.now() - early.at < FRESH_MS ? early.response : null;
}

// The config's answer without taking it (app.js reads a copy for a view with filters).
export function peek(url) {
  const early = ahead.get(url);
  return early ? early.response : null;
}

export const CONFIG_URL = "/console/config";
export const DEFAULT_CALLS = ["/decisions?limit=50", "/decisions/facets?top=25"];

prefetch(CONFIG_URL);
if (!location.search) for (const url of DEFAULT_CALLS) prefetch(url);
