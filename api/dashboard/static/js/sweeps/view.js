// One sweep's view: the head (name, status, Cancel while it runs), the summary (method,
// objective, early stopping, budget, trials by status, best value, parameter importances), the
// trials table sorted by a clicked column, one plot per parameter and the best trial's report.

import { badge, clear, h } from "../dom.js";
import { num, pct, when } from "../format.js";
import { errorSlot, problemBox } from "../notice.js";
import { reportView } from "../report.js";
import { maximizes, objectiveOf, paramNames, plotData, shortNames, sortTrials } from "./data.js";
import { paramPlot } from "./plot.js";

// The objective as the page writes it: a top-k as a percentage, a loss as a number.
export function objectiveFormat(objective) {
  return objective?.metric?.includes("top") ? (x) => pct(x, 2) : (x) => num(x, 4);
}

export function objectiveText(objective) {
  return `${objective?.metric ?? "?"} (${maximizes(objective) ? "higher" : "lower"} is better)`;
}

// "asha · min 1 epoch · ×3" and the like: the options a user set or the defaults decided.
function earlyStoppingText(es) {
  if (!es || es.kind === "none") return "none";
  const parts = [es.kind];
  if (es.kind === "asha") {
    if (es.min_epochs) parts.push(`first rung at epoch ${es.min_epochs}`);
    parts.push(`reduction ×${es.reduction_factor}`);
  } else {
    if (es.warmup_epochs !== null && es.warmup_epochs !== undefined)
      parts.push(`warm-up ${es.warmup_epochs}`);
    parts.push(`after ${es.startup_trials} trials`);
  }
  return parts.join(" · ");
}

export function countsView(counts) {
  const entries = Object.entries(counts || {}).filter(([, n]) => n);
  if (!entries.length) return h("span", { class: "muted" }, "none yet");
  return h(
    "span",
    { class: "trial-counts", "data-testid": "trial-counts" },
    entries.map(([status, n]) =>
      h("span", { class: `badge status-${status}`, "data-status": status }, `${n} ${status}`),
    ),
  );
}

function head(sweep, on) {
  const cancel =
    sweep.status === "running"
      ? h(
          "button",
          { type: "button", class: "danger", "data-testid": "cancel-sweep", onclick: on.cancel },
          "Cancel",
        )
      : null;
  return h(
    "div",
    { class: "page-head" },
    h(
      "h1",
      {},
      h("span", { "data-testid": "sweep-name" }, sweep.name),
      " ",
      badge(sweep.status, "sweep-status"),
    ),
    h("div", { class: "actions" }, h("a", { class: "button", href: "#/sweeps" }, "All sweeps"), cancel),
  );
}

function importancesView(sweep, labels) {
  if (!sweep.importances) {
    return h("p", { class: "small muted", "data-testid": "importances-note" }, sweep.importances_note || "");
  }
  const rows = Object.entries(sweep.importances).sort((a, b) => b[1] - a[1]);
  return h(
    "ul",
    { class: "importances", "data-testid": "importances" },
    rows.map(([path, share]) =>
      h(
        "li",
        { "data-param": path, title: path },
        h("span", { class: "importance-name" }, labels[path] ?? path),
        h(
          "span",
          { class: "importance-bar" },
          h("span", { style: { width: `${Math.round(share * 100)}%` } }),
        ),
        h("span", { class: "importance-value" }, pct(share, 0)),
      ),
    ),
  );
}

