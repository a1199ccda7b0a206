// The Activity Explorer's controller: URL state in, API calls out, DOM updated in place.
import { ApiError, getJson, withQuery } from "./api.js";
import {
  DECISION_COLUMNS, OUTCOMES, SESSION_COLUMNS, SEVERITIES, STATES, badge, consoleHref, decisionRow, el, headRow,
  labelOf, recordView, sessionRow, sessionSummary, timelineItem,
} from "./render.js";
import { MULTI, filterParams, filtersFor, parseLocation, resolveRange, sameListing, toSearch } from "./state.js";
import { showEvidence } from "./evidence.js";

const POLL_MS = 3000;
const PAGE_SIZES = [10, 25, 50, 100, 200, 500];
const SHARED = ["repository", "agent_id", "policy_pack", "tenant_id", "workspace_id"];
const TEXT_FILTERS = ["repository", "agent_id", "policy_pack", "action_type", "session_id", "tenant_id", "workspace_id", "rule_id", "correlation_id"];
const FACETS = [
  ["decision", "Outcome"], ["severity", "Severity"], ["repository", "Repository"], ["agent_id", "Agent"],
  ["policy_pack", "Policy pack"], ["action_type", "Action type"],
];

const $ = (id) => document.getElementById(id);
const config = { activity_mode: "?", default_limit: 50, max_limit: 500 };
let state = parseLocation(location.search);
let prevStack = (history.state && history.state.prev) || [];
let generation = 0; // bumps on every navigation; late answers for older views are dropped
let shown = null; // what the page currently shows: { state, items, signature, total, since, checkedAt }
let live = true;
let pollTimer = null;
let facetsAvailable = true;
let detailPushed = false;
let refocus = null; // the facet button to focus again once the sidebar is redrawn
const totals = new Map();

// ---- navigation ----------------------------------------------------------------------------------

function navigate(next, { prev = [], replace = false } = {}) {
  state = next;
  prevStack = prev;
  const url = `/console${toSearch(state)}`;
  // Re-applying the same view (Clear all on a clear view) must not add a step to Back.
  if (replace || url === location.pathname + location.search) history.replaceState({ prev }, "", url);
  else history.pushState({ prev }, "", url);
  render();
}

window.addEventListener("popstate", () => {
  state = parseLocation(location.search);
  prevStack = (history.state && history.state.prev) || [];
  detailPushed = false;
  render();
});

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[href]");
  if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || url.pathname !== "/console" || link.hasAttribute("download")) return;
  event.preventDefault();
  const next = parseLocation(url.search);
  const onlyDetail = next.detail && sameListing(next, state);
  if (onlyDetail) detailPushed = true;
  navigate(next, { prev: onlyDetail ? prevStack : [] });
  if (!onlyDetail) $("main").focus({ preventScroll: false });
});

function withFilters(changes) {
  return { ...state, ...changes, cursor: "", detail: "" };
}

// ---- rendering the frame -------------------------------------------------------------------------

