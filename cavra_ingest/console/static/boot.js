// Starts the first view's API calls while the rest of the console is still arriving: an async module, it runs
// as soon as it and its few imports are here. The views ask for the same URLs and api.js hands them these
// answers; anything else they ask for is fetched as usual, and every error is theirs to show.
import { prefetch } from "./api.js";
import { config } from "./config.js";
import { firstCalls, parseLocation } from "./state.js";

function callsFor(search) {
  for (const [path, params] of firstCalls(parseLocation(search))) prefetch(path, params);
}

async function start() {
  const answer = prefetch("/console/config");
  // The default view's calls need none of the server's vocabulary: they go out beside the config's (if the
  // server's page size differs from config.js's default, the views ask for their own URLs and these go unused).
  if (!location.search) callsFor("");
  const response = await answer;
  if (!response.ok) return; // a token to ask for, or an error: app.js deals with it
  // A copy: app.js reads the original when it asks for the config.
  Object.assign(config, await response.clone().json());
  if (location.search) callsFor(location.search);
}

// app.js waits for this before asking for anything, so the views find these calls already made.
export const booted = start().catch(() => {});
