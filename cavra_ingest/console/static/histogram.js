// The chart above the decisions table: matches per time bucket as stacked outcome bars (plain SVG: a few
// dozen rects need no library, and nothing here needs a style attribute the CSP would refuse).
// Dragging across it, or picking bars with the keyboard, zooms the whole view to that window (URL state).
import { getJson, settled } from "./api.js";
import { clock, clockText as inClock, grouped, labelOf } from "./render.js";
import { $, config, histogramParams, navigate, ui, withFilters } from "./state.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 1000;
const HEIGHT = 120;
let shown = null; // { buckets, max } of the chart on screen
let cursor = -1; // the bar the keyboard is on
let anchor = -1; // where a drag or Shift+arrow selection started

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

function clockText(iso) {
  return `${inClock(new Date(iso)).replace(/:00$/, "")}${clock.local ? "" : " UTC"}`;
}

function describe(bucket) {
  const parts = Object.entries(bucket.counts).map(([outcome, n]) => `${grouped(n)} ${labelOf("decision", outcome)}`);
  return `${clockText(bucket.start)} to ${clockText(bucket.end)}: ${bucket.total ? parts.join(", ") : "none"}`;
}

export async function loadHistogram(gen) {
  const box = $("histogram");
  if (ui.state.view !== "decisions") return;
  const { body, error } = await settled(getJson("/decisions/histogram", histogramParams(ui.state, ui.shown.since)));
  if (error) {
    if (gen === ui.generation) box.hidden = true; // the table's own error banner says what went wrong
    return;
  }
  if (gen !== ui.generation) return;
  draw(body);
}

function draw(body) {
  const box = $("histogram");
  const buckets = body.buckets;
  box.hidden = buckets.length === 0;
  if (!buckets.length) return;
  const max = Math.max(1, ...buckets.map((b) => b.total));
  shown = { buckets, max };
  if (cursor >= buckets.length) cursor = buckets.length - 1;
  const chart = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: "none", class: "histogram-chart", "aria-hidden": "true",
  });
  const step = WIDTH / buckets.length;
  const outcomes = config.enums.decision || [];
  buckets.forEach((bucket, i) => {
    let y = HEIGHT;
    const group = svg("g", { "data-index": i });
    const order = [...outcomes, ...Object.keys(bucket.counts).filter((o) => !outcomes.includes(o))];
    for (const outcome of order) {
      const n = bucket.counts[outcome] || 0;
      if (!n) continue;
      const h = Math.max((n / max) * (HEIGHT - 4), 1);
      y -= h;
      group.append(svg("rect", { x: i * step + step * 0.08, y, width: step * 0.84, height: h, class: `hb hb-${outcome}` }));
    }
    // The whole column takes the pointer, so empty buckets can start or end a drag too.
    const hit = svg("rect", { x: i * step, y: 0, width: step, height: HEIGHT, class: "hb-hit" });
    const title = svg("title");
    title.textContent = describe(bucket);
    hit.append(title);
    group.append(hit);
    chart.append(group);
  });
  chart.append(svg("rect", { class: "hb-selection", x: 0, y: 0, width: 0, height: HEIGHT }));
  const legend = outcomes.filter((o) => buckets.some((b) => b.counts[o])).map((o) => {
    const item = document.createElement("span");
    item.className = `hb-key hb-key-${o}`;
    item.textContent = labelOf("decision", o);
    return item;
  });
  $("histogram-plot").replaceChildren(chart);
  $("histogram-legend").replaceChildren(...legend);
  $("histogram-start").textContent = clockText(buckets[0].start);
  $("histogram-end").textContent = clockText(buckets[buckets.length - 1].end);
  $("histogram-caption").textContent = `${grouped(body.total)} decisions, ${body.interval} per bar`;
  mark();
}

function indexAt(event) {
  const plot = $("histogram-plot").getBoundingClientRect();
  const share = (event.clientX - plot.left) / Math.max(plot.width, 1);
  return Math.min(shown.buckets.length - 1, Math.max(0, Math.floor(share * shown.buckets.length)));
}

function mark() {
  const selection = document.querySelector("#histogram .hb-selection");
  if (!selection || !shown) return;
  const step = WIDTH / shown.buckets.length;
  const from = anchor >= 0 && cursor >= 0 ? Math.min(anchor, cursor) : cursor;
  const to = anchor >= 0 && cursor >= 0 ? Math.max(anchor, cursor) : cursor;
  selection.setAttribute("x", String(from >= 0 ? from * step : 0));
  selection.setAttribute("width", String(from >= 0 ? (to - from + 1) * step : 0));
  $("histogram-focus").textContent = cursor >= 0 ? (anchor >= 0 && anchor !== cursor
    ? `${clockText(shown.buckets[Math.min(anchor, cursor)].start)} to ${clockText(shown.buckets[Math.max(anchor, cursor)].end)}`
    : describe(shown.buckets[cursor])) : "";
}

function zoom(from, to) {
  const a = shown.buckets[Math.min(from, to)];
  const b = shown.buckets[Math.max(from, to)];
  anchor = -1;
  cursor = -1;
  navigate(withFilters({ range: "custom", since: a.start, until: b.end }));
}

export function wireHistogram() {
  const plot = $("histogram-plot");
  let dragging = false;
  plot.addEventListener("pointerdown", (event) => {
    if (!shown || event.button !== 0) return;
    dragging = true;
    anchor = cursor = indexAt(event);
    plot.setPointerCapture(event.pointerId);
    mark();
  });
  plot.addEventListener("pointermove", (event) => {
    if (!dragging) return;
    cursor = indexAt(event);
    mark();
  });
  plot.addEventListener("pointerup", (event) => {
    if (!dragging) return;
    dragging = false;
    zoom(anchor, indexAt(event));
  });
  plot.addEventListener("keydown", (event) => {
    if (!shown) return;
    const last = shown.buckets.length - 1;
    const moves = { ArrowLeft: -1, ArrowRight: 1, Home: -Infinity, End: Infinity };
    if (event.key in moves) {
      event.preventDefault();
      if (event.shiftKey && anchor < 0) anchor = Math.max(cursor, 0);
      if (!event.shiftKey) anchor = -1;
      cursor = Math.min(last, Math.max(0, (cursor < 0 ? (moves[event.key] > 0 ? -1 : last + 1) : cursor) + moves[event.key]));
      mark();
    } else if (event.key === "Enter" && cursor >= 0) {
      event.preventDefault();
      zoom(anchor >= 0 ? anchor : cursor, cursor);
    } else if (event.key === "Escape") {
      anchor = -1;
      cursor = -1;
      mark();
    }
  });
  plot.addEventListener("blur", () => {
    anchor = -1;
    cursor = -1;
    mark();
  });
}