function render() {
  clearTimeout(pollTimer);
  document.body.dataset.view = state.view;
  const listView = state.view !== "session";
  $("list-view").hidden = !listView;
  $("session-view").hidden = listView;
  document.querySelector(".sidebar").hidden = !listView;
  $("facets").hidden = !(listView && state.view === "decisions" && facetsAvailable && shown && shown.facets);
  for (const view of ["decisions", "sessions"]) {
    const link = $(`nav-${view}`);
    const keep = Object.fromEntries(Object.entries(state.filters).filter(([name]) => SHARED.includes(name)));
    link.href = `/console${toSearch({ view, filters: keep, range: state.range, since: state.since, until: state.until, limit: state.limit, cursor: "", detail: "" })}`;
    if (state.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (listView) {
    fillForm();
    const noun = state.view === "sessions" ? "Sessions" : "Decisions";
    $("list-title").textContent = noun;
    document.title = `${noun} · Activity Explorer`;
    if (sameListing(state, shown && shown.state)) {
      shown.state = state;
      syncDetail();
      schedulePoll();
    } else {
      loadList();
    }
  } else {
    document.title = `Session ${state.id} · Activity Explorer`;
    if (sameListing(state, shown && shown.state)) {
      shown.state = state;
      openTimelineDetail();
      schedulePoll();
    } else {
      loadSession();
    }
  }
}

// ---- filters form --------------------------------------------------------------------------------

function buildChoices() {
  for (const [name, kinds] of [["decision", OUTCOMES], ["severity", SEVERITIES], ["state", STATES]]) {
    const box = $(`f-${name}`);
    for (const value of Object.keys(kinds)) {
      const id = `f-${name}-${value}`;
      box.append(el("div", { class: "choice" },
        el("input", { type: "checkbox", id, name, value }),
        el("label", { for: id }, badge(name, value))));
    }
  }
  const size = $("page-size");
  size.replaceChildren();
  const sizes = new Set(PAGE_SIZES.filter((n) => n <= config.max_limit));
  sizes.add(config.default_limit);
  if (state.limit && /^\d+$/.test(state.limit)) sizes.add(Number(state.limit));
  for (const n of [...sizes].sort((a, b) => a - b)) size.append(el("option", { value: String(n), text: String(n) }));
}

function utcInputValue(text) {
  const moment = new Date(text);
  return text && !Number.isNaN(moment.getTime()) ? moment.toISOString().slice(0, 19) : "";
}

function fillForm() {
  const form = $("filters");
  for (const node of document.querySelectorAll("[data-views]")) {
    node.hidden = !node.dataset.views.split(" ").includes(state.view);
  }
  for (const name of TEXT_FILTERS.concat(["min_blocked"])) {
    const input = form.elements[name];
    input.value = (state.filters[name] || []).join(", ");
    input.dataset.shown = input.value;
  }
  for (const name of MULTI) {
    for (const box of form.querySelectorAll(`input[name="${name}"]`)) box.checked = (state.filters[name] || []).includes(box.value);
  }
  // Sessions are filtered on their latest activity (updated_at), decisions on their own time.
  $("range-scope").textContent = state.view === "sessions" ? "(last activity)" : "";
  $("f-range").value = state.range;
  $("custom-range").hidden = state.range !== "custom";
  $("f-since").value = state.range === "custom" ? utcInputValue(state.since) : "";
  $("f-until").value = state.range === "custom" ? utcInputValue(state.until) : "";
  const limit = state.limit || String(config.default_limit);
  if (![...$("page-size").options].some((o) => o.value === limit)) $("page-size").append(el("option", { value: limit, text: limit }));
  $("page-size").value = limit;
}

function readForm() {
  const form = $("filters");
  const filters = {};
  for (const name of TEXT_FILTERS.concat(["min_blocked"])) {
    const input = form.elements[name];
    // Untouched fields keep their exact values; edited ones split on commas (any value matches).
    const values = input.value === input.dataset.shown && state.filters[name]
      ? state.filters[name]
      : input.value.split(",").map((v) => v.trim()).filter(Boolean);
    if (values.length) filters[name] = [...new Set(values)];
  }
  for (const name of MULTI) {
    const values = [...form.querySelectorAll(`input[name="${name}"]:checked`)].map((box) => box.value);
    if (values.length) filters[name] = values;
  }
  // Keep filters of the other view that this form does not show, so switching views loses nothing.
  for (const [name, values] of Object.entries(state.filters)) {
    if (!filtersFor(state.view).includes(name)) filters[name] = values;
  }
  const range = $("f-range").value;
  const asUtc = (value) => (value ? `${value.length === 16 ? `${value}:00` : value}Z` : "");
  return {
    filters, range,
    since: range === "custom" ? asUtc($("f-since").value) || (state.range === "custom" ? state.since : "") : "",
    until: range === "custom" ? asUtc($("f-until").value) : "",
  };
}

function applyForm() {
  const next = withFilters(readForm());
  if (toSearch(next) !== toSearch(state)) navigate(next);
}

function wireForm() {
  const form = $("filters");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    applyForm();
  });
  form.addEventListener("change", (event) => {
    if (event.target.id === "f-range") $("custom-range").hidden = event.target.value !== "custom";
    if (event.target.id === "f-range" && event.target.value === "custom") return; // wait for the dates
    applyForm();
  });
  const clear = () => navigate({ ...withFilters({ filters: {}, range: "", since: "", until: "" }) });
  $("clear-filters").addEventListener("click", clear);
  $("empty-clear").addEventListener("click", clear);
  $("error-clear").addEventListener("click", clear);
  $("error-retry").addEventListener("click", () => {
    shown = null;
    render();
  });
  $("page-size").addEventListener("change", (event) => navigate(withFilters({ limit: event.target.value })));
  $("page-next").addEventListener("click", () => {
    if (!shown || !shown.nextCursor) return;
    navigate({ ...state, cursor: shown.nextCursor, since: shown.since || state.since, detail: "" }, { prev: [...prevStack, state.cursor] });
  });
  $("page-prev").addEventListener("click", () => {
    const cursor = prevStack[prevStack.length - 1] || "";
    const since = cursor || state.range === "custom" ? state.since : "";
    navigate({ ...state, cursor, since, detail: "" }, { prev: prevStack.slice(0, -1) });
  });
  $("page-first").addEventListener("click", () => {
    navigate({ ...state, cursor: "", since: state.range === "custom" ? state.since : "", detail: "" });
  });
}

