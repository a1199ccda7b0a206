// The search box: `q` in the URL, sent with the listing, facets, histogram and exports (state.filterParams).
import { $, navigate, ui, withFilters } from "./ui.js";

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
