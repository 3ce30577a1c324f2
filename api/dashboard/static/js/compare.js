// Several jobs side by side (#/compare?ids=a,b,c): their student's validation accuracy and
// distillation loss terms overlaid, one curve per job, and their final numbers in columns.

import { request } from "./api.js";
import { lineChart, PALETTE } from "./charts.js";
import { clear, h, poll, TERMINAL } from "./dom.js";
import { MetricStore } from "./metrics.js";
import { errorSlot } from "./notice.js";
import { go, replaceParams } from "./router.js";
import { compareTable } from "./report.js";

const POLL_MS = 3000;
const STAGE = "student"; // the distillation stage

export function render(view, { params }) {
  const ids = [
    ...new Set(
      (params.get("ids") || "")
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean),
    ),
  ];
  const jobs = new Map(); // id -> job
  const stores = new Map(ids.map((id) => [id, new MetricStore(id)]));
  const etags = new Map();
  const charts = new Map();
  const errors = errorSlot("compare-error");
  const table = h("div", { class: "scroll-x" });
  const grid = h("div", { class: "chart-grid", "data-testid": "compare-charts" });
  const idsInput = h("input", {
    id: "compare-ids",
    type: "text",
    value: ids.join(","),
    placeholder: "job ids, separated by commas",
    "data-testid": "compare-ids",
  });

  view.append(
    h("div", { class: "page-head" }, h("h1", {}, "Compare jobs")),
    h(
      "form",
      {
        class: "toolbar card",
        onsubmit: (e) => {
          e.preventDefault();
          go("/compare", { ids: idsInput.value.replace(/\s+/g, "") });
        },
      },
      h("label", { for: "compare-ids" }, "Jobs"),
      idsInput,
      h("button", { type: "submit" }, "Compare"),
      h(
        "span",
        { class: "muted small" },
        "or tick jobs in the ",
        h("a", { href: "#/jobs" }, "jobs list"),
        ".",
      ),
    ),
    errors.el,
  );
  if (!ids.length) {
    view.append(h("p", { class: "empty" }, "No jobs picked yet."));
    return null;
  }
  view.append(
    h("section", { class: "card" }, h("h2", {}, "Final numbers"), table),
    h("section", { class: "card" }, h("h2", {}, `Curves of the ${STAGE} (distillation) stage`), grid),
  );

  function label(id) {
    const job = jobs.get(id);
    return job ? `${job.name} (${id.slice(0, 6)})` : id;
  }

  function chart(key, title, settings) {
    if (!charts.has(key)) {
      const c = lineChart(key, title, settings);
      charts.set(key, c);
      grid.append(c.el);
    }
    return charts.get(key);
  }

  function drawCharts() {
    const shown = ids.filter((id) => jobs.has(id));
    const series = (name) =>
      new Map(shown.map((id) => [label(id), stores.get(id).get(STAGE, name)]).filter(([, m]) => m.size));
    // one colour per job, the same in every chart
    const stroke = (lbl) => PALETTE[shown.findIndex((id) => label(id) === lbl) % PALETTE.length];
    const accuracy = series("val/top1");
    if (accuracy.size) {
      chart("compare-accuracy", "Student validation accuracy (top-1)", { percent: true, stroke }).update(
        accuracy,
      );
    }
    const terms = new Set();
    for (const id of shown) for (const n of stores.get(id).lossNames(STAGE)) terms.add(n);
    for (const term of terms) {
      chart(`compare-${term.replace("/", "-")}`, `Student ${term}`, { stroke }).update(series(term));
    }
  }

  async function tick() {
    let live = false;
    const results = await Promise.allSettled(
      ids.map(async (id) => {
        const answer = await request(`v1/jobs/${id}`, { etag: etags.get(id) });
        if (answer.status !== 304) {
          jobs.set(id, answer.data);
          etags.set(id, answer.etag);
        }
        await stores.get(id).fetchNew();
        if (!TERMINAL.has(jobs.get(id).status)) live = true;
      }),
    );
    const failed = results.find((r) => r.status === "rejected");
    if (failed) errors.show(failed.reason);
    else errors.clear();
    const shown = ids.filter((id) => jobs.has(id)).map((id) => jobs.get(id));
    clear(
      table,
      shown.length ? compareTable(shown) : h("p", { class: "muted" }, "None of these jobs can be read."),
    );
    drawCharts();
    replaceParams(new URLSearchParams({ ids: ids.join(",") }));
    return live || Boolean(failed && failed.reason?.status !== 404);
  }

  const stop = poll(tick, POLL_MS);
  return () => {
    stop();
    for (const c of charts.values()) c.destroy();
  };
}