function summary(sweep, labels) {
  const fmt = objectiveFormat(sweep.objective);
  const made = sweep.trials.length;
  const best = sweep.best_job_id
    ? h(
        "span",
        {},
        h("strong", { "data-testid": "best-value" }, fmt(sweep.best_value)),
        sweep.best ? ` · trial ${sweep.best.number} · ` : " · ",
        h("a", { href: `#/jobs/${sweep.best_job_id}` }, "its job"),
      )
    : h("span", { class: "muted", "data-testid": "best-value" }, "no completed trial yet");
  const facts = [
    ["id", h("code", {}, sweep.id)],
    ["method", sweep.method],
    ["objective", objectiveText(sweep.objective)],
    ["early stopping", earlyStoppingText(sweep.early_stopping)],
    ["trials", `${made} of ${sweep.max_trials} made · at most ${sweep.max_concurrent} at once`],
    ["by status", countsView(sweep.trials_by_status)],
    ["best", best],
    ["owner", `${sweep.owner}${sweep.team ? ` (${sweep.team})` : ""}`],
    ["started", when(sweep.created_at)],
    ["finished", when(sweep.finished_at) || "–"],
  ];
  return [
    h("h2", {}, "Summary"),
    sweep.message ? h("p", { class: "sweep-message", "data-testid": "sweep-message" }, sweep.message) : null,
    h(
      "dl",
      { class: "facts" },
      facts.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))),
    ),
    h("h3", {}, "Parameter importances"),
    importancesView(sweep, labels),
  ];
}

function statusCell(t) {
  const epoch = t.status === "pruned" && t.pruned_at_epoch !== null ? ` at epoch ${t.pruned_at_epoch}` : "";
  return h(
    "td",
    { class: "nowrap", title: t.error || null },
    badge(t.status, "trial-status"),
    h("span", { class: "small muted", "data-testid": "pruned-at" }, epoch),
    t.error && t.status !== "pruned" ? h("div", { class: "small muted trial-error" }, t.error) : null,
  );
}

// A completed trial's objective; a pruned one's last value in brackets, with its epoch.
function objectiveCell(t, fmt) {
  const cell = { class: "num", "data-testid": "trial-objective" };
  if (objectiveOf(t) !== null) return h("td", cell, fmt(t.objective));
  if (t.objective === null || t.objective === undefined) return h("td", cell, "–");
  const at = t.pruned_at_epoch === null ? "" : ` at epoch ${t.pruned_at_epoch}`;
  const title = "its value when the pruner stopped it: not ranked";
  return h("td", { ...cell, class: "num muted", title }, `(${fmt(t.objective)}${at})`);
}

const value = (v) => (typeof v === "number" ? String(Number(v.toPrecision(6))) : String(v));

function trialRow(t, paths, fmt, bestNumber) {
  return h(
    "tr",
    { "data-testid": "trial-row", "data-trial": t.number, class: t.number === bestNumber ? "best" : null },
    h("td", { class: "num", "data-testid": "trial-number" }, t.number, t.number === bestNumber ? " ★" : ""),
    h(
      "td",
      { class: "mono small" },
      t.job_id
        ? h("a", { href: `#/jobs/${t.job_id}`, "data-testid": "trial-job" }, t.job_id.slice(0, 8))
        : "–",
    ),
    paths.map((p) =>
      h("td", { class: "num", "data-param": p }, t.params[p] === undefined ? "–" : value(t.params[p])),
    ),
    statusCell(t),
    objectiveCell(t, fmt),
  );
}

// A column header that sorts: a button, with aria-sort on the header cell.
function sortHeader(key, text, sort, onSort, attrs = {}) {
  const active = sort.key === key;
  const arrow = active ? (sort.dir === "asc" ? " ▲" : " ▼") : "";
  return h(
    "th",
    {
      scope: "col",
      "aria-sort": active ? (sort.dir === "asc" ? "ascending" : "descending") : "none",
      ...attrs,
    },
    h(
      "button",
      { type: "button", class: "sort", "data-testid": `sort-${key}`, onclick: () => onSort(key) },
      text,
      arrow,
    ),
  );
}

