// The job's final report (docs/report.md): one table per job, and one column per job to compare.

import { badge, h } from "./dom.js";
import { bytes, count, gainText, pct, ratio } from "./format.js";

function latency(ms) {
  return ms === null || ms === undefined ? "–" : `${Number(ms).toFixed(3)} ms`;
}

function verdictWord(report) {
  const v = report?.verdict || "";
  for (const word of ["helped", "hurt", "made no difference"]) if (v.includes(word)) return word;
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
