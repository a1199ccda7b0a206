// The filter form and the search box, drawn from the server's lists and kept in step with the URL state.
import { badge, el, ordered } from "./render.js";
import { $, allFilters, config, filtersFor, isMulti, navigate, toSearch, ui, withFilters } from "./state.js";

// --- The filter form, drawn from the server's lists (state.js's config) and kept in step with the URL state.
const VIEWS = ["decisions", "sessions"];

// The control of a filter: index.html's own, or (for a filter it does not know yet) a plain one under
// "Scope and tracing". Returns the node that is shown or hidden with the view.
function control(name) {
  const form = $("filters");
  if (isMulti(name)) {
    if (!$(`f-${name}`)) {
      const legend = el("legend", { text: name });
      form.querySelector(".more-filters").append(el("fieldset", { class: "choices" }, legend, el("div", { id: `f-${name}`, class: "choice-list" })));
    }
    return $(`f-${name}`).closest("fieldset");
  }
  if (!form.elements[name]) {
    const input = el("input", { id: `f-${name}`, name, type: "search", autocomplete: "off", spellcheck: "false" });
    form.querySelector(".more-filters").append(el("div", { class: "field" }, el("label", { for: input.id, text: name }), input));
  }
  return form.elements[name].closest(".field");
}

// What the form calls a filter ("Outcome", "Agent"), for the facet sidebar to say the same.
export function filterLabel(name) {
  const node = $(`f-${name}`);
  const legend = node && node.closest("fieldset") && node.closest("fieldset").querySelector("legend");
  const label = document.querySelector(`#filters label[for="f-${name}"]`);
  return (legend || label) ? (legend || label).textContent.trim() : name;
}

export function buildForm() {
  // Filter fields in index.html start with data-views="": a filter the server does not offer stays hidden.
  for (const name of allFilters()) {
    control(name).dataset.views = VIEWS.filter((view) => filtersFor(view).includes(name)).join(" ");
    if (!isMulti(name)) continue;
    $(`f-${name}`).replaceChildren(...ordered(name, config.enums[name]).map((value) => {
      const id = `f-${name}-${value}`;
      return el("div", { class: "choice" }, el("input", { type: "checkbox", id, name, value }), el("label", { for: id }, badge(name, value)));
    }));
  }
}

function utcInputValue(text) {
  const moment = new Date(text);
  return text && !Number.isNaN(moment.getTime()) ? moment.toISOString().slice(0, 19) : "";
}

export function fillForm() {
  const { state } = ui;
  const form = $("filters");
  for (const node of document.querySelectorAll("[data-views]")) {
    node.hidden = !node.dataset.views.split(" ").includes(state.view);
  }
  for (const name of allFilters()) {
    if (isMulti(name)) {
      for (const box of form.querySelectorAll(`input[name="${name}"]`)) box.checked = (state.filters[name] || []).includes(box.value);
      continue;
    }
    const input = form.elements[name];
    input.value = (state.filters[name] || []).join(", ");
    input.dataset.shown = input.value;
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
  const { state } = ui;
  const form = $("filters");
  const filters = {};
  for (const name of filtersFor(state.view)) {
    let values;
    if (isMulti(name)) {
      values = [...form.querySelectorAll(`input[name="${name}"]:checked`)].map((box) => box.value);
    } else {
      const input = form.elements[name];
      // Untouched fields keep their exact values; edited ones split on commas (any value matches).
      values = input.value === input.dataset.shown && state.filters[name]
        ? state.filters[name]
        : input.value.split(",").map((v) => v.trim()).filter(Boolean);
    }
    if (values.length) filters[name] = [...new Set(values)];
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
  if (toSearch(next) !== toSearch(ui.state)) navigate(next);
}

export function wireForm() {
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
}

// --- The search box: `q` in the URL, sent with the listing, facets, histogram and exports (state.filterParams).
export function fillSearch() {
  $("f-q").value = ui.state.q || "";
}

export function wireSearch() {
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    const q = $("f-q").value.trim();
    if (q !== (ui.state.q || "")) navigate(withFilters({ q }));
  });
  // The field's own clear (×) or Escape on an emptied field lifts the search.
  $("f-q").addEventListener("search", () => {
    if (!$("f-q").value && ui.state.q) navigate(withFilters({ q: "" }));
  });
}
