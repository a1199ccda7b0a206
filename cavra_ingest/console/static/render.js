// DOM builders and the clock they show times in. Data only ever goes in through textContent and attributes,
// never as markup.

// --- Times in UTC (stored, comparable across teams) or in the viewer's local time: a switch kept in localStorage.
const KEY = "cavra.clock";

export const clock = { local: readLocal() };

function readLocal() {
  try {
    return localStorage.getItem(KEY) === "local";
  } catch {
    return false;
  }
}

function pad(n) {
  return String(n).padStart(2, "0");
}

// A moment as the switch says: "2026-03-01 10:05:00" in UTC, or the same shape in local time.
export function clockText(moment) {
  if (!clock.local) return moment.toISOString().slice(0, 19).replace("T", " ");
  return `${moment.getFullYear()}-${pad(moment.getMonth() + 1)}-${pad(moment.getDate())} ${pad(moment.getHours())}:${pad(moment.getMinutes())}:${pad(moment.getSeconds())}`;
}

export function clockName() {
  return clock.local ? "local time" : "UTC";
}

export function wireClock(rerender) {
  const select = document.getElementById("clock-select");
  select.value = clock.local ? "local" : "utc";
  select.addEventListener("change", () => {
    clock.local = select.value === "local";
    try {
      localStorage.setItem(KEY, select.value);
    } catch {
      // private mode: the choice lasts for this page only
    }
    rerender();
  });
}

// --- DOM builders.
// How enum values read: label and icon, most severe first. Which values exist is the server's to say
// (config.enums); a value missing here still shows, as itself.
const OUTCOMES = {
  block: { label: "Block", icon: "✕" },
  require_approval: { label: "Needs approval", icon: "⚑" },
  warn: { label: "Warn", icon: "⚠" },
  allow_with_attestation: { label: "Allow + attestation", icon: "☑" },
  audit_only: { label: "Audit only", icon: "◎" },
  allow: { label: "Allow", icon: "✓" },
};
const SEVERITIES = {
  critical: { label: "Critical", icon: "▲▲" },
  high: { label: "High", icon: "▲" },
  medium: { label: "Medium", icon: "■" },
  low: { label: "Low", icon: "▽" },
};
const STATES = {
  active: { label: "Active", icon: "●" },
  completed: { label: "Completed", icon: "✓" },
  failed: { label: "Failed", icon: "✕" },
  archived: { label: "Archived", icon: "▢" },
};
const KINDS = { decision: OUTCOMES, severity: SEVERITIES, state: STATES };

// The values in reading order: the known ones as above, then any others in the server's order.
export function ordered(kind, values) {
  const known = Object.keys(KINDS[kind] || {});
  const rank = (value) => (known.includes(value) ? known.indexOf(value) : known.length);
  return [...values].sort((a, b) => rank(a) - rank(b));
}

// Bidi overrides and isolates reorder what follows them ("rm -rf /\u202e;gnp.exe" shows as "rm -rf /exe.png;"),
// and zero-width characters hide differences between ids: both are shown as visible code points.
const INVISIBLE = /[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/g;

export function visibleText(value) {
  const text = String(value);
  return text.replace(INVISIBLE, (ch) => `⟦U+${ch.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}⟧`);
}

// An id that looks like another but differs by invisible characters or Unicode normalization is marked.
export function isDeceptive(value) {
  const text = String(value);
  INVISIBLE.lastIndex = 0;
  return INVISIBLE.test(text) || text !== text.normalize("NFC");
}

function setText(node, value) {
  node.textContent = visibleText(value);
  if (isDeceptive(value)) {
    node.classList.add("deceptive");
    node.dataset.deceptive = "true";
    if (!node.title) node.title = "Contains invisible, direction-changing or non-normalized characters (shown as ⟦U+…⟧)";
  }
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") setText(node, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : key === "title" ? visibleText(value) : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : visibleText(child));
  }
  return node;
}

// Colour is a hint only: every badge also carries an icon and its label in text.
export function badge(kind, value) {
  const known = (KINDS[kind] || {})[value];
  const label = known ? known.label : String(value ?? "—");
  return el(
    "span",
    { class: `badge ${kind}-${String(value).replace(/[^a-z_]/g, "")}`, "data-value": value },
    el("span", { class: "badge-icon", "aria-hidden": "true", text: known ? known.icon : "•" }),
    label,
  );
}

export function labelOf(kind, value) {
  const known = (KINDS[kind] || {})[value];
  return known ? known.label : String(value);
}


const STORED = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})/;

export function timeText(iso) {
  const match = STORED.exec(iso || "");
  if (!match) return iso || "—";
  const moment = new Date(iso);
  if (clock.local && !Number.isNaN(moment.getTime())) return clockText(moment);
  // Stored times are UTC (SPEC §1); anything else is converted so the column stays comparable.
  if (!Number.isNaN(moment.getTime()) && !/(\+00:00|Z)$/.test(iso)) {
    return moment.toISOString().slice(0, 19).replace("T", " ");
  }
  return `${match[1]} ${match[2]}`;
}

