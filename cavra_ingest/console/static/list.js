// A listing (decisions or sessions): one page of rows, its summary and pager, kept current while live.
import { ApiError, getJson, withQuery } from "./api.js";
import { config } from "./config.js";
import { decisionsList } from "./decisions.js";
import { showFirstRun } from "./firstrun.js";
import { syncDetail } from "./dialog.js";
import { el, grouped, headRow } from "./render.js";
import { sessionsList } from "./sessions.js";
import { filterParams, listParams as paramsOf, resolveRange, sameListing, toSearch } from "./state.js";
import { clearError, markChecked, schedulePoll, showError } from "./status.js";
import { $, navigate, ui, withFilters } from "./ui.js";

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
  if (list.links) list.links(filterParams(state, shown.since));
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
