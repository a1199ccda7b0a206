// The listings (decisions and sessions): one page of rows, its summary and pager, the decisions' facets and
// record dialog, and the first-run hint; kept current while live.
import { ApiError, getJson, settled, withQuery } from "./api.js";
import { filterLabel } from "./filters.js";
import { badge, consoleHref, DECISION_COLUMNS, decisionRow, el, grouped, headRow, recordView, SESSION_COLUMNS, sessionRow } from "./render.js";
import { $, config, facetParams, filterParams, isMulti, listParams as paramsOf, navigate, resolveRange, sameListing, toSearch, ui, withFilters } from "./state.js";
import { clearError, markChecked, schedulePoll, showError } from "./status.js";

// --- A store with no decisions at all: say how to send the first one, instead of "Nothing matches".
function unfiltered(state) {
  return !Object.keys(state.filters).length && !state.q && !state.range && !state.cursor;
}

export function firstRunCommand() {
  const body = JSON.stringify({
    decision: "block", session_id: "sess-1", agent_id: "my-agent", repository: "acme/payments",
    action_type: "git_operation", target: "git push --force", rule_id: "git.no_force_push",
  });
  return `curl -s ${location.origin}/decisions -H 'Content-Type: application/json' -d '${body}'`;
}

// Called after each listing is drawn: `empty` says whether it had no rows.
export function showFirstRun(empty) {
  const first = empty && unfiltered(ui.state);
  $("first-run").hidden = !first;
  if (first) {
    $("empty").hidden = true;
    $("first-run-command").textContent = firstRunCommand();
  }
}

export function wireFirstRun() {
  $("first-run-copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("first-run-command").textContent);
      $("first-run-copied").textContent = "Copied.";
    } catch {
      // No clipboard (plain http, or refused): select the text so Ctrl+C copies it.
      getSelection().selectAllChildren($("first-run-command"));
      $("first-run-copied").textContent = "Selected: press Ctrl+C to copy.";
    }
  });
}

// --- The record dialog of the decisions list: open while the URL names a decision (`detail=`).
export async function syncDetail() {
  const dialog = $("detail");
  if (!ui.state.detail || ui.state.view !== "decisions") {
    if (dialog.open) dialog.close();
    return;
  }
  const id = ui.state.detail;
  $("detail-title").textContent = `Decision ${id}`;
  try {
    const record = await getJson(`/decisions/${encodeURIComponent(id)}`);
    if (ui.state.detail !== id) return;
    $("detail-body").replaceChildren(
      el("p", {}, el("a", { href: consoleHref({ view: "session", id: record.session_id, detail: record.decision_id }), text: "Show it in its session's timeline" })),
      recordView(record),
    );
  } catch (error) {
    if (ui.state.detail !== id) return;
    $("detail-body").replaceChildren(el("p", { class: "error-detail", role: "alert", text: error.detail || String(error) }));
  }
  if (!dialog.open) dialog.showModal();
}

export function wireDetail() {
  const dialog = $("detail");
  $("detail-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close(); // a click on the backdrop
  });
  dialog.addEventListener("close", () => {
    if (!ui.state.detail) return;
    if (ui.detailPushed) {
      ui.detailPushed = false;
      history.back();
    } else {
      navigate({ ...ui.state, detail: "" }, { prev: ui.prevStack, replace: true });
    }
  });
}

// --- The decisions list: its rows and facet sidebar. loadList (below) fetches, pages and polls it.
let refocus = null; // the facet button to focus again once the sidebar is redrawn

export const decisionsList = {
  path: "/decisions",
  noun: "decision",
  order: "newest first",
  columns: DECISION_COLUMNS,
  id: (item) => item.decision_id,
  row: (item) => decisionRow(item, `/console${toSearch({ ...ui.state, detail: item.decision_id })}`),
  starting(gen, since) {
    early = { gen, facets: settled(getJson("/decisions/facets", facetParams(ui.state, since))) };
  },
  loaded(gen) {
    // Facets and the chart count the whole window (seconds at millions of rows): while live updates bring
    // new rows, they refresh no more often than ten times what they last took. A new view always loads them:
    // its facets from the call `starting` made beside its page, its chart once the facets are drawn (asked
    // for while the facets are still being counted, it only slowed them down).
    const now = performance.now();
    if (gen === heavy.gen && now - heavy.at < heavy.took * 10) return;
    Object.assign(heavy, { gen, at: now });
    const started = early && early.gen === gen ? early : {};
    early = null;
    const chart = chartModule();
    loadFacets(gen, started.facets).then(() => gen === ui.generation && chart.then((c) => c.loadHistogram(gen))).then(() => {
      heavy.took = performance.now() - now;
    });
  },
};

// The chart's file is fetched once the first page is drawn, not before it.
let chart = null;
function chartModule() {
  if (!chart) {
    chart = import("./histogram.js").then((module) => {
      module.wireHistogram();
      return module;
    }, () => {
      chart = null; // tried again with the next page; the table and facets do without it
      return { loadHistogram() {} };
    });
  }
  return chart;
}

