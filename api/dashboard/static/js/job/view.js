// One job's view: the head (name, status, Cancel or Delete), the summary, the report, the
// training curves (the shared chart grid), the events, the artifacts and the spec.

import { chartGrid } from "../charts.js";
import { badge, clear, h, progressBar } from "../dom.js";
import { bytes, duration, place, stageText, when } from "../format.js";
import { errorSlot, problemBox } from "../notice.js";
import { reportView } from "../report.js";
import { TERMINAL } from "../util.js";

const table = (cls, headers, body) =>
  h(
    "table",
    { class: cls },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        headers.map((t) => h("th", { scope: "col" }, t)),
      ),
    ),
    body,
  );

function head(job, on) {
  const button = TERMINAL.has(job.status)
    ? h("button", { type: "button", class: "danger", "data-testid": "delete", onclick: on.remove }, "Delete")
    : h("button", { type: "button", class: "danger", "data-testid": "cancel", onclick: on.cancel }, "Cancel");
  return h(
    "div",
    { class: "page-head" },
    h("h1", {}, h("span", { "data-testid": "job-name" }, job.name), " ", badge(job.status, "job-status")),
    h(
      "div",
      { class: "actions" },
      h("a", { class: "button", href: `#/compare?ids=${job.id}` }, "Compare…"),
      button,
    ),
  );
}

function facts(job) {
  const out = [
    ["id", h("code", { "data-testid": "job-id" }, job.id)],
    ["owner", `${job.owner}${job.team ? ` (${job.team})` : ""}`],
    ["queue", `${job.queue} · ${job.priority} priority`],
    ["attempt", `${job.attempt} of ${job.max_attempts}`],
    ["submitted", when(job.created_at)],
    ["started", when(job.started_at) || "–"],
    ["finished", when(job.finished_at) || "–"],
  ];
  if (job.started_at) {
    const end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
    out.push(["ran for", duration((end - Date.parse(job.started_at)) / 1000)]);
  }
  return h(
    "dl",
    { class: "facts" },
    out.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))),
  );
}

function summaryParts(job) {
  const p = job.progress;
  const fraction = job.status === "succeeded" ? 1 : (p?.fraction ?? 0);
  return [
    h(
      "div",
      { class: "progress-row" },
      progressBar(p, job.status),
      h(
        "span",
        { class: "progress-text", "data-testid": "job-progress" },
        `${Math.round(fraction * 100)}%`,
        p?.stage ? ` · ${stageText(p)}` : "",
        p?.eta_s && job.status === "running" ? ` · about ${duration(p.eta_s)} left` : "",
      ),
    ),
    job.waiting
      ? h(
          "p",
          { class: "waiting", "data-testid": "waiting" },
          `Waiting: ${place(job.waiting)} in ${job.queue} — ${job.waiting.message}`,
        )
      : null,
    job.error
      ? h(
          "div",
          { class: "problem", role: "alert", "data-testid": "job-failure" },
          h("strong", {}, job.error.type),
          ": ",
          job.error.message,
        )
      : null,
    facts(job),
  ];
}

function eventRow(e) {
  return h(
    "tr",
    { "data-kind": e.kind },
    h("td", { class: "nowrap small" }, when(e.at)),
    h("td", {}, h("span", { class: "tag" }, e.kind)),
    h("td", {}, e.message),
    h("td", {}, e.actor || ""),
  );
}

function artifactRow(a, onSave) {
  return h(
    "tr",
    { "data-testid": "artifact", "data-name": a.name },
    h("td", {}, a.name, h("div", { class: "small muted" }, a.filename)),
    h("td", { class: "num nowrap" }, bytes(a.size)),
    h("td", { class: "mono small", title: a.sha256 }, `${a.sha256.slice(0, 12)}…`),
    h(
      "td",
      {},
      h("button", { type: "button", class: "small", onclick: (e) => onSave(e.target, a) }, "Download"),
    ),
  );
}

const card = (title, ...children) => h("section", { class: "card" }, h("h2", {}, title), ...children);

// The slots the page fills as the job moves, and the page made of them.
function layout(on) {
  const slots = {
    errors: errorSlot("job-error"),
    head: h("div", { class: "job-head" }),
    summary: h("section", { class: "card", "data-testid": "job-summary" }),
    report: h("section", { class: "card", hidden: true }, h("h2", {}, "Result")),
    grid: chartGrid("charts"),
    events: h("tbody", { "data-testid": "events-body" }),
    artifacts: h("div", { "data-testid": "artifacts" }, h("p", { class: "muted" }, "None yet.")),
    spec: h("pre", { class: "code", "data-testid": "spec" }),
  };
  const editAsNew = h(
    "button",
    { type: "button", "data-testid": "edit-as-new", onclick: on.editAsNew },
    "Edit as a new job",
  );
  const eventsTable = table("events", ["At", "Kind", "Message", "By"], slots.events);
  const el = [
    slots.head,
    slots.errors.el,
    slots.summary,
    slots.report,
    card("Training curves", slots.grid.el),
    h(
      "div",
      { class: "two-cols" },
      card("Events", h("div", { class: "scroll" }, eventsTable)),
      card("Artifacts", slots.artifacts),
    ),
    h(
      "section",
      { class: "card" },
      h("div", { class: "section-head" }, h("h2", {}, "Spec"), editAsNew),
      slots.spec,
    ),
  ];
  return { el, ...slots };
}

// The page's elements. `on` holds the callbacks: cancel(), remove(), editAsNew(),
// save(button, artifact).
export function jobView(on) {
  const { el, errors, head: headEl, summary, report, grid, events, artifacts, spec } = layout(on);
  const artifactTable = (items) =>
    table(
      "artifacts",
      ["Name", "Size", "SHA-256", ""],
      h(
        "tbody",
        {},
        items.map((a) => artifactRow(a, on.save)),
      ),
    );

  return {
    el,
    errors,
    // The job itself changed: its head, summary, report and (the first time) its spec.
    drawJob(job, specText) {
      document.title = `${job.name} · Distillery`;
      clear(headEl, head(job, on));
      clear(summary, ...summaryParts(job));
      if (job.report) {
        report.hidden = false;
        clear(report, h("h2", {}, "Result"), reportView(job.report));
      }
      if (!spec.textContent) spec.textContent = specText();
    },
    // Nothing changed, but durations move on.
    drawSummary(job) {
      clear(summary, ...summaryParts(job));
    },
    drawCharts: grid.draw,
    addEvents(items) {
      events.append(...items.map(eventRow));
    },
    drawArtifacts(items) {
      clear(artifacts, items.length ? artifactTable(items) : h("p", { class: "muted" }, "No artifacts."));
    },
    notFound(view, error) {
      clear(view, problemBox(error, "job-error"), h("p", {}, h("a", { href: "#/jobs" }, "Back to the jobs")));
    },
    destroy: grid.destroy,
  };
}
