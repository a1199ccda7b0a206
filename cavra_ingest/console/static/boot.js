// The first calls of a view with filters: they need the server's filter names, so they go out as soon as the
// config early.js asked for has answered (the default view's went out with it). app.js waits for this.
import { CONFIG_URL, peek, prefetch } from "./early.js";
import { withQuery } from "./api.js";
import { config } from "./config.js";
import { firstCalls, parseLocation } from "./state.js";

async function start() {
  const answer = peek(CONFIG_URL);
  if (!location.search || !answer) return;
  const response = await answer;
  if (!response.ok) return; // a token to ask for, or an error: app.js deals with it
  // A copy: app.js reads the original when it asks for the config.
  Object.assign(config, await response.clone().json());
  for (const [path, params] of firstCalls(parseLocation(location.search))) prefetch(withQuery(path, params));
}

export const booted = start().catch(() => {});