const heavy = { gen: -1, at: 0, took: 0 };
let early = null; // { gen, facets }: the facets on their way for a new view

// Values each facet shows before "Show more"; the rest of the fetched top values wait behind it.
const FIRST_VALUES = 5;
const expanded = new Set();

// GET /decisions/facets answers {total, top, facets: {field: [{value, count}]}}, most frequent first.
async function loadFacets(gen, pending) {
  const { body, error } = await (pending || settled(getJson("/decisions/facets", facetParams(ui.state, ui.shown.since))));
  if (error) {
    if (gen === ui.generation) $("facets").hidden = true; // the table and its error banner say what went wrong
    return;
  }
  if (gen !== ui.generation) return;
  ui.shown.facets = body.facets;
  ui.shown.facetTotal = body.total;
  renderFacets(body.facets, body.total);
}

function toggleFacet(dim, value) {
  const current = ui.state.filters[dim] || [];
  let values;
  if (isMulti(dim)) values = current.includes(value) ? current.filter((v) => v !== value) : [...current, value];
  else values = current.length === 1 && current[0] === value ? [] : [value];
  const filters = { ...ui.state.filters };
  if (values.length) filters[dim] = values;
  else delete filters[dim];
  refocus = { dim, value };
  navigate(withFilters({ filters }));
}

function facetButton(dim, entry, top) {
  const { value, count } = entry;
  const none = value === null || value === ""; // records without a value: counted, but no filter can ask for them
  const active = !none && (ui.state.filters[dim] || []).includes(value);
  const label = isMulti(dim) && !none ? badge(dim, value) : el("span", { class: "facet-value", title: value, text: none ? "(none)" : value });
  const button = el("button", {
    type: "button", class: "facet", "aria-pressed": active ? "true" : "false", "data-dim": dim, "data-value": value ?? "",
    disabled: none,
    onclick: () => toggleFacet(dim, value),
  }, el("span", { class: "visually-hidden", text: `${filterLabel(dim)}: ` }), label,
  // The name is the visible text (WCAG 2.5.3), with what only a screen reader needs hidden around it.
  el("span", { class: "facet-count" }, grouped(count), el("span", { class: "visually-hidden", text: " decisions" })));
  button.style.setProperty("--share", `${Math.round((count / top) * 100)}%`);
  return el("li", {}, button);
}

function moreButton(dim, hiddenValues, list, entries, top) {
  const button = el("button", {
    type: "button", class: "link-button facet-more",
    text: `Show ${hiddenValues} more`,
    onclick: () => {
      expanded.add(dim);
      list.replaceChildren(...entries.map((entry) => facetButton(dim, entry, top)));
      button.remove();
      list.querySelectorAll("button.facet")[FIRST_VALUES]?.focus();
    },
  });
  return button;
}

