// The jobs list's view: filters, the table (one row per job, rebuilt only when the job moves),
// "More" and "Compare selected". It reads the list's state and calls back on input.

import { badge, clear, h, progressBar } from "../dom.js";
import { ago, duration, gainText, pct, place, stageText } from "../format.js";
import { errorSlot } from "../notice.js";
import { debounce, STATUSES } from "../util.js";
import { glance } from "./data.js";

const COLUMNS = ["Name", "Status", "Progress", "Result", "Owner", "Age", "Waiting / error"];
const WIDTH = COLUMNS.length + 1; // and the checkbox

function waitingText(job) {
  if (job.waiting) return `${place(job.waiting)} · ${job.waiting.message}`;
  if (job.queue_position) return `#${job.queue_position} in ${job.queue}`;
  if (job.error) return `${job.error.type}: ${job.error.message}`;
  return "";
}

// The best epoch, saying "of M" where it is not the last: the weights kept are not the last ones.
function epochText(g) {
  if (g.best_epoch === null || g.best_epoch === undefined) return "";
  if (g.notLast) return `best epoch ${g.best_epoch} of ${g.epochs}`;
  return g.epochs === null ? `best epoch ${g.best_epoch}` : `best epoch ${g.best_epoch} (the last)`;
}

function resultCell(job, epochs) {
  const g = glance(job, epochs);
  if (!g) return h("td", { class: "result" });
  const gainClass = g.kd_gain > 0 ? "pos" : g.kd_gain < 0 ? "neg" : "";
  const kept = g.notLast
    ? `the weights kept (and tested) are epoch ${g.best_epoch}'s, not the last epoch's (${g.epochs})`
    : null;
  return h(
    "td",
    { class: "result", "data-testid": "result" },
    h("div", { "data-testid": "result-top1", title: "the student's test top-1" }, pct(g.student_top1)),
    h(
      "div",
      { class: `small ${gainClass}`, "data-testid": "result-gain", title: "KD gain (student − baseline)" },
      `KD ${gainText(g)}`,
    ),
    h(
      "div",
      { class: `small ${g.notLast ? "best-not-last" : "muted"}`, "data-testid": "result-epoch", title: kept },
      epochText(g),
    ),
  );
}

function progressCell(job) {
  const eta =
    job.progress?.eta_s && job.status === "running" ? ` · ${duration(job.progress.eta_s)} left` : "";
  return h(
    "td",
    { class: "progress-cell" },
    progressBar(job.progress, job.status),
    h("div", { class: "small muted", "data-testid": "stage" }, stageText(job.progress), eta),
  );
}

// The table's rows, kept by job id: a row is rebuilt when its job's version moves, its place in the
// queue (a dispatcher pass moves it without a new version) or its number of epochs arrives, else
// only its age moves on.
function jobRows(list, onSelect) {
  const rows = new Map(); // job id -> {tr, box, age, version}
  return (job) => {
    let r = rows.get(job.id);
    if (!r) {
      const box = h("input", {
        type: "checkbox",
        checked: list.selected.has(job.id),
        "aria-label": `select ${job.name} to compare`,
        "data-testid": "select-job",
        onchange: () => onSelect(job.id, box.checked),
      });
      r = { tr: h("tr", { "data-testid": "job-row", "data-job-id": job.id }), box, version: null };
      rows.set(job.id, r);
    }
    const epochs = list.epochs.get(job.id);
    const w = job.waiting;
    const version = `${job.version}/${epochs}/${w ? `${w.position}/${w.reason}/${w.message}` : ""}`;
    if (r.version === version) {
      r.age.textContent = ago(job.created_at);
      return r.tr;
    }
    r.version = version;
    r.age = h("td", { class: "age", title: job.created_at }, ago(job.created_at));
    r.tr.dataset.status = job.status;
    clear(
      r.tr,
      h("td", { class: "sel" }, r.box),
      h(
        "td",
        { class: "name" },
        h("a", { href: `#/jobs/${job.id}`, "data-testid": "job-link" }, job.name),
        h("div", { class: "muted mono small" }, job.id),
      ),
      h("td", {}, badge(job.status)),
      progressCell(job),
      resultCell(job, epochs),
      h("td", { "data-testid": "owner" }, job.owner),
      r.age,
      h("td", { class: "small", "data-testid": "waiting" }, waitingText(job)),
    );
    return r.tr;
  };
}

