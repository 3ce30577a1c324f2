// The job's final report (docs/report.md): one table per job, and one column per job to compare.

import { badge, h } from "./dom.js";
import { bytes, count, gainText, pct, ratio } from "./format.js";
import { scatterPlot } from "./scatter.js";

function latency(ms) {
  return ms === null || ms === undefined ? "–" : `${Number(ms).toFixed(3)} ms`;
}

function verdictWord(report) {
  const v = report?.verdict || "";
  for (const word of ["helped", "hurt", "made no difference", "no clear difference"]) {
    if (v.includes(word)) return word;
  }
  return v ? "unknown" : "–";
}

function modelRow(label, entry, extra = {}) {
  const change =
    extra.change === undefined
      ? null
      : h(
          "span",
          { class: extra.change < 0 ? "neg small" : "pos small" },
          ` (${extra.change >= 0 ? "+" : ""}${(extra.change * 100).toFixed(1)} pt)`,
        );
  return h(
    "tr",
    { "data-testid": `report-row-${label}`, title: extra.note || "" },
    h("th", { scope: "row" }, label, extra.sub ? h("div", { class: "small muted" }, extra.sub) : null),
    h("td", { class: "num", "data-testid": "test-top1" }, pct(entry.test_top1), change),
    h("td", { class: "num" }, count(extra.params ?? entry.params)),
    h("td", { class: "num" }, count(entry.macs)),
    h("td", { class: "num" }, latency(entry.latency_ms_cpu_b1)),
    h("td", { class: "num" }, bytes(entry.size_bytes)),
  );
}

export function reportView(report) {
  const rows = [];
  if (report.teacher) rows.push(modelRow("teacher", report.teacher, { sub: report.teacher.source }));
  (report.teachers || []).forEach((t, i) => rows.push(modelRow(`teacher${i + 1}`, t, { sub: t.source })));
  if (report.baseline) rows.push(modelRow("baseline", report.baseline, { sub: "labels only" }));
  if (report.student) rows.push(modelRow("student", report.student, { sub: "distilled" }));
  for (const c of report.compressed || []) {
    rows.push(
      modelRow(`student+${c.kind}`, c, {
        change: c.top1_change,
        params: c.params_nonzero,
        sub: `${pct(c.sparsity, 0)} sparse`,
        note: c.note,
      }),
    );
  }
  const c = report.compression || {};
  const gainClass = report.kd_gain > 0 ? "pos" : report.kd_gain < 0 ? "neg" : "";
  return h(
    "div",
    { class: "report", "data-testid": "report" },
    h(
      "div",
      { class: "headline" },
      h(
        "div",
        { class: "stat" },
        h("div", { class: "stat-label" }, "KD gain (student − baseline)"),
        h("div", { class: `stat-value ${gainClass}`, "data-testid": "kd-gain" }, gainText(report)),
      ),
      h("p", { class: "verdict", "data-testid": "verdict" }, report.verdict || ""),
    ),
    h(
      "table",
      { class: "report-table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Model", "Test top-1", "Params", "MACs", "CPU latency (batch 1)", "Size"].map((t) =>
            h("th", { scope: "col" }, t),
          ),
        ),
      ),
      h("tbody", {}, rows),
    ),
    h(
      "p",
      { class: "compression", "data-testid": "compression" },
      "Teacher ÷ student: ",
      `params ${ratio(c.params_ratio)} · MACs ${ratio(c.macs_ratio)} · size ${ratio(c.size_ratio)} · `,
      `CPU latency ${ratio(c.latency_speedup_cpu)} faster`,
    ),
    repeatsView(report.repeats),
    candidatesView(report.candidates || []),
  );
}

const signedPt = (x) => `${x >= 0 ? "+" : "−"}${Math.abs(x * 100).toFixed(2)} pt`;

// The KD gain over paired seeds (`repeats`): the interval, and the gains seed by seed.
function repeatsView(r) {
  if (!r) return null;
  if (r.k < 2 || r.ci95_low === null || r.ci95_low === undefined) {
    return h(
      "p",
      { class: "small muted", "data-testid": "repeats-note" },
      "One seed: no confidence interval across seeds (set repeats to 2 or more).",
    );
  }
  return h(
    "div",
    { class: "repeats", "data-testid": "repeats" },
    h("h3", {}, `KD gain over ${r.k} paired seeds`),
    h(
      "p",
      { "data-testid": "repeats-interval" },
      `mean ${signedPt(r.mean_gain)}, `,
      `95% confidence interval [${signedPt(r.ci95_low)}, ${signedPt(r.ci95_high)}]`,
    ),
    h(
      "table",
      { class: "report-table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Repeat", "Seed", "Baseline", "Student", "Gain"].map((t) => h("th", { scope: "col" }, t)),
        ),
      ),
      h(
        "tbody",
        {},
        r.rows.map((row) =>
          h(
            "tr",
            { "data-testid": "repeat-row" },
            h("td", {}, row.repeat),
            h("td", { class: "mono" }, row.seed),
            h("td", {}, pct(row.baseline_top1, 2)),
            h("td", {}, pct(row.student_top1, 2)),
            h("td", { class: row.gain < 0 ? "neg" : "pos" }, signedPt(row.gain)),
          ),
        ),
      ),
    ),
  );
}

