// The session page's tools: its duration, a filter to the decisions that were not plain allows, exports.
import { withQuery } from "./api.js";
import { $ } from "./state.js";

function duration(start, end) {
  const ms = new Date(end) - new Date(start);
  if (!Number.isFinite(ms) || ms < 0) return "—";
  const s = Math.round(ms / 1000);
  const parts = [[Math.floor(s / 86400), "d"], [Math.floor((s % 86400) / 3600), "h"], [Math.floor((s % 3600) / 60), "m"], [s % 60, "s"]];
  const shown = parts.filter(([n]) => n > 0).slice(0, 2).map(([n, unit]) => `${n}${unit}`);
  return shown.length ? shown.join(" ") : "0s";
}

export function showSessionTools(session) {
  $("session-duration").textContent = `Duration ${duration(session.started_at, session.updated_at)}`;
  const params = new URLSearchParams({ session_id: session.session_id });
  $("session-export-csv").href = withQuery("/decisions.csv", params);
  $("session-export-ndjson").href = withQuery("/decisions.ndjson", params);
  flag();
}

function flag() {
  $("timeline").classList.toggle("only-flagged", $("only-flagged").checked);
}

export function wireSessionTools() {
  $("only-flagged").addEventListener("change", flag);
}
