// One job: its state (polled with If-None-Match), live charts from its metrics (read
// incrementally), the final report, the spec, the events, the artifacts, Cancel and Delete.
// Polling stops once the job is finished and everything it wrote has been read.

import { download, drain, get, request } from "./api.js";
import { lineChart } from "./charts.js";
import { badge, bytes, clear, duration, h, poll, progressBar, stageText, TERMINAL, when } from "./dom.js";
import { MetricStore } from "./metrics.js";
import { errorSlot, flash, problemBox } from "./notice.js";
import { reportView } from "./report.js";
import { go } from "./router.js";
import { DRAFT_KEY } from "./submit.js";
import { toYaml } from "./yaml.js";

const POLL_MS = 2000;

export function render(view, { id }) {
  let job = null;
  let etag = null;
  let eventsCursor = undefined;
  let artifactsShown = false;
  const metrics = new MetricStore(id);
  const charts = new Map(); // chart id -> lineChart
  const errors = errorSlot("job-error");

  const head = h("div", { class: "job-head" });
  const summary = h("section", { class: "card", "data-testid": "job-summary" });
  const reportSection = h("section", { class: "card", hidden: true }, h("h2", {}, "Result"));
  const chartGrid = h("div", { class: "chart-grid", "data-testid": "charts" });
  const eventsBody = h("tbody", { "data-testid": "events-body" });
  const artifactsSection = h("div", { "data-testid": "artifacts" }, h("p", { class: "muted" }, "None yet."));
  const specView = h("pre", { class: "code", "data-testid": "spec" });

  view.append(
    head,
    errors.el,
    summary,
    reportSection,
    h("section", { class: "card" }, h("h2", {}, "Training curves"), chartGrid),
    h(
      "div",
      { class: "two-cols" },
      h(
        "section",
        { class: "card" },
        h("h2", {}, "Events"),
        h(
          "div",
          { class: "scroll" },
          h(
            "table",
            { class: "events" },
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                ["At", "Kind", "Message", "By"].map((t) => h("th", { scope: "col" }, t)),
              ),
            ),
            eventsBody,
          ),
        ),
      ),
      h("section", { class: "card" }, h("h2", {}, "Artifacts"), artifactsSection),
    ),
    h(
      "section",
      { class: "card" },
      h(
        "div",
        { class: "section-head" },
        h("h2", {}, "Spec"),
        h(
          "button",
          { type: "button", "data-testid": "edit-as-new", onclick: editAsNew },
          "Edit as a new job",
        ),
      ),
      specView,
    ),
  );

  function chart(key, title, settings) {
    if (!charts.has(key)) {
      const c = lineChart(key, title, settings);
      charts.set(key, c);
      chartGrid.append(c.el);
    }
    return charts.get(key);
  }

  function drawCharts() {
    const stages = metrics.stages;
    const accuracy = new Map(stages.map((s) => [s, metrics.get(s, "val/top1")]).filter(([, m]) => m.size));
    if (accuracy.size) chart("accuracy", "Validation accuracy (top-1)", { percent: true }).update(accuracy);
    for (const stage of stages) {
      const terms = metrics.lossNames(stage);
      if (!terms.length) continue;
      const series = new Map(terms.map((n) => [n, metrics.get(stage, n)]));
      const val = metrics.get(stage, "val/loss");
      if (val.size) series.set("val/loss", val);
      chart(`loss-${stage}`, `Loss · ${stage}`, { dashed: (label) => label.startsWith("val/") }).update(
        series,
      );
    }
    const lr = new Map(stages.map((s) => [s, metrics.get(s, "lr")]).filter(([, m]) => m.size));
    if (lr.size) chart("lr", "Learning rate", {}).update(lr);
  }

  function drawHead() {
    const live = !TERMINAL.has(job.status);
    clear(
      head,
      h(
        "div",
        { class: "page-head" },
        h("h1", {}, h("span", { "data-testid": "job-name" }, job.name), " ", badge(job.status, "job-status")),
        h(
          "div",
          { class: "actions" },
          h("a", { class: "button", href: `#/compare?ids=${job.id}` }, "Compare…"),
          live
            ? h(
                "button",
                { type: "button", class: "danger", "data-testid": "cancel", onclick: cancel },
                "Cancel",
              )
            : h(
                "button",
                { type: "button", class: "danger", "data-testid": "delete", onclick: remove },
                "Delete",
              ),
        ),
      ),
    );
  }

  function drawSummary() {
    const p = job.progress;
    const facts = [
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
      facts.push(["ran for", duration((end - Date.parse(job.started_at)) / 1000)]);
    }
    clear(
      summary,
      h(
        "div",
        { class: "progress-row" },
        progressBar(p, job.status),
        h(
          "span",
          { class: "progress-text", "data-testid": "job-progress" },
          `${Math.round((job.status === "succeeded" ? 1 : (p?.fraction ?? 0)) * 100)}%`,
          p?.stage ? ` · ${stageText(p)}` : "",
          p?.eta_s && job.status === "running" ? ` · about ${duration(p.eta_s)} left` : "",
        ),
      ),
      job.waiting
        ? h(
            "p",
            { class: "waiting", "data-testid": "waiting" },
            `Waiting: #${job.waiting.position} in ${job.queue} — ${job.waiting.message}`,
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
      h(
        "dl",
        { class: "facts" },
        facts.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))),
      ),
    );
  }

  function drawJob() {
    document.title = `${job.name} · Distillery`;
    drawHead();
    drawSummary();
    if (job.report) {
      reportSection.hidden = false;
      clear(reportSection, h("h2", {}, "Result"), reportView(job.report));
    }
    if (!specView.textContent) specView.textContent = toYaml(job.spec);
  }

  async function readEvents() {
    const { items, cursor } = await drain(
      `v1/jobs/${id}/events`,
      { format: "json", limit: 500 },
      eventsCursor,
    );
    eventsCursor = cursor;
    for (const e of items) {
      eventsBody.append(
        h(
          "tr",
          { "data-kind": e.kind },
          h("td", { class: "nowrap small" }, when(e.at)),
          h("td", {}, h("span", { class: "tag" }, e.kind)),
          h("td", {}, e.message),
          h("td", {}, e.actor || ""),
        ),
      );
    }
    return items.length;
  }

  async function readArtifacts() {
    const { items } = await get(`v1/jobs/${id}/artifacts`);
    if (!items.length) {
      clear(artifactsSection, h("p", { class: "muted" }, "No artifacts."));
      return;
    }
    clear(
      artifactsSection,
      h(
        "table",
        { class: "artifacts" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Name", "Size", "SHA-256", ""].map((t) => h("th", { scope: "col" }, t)),
          ),
        ),
        h(
          "tbody",
          {},
          items.map((a) =>
            h(
              "tr",
              { "data-testid": "artifact", "data-name": a.name },
              h("td", {}, a.name, h("div", { class: "small muted" }, a.filename)),
              h("td", { class: "num nowrap" }, bytes(a.size)),
              h("td", { class: "mono small", title: a.sha256 }, `${a.sha256.slice(0, 12)}…`),
              h(
                "td",
                {},
                h(
                  "button",
                  { type: "button", class: "small", onclick: (e) => save(e.target, a) },
                  "Download",
                ),
              ),
            ),
          ),
        ),
      ),
    );
  }

  async function save(button, artifact) {
    button.disabled = true;
    try {
      await download(`v1/artifacts/${artifact.id}`, artifact.filename);
    } catch (e) {
      errors.show(e);
    } finally {
      button.disabled = false;
    }
  }

  async function tick() {
    try {
      const answer = await request(`v1/jobs/${id}`, { etag });
      const changed = answer.status !== 304;
      if (changed) {
        job = answer.data;
        etag = answer.etag;
        drawJob();
      } else {
        drawSummary(); // durations move on
      }
      const finished = TERMINAL.has(job.status);
      // New metric rows and events move the job's version: after a 304 there are none to read.
      // Read after the job: once it is seen finished, these reads get everything it wrote.
      if (changed) {
        const [newMetrics] = await Promise.all([metrics.fetchNew(), readEvents()]);
        if (newMetrics) drawCharts();
      }
      if (finished && !artifactsShown) {
        artifactsShown = true;
        await readArtifacts();
      }
      errors.clear();
      return !finished;
    } catch (e) {
      if (e.status === 404) {
        clear(view, problemBox(e, "job-error"), h("p", {}, h("a", { href: "#/jobs" }, "Back to the jobs")));
        return false;
      }
      errors.show(e);
      return true;
    }
  }

  async function cancel() {
    if (!window.confirm(`Cancel job "${job.name}"?`)) return;
    try {
      job = (await request(`v1/jobs/${id}/cancel`, { method: "POST" })).data;
      etag = null;
      drawJob();
      flash(`Job ${job.name}: ${job.status}.`);
      restart();
    } catch (e) {
      errors.show(e);
    }
  }

  async function remove() {
    if (!window.confirm(`Delete job "${job.name}" with its metrics and artifacts?`)) return;
    try {
      await request(`v1/jobs/${id}`, { method: "DELETE" });
      flash(`Job ${job.name} deleted.`);
      go("/jobs");
    } catch (e) {
      errors.show(e);
    }
  }

  function editAsNew() {
    if (!job) return;
    const spec = { ...job.spec, name: `${job.spec.name}-2` };
    sessionStorage.setItem(DRAFT_KEY, `# from job ${job.id}\n${toYaml(spec)}`);
    go("/submit");
  }

  let stop = poll(tick, POLL_MS);
  function restart() {
    stop();
    stop = poll(tick, POLL_MS);
  }
  return () => {
    stop();
    for (const c of charts.values()) c.destroy();
  };
}
