// The Activity Explorer's router: URL state in, the view's module draws it; and the first calls of a view
// with filters, made as soon as the config has answered.
import { ApiError, getJson, withQuery } from "./api.js";
import { CONFIG_URL, peek, prefetch } from "./early.js";
import { buildForm, fillForm, fillSearch, wireForm, wireSearch } from "./filters.js";
import { buildPageSizes, loadList, syncDetail, wireDetail, wireFirstRun, wirePager } from "./list.js";
import { wireClock } from "./render.js";
import { $, config, firstCalls, navigate, onRender, parseLocation, sameListing, sharedFilters, toSearch, ui } from "./state.js";
import { onPoll, retryPause, schedulePoll, showError, stopPolling, wireStatus } from "./status.js";

// The first calls of a view with filters: they need the server's filter names, so they go out as soon as the
// config early.js asked for has answered (the default view's went out with it). start() waits for this.
async function firstCallsOfFilteredView() {
  const answer = peek(CONFIG_URL);
  if (!location.search || !answer) return;
  const response = await answer;
  if (!response.ok) return; // a token to ask for, or an error: loadConfig deals with it
  // A copy: loadConfig reads the original when it asks for the config.
  Object.assign(config, await response.clone().json());
  for (const [path, params] of firstCalls(parseLocation(location.search))) prefetch(withQuery(path, params));
}

const booted = firstCallsOfFilteredView().catch(() => {});

// The session view's files are fetched when a session is first shown: the default view draws sooner without
// them (the browser loads a page's files six at a time).
let sessionView = null;
function sessionModule() {
  if (!sessionView) {
    sessionView = Promise.all([import("./session.js"), import("./sessiontools.js"), import("./evidence.js")])
      .then(([session, tools]) => {
        session.wireTimeline();
        tools.wireSessionTools();
        return session;
      })
      .catch(() => {
        sessionView = null; // tried again by the next poll or visit (a browser may keep the failure until a reload)
        showError(new ApiError(0, "The console could not load the session view. Is the server running?"), { stale: false });
        schedulePoll();
        return { loadSession() {}, openTimelineDetail() {} };
      });
  }
  return sessionView;
}

function render() {
  stopPolling();
  const { state, shown } = ui;
  document.body.dataset.view = state.view;
  const listView = state.view !== "session";
  $("list-view").hidden = !listView;
  $("session-view").hidden = listView;
  document.querySelector(".sidebar").hidden = !listView;
  $("facets").hidden = !(listView && state.view === "decisions" && shown && shown.facets);
  for (const view of ["decisions", "sessions"]) {
    const link = $(`nav-${view}`);
    const keep = Object.fromEntries(Object.entries(state.filters).filter(([name]) => sharedFilters().includes(name)));
    link.href = `/console${toSearch({ view, filters: keep, range: state.range, since: state.since, until: state.until, limit: state.limit, cursor: "", detail: "" })}`;
    if (state.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const again = sameListing(state, shown && shown.state);
  if (again) shown.state = state;
  if (listView) {
    fillForm();
    fillSearch();
    const noun = state.view === "sessions" ? "Sessions" : "Decisions";
    $("list-title").textContent = noun;
    document.title = `${noun} · Activity Explorer`;
    if (!again) return loadList();
    syncDetail();
  } else {
    document.title = `Session ${state.id} · Activity Explorer`;
    // Drawn only if this is still the view once its module is here.
    if (!again) return sessionModule().then((session) => ui.state === state && session.loadSession());
    sessionModule().then((session) => ui.state === state && session.openTimelineDetail());
  }
  schedulePoll();
}

window.addEventListener("popstate", () => {
  ui.state = parseLocation(location.search);
  ui.prevStack = (history.state && history.state.prev) || [];
  ui.detailPushed = false;
  render();
});

// Links to other console views navigate in place; a link that only opens a record adds no page of its own.
document.addEventListener("click", (event) => {
  const link = event.target.closest("a[href]");
  if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || url.pathname !== "/console" || link.hasAttribute("download")) return;
  event.preventDefault();
  const next = parseLocation(url.search);
  const onlyDetail = next.detail && sameListing(next, ui.state);
  if (onlyDetail) ui.detailPushed = true;
  navigate(next, { prev: onlyDetail ? ui.prevStack : [] });
  if (!onlyDetail) $("main").focus({ preventScroll: false });
});

// The filter lists and values are the server's: nothing is drawn until it has said what they are.
async function loadConfig() {
  for (;;) {
    try {
      return Object.assign(config, await getJson("/console/config"));
    } catch (error) {
      showError(error, { stale: false });
      await retryPause();
    }
  }
}

async function start() {
  ui.state = parseLocation(location.search);
  ui.prevStack = (history.state && history.state.prev) || [];
  await booted;
  await loadConfig();
  ui.state = parseLocation(location.search); // again, now that the filter names are known
  $("store-kind").textContent = config.activity_mode;
  buildForm();
  buildPageSizes();
  onRender(render);
  onPoll(() => (ui.state.view === "session" ? sessionModule().then((session) => session.loadSession({ poll: true })) : loadList({ poll: true })));
  wireForm();
  wirePager();
  wireDetail();
  wireStatus();
  wireSearch();
  wireFirstRun();
  wireClock(() => {
    ui.shown = null; // draw again, every time in the chosen clock
    render();
  });
  history.replaceState({ prev: ui.prevStack }, "", location.href);
  render();
}

start();
