// The view state: the server's vocabulary (GET /console/config), the URL that holds the whole view, and
// navigation between views. Imports nothing of the console.

// --- The server's settings and vocabularies (GET /console/config): the only source of filter names and values.
export const config = {
  activity_mode: "?",
  default_limit: 50,
  max_limit: 500,
  filters: { decisions: [], sessions: [] }, // query filters each listing accepts
  enums: {}, // allowed values of the enumerated filters, which the form offers as checkboxes
  facet_fields: [], // what GET /decisions/facets counts by, in its order
};

export function filtersFor(view) {
  return config.filters[view === "sessions" ? "sessions" : "decisions"] || [];
}

export function allFilters() {
  return [...new Set([...filtersFor("decisions"), ...filtersFor("sessions")])];
}

export function isMulti(name) {
  return Object.hasOwn(config.enums, name);
}

// Filters both listings accept travel along when switching between them.
export function sharedFilters() {
  return filtersFor("decisions").filter((name) => filtersFor("sessions").includes(name));
}

// --- The whole view state lives in the console's URL; these functions convert between the two.
export const RANGES = { "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3 };
const VIEWS = ["decisions", "sessions", "session"];

// Filters are the server's (the config above): parse only once /console/config has answered.
export function parseLocation(search) {
  const q = new URLSearchParams(search);
  const view = VIEWS.includes(q.get("view")) ? q.get("view") : "decisions";
  const filters = {};
  for (const name of allFilters()) {
    const values = [...new Set(q.getAll(name).filter((v) => v !== ""))];
    if (values.length) filters[name] = values;
  }
  const since = q.get("since") || "";
  const until = q.get("until") || "";
  let range = q.get("range") || "";
  if (!(range in RANGES) && range !== "custom") range = since || until ? "custom" : "";
  return {
    view, filters, range, since, until,
    q: q.get("q") || "", // free-text search (decisions only)
    limit: q.get("limit") || "",
    cursor: q.get("cursor") || "",
    detail: q.get("detail") || "",
    id: q.get("id") || "",
  };
}

export function toSearch(state) {
  const q = new URLSearchParams();
  if (state.view !== "decisions") q.set("view", state.view);
  if (state.view === "session") {
    q.set("id", state.id);
    if (state.detail) q.set("detail", state.detail);
    return `?${q}`;
  }
  for (const [name, values] of Object.entries(state.filters)) for (const value of values) q.append(name, value);
  if (state.q) q.set("q", state.q);
  if (state.range) q.set("range", state.range);
  // A preset's start is frozen while paging: cursors are bound to the exact filters they were made for.
  if (state.since && (state.range === "custom" || state.cursor)) q.set("since", state.since);
  if (state.until && state.range === "custom") q.set("until", state.until);
  if (state.limit) q.set("limit", state.limit);
  if (state.cursor) q.set("cursor", state.cursor);
  if (state.detail) q.set("detail", state.detail);
  const text = q.toString();
  return text ? `?${text}` : "";
}

export function resolveRange(state, now = Date.now()) {
  if (state.range in RANGES) {
    const since = state.cursor && state.since ? state.since : new Date(now - RANGES[state.range]).toISOString();
    return { since, until: "" };
  }
  if (state.range === "custom") return { since: state.since, until: state.until };
  return { since: "", until: "" };
}

// Filters plus time range, as the API spells them; shared by listings, facets and exports.
export function filterParams(state, since) {
  const q = new URLSearchParams();
  const allowed = filtersFor(state.view);
  for (const name of allowed) for (const value of state.filters[name] || []) q.append(name, value);
  const range = resolveRange(state);
  const start = since === undefined ? range.since : since;
  if (start) q.set("since", start);
  if (range.until) q.set("until", range.until);
  if (state.q && state.view !== "sessions") q.set("q", state.q);
  return q;
}

// A listing page: the filters, page size and cursor; `count=false` unless the total is wanted.
export function listParams(state, since, count) {
  const params = filterParams(state, since);
  params.set("limit", state.limit || String(config.default_limit));
  if (state.cursor) params.set("cursor", state.cursor);
  if (!count) params.set("count", "false");
  return params;
}

// The facet sidebar fetches this many top values per field (it shows fewer until asked).
export const FACET_VALUES = 25;

export function facetParams(state, since) {
  const params = filterParams(state, since);
  params.set("top", String(FACET_VALUES));
  return params;
}

export function histogramParams(state, since, now = new Date()) {
  const params = filterParams(state, since);
  // A preset window ends now, not at the latest match.
  if (params.has("since") && !params.has("until")) params.set("until", now.toISOString());
  params.set("interval", "auto");
  return params;
}

// What the decisions view must show first (its page with the total, and the facets), when those URLs do not
// depend on the moment they are asked (a preset window starts "now"): app.js starts them early (early.js
// the default view's). The chart is asked for once they are drawn: on a busy server it would slow them.
export function firstCalls(state) {
  if (state.view !== "decisions" || state.range in RANGES) return [];
  const { since } = resolveRange(state);
  return [["/decisions", listParams(state, since, !state.cursor)], ["/decisions/facets", facetParams(state, since)]];
}

export function sameListing(a, b) {
  if (!a || !b || a.view !== b.view) return false;
  return toSearch({ ...a, detail: "" }) === toSearch({ ...b, detail: "" });
}

// --- What the view modules share: the state from the URL, what the page shows, and navigation.
export const $ = (id) => document.getElementById(id);

export const ui = {
  state: null, // the view state, parsed from the URL
  prevStack: [], // cursors of the pages before this one, for ‹ Previous
  generation: 0, // bumps on every navigation; late answers for older views are dropped
  shown: null, // what the page currently shows: { state, items, signature, total, since, checkedAt, ... }
  live: true,
  detailPushed: false, // the open dialog added a step to the history
};

let renderHook = () => {};

export function onRender(hook) {
  renderHook = hook;
}

export function render() {
  renderHook();
}

export function navigate(next, { prev = [], replace = false } = {}) {
  ui.state = next;
  ui.prevStack = prev;
  const url = `/console${toSearch(next)}`;
  // Re-applying the same view (Clear all on a clear view) must not add a step to Back.
  if (replace || url === location.pathname + location.search) history.replaceState({ prev }, "", url);
  else history.pushState({ prev }, "", url);
  render();
}

export function withFilters(changes) {
  return { ...ui.state, ...changes, cursor: "", detail: "" };
}