// ---- listings ------------------------------------------------------------------------------------

function listParams(since, count) {
  const params = filterParams(state, since);
  params.set("limit", state.limit || String(config.default_limit));
  if (state.cursor) params.set("cursor", state.cursor);
  if (!count) params.set("count", "false");
  return params;
}

function signature(items) {
  return JSON.stringify(items);
}

async function loadList({ poll = false } = {}) {
  const gen = poll ? generation : ++generation;
  const path = state.view === "sessions" ? "/sessions" : "/decisions";
  const { since } = resolveRange(state);
  const key = toSearch({ ...state, cursor: "", detail: "", since: state.range === "custom" ? state.since : "" });
  if (!poll) $("results").setAttribute("aria-busy", "true");
  try {
    let body = await getJson(path, listParams(since, !poll && !state.cursor));
    if (gen !== generation) return;
    const fresh = new Set();
    if (poll) {
      if (shown && signature(body.items) === shown.signature) {
        markChecked();
        clearError();
        return schedulePoll();
      }
      // Something changed: fetch again with the total, and highlight rows that are new or changed.
      body = await getJson(path, listParams(since, true));
      if (gen !== generation) return;
      const before = new Map((shown ? shown.items : []).map((item) => [rowId(item), JSON.stringify(item)]));
      for (const item of body.items) if (before.get(rowId(item)) !== JSON.stringify(item)) fresh.add(rowId(item));
    }
    if (typeof body.total === "number") totals.set(key, body.total);
    const { facets } = shown && sameListing(shown.state, state) ? shown : {};
    shown = {
      state, items: body.items, signature: signature(body.items), total: totals.get(key) ?? null,
      nextCursor: body.next_cursor || "", since, facets,
    };
    clearError();
    showList(fresh);
    markChecked();
    if (!poll || fresh.size) loadFacets(gen);
    syncDetail();
  } catch (error) {
    if (gen !== generation) return;
    showError(error, { stale: poll && shown !== null });
    if (error instanceof ApiError && (error.status === 400 || error.status === 404)) return; // retrying cannot help
  } finally {
    if (gen === generation) $("results").removeAttribute("aria-busy");
  }
  schedulePoll();
}

function rowId(item) {
  return item.decision_id || item.session_id;
}

function showList(fresh) {
  const decisions = state.view === "decisions";
  const { items } = shown;
  $("results-head").replaceChildren(headRow(decisions ? DECISION_COLUMNS : SESSION_COLUMNS));
  const rows = items.map((item) => {
    const row = decisions ? decisionRow(item, `/console${toSearch({ ...state, detail: item.decision_id })}`) : sessionRow(item);
    if (fresh.has(rowId(item))) row.classList.add("fresh");
    return row;
  });
  $("results-body").replaceChildren(...rows);
  $("results-wrap").hidden = items.length === 0;
  $("empty").hidden = items.length !== 0;
  const noun = decisions ? "decision" : "session";
  const order = decisions ? "newest first" : "latest activity first";
  const plural = (n) => `${n.toLocaleString("en")} ${noun}${n === 1 ? "" : "s"}`;
  const limit = Number(state.limit || config.default_limit);
  const offset = state.cursor && prevStack.length === 0 ? null : prevStack.length * limit;
  let text;
  if (items.length === 0) text = `No ${noun}s match.`;
  else if (offset === null) text = `${plural(items.length)} on this page${shown.total !== null ? ` of ${shown.total.toLocaleString("en")}` : ""}, ${order}`;
  else text = `Showing ${offset + 1}–${offset + items.length}${shown.total !== null ? ` of ${plural(shown.total)}` : ` ${noun}s`}, ${order}`;
  if (fresh.size) text += ` · ${fresh.size} new or updated`;
  $("summary").textContent = text;
  $("pager").hidden = !state.cursor && !shown.nextCursor;
  $("page-next").disabled = !shown.nextCursor;
  $("page-prev").disabled = prevStack.length === 0;
  $("page-first").disabled = !state.cursor;
  const exportParams = filterParams(state, shown.since);
  $("export-csv").href = withQuery("/decisions.csv", exportParams);
  $("export-ndjson").href = withQuery("/decisions.ndjson", exportParams);
  $("api-link").href = withQuery(decisions ? "/decisions" : "/sessions", listParams(shown.since, true));
}

