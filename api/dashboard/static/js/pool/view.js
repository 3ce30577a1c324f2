// The GPU pool's view: a table of the worker hosts (their devices, free slots and the jobs on
// them, with the device indices each job holds) and the queue per team and per GPU type.

import { badge, clear, h, progressBar } from "../dom.js";
import { ago, stageText } from "../format.js";
import { errorSlot } from "../notice.js";

// A CPU host numbers job slots, not GPUs.
const isCpu = (w) => w.devices.length > 0 && w.devices.every((d) => d.name === "cpu");

// A device, and the job that holds it (or "free" on an online host).
function device(d, holder, online) {
  const memory =
    d.memory_mb !== undefined && d.memory_mb !== null
      ? `${d.memory_used_mb ?? "?"} / ${d.memory_mb} MB`
      : null;
  const util = d.utilization !== undefined && d.utilization !== null ? `${d.utilization}%` : null;
  return h(
    "div",
    { class: "device", "data-testid": "device", "data-index": d.index ?? null },
    d.index !== undefined && d.index !== null ? h("span", { class: "mono" }, `${d.index} `) : null,
    h("strong", {}, d.name || "device"),
    [memory, util].filter(Boolean).map((t) => ` · ${t}`),
    holder || online ? h("span", { class: "small muted" }, ` · ${holder ?? "free"}`) : null,
  );
}

// Who holds a device: the job's name, or its team for another team's job.
const holderName = (job) => job.name || job.id || `a job of team ${job.team}`;

function jobCell(job, unit) {
  const held = job.devices?.length
    ? h("span", { class: "small mono", "data-testid": "job-devices" }, ` ${unit} ${job.devices.join(",")}`)
    : null;
  if (!job.id) return h("div", {}, `a job of team ${job.team} `, badge(job.status), held); // another team's
  return h(
    "div",
    { "data-testid": "pool-job", "data-job-id": job.id },
    h("a", { href: `#/jobs/${job.id}` }, job.name || job.id),
    " ",
    badge(job.status),
    held,
    h("div", { class: "small muted" }, `${job.owner ?? ""} · ${job.team ?? ""}`),
    job.progress
      ? h(
          "div",
          { class: "mini" },
          progressBar(job.progress, job.status),
          h("span", { class: "small" }, stageText(job.progress)),
        )
      : null,
  );
}

function table(testid, headers, rows, empty, numeric = 0) {
  // the last `numeric` columns hold counts: right-aligned, headers included
  const num = (i) => (i >= headers.length - numeric ? "num" : null);
  return h(
    "table",
    { "data-testid": testid },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        headers.map((t, i) => h("th", { scope: "col", class: num(i) }, t)),
      ),
    ),
    h(
      "tbody",
      {},
      rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length, class: "empty" }, empty)),
    ),
  );
}

function workerRow(w) {
  const jobs = w.jobs ?? (w.job ? [w.job] : []);
  const unit = isCpu(w) ? "slots" : "GPUs";
  const holders = new Map(jobs.flatMap((job) => (job.devices ?? []).map((i) => [i, holderName(job)])));
  return h(
    "tr",
    { "data-testid": "worker-row", "data-worker-id": w.id },
    h("td", {}, h("div", { class: "mono small" }, w.id), h("div", { class: "small muted" }, w.host)),
    h("td", {}, h("span", { class: `badge worker-${w.status}` }, w.status)),
    h("td", {}, w.gpu_type),
    h("td", { class: "num", "data-testid": "free-slots" }, `${w.free_slots ?? "?"} / ${w.slots ?? "?"}`),
    h(
      "td",
      {},
      w.devices.length
        ? w.devices.map((d) => device(d, holders.get(d.index), w.status === "online"))
        : h("span", { class: "muted" }, "CPU only"),
    ),
    h(
      "td",
      {},
      jobs.length ? jobs.map((job) => jobCell(job, unit)) : h("span", { class: "muted" }, "idle"),
    ),
    h("td", { title: w.last_heartbeat_at }, ago(w.last_heartbeat_at)),
  );
}

// A queue's counts, by `label` (its team or its GPU type).
const countRow = (label, key) => (q) =>
  h(
    "tr",
    { "data-testid": `${key}-row` },
    h("td", {}, q[label]),
    h("td", { class: "num" }, q.queued),
    h("td", { class: "num" }, q.running),
  );

export function poolView() {
  const errors = errorSlot("pool-error");
  const workers = h("div", { class: "scroll-x" });
  const teams = h("div");
  const queues = h("div");
  const updated = h("span", { class: "muted small", "data-testid": "pool-updated" });
  const el = [
    h("div", { class: "page-head" }, h("h1", {}, "GPU pool"), updated),
    errors.el,
    h("section", { class: "card" }, h("h2", {}, "Workers"), workers),
    h(
      "div",
      { class: "two-cols" },
      h("section", { class: "card" }, h("h2", {}, "Queue per team"), teams),
      h("section", { class: "card" }, h("h2", {}, "Queue per GPU type"), queues),
    ),
  ];
  const idle = "No jobs waiting or running.";

  return {
    el,
    errors,
    draw(pool) {
      const head = [
        "Worker host",
        "State",
        "GPU type",
        "Free slots",
        "Devices",
        "Jobs",
        "Last heartbeat",
      ];
      clear(workers, table("pool-workers", head, pool.workers.map(workerRow), "No worker has registered."));
      clear(
        teams,
        table("pool-teams", ["Team", "Queued", "Running"], pool.teams.map(countRow("team", "team")), idle, 2),
      );
      clear(
        queues,
        table(
          "pool-queues",
          ["GPU type", "Queued", "Running"],
          pool.queues.map(countRow("queue", "queue")),
          idle,
          2,
        ),
      );
      updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    },
  };
}