// The viewer's local time of a moment, as a tooltip made when the pointer or focus first reaches it: a page's
// first locale-aware format costs 15-30 ms (the browser loads its locale and time-zone data), which drawing the
// first page would otherwise wait for.
export function timeEl(iso) {
  return el("time", { datetime: iso, text: timeText(iso) });
}

function localTitle(event) {
  const time = event.target instanceof Element ? event.target.closest("time[datetime]:not([title])") : null;
  if (!time) return;
  const moment = new Date(time.dateTime);
  if (!Number.isNaN(moment.getTime())) time.title = visibleText(`Your local time: ${moment.toLocaleString()}`);
}
document.addEventListener("pointerover", localTitle);
document.addEventListener("focusin", localTitle);

// Digits grouped as toLocaleString("en") groups them, without a formatter (see timeEl): counts are integers.
export function grouped(n) {
  return Number.isInteger(n) ? String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ",") : n.toLocaleString("en");
}

export function clip(text, cls = "clip") {
  const value = text === null || text === undefined || text === "" ? "—" : String(text);
  return el("span", { class: cls, title: visibleText(value), text: value });
}

export function consoleHref(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value) q.set(key, value);
  return `/console?${q}`;
}

export function sessionLink(sessionId, detail = "") {
  return el("a", { href: consoleHref({ view: "session", id: sessionId, detail }), class: "clip mono", title: sessionId, text: sessionId });
}

const RECORD_FIELDS = [
  ["decision_id", "Decision id"], ["timestamp", "Time"], ["decision", "Outcome"], ["severity", "Severity"],
  ["action_type", "Action type"], ["target", "Target"], ["requested_operation", "Requested operation"],
  ["reason", "Reason"], ["approver_group", "Approver group"], ["evidence_refs", "Evidence refs"],
  ["rule_id", "Rule"], ["policy_pack", "Policy pack"], ["policy_id", "Policy id"],
  ["agent_id", "Agent"], ["actor", "Actor"], ["repository", "Repository"], ["session_id", "Session"],
  ["correlation_id", "Correlation id"], ["tenant_id", "Tenant"], ["workspace_id", "Workspace"],
  ["declared_intent", "Declared intent"], ["intent", "Intent"], ["requested_intent", "Requested intent"],
  ["user_intent", "User intent"], ["task_intent", "Task intent"], ["business_intent", "Business intent"],
  ["tool", "Tool"], ["tool_name", "Tool name"], ["server", "Server"], ["mcp_server", "MCP server"],
  ["tool_vendor", "Tool vendor"], ["tool_capability", "Tool capability"], ["operation", "Operation"],
  ["context", "Context"], ["metadata", "Metadata"], ["labels", "Labels"],
];
const ALWAYS = new Set(["reason", "evidence_refs", "context"]);

