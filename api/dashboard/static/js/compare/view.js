// The comparison's view: the form naming the jobs, their final numbers side by side (one
// column each) and the shared chart grid, with one colour per job in every chart.

import { chartGrid, PALETTE } from "../charts.js";
import { clear, h } from "../dom.js";
import { errorSlot } from "../notice.js";
import { compareTable } from "../report.js";
import { STAGE } from "./data.js";

function idsForm(ids, onCompare) {
  const input = h("input", {
    id: "compare-ids",
    type: "text",
    value: ids.join(","),
    placeholder: "job ids, separated by commas",
    "data-testid": "compare-ids",
  });
  return h(
    "form",
    {
      class: "toolbar card",
      onsubmit: (e) => {
        e.preventDefault();
        onCompare(input.value);
      },
    },
    h("label", { for: "compare-ids" }, "Jobs"),
    input,
    h("button", { type: "submit" }, "Compare"),
    h("span", { class: "muted small" }, "or tick jobs in the ", h("a", { href: "#/jobs" }, "jobs list"), "."),
  );
}

// The page's elements for `ids`; `onCompare(text)` is called with the form's list of ids.
export function compareView(ids, onCompare) {
  const errors = errorSlot("compare-error");
  const table = h("div", { class: "scroll-x" });
  const grid = chartGrid("compare-charts");
  let order = []; // the jobs' labels: a job's colour is its place in this list
  const stroke = (label) => PALETTE[Math.max(0, order.indexOf(label)) % PALETTE.length];
  const el = [
    h("div", { class: "page-head" }, h("h1", {}, "Compare jobs")),
    idsForm(ids, onCompare),
    errors.el,
  ];
  if (!ids.length) el.push(h("p", { class: "empty" }, "No jobs picked yet."));
  else {
    el.push(
      h("section", { class: "card" }, h("h2", {}, "Final numbers"), table),
      h("section", { class: "card" }, h("h2", {}, `Curves of the ${STAGE} (distillation) stage`), grid.el),
    );
  }

  return {
    el,
    errors,
    // The jobs read so far (in columns) and the plots to draw, for jobs labelled `labels`.
    draw(jobs, plots, labels) {
      clear(
        table,
        jobs.length ? compareTable(jobs) : h("p", { class: "muted" }, "None of these jobs can be read."),
      );
      order = labels;
      grid.draw(plots.map((p) => ({ ...p, stroke })));
    },
    destroy: grid.destroy,
  };
}
