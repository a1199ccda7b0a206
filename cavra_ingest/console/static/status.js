// The error banner, the live/paused status and the polling timer that keeps the view current.
import { ApiError } from "./api.js";
import { $, render, ui } from "./state.js";

const POLL_MS = 3000;
let pollTimer = null;
let pollHook = () => {};

// What a poll does (reload the list or the session quietly); set once by app.js.
export function onPoll(hook) {
  pollHook = hook;
}

export function showError(error, { stale }) {
  if (!(error instanceof ApiError)) error = new ApiError(0, String(error && error.message ? error.message : error));
  let title;
  if (error.status === 0) title = "Cannot reach the API";
  else if (error.status === 400) title = "The API rejected this view's filters";
  else if (error.status === 404) title = "Not found";
  else if (error.status >= 500) title = `The API failed (${error.status})`;
  else title = `The API answered ${error.status}`;
  let detail = error.detail + (error.parameter ? ` (parameter: ${error.parameter})` : "");
  if (stale && ui.shown && ui.shown.checkedAt) detail += ` Showing what was loaded at ${ui.shown.checkedAt}.`;
  if (ui.live && error.status !== 400 && error.status !== 404) detail += " Retrying every few seconds.";
  $("error-title").textContent = title;
  $("error-detail").textContent = detail;
  $("error-clear").hidden = error.status !== 400 || ui.state.view === "session";
  $("error").hidden = false;
  $("error").dataset.status = String(error.status);
  setLive(`${title}.`);
  if (!stale) {
    ui.shown = null;
    $("results-wrap").hidden = true;
    $("empty").hidden = true;
    $("pager").hidden = true;
    $("facets").hidden = true;
    $("summary").textContent = "";
    $("timeline").replaceChildren();
    $("session-summary").replaceChildren();
  }
}

export function clearError() {
  $("error").hidden = true;
}

export function markChecked() {
  const now = new Date().toISOString().slice(11, 19);
  if (ui.shown) ui.shown.checkedAt = `${now} UTC`;
  setLive(ui.live ? `Live · checked ${now} UTC` : `Paused · loaded ${now} UTC`);
}

function setLive(text) {
  $("live-status").textContent = text;
}

function pollable() {
  // Later pages stay put; new activity only ever lands on the first page of a listing.
  return ui.live && (ui.state.view === "session" || !ui.state.cursor);
}

export function stopPolling() {
  clearTimeout(pollTimer);
}

export function schedulePoll() {
  clearTimeout(pollTimer);
  if (!pollable()) return;
  pollTimer = setTimeout(() => {
    if (document.hidden) return schedulePoll(); // a background tab waits; it catches up when shown
    return pollHook();
  }, POLL_MS);
}

// Resolves after one poll interval, or at once when the user asks to try again.
export function retryPause() {
  return new Promise((resolve) => {
    const button = $("error-retry");
    const done = () => {
      clearTimeout(timer);
      button.removeEventListener("click", done);
      resolve();
    };
    const timer = setTimeout(done, POLL_MS);
    button.addEventListener("click", done);
  });
}

export function wireStatus() {
  $("error-retry").addEventListener("click", () => {
    ui.shown = null;
    render();
  });
  const button = $("live-toggle");
  button.addEventListener("click", () => {
    ui.live = !ui.live;
    button.setAttribute("aria-pressed", String(ui.live));
    $("live-label").textContent = ui.live ? "Live" : "Paused";
    button.title = ui.live ? "Pause live updates" : "Resume live updates";
    if (ui.live) {
      setLive("Live · checking…");
      if (ui.shown) pollHook();
      else render();
    } else {
      clearTimeout(pollTimer);
      setLive(ui.state.view !== "session" && ui.state.cursor ? "Paused" : "Paused · new activity is not loaded");
    }
  });
  button.title = "Pause live updates";
}