function trialsTable(sweep, sort, onSort, labels) {
  const paths = paramNames(sweep);
  const fmt = objectiveFormat(sweep.objective);
  const header = h(
    "tr",
    {},
    sortHeader("number", "#", sort, onSort, { class: "num" }),
    h("th", { scope: "col" }, "Job"),
    paths.map((p) => sortHeader(`param:${p}`, labels[p], sort, onSort, { class: "num", title: p })),
    sortHeader("status", "Status", sort, onSort),
    sortHeader("objective", sweep.objective?.metric ?? "objective", sort, onSort, { class: "num" }),
  );
  const rows = sortTrials(sweep.trials, sort.key, sort.dir).map((t) =>
    trialRow(t, paths, fmt, sweep.best?.number),
  );
  const empty = h("tr", {}, h("td", { colspan: paths.length + 4, class: "empty" }, "No trial yet."));
  return h(
    "table",
    { class: "trials", "data-testid": "trials-table" },
    h("thead", {}, header),
    h("tbody", { "data-testid": "trials-body" }, rows.length ? rows : empty),
  );
}

function plotsView(sweep, labels) {
  const fmt = objectiveFormat(sweep.objective);
  const metric = sweep.objective?.metric ?? "objective";
  const plots = plotData(sweep).map((p) =>
    paramPlot({ ...p, label: `${metric} against ${labels[p.path]}` }, metric, fmt),
  );
  const left = sweep.trials.filter((t) => objectiveOf(t) === null).length;
  return [
    h("div", { class: "sweep-plots", "data-testid": "sweep-plots" }, plots),
    left
      ? h(
          "p",
          { class: "small muted" },
          `${left} trial(s) that did not complete (live, pruned, failed) are not plotted.`,
        )
      : null,
  ];
}

function bestReport(sweep, job) {
  if (!sweep.best_job_id)
    return [h("h2", {}, "Best trial"), h("p", { class: "muted" }, "No trial has completed yet.")];
  const title = h(
    "h2",
    {},
    `Best trial${sweep.best ? ` #${sweep.best.number}` : ""}: `,
    h(
      "a",
      { href: `#/jobs/${sweep.best_job_id}`, "data-testid": "best-job" },
      job?.name ?? sweep.best_job_id,
    ),
  );
  if (!job) return [title, h("p", { class: "muted" }, "Loading…")];
  if (job.gone) return [title, h("p", { class: "muted" }, "Its job was deleted.")];
  if (!job.report) return [title, h("p", { class: "muted" }, "Its job has no report.")];
  return [title, reportView(job.report)];
}

// The page's elements. `on` holds the callbacks: cancel(), sort(key).
export function sweepView(on) {
  const errors = errorSlot("sweep-error");
  const headEl = h("div", { class: "sweep-head" });
  const summaryEl = h("section", { class: "card", "data-testid": "sweep-summary" });
  const trialsEl = h("div", { class: "scroll" });
  const plotsEl = h("div", {});
  const reportEl = h("section", { class: "card", "data-testid": "best-report" });
  const el = [
    headEl,
    errors.el,
    summaryEl,
    h("section", { class: "card" }, h("h2", {}, "Trials"), trialsEl),
    h("section", { class: "card" }, h("h2", {}, "Parameters against the objective"), plotsEl),
    reportEl,
  ];
  return {
    el,
    errors,
    // The sweep changed: everything but the report (drawn when the best trial's job arrives).
    drawSweep(sweep, sort) {
      document.title = `${sweep.name} · sweep · Distillery`;
      const labels = shortNames(paramNames(sweep));
      clear(headEl, head(sweep, on));
      clear(summaryEl, ...summary(sweep, labels));
      clear(plotsEl, ...plotsView(sweep, labels));
      this.drawTrials(sweep, sort);
      if (!sweep.best_job_id) clear(reportEl, ...bestReport(sweep, null));
    },
    drawTrials(sweep, sort) {
      clear(trialsEl, trialsTable(sweep, sort, on.sort, shortNames(paramNames(sweep))));
    },
    drawBest(sweep, job) {
      clear(reportEl, ...bestReport(sweep, job));
    },
    notFound(view, error) {
      clear(
        view,
        problemBox(error, "sweep-error"),
        h("p", {}, h("a", { href: "#/sweeps" }, "Back to the sweeps")),
      );
    },
  };
}
