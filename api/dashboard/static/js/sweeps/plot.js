// A sweep's parameter plots: one small inline SVG per parameter, its values across (linear, log
// where data.js says so, or one slot per value for strings and booleans) and the
// objective up; the best trial in its own colour. Not scatter.js: that draws a log-scale cost
// against an accuracy, where a parameter may be 0, negative or a word and the objective a loss.

const NS = "http://www.w3.org/2000/svg";
const SIZE = { w: 320, h: 220 };
const PAD = { left: 56, right: 14, top: 26, bottom: 40 };
const INNER = { w: SIZE.w - PAD.left - PAD.right, h: SIZE.h - PAD.top - PAD.bottom };

function node(tag, attrs, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

// A few round ticks over [lo, hi].
function linearTicks(lo, hi, count = 4) {
  const raw = (hi - lo) / count;
  const step = 10 ** Math.floor(Math.log10(raw));
  const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => s >= raw) || raw;
  const out = [];
  for (let t = Math.ceil(lo / nice) * nice; t <= hi + nice * 1e-9; t += nice)
    out.push(Number(t.toPrecision(12)));
  return out;
}

const short = (x) => (typeof x === "number" ? String(Number(x.toPrecision(3))) : String(x));

// The x axis of one parameter: {at(value) in [0, 1], ticks: [[value, label]]}.
function xAxis(points, kind) {
  if (kind === "category") {
    const values = [...new Set(points.map((p) => JSON.stringify(p.x)))].sort();
    const at = (x) => (values.indexOf(JSON.stringify(x)) + 0.5) / values.length;
    return { at, ticks: values.map((v) => [JSON.parse(v), short(JSON.parse(v))]) };
  }
  const f = kind === "log" ? Math.log10 : (x) => x;
  let lo = Math.min(...points.map((p) => f(p.x)));
  let hi = Math.max(...points.map((p) => f(p.x)));
  const margin = hi > lo ? (hi - lo) * 0.08 : kind === "log" ? 0.5 : Math.abs(hi) * 0.5 || 0.5;
  [lo, hi] = [lo - margin, hi + margin];
  const at = (x) => (f(x) - lo) / (hi - lo);
  // on a log axis: the values tried where they are few (a grid), else whole decades
  const tried = [...new Set(points.map((p) => p.x))].sort((a, b) => a - b);
  const decades = linearTicks(lo, hi)
    .filter(Number.isInteger)
    .map((e) => 10 ** e);
  const logTicks = tried.length <= 5 || decades.length < 2 ? tried : decades;
  const ticks = (kind === "log" ? logTicks : linearTicks(lo, hi)).map((t) => [t, short(t)]);
  return { at, ticks };
}

function yAxis(points) {
  const ys = points.map((p) => p.y);
  let lo = Math.min(...ys);
  let hi = Math.max(...ys);
  const margin = hi > lo ? (hi - lo) * 0.12 : Math.abs(hi) * 0.05 || 0.05;
  [lo, hi] = [lo - margin, hi + margin];
  return { at: (y) => (y - lo) / (hi - lo), ticks: linearTicks(lo, hi) };
}

// The plot of one parameter: {path, label, points: [{x, y, number, best}], kind}; formatY labels
// the objective. An element with data-testid `sweep-plot` and one circle per point.
export function paramPlot({ path, label, points, kind }, objectiveName, formatY) {
  const root = node("svg", {
    viewBox: `0 0 ${SIZE.w} ${SIZE.h}`,
    class: "sweep-plot",
    role: "img",
    "aria-label": `${objectiveName} against ${path}`,
    "data-testid": "sweep-plot",
    "data-param": path,
    "data-points": points.length,
  });
  root.append(node("text", { x: SIZE.w / 2, y: 16, "text-anchor": "middle", class: "sp-title" }, label));
  root.append(node("rect", { x: PAD.left, y: PAD.top, width: INNER.w, height: INNER.h, class: "sp-frame" }));
  const bottom = PAD.top + INNER.h;
  if (!points.length) {
    const at = { x: PAD.left + INNER.w / 2, y: PAD.top + INNER.h / 2, "text-anchor": "middle" };
    root.append(node("text", { ...at, class: "sp-note" }, "no completed trial yet"));
    return root;
  }
  const x = xAxis(points, kind);
  const y = yAxis(points);
  const px = (v) => PAD.left + INNER.w * x.at(v);
  const py = (v) => PAD.top + INNER.h * (1 - y.at(v));
  for (const [value, text] of x.ticks) {
    root.append(node("line", { x1: px(value), x2: px(value), y1: PAD.top, y2: bottom, class: "sp-grid" }));
    root.append(node("text", { x: px(value), y: bottom + 14, "text-anchor": "middle" }, text));
  }
  for (const t of y.ticks) {
    root.append(
      node("line", { x1: PAD.left, x2: PAD.left + INNER.w, y1: py(t), y2: py(t), class: "sp-grid" }),
    );
    root.append(node("text", { x: PAD.left - 6, y: py(t) + 4, "text-anchor": "end" }, formatY(t)));
  }
  const xLabel = kind === "log" ? `${path} (log scale)` : path;
  root.append(node("text", { x: PAD.left + INNER.w / 2, y: SIZE.h - 6, "text-anchor": "middle" }, xLabel));
  // the best last, so that it is drawn on top of a trial at the same place
  for (const p of [...points].sort((a, b) => a.best - b.best)) {
    const dot = node("circle", {
      cx: px(p.x),
      cy: py(p.y),
      r: 5,
      class: p.best ? "sp-point best" : "sp-point",
      "data-trial": p.number,
    });
    dot.append(node("title", {}, `trial ${p.number}: ${short(p.x)} → ${formatY(p.y)}`));
    root.append(dot);
  }
  return root;
}
