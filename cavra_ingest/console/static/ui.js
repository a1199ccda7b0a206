// What the view modules share: the state from the URL, what the page shows, and navigation.
import { toSearch } from "./state.js";

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
