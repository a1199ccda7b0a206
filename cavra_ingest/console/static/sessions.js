// The sessions list: what its rows and summary say. list.js fetches, pages and polls it.
import { SESSION_COLUMNS, sessionRow } from "./render.js";

export const sessionsList = {
  path: "/sessions",
  noun: "session",
  order: "latest activity first",
  columns: SESSION_COLUMNS,
  id: (item) => item.session_id,
  row: sessionRow,
};