const ms = (x) => `${Number(x.toPrecision(2))} ms`;
const kb = (x) =>
  x >= 1e6 ? `${Number((x / 1e6).toPrecision(2))} MB` : `${Number((x / 1e3).toPrecision(2))} kB`;

// Every candidate model (teacher, its compressed forms, baseline, student, its compressed forms):
// one table, and accuracy against size and against CPU latency with the Pareto front named.
function candidatesView(candidates) {
  if (!candidates.length) return null;
  const point = (c, x) => ({ name: c.name, x, y: c.test_top1, pareto: c.pareto });
  const timed = candidates.every((c) => c.latency_ms_cpu_b1 !== null && c.latency_ms_cpu_b1 !== undefined);
  const plots = [
    scatterPlot({
      id: "size",
      title: "Test top-1 against size",
      xLabel: "size (log scale)",
      points: candidates.map((c) => point(c, c.size_bytes)),
      format: kb,
    }),
    timed
      ? scatterPlot({
          id: "latency",
          title: "Test top-1 against CPU latency",
          xLabel: "CPU latency, batch 1 (log scale)",
          points: candidates.map((c) => point(c, c.latency_ms_cpu_b1)),
          format: ms,
        })
      : null,
  ];
  return h(
    "div",
    { class: "candidates", "data-testid": "candidates" },
    h("h3", {}, "Distillation against pruning and quantization"),
    h(
      "table",
      { class: "report-table", "data-testid": "candidates-table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Candidate", "Test top-1", "Size", "Nonzero params", "CPU latency (batch 1)", "Pareto"].map((t) =>
            h("th", { scope: "col" }, t),
          ),
        ),
      ),
      h(
        "tbody",
        {},
        candidates.map((c) =>
          h(
            "tr",
            { "data-testid": "candidate-row", "data-name": c.name, class: c.pareto ? "pareto" : "" },
            h("th", { scope: "row" }, c.name),
            h("td", { "data-testid": "test-top1" }, pct(c.test_top1, 2)),
            h("td", {}, bytes(c.size_bytes)),
            h("td", {}, count(c.params_nonzero)),
            h("td", {}, latency(c.latency_ms_cpu_b1)),
            h("td", { "data-testid": "pareto" }, c.pareto ? "yes" : ""),
          ),
        ),
      ),
    ),
    h(
      "p",
      { class: "small muted" },
      "Pareto: no other candidate is at least as accurate, as small and as fast " +
        "(latencies within 10% tie), and better in one" +
        (timed ? "." : " (latency not measured: accuracy and size only)."),
    ),
    h("div", { class: "cplot-row" }, plots),
  );
}

// Measures to compare, one row each: [label, (job) => cell content].
const MEASURES = [
  ["status", (j) => badge(j.status)],
  ["dataset", (j) => j.spec?.data?.kind ?? "–"],
  ["teacher top-1", (j) => pct(j.report?.teacher?.test_top1)],
  ["baseline top-1", (j) => pct(j.report?.baseline?.test_top1)],
  ["student top-1", (j) => pct(j.report?.student?.test_top1)],
  ["KD gain", (j) => gainText(j.report)],
  ["verdict", (j) => verdictWord(j.report)],
  ["student params", (j) => count(j.report?.student?.params)],
  ["student MACs", (j) => count(j.report?.student?.macs)],
  ["student CPU latency", (j) => latency(j.report?.student?.latency_ms_cpu_b1)],
  ["student size", (j) => bytes(j.report?.student?.size_bytes)],
  ["params ratio", (j) => ratio(j.report?.compression?.params_ratio)],
  ["MACs ratio", (j) => ratio(j.report?.compression?.macs_ratio)],
  ["size ratio", (j) => ratio(j.report?.compression?.size_ratio)],
  ["latency speed-up", (j) => ratio(j.report?.compression?.latency_speedup_cpu)],
  ["distill epochs", (j) => j.spec?.distill?.epochs ?? "–"],
  ["losses", (j) => (j.spec?.distill?.losses || []).map((l) => `${l.kind}×${l.weight}`).join(" + ") || "–"],
  ["total time", (j) => (j.report?.timing?.total_s ? `${Math.round(j.report.timing.total_s)} s` : "–")],
];

export function compareTable(jobs) {
  return h(
    "table",
    { class: "compare-table", "data-testid": "compare-table" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col" }, "Measure"),
        jobs.map((j) =>
          h(
            "th",
            { scope: "col", "data-job-id": j.id },
            h("a", { href: `#/jobs/${j.id}` }, j.name),
            h("div", { class: "small muted mono" }, j.id),
          ),
        ),
      ),
    ),
    h(
      "tbody",
      {},
      MEASURES.map(([label, cell]) =>
        h(
          "tr",
          { "data-measure": label },
          h("th", { scope: "row" }, label),
          jobs.map((j) => h("td", { class: "num" }, cell(j))),
        ),
      ),
    ),
  );
}