function filterForm(filters, { onStatus, onText }) {
  const statusBoxes = STATUSES.map((s) =>
    h(
      "label",
      { class: `chip status-${s}` },
      h("input", {
        type: "checkbox",
        checked: filters.status.has(s),
        "data-testid": `filter-status-${s}`,
        onchange: (e) => onStatus(s, e.target.checked),
      }),
      s,
    ),
  );
  // A text filter, applied (server-side) once typing pauses.
  const textFilter = (key, type, placeholder) =>
    h("input", {
      id: `filter-${key}`,
      type,
      value: filters[key],
      placeholder,
      "data-testid": `filter-${key}`,
      oninput: debounce((e) => onText(key, e.target.value.trim()), 400),
    });
  return h(
    "form",
    { class: "filters card", onsubmit: (e) => e.preventDefault(), "aria-label": "filters" },
    h("fieldset", { class: "statuses" }, h("legend", {}, "Status"), statusBoxes),
    h(
      "div",
      { class: "field" },
      h("label", { for: "filter-owner" }, "Owner"),
      textFilter("owner", "text", "any"),
    ),
    h(
      "div",
      { class: "field" },
      h("label", { for: "filter-name" }, "Name"),
      textFilter("name", "search", "part of a job name"),
    ),
  );
}

function jobsTable(tbody) {
  const head = h(
    "tr",
    {},
    h("th", { class: "sel" }, h("span", { class: "sr-only" }, "Compare")),
    COLUMNS.map((t) => h("th", { scope: "col" }, t)),
  );
  return h("table", { class: "jobs", "data-testid": "jobs-table" }, h("thead", {}, head), tbody);
}

function emptyRow(filtered) {
  const text = filtered
    ? "No job matches these filters."
    : h("span", {}, "No jobs yet. ", h("a", { href: "#/submit" }, "Submit one"), ".");
  return h("tr", {}, h("td", { colspan: WIDTH, class: "empty" }, text));
}

// The page's elements. `on` holds the callbacks: status(s, checked), text(key, value),
// select(id, checked), more(), compare().
export function jobsView(list, on) {
  const errors = errorSlot("jobs-error");
  const tbody = h("tbody", { "data-testid": "jobs-body" });
  const summary = h("span", { class: "muted", "data-testid": "jobs-summary" });
  const more = h("button", { type: "button", "data-testid": "more", hidden: true, onclick: on.more }, "More");
  const compare = h(
    "button",
    { type: "button", class: "primary", "data-testid": "compare-selected", onclick: on.compare },
    "Compare",
  );
  const row = jobRows(list, on.select);
  const actions = [summary, compare, h("a", { class: "button", href: "#/submit" }, "New job")];
  const el = [
    h("div", { class: "page-head" }, h("h1", {}, "Jobs"), h("div", { class: "actions" }, actions)),
    filterForm(list.filters, { onStatus: on.status, onText: on.text }),
    errors.el,
    jobsTable(tbody),
    h("div", { class: "more" }, more),
  ];

  return {
    el,
    errors,
    // Shows the list's rows, touching the table only where they changed.
    draw() {
      const jobs = list.rows();
      const wanted = jobs.length ? jobs.map(row) : [emptyRow(list.filtered)];
      const shown = [...tbody.children];
      if (wanted.length !== shown.length || wanted.some((tr, i) => tr !== shown[i]))
        tbody.replaceChildren(...wanted);
      more.hidden = !list.cursor;
      const n = jobs.length;
      summary.textContent = `${n} job${n === 1 ? "" : "s"} · updated ${new Date().toLocaleTimeString()}`;
    },
    loading() {
      tbody.replaceChildren(h("tr", {}, h("td", { colspan: WIDTH, class: "empty" }, "Loading…")));
    },
    moreBusy(busy) {
      more.disabled = busy;
    },
    selection(count) {
      compare.disabled = count < 2;
      compare.textContent = `Compare selected (${count})`;
    },
  };
}