// ---- facets --------------------------------------------------------------------------------------

// Accepts `{dim: [{value, count}]}`, `{dim: {value: count}}`, `[value, count]` pairs, or all of it under `facets`.
export function normalizeFacets(body) {
  const source = body && typeof body.facets === "object" && body.facets !== null ? body.facets : body;
  const out = {};
  for (const [dim, raw] of Object.entries(source || {})) {
    let entries = [];
    if (Array.isArray(raw)) {
      entries = raw.map((entry) => (Array.isArray(entry) ? { value: entry[0], count: entry[1] } : entry))
        .filter((entry) => entry && typeof entry === "object" && "value" in entry);
    } else if (raw && typeof raw === "object") {
      entries = Object.entries(raw).map(([value, count]) => ({ value, count }));
    } else {
      continue;
    }
    out[dim] = entries
      .map((entry) => ({ value: entry.value === null ? "" : String(entry.value), count: Number(entry.count) || 0 }))
      .sort((a, b) => b.count - a.count || a.value.localeCompare(b.value));
  }
  return out;
}

async function loadFacets(gen) {
  if (state.view !== "decisions" || !facetsAvailable) {
    $("facets").hidden = true;
    return;
  }
  let body;
  try {
    body = await getJson("/decisions/facets", filterParams(state, shown.since));
  } catch (error) {
    if (gen !== generation) return;
    if (error instanceof ApiError && (error.status === 404 || error.status === 405)) facetsAvailable = false;
    $("facets").hidden = true; // the table and its error banner already say what went wrong
    return;
  }
  if (gen !== generation) return;
  shown.facets = normalizeFacets(body);
  renderFacets(shown.facets);
}

function toggleFacet(dim, value) {
  const current = state.filters[dim] || [];
  let values;
  if (MULTI.includes(dim)) values = current.includes(value) ? current.filter((v) => v !== value) : [...current, value];
  else values = current.length === 1 && current[0] === value ? [] : [value];
  const filters = { ...state.filters };
  if (values.length) filters[dim] = values;
  else delete filters[dim];
  refocus = { dim, value };
  navigate(withFilters({ filters }));
}

function renderFacets(facets) {
  const known = new Map(FACETS);
  const dims = FACETS.map(([dim]) => dim).filter((dim) => dim in facets)
    .concat(Object.keys(facets).filter((dim) => !known.has(dim) && filtersFor("decisions").includes(dim)));
  const groups = dims.map((dim) => {
    const entries = facets[dim];
    const top = Math.max(1, ...entries.map((e) => e.count));
    const headingId = `facet-${dim}`;
    const list = el("ul", { class: "facet-list", "aria-labelledby": headingId }, entries.slice(0, 8).map((entry) => {
      const active = (state.filters[dim] || []).includes(entry.value);
      const label = ["decision", "severity"].includes(dim) ? badge(dim, entry.value) : el("span", { class: "facet-value", title: entry.value, text: entry.value || "(none)" });
      const button = el("button", {
        type: "button", class: "facet", "aria-pressed": active ? "true" : "false", "data-dim": dim, "data-value": entry.value,
        "aria-label": `${known.get(dim) || dim}: ${labelOf(dim, entry.value) || "(none)"}, ${entry.count} decisions${active ? ", filtering by it" : ""}`,
        disabled: entry.value === "" ? true : null,
        onclick: () => toggleFacet(dim, entry.value),
      }, label, el("span", { class: "facet-count", text: entry.count.toLocaleString("en") }));
      button.style.setProperty("--share", `${Math.round((entry.count / top) * 100)}%`);
      return el("li", {}, button);
    }));
    const body = entries.length ? list : el("p", { class: "muted", text: "No values." });
    return el("section", { class: "facet-group" }, el("h3", { id: headingId, text: known.get(dim) || dim }), body);
  });
  $("facet-groups").replaceChildren(...groups);
  $("facets").hidden = false;
  if (refocus) {
    const again = [...document.querySelectorAll("#facet-groups button.facet")]
      .find((b) => b.dataset.dim === refocus.dim && b.dataset.value === refocus.value);
    refocus = null;
    if (again) again.focus({ preventScroll: true });
  }
}

