// The decisions list: its rows, export links and facet sidebar. list.js fetches, pages and polls it.
import { getJson, settled, withQuery } from "./api.js";
import { config, isMulti } from "./config.js";
import { filterLabel } from "./filters.js";
import { DECISION_COLUMNS, badge, decisionRow, el, grouped } from "./render.js";
import { facetParams, toSearch } from "./state.js";
import { $, navigate, ui, withFilters } from "./ui.js";

let refocus = null; // the facet button to focus again once the sidebar is redrawn

export const decisionsList = {
  path: "/decisions",
  noun: "decision",
  order: "newest first",
  columns: DECISION_COLUMNS,
  id: (item) => item.decision_id,
  row: (item) => decisionRow(item, `/console${toSearch({ ...ui.state, detail: item.decision_id })}`),
  links(params) {
    $("export-csv").href = withQuery("/decisions.csv", params);
    $("export-ndjson").href = withQuery("/decisions.ndjson", params);
  },
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
