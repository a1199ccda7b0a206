// The session page: its summary and its timeline of decisions, oldest first, kept current while live.
import { ApiError, getJson } from "./api.js";
import { showEvidence } from "./evidence.js";
import { badge, consoleHref, el, sessionSummary, timelineItem } from "./render.js";
import { showSessionTools } from "./sessiontools.js";
import { $, ui } from "./state.js";
import { clearError, markChecked, schedulePoll, showError } from "./status.js";

export async function loadSession({ poll = false } = {}) {
  const gen = poll ? ui.generation : ++ui.generation;
  const id = ui.state.id;
  if (!id) {
    showError(new ApiError(400, "No session id in the address."), { stale: false });
    return;
  }
  try {
    const { shown } = ui;
    if (poll && shown && shown.session) {
      const summary = await getJson(`/sessions/${encodeURIComponent(id)}`);
      if (gen !== ui.generation) return;
      if (summary.updated_at === shown.session.updated_at && summary.decision_count === shown.session.decision_count && summary.state === shown.session.state) {
        markChecked();
        clearError();
        return schedulePoll();
      }
    }
    const body = await getJson(`/sessions/${encodeURIComponent(id)}/decisions`);
    if (gen !== ui.generation) return;
    const before = poll && ui.shown && ui.shown.items ? new Set(ui.shown.items.map((item) => item.decision_id)) : null;
    ui.shown = { state: ui.state, session: body.session, items: body.items, nextCursor: body.next_cursor || "" };
    clearError();
    showSession(before);
    markChecked();
    if (!poll) openTimelineDetail();
  } catch (error) {
    if (gen !== ui.generation) return;
    showError(error, { stale: poll && ui.shown !== null });
    if (error instanceof ApiError && (error.status === 400 || error.status === 404)) return; // retrying cannot help
  }
  schedulePoll();
}

function showSession(before) {
  const { session, items, nextCursor } = ui.shown;
  $("session-title").replaceChildren("Session ", el("span", { class: "mono", text: session.session_id }), " ", badge("state", session.state));
  $("session-summary").replaceChildren(...sessionSummary(session));
  showSessionTools(session);
  $("session-decisions-link").href = consoleHref({ view: "decisions", session_id: session.session_id });
  $("session-api-link").href = `/sessions/${encodeURIComponent(session.session_id)}/decisions`;
  const nodes = items.map((item) => {
    const node = timelineItem(item, item.decision_id === ui.state.detail);
    if (before && !before.has(item.decision_id)) node.classList.add("fresh");
    return node;
  });
  $("timeline").replaceChildren(...nodes);
  $("timeline-empty").hidden = items.length !== 0;
  $("timeline-more").hidden = !nextCursor;
  showEvidence(session.session_id, items, $("session-evidence-link"), $("session-evidence"));
}

export function openTimelineDetail() {
  if (!ui.state.detail) return;
  const node = document.getElementById(`d-${ui.state.detail}`);
  if (!node) return;
  const details = node.querySelector("details");
  details.open = true;
  node.scrollIntoView({ block: "center" });
  details.querySelector("summary").focus({ preventScroll: true });
}

async function loadMoreTimeline() {
  const gen = ui.generation;
  const params = new URLSearchParams({ cursor: ui.shown.nextCursor });
  try {
    const body = await getJson(`/sessions/${encodeURIComponent(ui.state.id)}/decisions`, params);
    if (gen !== ui.generation) return;
    ui.shown.items = ui.shown.items.concat(body.items);
    ui.shown.nextCursor = body.next_cursor || "";
    $("timeline").append(...body.items.map((item) => timelineItem(item, false)));
    $("timeline-more").hidden = !ui.shown.nextCursor;
  } catch (error) {
    if (gen === ui.generation) showError(error, { stale: true });
  }
}

export function wireTimeline() {
  $("timeline-more").addEventListener("click", loadMoreTimeline);
}
