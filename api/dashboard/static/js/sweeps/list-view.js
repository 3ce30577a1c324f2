// The sweeps list's view: one row per sweep (name, status, method, objective, trials by status,
// best value, owner, age) and "More". It reads the list's state and calls back on "More".

import { badge, h } from "../dom.js";
import { ago } from "../format.js";
import { errorSlot } from "../notice.js";
import { countsView, objectiveFormat, objectiveText } from "./view.js";

const COLUMNS = ["Name", "Status", "Method", "Objective", "Trials", "Best", "Owner", "Age"];

function sweepRow(s) {
  const made = Object.values(s.trials_by_status || {}).reduce((a, b) => a + b, 0);
  return h(
    "tr",
    { "data-testid": "sweep-row", "data-sweep-id": s.id, "data-status": s.status },
    h(
      "td",
      { class: "name" },
      h("a", { href: `#/sweeps/${s.id}`, "data-testid": "sweep-link" }, s.name),
      h("div", { class: "muted mono small" }, s.id),
    ),
    h("td", {}, badge(s.status)),
    h("td", {}, s.method),
    h("td", { class: "small" }, objectiveText(s.objective)),
    h("td", {}, h("div", { class: "small" }, `${made} of ${s.max_trials}`), countsView(s.trials_by_status)),
    h(
      "td",
      { class: "num", "data-testid": "sweep-best" },
      s.best_value === null ? "–" : objectiveFormat(s.objective)(s.best_value),
    ),
    h("td", {}, s.owner),
    h("td", { class: "age", title: s.created_at }, ago(s.created_at)),
  );
}

// The page's elements. `on.more()` loads the next page.
export function sweepsView(list, on) {
  const errors = errorSlot("sweeps-error");
  const tbody = h("tbody", { "data-testid": "sweeps-body" });
  const summary = h("span", { class: "muted", "data-testid": "sweeps-summary" });
  const more = h("button", { type: "button", "data-testid": "more", hidden: true, onclick: on.more }, "More");
  const table = h(
    "table",
    { class: "jobs sweeps", "data-testid": "sweeps-table" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        COLUMNS.map((t) => h("th", { scope: "col" }, t)),
      ),
    ),
    tbody,
  );
  const el = [
    h("div", { class: "page-head" }, h("h1", {}, "Sweeps"), h("div", { class: "actions" }, summary)),
    errors.el,
    table,
    h("div", { class: "more" }, more),
  ];
  return {
    el,
    errors,
    draw() {
      const rows = list.rows();
      const empty = h(
        "td",
        { colspan: COLUMNS.length, class: "empty" },
        "No sweeps yet. Start one with ",
        h("code", {}, "POST /v1/sweeps"),
        " (a base spec and the parameters to vary).",
      );
      tbody.replaceChildren(...(rows.length ? rows.map(sweepRow) : [h("tr", {}, empty)]));
      more.hidden = !list.cursor;
      summary.textContent = `${rows.length} sweep${rows.length === 1 ? "" : "s"} · updated ${new Date().toLocaleTimeString()}`;
    },
    moreBusy(busy) {
      more.disabled = busy;
    },
  };
}
