// The record dialog of the decisions list: open while the URL names a decision (`detail=`).
import { getJson } from "./api.js";
import { consoleHref, el, recordView } from "./render.js";
import { $, navigate, ui } from "./ui.js";

export async function syncDetail() {
  const dialog = $("detail");
  if (!ui.state.detail || ui.state.view !== "decisions") {
    if (dialog.open) dialog.close();
    return;
  }
  const id = ui.state.detail;
  $("detail-title").textContent = `Decision ${id}`;
  try {
    const record = await getJson(`/decisions/${encodeURIComponent(id)}`);
    if (ui.state.detail !== id) return;
    $("detail-body").replaceChildren(
      el("p", {}, el("a", { href: consoleHref({ view: "session", id: record.session_id, detail: record.decision_id }), text: "Show it in its session's timeline" })),
      recordView(record),
    );
  } catch (error) {
    if (ui.state.detail !== id) return;
    $("detail-body").replaceChildren(el("p", { class: "error-detail", role: "alert", text: error.detail || String(error) }));
  }
  if (!dialog.open) dialog.showModal();
}

export function wireDetail() {
  const dialog = $("detail");
  $("detail-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close(); // a click on the backdrop
  });
  dialog.addEventListener("close", () => {
    if (!ui.state.detail) return;
    if (ui.detailPushed) {
      ui.detailPushed = false;
      history.back();
    } else {
      navigate({ ...ui.state, detail: "" }, { prev: ui.prevStack, replace: true });
    }
  });
}