// ---- decision detail (list view) -----------------------------------------------------------------

async function syncDetail() {
  const dialog = $("detail");
  if (!state.detail || state.view !== "decisions") {
    if (dialog.open) dialog.close();
    return;
  }
  const id = state.detail;
  $("detail-title").textContent = `Decision ${id}`;
  try {
    const record = await getJson(`/decisions/${encodeURIComponent(id)}`);
    if (state.detail !== id) return;
    $("detail-body").replaceChildren(
      el("p", {}, el("a", { href: consoleHref({ view: "session", id: record.session_id, detail: record.decision_id }), text: "Show it in its session's timeline" })),
      recordView(record),
    );
  } catch (error) {
    if (state.detail !== id) return;
    $("detail-body").replaceChildren(el("p", { class: "error-detail", role: "alert", text: error.detail || String(error) }));
  }
  if (!dialog.open) dialog.showModal();
}

function wireDetail() {
  const dialog = $("detail");
  $("detail-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close(); // a click on the backdrop
  });
  dialog.addEventListener("close", () => {
    if (!state.detail) return;
    if (detailPushed) {
      detailPushed = false;
      history.back();
    } else {
      navigate({ ...state, detail: "" }, { prev: prevStack, replace: true });
    }
  });
}

// ---- session page --------------------------------------------------------------------------------

async function loadSession({ poll = false } = {}) {
  const gen = poll ? generation : ++generation;
  const id = state.id;
  if (!id) {
    showError(new ApiError(400, "No session id in the address."), { stale: false });
    return;
  }
  try {
    if (poll && shown && shown.session) {
      const summary = await getJson(`/sessions/${encodeURIComponent(id)}`);
      if (gen !== generation) return;
      if (summary.updated_at === shown.session.updated_at && summary.decision_count === shown.session.decision_count && summary.state === shown.session.state) {
        markChecked();
        clearError();
        return schedulePoll();
      }
    }
    const body = await getJson(`/sessions/${encodeURIComponent(id)}/decisions`);
    if (gen !== generation) return;
    const before = poll && shown && shown.items ? new Set(shown.items.map((item) => item.decision_id)) : null;
    shown = { state, session: body.session, items: body.items, nextCursor: body.next_cursor || "" };
    clearError();
    showSession(before);
    markChecked();
    if (!poll) openTimelineDetail();
  } catch (error) {
    if (gen !== generation) return;
    showError(error, { stale: poll && shown !== null });
    if (error instanceof ApiError && (error.status === 400 || error.status === 404)) return; // retrying cannot help
  }
  schedulePoll();
}

function showSession(before) {
  const { session, items } = shown;
  $("session-title").replaceChildren("Session ", el("span", { class: "mono", text: session.session_id }), " ", badge("state", session.state));
  $("session-summary").replaceChildren(...sessionSummary(session));
  $("session-decisions-link").href = consoleHref({ view: "decisions", session_id: session.session_id });
  $("session-api-link").href = `/sessions/${encodeURIComponent(session.session_id)}/decisions`;
  const nodes = items.map((item) => {
    const node = timelineItem(item, item.decision_id === state.detail);
    if (before && !before.has(item.decision_id)) node.classList.add("fresh");
    return node;
  });
  $("timeline").replaceChildren(...nodes);
  $("timeline-empty").hidden = items.length !== 0;
  $("timeline-more").hidden = !shown.nextCursor;
  showEvidence(session.session_id, items, $("session-evidence-link"), $("session-evidence"));
}

