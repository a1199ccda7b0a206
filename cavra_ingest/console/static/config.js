// The server's settings and vocabularies (GET /console/config): the only source of filter names and values.

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
