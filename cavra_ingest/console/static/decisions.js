// The decisions list: its rows, export links and facet sidebar. list.js fetches, pages and polls it.
import { getJson, withQuery } from "./api.js";
import { config, isMulti } from "./config.js";
import { filterLabel } from "./filters.js";
import { DECISION_COLUMNS, badge, decisionRow, el, labelOf } from "./render.js";
import { filterParams, toSearch } from "./state.js";
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
  loaded: loadFacets,
};

// GET /decisions/facets answers {total, top, facets: {field: [{value, count}]}}, most frequent first.
async function loadFacets(gen) {
  let body;
  try {
    body = await getJson("/decisions/facets", filterParams(ui.state, ui.shown.since));
  } catch {
    if (gen === ui.generation) $("facets").hidden = true; // the table and its error banner say what went wrong
    return;
  }
  if (gen !== ui.generation) return;
  ui.shown.facets = body.facets;
  renderFacets(body.facets);
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
    "aria-label": `${filterLabel(dim)}: ${none ? "(none)" : labelOf(dim, value)}, ${count} decisions${active ? ", filtering by it" : ""}`,
    disabled: none,
    onclick: () => toggleFacet(dim, value),
  }, label, el("span", { class: "facet-count", text: count.toLocaleString("en") }));
  button.style.setProperty("--share", `${Math.round((count / top) * 100)}%`);
  return el("li", {}, button);
}

function renderFacets(facets) {
  const groups = config.facet_fields.filter((dim) => Array.isArray(facets[dim])).map((dim) => {
    const entries = facets[dim];
    const top = Math.max(1, ...entries.map((e) => e.count));
    const headingId = `facet-${dim}`;
    const list = el("ul", { class: "facet-list", "aria-labelledby": headingId }, entries.slice(0, 8).map((entry) => facetButton(dim, entry, top)));
    const body = entries.length ? list : el("p", { class: "muted", text: "No values." });
    return el("section", { class: "facet-group", "data-dim": dim }, el("h3", { id: headingId, text: filterLabel(dim) }), body);
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