function openTimelineDetail() {
  if (!state.detail) return;
  const node = document.getElementById(`d-${state.detail}`);
  if (!node) return;
  const details = node.querySelector("details");
  details.open = true;
  node.scrollIntoView({ block: "center" });
  details.querySelector("summary").focus({ preventScroll: true });
}

async function loadMoreTimeline() {
  const gen = generation;
  const params = new URLSearchParams({ cursor: shown.nextCursor });
  try {
    const body = await getJson(`/sessions/${encodeURIComponent(state.id)}/decisions`, params);
    if (gen !== generation) return;
    shown.items = shown.items.concat(body.items);
    shown.nextCursor = body.next_cursor || "";
    $("timeline").append(...body.items.map((item) => timelineItem(item, false)));
    $("timeline-more").hidden = !shown.nextCursor;
  } catch (error) {
    if (gen === generation) showError(error, { stale: true });
  }
}

// ---- errors, live updates ------------------------------------------------------------------------

function showError(error, { stale }) {
  if (!(error instanceof ApiError)) error = new ApiError(0, String(error && error.message ? error.message : error));
  let title;
  if (error.status === 0) title = "Cannot reach the API";
  else if (error.status === 400) title = "The API rejected this view's filters";
  else if (error.status === 404) title = "Not found";
  else if (error.status >= 500) title = `The API failed (${error.status})`;
  else title = `The API answered ${error.status}`;
  let detail = error.detail + (error.parameter ? ` (parameter: ${error.parameter})` : "");
  if (stale && shown && shown.checkedAt) detail += ` Showing what was loaded at ${shown.checkedAt}.`;
  if (live && error.status !== 400 && error.status !== 404) detail += " Retrying every few seconds.";
  $("error-title").textContent = title;
  $("error-detail").textContent = detail;
  $("error-clear").hidden = error.status !== 400 || state.view === "session";
  $("error").hidden = false;
  $("error").dataset.status = String(error.status);
  setLive(`${title}.`);
  if (!stale) {
    shown = null;
    $("results-wrap").hidden = true;
    $("empty").hidden = true;
    $("pager").hidden = true;
    $("facets").hidden = true;
    $("summary").textContent = "";
    $("timeline").replaceChildren();
    $("session-summary").replaceChildren();
  }
}

function clearError() {
  $("error").hidden = true;
}

function markChecked() {
  const now = new Date().toISOString().slice(11, 19);
  if (shown) shown.checkedAt = `${now} UTC`;
  setLive(live ? `Live · checked ${now} UTC` : `Paused · loaded ${now} UTC`);
}

function setLive(text) {
  $("live-status").textContent = text;
}

function pollable() {
  // Later pages stay put; new activity only ever lands on the first page of a listing.
  return live && (state.view === "session" || !state.cursor);
}

function schedulePoll() {
  clearTimeout(pollTimer);
  if (!pollable()) return;
  pollTimer = setTimeout(() => {
    if (document.hidden) return schedulePoll(); // a background tab waits; it catches up when shown
    return state.view === "session" ? loadSession({ poll: true }) : loadList({ poll: true });
  }, POLL_MS);
}

function wireLive() {
  const button = $("live-toggle");
  button.addEventListener("click", () => {
    live = !live;
    button.setAttribute("aria-pressed", String(live));
    $("live-label").textContent = live ? "Live" : "Paused";
    button.title = live ? "Pause live updates" : "Resume live updates";
    if (live) {
      setLive("Live · checking…");
      if (shown) {
        state.view === "session" ? loadSession({ poll: true }) : loadList({ poll: true });
      } else {
        render();
      }
    } else {
      clearTimeout(pollTimer);
      setLive(state.view !== "session" && state.cursor ? "Paused" : "Paused · new activity is not loaded");
    }
  });
  button.title = "Pause live updates";
}

// ---- start ---------------------------------------------------------------------------------------

async function start() {
  try {
    Object.assign(config, await getJson("/console/config"));
  } catch {
    // The listings will report the outage; defaults are good enough to draw the page.
  }
  $("store-kind").textContent = config.activity_mode;
  buildChoices();
  wireForm();
  wireDetail();
  wireLive();
  $("timeline-more").addEventListener("click", loadMoreTimeline);
  history.replaceState({ prev: prevStack }, "", location.href);
  render();
}

start();