function safeUrl(text) {
  try {
    const url = new URL(text);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}

function fieldValue(name, value, { linkSession }) {
  if (name === "decision") return badge("decision", value);
  if (name === "severity") return badge("severity", value);
  if (name === "timestamp") return timeEl(value);
  if (name === "session_id" && linkSession) return sessionLink(value);
  if (name === "evidence_refs") {
    if (!value || value.length === 0) return el("span", { class: "muted", text: "none" });
    return el("ul", { class: "refs" }, value.map((ref) => {
      const href = safeUrl(ref);
      return el("li", {}, href ? el("a", { href, rel: "noopener noreferrer", target: "_blank", text: ref }) : el("span", { class: "mono", text: ref }));
    }));
  }
  if (value === null || value === undefined || value === "") return el("span", { class: "muted", text: name === "reason" ? "no reason given" : "none" });
  if (typeof value === "object") return el("pre", { class: "json", text: JSON.stringify(value, null, 2) });
  return el("span", { class: name.endsWith("_id") ? "mono wrap" : "wrap", text: String(value) });
}

// The full record: every field it has, the ones auditors ask for first even when empty.
export function recordView(record, { linkSession = true } = {}) {
  const dl = el("dl", { class: "record" });
  for (const [name, label] of RECORD_FIELDS) {
    if (!(name in record) && !ALWAYS.has(name)) continue;
    dl.append(el("div", { class: "record-row", "data-field": name }, el("dt", { text: label }), el("dd", {}, fieldValue(name, record[name], { linkSession }))));
  }
  const known = new Set(RECORD_FIELDS.map(([name]) => name).concat(["schema_version"]));
  for (const [name, value] of Object.entries(record)) {
    if (known.has(name)) continue;
    dl.append(el("div", { class: "record-row", "data-field": name }, el("dt", { text: name }), el("dd", {}, fieldValue(name, value, { linkSession }))));
  }
  const raw = el("details", { class: "raw" }, el("summary", { text: "Raw JSON" }), el("pre", { class: "json", text: JSON.stringify(record, null, 2) }));
  return el("div", { class: "record-view" }, dl, raw);
}

export const DECISION_COLUMNS = ["Time", "Outcome", "Severity", "Action", "Target", "Rule", "Agent", "Repository", "Session"];
export const SESSION_COLUMNS = ["Session", "Repository", "Agent", "Policy pack", "State", "Decisions", "Blocked", "Needs approval", "Started", "Updated"];

export function headRow(columns) {
  return el("tr", {}, columns.map((name) => el("th", { scope: "col", class: `col-${name.toLowerCase().replace(/[^a-z]+/g, "-")}`, text: name })));
}

export function decisionRow(item, detailHref) {
  return el(
    "tr",
    { "data-id": item.decision_id },
    el("td", { class: "col-time" }, el("a", { href: detailHref, class: "open-detail", title: `Open decision ${item.decision_id}` }, timeEl(item.timestamp))),
    el("td", {}, badge("decision", item.decision)),
    el("td", {}, badge("severity", item.severity)),
    el("td", {}, clip(item.action_type, "clip mono")),
    el("td", { class: "col-target" }, clip(item.target, "clip mono")),
    el("td", {}, clip(item.rule_id, "clip mono")),
    el("td", {}, clip(item.agent_id)),
    el("td", {}, clip(item.repository)),
    el("td", {}, sessionLink(item.session_id, item.decision_id)),
  );
}

export function sessionRow(item) {
  const count = (n, cls) => el("td", { class: `num ${n > 0 ? cls : ""}`, text: String(n ?? 0) });
  return el(
    "tr",
    { "data-id": item.session_id },
    el("td", {}, sessionLink(item.session_id)),
    el("td", {}, clip(item.repository)),
    el("td", {}, clip(item.agent_id)),
    el("td", { class: "col-policy" }, clip(item.policy_pack)),
    el("td", {}, badge("state", item.state)),
    count(item.decision_count, ""),
    count(item.blocked_count, "has-blocked"),
    count(item.approval_required_count, "has-approval"),
    el("td", { class: "col-time" }, timeEl(item.started_at)),
    el("td", { class: "col-time" }, timeEl(item.updated_at)),
  );
}

export function timelineItem(item, open) {
  const summary = el(
    "summary",
    {},
    el("span", { class: "tl-time" }, timeEl(item.timestamp)),
    badge("decision", item.decision),
    badge("severity", item.severity),
    el("span", { class: "tl-action mono", text: item.action_type }),
    el("span", { class: "tl-target mono", title: item.target, text: item.target || "—" }),
    el("span", { class: "tl-rule muted mono", text: item.rule_id }),
  );
  const details = el("details", { open }, summary);
  // Long sessions: the full record is built on first opening, not for every row up front.
  const fill = () => {
    if (details.open && details.childElementCount === 1) details.append(recordView(item, { linkSession: false }));
  };
  details.addEventListener("toggle", fill);
  fill();
  return el("li", { id: `d-${item.decision_id}`, "data-id": item.decision_id, class: `tl-item outcome-${item.decision}` }, details);
}

const SUMMARY_FIELDS = [
  ["state", "State"], ["repository", "Repository"], ["agent_id", "Agent"], ["actor", "Actor"],
  ["policy_pack", "Policy pack"], ["started_at", "Started"], ["updated_at", "Updated"],
  ["decision_count", "Decisions"], ["blocked_count", "Blocked"], ["approval_required_count", "Needs approval"],
  ["tenant_id", "Tenant"], ["workspace_id", "Workspace"], ["evidence_refs", "Evidence refs"], ["metadata", "Metadata"],
];

export function sessionSummary(session) {
  const rows = [];
  for (const [name, label] of SUMMARY_FIELDS) {
    if (!(name in session) || session[name] === null) continue;
    let value;
    if (name === "state") value = badge("state", session.state);
    else if (name.endsWith("_at")) value = timeEl(session[name]);
    else value = fieldValue(name, session[name], { linkSession: false });
    rows.push(el("div", { class: `summary-item field-${name}` }, el("dt", { text: label }), el("dd", {}, value)));
  }
  // Every state change, as recorded by the server (who, when, from, to).
  if (Array.isArray(session.state_history) && session.state_history.length) {
    const changes = el("ol", { class: "state-history" }, session.state_history.map((change) =>
      el("li", {}, timeEl(change.at), " ", badge("state", change.from), " → ", badge("state", change.to), " by ", el("span", { class: "mono", text: change.by }))));
    rows.push(el("div", { class: "summary-item field-state_history" }, el("dt", { text: "State changes" }), el("dd", {}, changes)));
  }
  return rows;
}