function renderFacets(facets, total) {
  const groups = config.facet_fields.filter((dim) => Array.isArray(facets[dim])).map((dim) => {
    const entries = facets[dim];
    const top = Math.max(1, ...entries.map((e) => e.count));
    const headingId = `facet-${dim}`;
    const first = expanded.has(dim) ? entries : entries.slice(0, FIRST_VALUES);
    const list = el("ul", { class: "facet-list", "aria-labelledby": headingId }, first.map((entry) => facetButton(dim, entry, top)));
    const body = entries.length ? list : el("p", { class: "muted", text: "No values." });
    const more = entries.length > first.length ? moreButton(dim, entries.length - first.length, list, entries, top) : null;
    // What the fetched top values leave out: counted, never silently dropped.
    const rest = total - entries.reduce((sum, e) => sum + e.count, 0);
    const restNote = rest > 0 ? el("p", { class: "muted facet-rest", text: `${grouped(rest)} more in other values` }) : null;
    return el("section", { class: "facet-group", "data-dim": dim }, el("h3", { id: headingId, text: filterLabel(dim) }), body, more, restNote);
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

// --- The sessions list: what its rows and summary say.
export const sessionsList = {
  path: "/sessions",
  noun: "session",
  order: "latest activity first",
  columns: SESSION_COLUMNS,
  id: (item) => item.session_id,
  row: sessionRow,
};

// --- A listing (decisions or sessions) as it is fetched, drawn and paged.
const PAGE_SIZES = [10, 25, 50, 100, 200, 500];
const LISTS = { decisions: decisionsList, sessions: sessionsList };
const totals = new Map();

function listParams(since, count) {
  return paramsOf(ui.state, since, count);
}

function signature(items) {
  return JSON.stringify(items);
}

export async function loadList({ poll = false } = {}) {
  const gen = poll ? ui.generation : ++ui.generation;
  const { state } = ui;
  const list = LISTS[state.view];
  const { since } = resolveRange(state);
  const key = toSearch({ ...state, cursor: "", detail: "", since: state.range === "custom" ? state.since : "" });
  if (!poll) $("results").setAttribute("aria-busy", "true");
  // A new view asks for what it shows beside the page (facets, chart) at once, not after the page.
  if (!poll && list.starting) list.starting(gen, since);
  try {
    let body = await getJson(list.path, listParams(since, !poll && !state.cursor));
    if (gen !== ui.generation) return;
    const fresh = new Set();
    if (poll) {
      if (ui.shown && signature(body.items) === ui.shown.signature) {
        markChecked();
        clearError();
        return schedulePoll();
      }
      // Something changed: fetch again with the total, and highlight rows that are new or changed.
      body = await getJson(list.path, listParams(since, true));
      if (gen !== ui.generation) return;
      const before = new Map((ui.shown ? ui.shown.items : []).map((item) => [list.id(item), JSON.stringify(item)]));
      for (const item of body.items) if (before.get(list.id(item)) !== JSON.stringify(item)) fresh.add(list.id(item));
    }
    if (typeof body.total === "number") totals.set(key, body.total);
    const { facets } = ui.shown && sameListing(ui.shown.state, state) ? ui.shown : {};
    ui.shown = {
      state, items: body.items, signature: signature(body.items), total: totals.get(key) ?? null,
      nextCursor: body.next_cursor || "", since, facets,
    };
    clearError();
    showList(list, fresh);
    markChecked();
    if (list.loaded && (!poll || fresh.size)) list.loaded(gen);
    syncDetail();
  } catch (error) {
    if (gen !== ui.generation) return;
    showError(error, { stale: poll && ui.shown !== null });
    if (error instanceof ApiError && (error.status === 400 || error.status === 404)) return; // retrying cannot help
  } finally {
    if (gen === ui.generation) $("results").removeAttribute("aria-busy");
  }
  schedulePoll();
}

function showList(list, fresh) {
  const { state, shown, prevStack } = ui;
  const { items } = shown;
  $("results-head").replaceChildren(headRow(list.columns));
  const rows = items.map((item) => {
    const row = list.row(item);
    if (fresh.has(list.id(item))) row.classList.add("fresh");
    return row;
  });
  $("results-body").replaceChildren(...rows);
  $("results-wrap").hidden = items.length === 0;
  $("empty").hidden = items.length !== 0;
  showFirstRun(items.length === 0);
  const { noun, order } = list;
  const plural = (n) => `${grouped(n)} ${noun}${n === 1 ? "" : "s"}`;
  const limit = Number(state.limit || config.default_limit);
  const offset = state.cursor && prevStack.length === 0 ? null : prevStack.length * limit;
  let text;
  if (items.length === 0) text = `No ${noun}s match.`;
  else if (offset === null) text = `${plural(items.length)} on this page${shown.total !== null ? ` of ${grouped(shown.total)}` : ""}, ${order}`;
  else text = `Showing ${offset + 1}–${offset + items.length}${shown.total !== null ? ` of ${plural(shown.total)}` : ` ${noun}s`}, ${order}`;
  if (fresh.size) text += ` · ${fresh.size} new or updated`;
  $("summary").textContent = text;
  $("pager").hidden = !state.cursor && !shown.nextCursor;
  $("page-next").disabled = !shown.nextCursor;
  $("page-prev").disabled = prevStack.length === 0;
  $("page-first").disabled = !state.cursor;
  // Each listing's exports sit beside its JSON route: /decisions.csv, /sessions.ndjson.
  const filters = filterParams(state, shown.since);
  $("export-csv").href = withQuery(`${list.path}.csv`, filters);
  $("export-ndjson").href = withQuery(`${list.path}.ndjson`, filters);
  $("api-link").href = withQuery(list.path, listParams(shown.since, true));
}

export function buildPageSizes() {
  const size = $("page-size");
  size.replaceChildren();
  const sizes = new Set(PAGE_SIZES.filter((n) => n <= config.max_limit));
  sizes.add(config.default_limit);
  if (ui.state.limit && /^\d+$/.test(ui.state.limit)) sizes.add(Number(ui.state.limit));
  for (const n of [...sizes].sort((a, b) => a - b)) size.append(el("option", { value: String(n), text: String(n) }));
}

export function wirePager() {
  $("page-size").addEventListener("change", (event) => navigate(withFilters({ limit: event.target.value })));
  $("page-next").addEventListener("click", () => {
    const { state, shown, prevStack } = ui;
    if (!shown || !shown.nextCursor) return;
    navigate({ ...state, cursor: shown.nextCursor, since: shown.since || state.since, detail: "" }, { prev: [...prevStack, state.cursor] });
  });
  $("page-prev").addEventListener("click", () => {
    const { state, prevStack } = ui;
    const cursor = prevStack[prevStack.length - 1] || "";
    const since = cursor || state.range === "custom" ? state.since : "";
    navigate({ ...state, cursor, since, detail: "" }, { prev: prevStack.slice(0, -1) });
  });
  $("page-first").addEventListener("click", () => {
    const { state } = ui;
    navigate({ ...state, cursor: "", since: state.range === "custom" ? state.since : "", detail: "" });
  });
}
