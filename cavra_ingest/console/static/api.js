// Talks to the public JSON API only: whatever the console shows, a script can fetch the same way.
import { askForToken, authHeaders } from "./auth.js";
import { take } from "./early.js";

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
