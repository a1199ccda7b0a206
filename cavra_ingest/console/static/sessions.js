// The sessions list: what its rows and summary say. list.js fetches, pages and polls it.
import { withQuery } from "./api.js";
import { SESSION_COLUMNS, sessionRow } from "./render.js";
import { $ } from "./ui.js";

export const sessionsList = {
  path: "/sessions",
  noun: "session",
  order: "latest activity first",
  columns: SESSION_COLUMNS,
  id: (item) => item.session_id,
  row: sessionRow,
  links(params) {
    $("export-csv").href = withQuery("/sessions.csv", params);
    $("export-ndjson").href = withQuery("/sessions.ndjson", params);
  },
};
