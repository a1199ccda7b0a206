// Times in UTC (stored, comparable across teams) or in the viewer's local time: a switch kept in localStorage.
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
