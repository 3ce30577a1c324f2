// Line charts over epochs, drawn with the vendored uPlot (static/vendor, loaded by index.html),
// and the grid of them that the job and the compare pages show.
// Each chart's element carries `data-points`: how many points each series has, for tests and
// for anyone inspecting the page; `element.uplot` is the uPlot instance.

import { h } from "./dom.js";
import { align } from "./metrics.js";

export const PALETTE = [
  "#2563eb",
  "#ea580c",
  "#16a34a",
  "#9333ea",
  "#dc2626",
  "#0891b2",
  "#ca8a04",
  "#db2777",
];
const FIXED = {
  teacher: "#7c3aed",
  baseline: "#94a3b8",
  student: "#2563eb",
  "train/loss": "#111827",
  "train/kd": "#2563eb",
  "train/ce": "#ea580c",
  "val/loss": "#64748b",
};

export function colour(label, index) {
  return FIXED[label] || PALETTE[index % PALETTE.length];
}

const EPOCH_STEPS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000];
const percentAxis = (_u, values) => values.map((v) => (v === null ? "" : `${(v * 100).toFixed(0)}%`));

function options(
  title,
  labels,
  { percent = false, log = false, width, dashed = () => false, stroke = colour },
) {
  return {
    title,
    width,
    height: 220,
    scales: { x: { time: false }, y: log ? { distr: 3 } : { auto: true } },
    axes: [
      { label: "epoch", size: 40, incrs: EPOCH_STEPS },
      { size: 56, ...(percent ? { values: percentAxis } : {}) },
    ],
    series: [
      { label: "epoch" },
      ...labels.map((label, i) => ({
        label,
        stroke: stroke(label, i),
        width: 2,
        dash: dashed(label) ? [6, 4] : undefined,
        spanGaps: true,
        points: { size: 5 }, // drawn where they fit (uPlot hides them on dense series)
        value: (_u, v) =>
          v === null ? "–" : percent ? `${(v * 100).toFixed(2)}%` : Number(v).toPrecision(4),
      })),
    ],
    legend: { live: true },
    cursor: { drag: { x: true, y: false } },
  };
}

// A chart that redraws when given new series: `update(Map label -> Map(epoch -> value))`.
export function lineChart(id, title, settings = {}) {
  const el = h("figure", { class: "chart", "data-testid": `chart-${id}`, "data-points": "{}" });
  const empty = h("div", { class: "chart-empty muted" }, `${title}: no points yet`);
  el.append(empty);
  let plot = null;
  let labels = [];
  const resize = new ResizeObserver(() => {
    if (plot && el.clientWidth) plot.setSize({ width: el.clientWidth, height: 220 });
  });
  resize.observe(el);

  return {
    el,
    update(series) {
      const { x, ys } = align(series);
      const names = [...ys.keys()];
      const data = [x, ...names.map((n) => ys.get(n))];
      if (!x.length) return;
      if (!plot || names.join("\n") !== labels.join("\n")) {
        plot?.destroy();
        empty.remove();
        labels = names;
        const width = el.clientWidth || 560;
        plot = new window.uPlot(options(title, names, { ...settings, width }), data, el);
        el.uplot = plot;
      } else {
        plot.setData(data);
      }
      const points = Object.fromEntries(names.map((n) => [n, ys.get(n).filter((v) => v !== null).length]));
      el.dataset.points = JSON.stringify(points);
      el.dataset.epochs = String(x.length);
    },
    destroy() {
      resize.disconnect();
      plot?.destroy();
    },
  };
}

// A grid of line charts, shared by the job and the compare pages. `draw(plots)` takes plot
// descriptions {id, title, series, ...settings} (series: Map label -> Map(epoch -> value)):
// a chart is added the first time its id comes with points, in the order plots first arrive,
// and redrawn after that. `testid` names the grid for the browser tests.
export function chartGrid(testid) {
  const el = h("div", { class: "chart-grid", "data-testid": testid });
  const charts = new Map(); // id -> lineChart
  return {
    el,
    draw(plots) {
      for (const { id, title, series, ...settings } of plots) {
        if (!series.size) continue;
        if (!charts.has(id)) {
          charts.set(id, lineChart(id, title, settings));
          el.append(charts.get(id).el);
        }
        charts.get(id).update(series);
      }
    },
    destroy() {
      for (const chart of charts.values()) chart.destroy();
    },
  };
}
