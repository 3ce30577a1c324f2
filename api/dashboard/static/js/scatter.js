// A scatter plot as inline SVG (built node by node, no markup strings): accuracy up, a log-scale
// cost (bytes, milliseconds) across. The report's candidates use it; points on the Pareto front
// are filled and named, the others hollow, named on hover (their <title>).

const NS = "http://www.w3.org/2000/svg";
const W = 420;
const H = 280;
const PAD = { left: 52, right: 16, top: 28, bottom: 44 };

function svg(tag, attrs = {}, text = null) {
  const el = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  if (text !== null) el.textContent = text;
  return el;
}

// 1-2-5 ticks between lo and hi (a log axis), at most about 7.
function logTicks(lo, hi) {
  let ticks = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e += 1) {
    for (const m of [1, 2, 5]) {
      const t = m * 10 ** e;
      if (t >= lo && t <= hi) ticks.push(t);
    }
  }
  while (ticks.length > 7) ticks = ticks.filter((_, i) => i % 2 === 0);
  return ticks;
}

// A baseline for a name spanning x0..x1 at or below y that overlaps no name placed so far (12 px
// rows); close points get their names one under another.
function labelRow(placed, x0, x1, y) {
  let row = y;
  while (placed.some(([a, b, r]) => a < x1 && x0 < b && Math.abs(row - r) < 12)) row += 12;
  placed.push([x0, x1, row]);
  return row;
}

// points: [{name, x, y, pareto}] (y a fraction); format(x) labels the x ticks.
export function scatterPlot({ id, title, xLabel, points, format }) {
  const xs = points.map((p) => p.x);
  const ys = points.map((p) => p.y);
  const lo = Math.min(...xs) / 1.3;
  const hi = Math.max(...xs) * 1.3;
  let yLo = Math.max(0, Math.min(...ys) - 0.05);
  let yHi = Math.min(1, Math.max(...ys) + 0.03);
  if (yHi - yLo < 0.02) [yLo, yHi] = [yLo - 0.01, yHi + 0.01];
  const iw = W - PAD.left - PAD.right;
  const ih = H - PAD.top - PAD.bottom;
  const px = (x) => PAD.left + (iw * (Math.log10(x) - Math.log10(lo))) / (Math.log10(hi) - Math.log10(lo));
  const py = (y) => PAD.top + ih * (1 - (y - yLo) / (yHi - yLo));

  const root = svg("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "cplot",
    role: "img",
    "aria-label": title,
    "data-testid": `scatter-${id}`,
  });
  root.append(svg("text", { x: W / 2, y: 16, "text-anchor": "middle", class: "cplot-title" }, title));
  root.append(svg("rect", { x: PAD.left, y: PAD.top, width: iw, height: ih, class: "cplot-frame" }));
  for (const t of logTicks(lo, hi)) {
    root.append(svg("line", { x1: px(t), x2: px(t), y1: PAD.top, y2: PAD.top + ih, class: "cplot-grid" }));
    root.append(svg("text", { x: px(t), y: H - PAD.bottom + 16, "text-anchor": "middle" }, format(t)));
  }
  for (let i = 0; i <= 4; i += 1) {
    const y = yLo + ((yHi - yLo) * i) / 4;
    const label = `${(y * 100).toFixed(1)}%`;
    root.append(svg("text", { x: PAD.left - 6, y: py(y) + 4, "text-anchor": "end" }, label));
  }
  root.append(svg("text", { x: PAD.left + iw / 2, y: H - 8, "text-anchor": "middle" }, xLabel));
  const placed = []; // the names written so far: [left, right, baseline]
  for (const p of points) {
    const dot = svg("circle", {
      cx: px(p.x),
      cy: py(p.y),
      r: 5,
      class: p.pareto ? "cplot-point pareto" : "cplot-point",
      "data-name": p.name,
    });
    dot.append(svg("title", {}, `${p.name}: ${(p.y * 100).toFixed(2)}%, ${format(p.x)}`));
    root.append(dot);
    if (p.pareto) {
      // right of the point, or left of it where the name (about 6.5 px a letter) would overflow
      const width = 6.5 * p.name.length;
      const left = px(p.x) + 7 + width > PAD.left + iw;
      const x = px(p.x) + (left ? -7 : 7);
      const y = labelRow(placed, left ? x - width : x, left ? x : x + width, py(p.y) - 7);
      const at = { x, y, "text-anchor": left ? "end" : "start" };
      root.append(svg("text", { ...at, class: "pareto-label", "data-testid": "pareto-label" }, p.name));
    }
  }
  return root;
}
