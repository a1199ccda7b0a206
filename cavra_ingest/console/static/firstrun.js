// A store with no decisions at all: say how to send the first one, instead of "Nothing matches".
import { $, ui } from "./ui.js";

function unfiltered(state) {
  return !Object.keys(state.filters).length && !state.q && !state.range && !state.cursor;
}

export function firstRunCommand() {
  const body = JSON.stringify({
    decision: "block", session_id: "sess-1", agent_id: "my-agent", repository: "acme/payments",
    action_type: "git_operation", target: "git push --force", rule_id: "git.no_force_push",
  });
  return `curl -s ${location.origin}/decisions -H 'Content-Type: application/json' -d '${body}'`;
}

// Called after each listing is drawn: `empty` says whether it had no rows.
export function showFirstRun(empty) {
  const first = empty && unfiltered(ui.state);
  $("first-run").hidden = !first;
  if (first) {
    $("empty").hidden = true;
    $("first-run-command").textContent = firstRunCommand();
  }
}

export function wireFirstRun() {
  $("first-run-copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("first-run-command").textContent);
      $("first-run-copied").textContent = "Copied.";
    } catch {
      // No clipboard (plain http, or refused): select the text so Ctrl+C copies it.
      getSelection().selectAllChildren($("first-run-command"));
      $("first-run-copied").textContent = "Selected: press Ctrl+C to copy.";
    }
  });
}
