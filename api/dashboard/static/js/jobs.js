// The jobs list: live (polling GET /v1/jobs with If-None-Match every 2 s), filtered by status,
// owner and name, with cursor pagination ("More") and checkboxes to pick jobs to compare.

import { request } from "./api.js";
import { ago, badge, clear, debounce, duration, h, poll, progressBar, STATUSES, stageText } from "./dom.js";
import { errorSlot } from "./notice.js";
import { go, replaceParams } from "./router.js";

const PAGE = 50;
const MAX_LIVE = 200; // the API's largest page: rows past it (after "More") stop updating
const POLL_MS = 2000;

export function render(view, { params }) {
  const filters = {
    status: new Set((params.get("status") || "").split(",").filter((s) => STATUSES.includes(s))),
    owner: params.get("owner") || "",
    name: params.get("name") || "",
  };
  const selected = new Set((params.get("selected") || "").split(",").filter(Boolean));
  let live = []; // the first page, refreshed by polling
  let older = new Map(); // rows below it: loaded with "More", or pushed down by newer jobs
  let liveCursor = null;
  let moreCursor = null;
  let etag = null;
  let generation = 0; // bumped when the filters change: answers to older queries are dropped
  const rows = new Map(); // job id -> {tr, box, age, version}

  const errors = errorSlot("jobs-error");
  const tbody = h("tbody", { "data-testid": "jobs-body" });
  const summary = h("span", { class: "muted", "data-testid": "jobs-summary" });
  const more = h(
    "button",
    { type: "button", "data-testid": "more", hidden: true, onclick: loadMore },
    "More",
  );
  const compareButton = h(
    "button",
    { type: "button", class: "primary", "data-testid": "compare-selected", onclick: compareSelected },
    "Compare",
  );

  function syncUrl() {
    replaceParams(
      new URLSearchParams({
        status: [...filters.status].join(","),
        owner: filters.owner,
        name: filters.name,
        selected: [...selected].join(","),
      }),
    );
    compareButton.disabled = selected.size < 2;
    compareButton.textContent = `Compare selected (${selected.size})`;
  }

  function query(extra) {
    return { status: [...filters.status], owner: filters.owner, name: filters.name, ...extra };
  }

  function displayed() {
    const ids = new Set(live.map((j) => j.id));
    const rest = [...older.values()].filter((j) => !ids.has(j.id));
    rest.sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0));
    return [...live, ...rest];
  }

  function row(job) {
    let r = rows.get(job.id);
    if (!r) {
      const box = h("input", {
        type: "checkbox",
        checked: selected.has(job.id),
        "aria-label": `select ${job.name} to compare`,
        "data-testid": "select-job",
        onchange: () => {
          if (box.checked) selected.add(job.id);
          else selected.delete(job.id);
          syncUrl();
        },
      });
      r = { tr: h("tr", { "data-testid": "job-row", "data-job-id": job.id }), box, version: null };
      rows.set(job.id, r);
    }
    if (r.version !== job.version) {
      r.version = job.version;
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
        h(
          "td",
          { class: "progress-cell" },
          progressBar(job.progress, job.status),
          h(
            "div",
            { class: "small muted", "data-testid": "stage" },
            stageText(job.progress),
            job.progress?.eta_s && job.status === "running" ? ` · ${duration(job.progress.eta_s)} left` : "",
          ),
        ),
        h("td", { "data-testid": "owner" }, job.owner),
        r.age,
        h("td", { class: "small", "data-testid": "waiting" }, waitingText(job)),
      );
    } else {
      r.age.textContent = ago(job.created_at);
    }
    return r.tr;
  }

  function draw() {
    const jobs = displayed();
    const wanted = jobs.map(row);
    const shown = [...tbody.children];
    if (wanted.length !== shown.length || wanted.some((tr, i) => tr !== shown[i])) {
      tbody.replaceChildren(...wanted);
    }
    if (!jobs.length) {
      tbody.replaceChildren(
        h(
          "tr",
          {},
          h(
            "td",
            { colspan: 7, class: "empty" },
            filters.status.size || filters.owner || filters.name
              ? "No job matches these filters."
              : h("span", {}, "No jobs yet. ", h("a", { href: "#/submit" }, "Submit one"), "."),
          ),
        ),
      );
    }
    const cursor = older.size ? moreCursor : liveCursor;
    more.hidden = !cursor;
    summary.textContent = `${jobs.length} job${jobs.length === 1 ? "" : "s"} · updated ${new Date().toLocaleTimeString()}`;
  }

  async function tick() {
    const gen = generation;
    const limit = Math.min(MAX_LIVE, Math.max(PAGE, live.length + older.size));
    try {
      const answer = await request("v1/jobs", { params: query({ limit }), etag });
      if (gen !== generation) return;
      errors.clear();
      if (answer.status !== 304) {
        const ids = new Set(answer.data.items.map((j) => j.id));
        const last = answer.data.items.at(-1);
        if (older.size && last) {
          // a job pushed off the first page by newer ones stays listed (it is still there)
          for (const j of live) if (!ids.has(j.id) && j.created_at <= last.created_at) older.set(j.id, j);
        }
        for (const id of ids) older.delete(id);
        live = answer.data.items;
        liveCursor = answer.data.next_cursor;
        etag = answer.etag;
      }
      draw();
    } catch (e) {
      if (gen === generation) errors.show(e);
    }
  }

  async function loadMore() {
    const gen = generation;
    more.disabled = true;
    try {
      const cursor = older.size ? moreCursor : liveCursor;
      const page = (await request("v1/jobs", { params: query({ limit: PAGE, cursor }) })).data;
      if (gen !== generation) return;
      const ids = new Set(live.map((j) => j.id));
      for (const j of page.items) if (!ids.has(j.id)) older.set(j.id, j);
      moreCursor = page.next_cursor;
      draw();
    } catch (e) {
      errors.show(e);
    } finally {
      more.disabled = false;
    }
  }

  let stop = poll(tick, POLL_MS);

  function refilter() {
    generation += 1;
    live = [];
    older = new Map();
    liveCursor = moreCursor = etag = null;
    tbody.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "Loading…")));
    syncUrl();
    stop();
    stop = poll(tick, POLL_MS);
  }

  function compareSelected() {
    go("/compare", { ids: [...selected].join(",") });
  }

  const statusBoxes = STATUSES.map((s) =>
    h(
      "label",
      { class: `chip status-${s}` },
      h("input", {
        type: "checkbox",
        checked: filters.status.has(s),
        "data-testid": `filter-status-${s}`,
        onchange: (e) => {
          if (e.target.checked) filters.status.add(s);
          else filters.status.delete(s);
          refilter();
        },
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
      oninput: debounce((e) => {
        filters[key] = e.target.value.trim();
        refilter();
      }, 400),
    });
  const owner = textFilter("owner", "text", "any");
  const name = textFilter("name", "search", "part of a job name");

  view.append(
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, "Jobs"),
      h(
        "div",
        { class: "actions" },
        summary,
        compareButton,
        h("a", { class: "button", href: "#/submit" }, "New job"),
      ),
    ),
    h(
      "form",
      { class: "filters card", onsubmit: (e) => e.preventDefault(), "aria-label": "filters" },
      h("fieldset", { class: "statuses" }, h("legend", {}, "Status"), statusBoxes),
      h("div", { class: "field" }, h("label", { for: "filter-owner" }, "Owner"), owner),
      h("div", { class: "field" }, h("label", { for: "filter-name" }, "Name"), name),
    ),
    errors.el,
    h(
      "table",
      { class: "jobs", "data-testid": "jobs-table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { class: "sel" }, h("span", { class: "sr-only" }, "Compare")),
          ["Name", "Status", "Progress", "Owner", "Age", "Waiting / error"].map((t) =>
            h("th", { scope: "col" }, t),
          ),
        ),
      ),
      tbody,
    ),
    h("div", { class: "more" }, more),
  );
  syncUrl();
  return () => stop();
}

function waitingText(job) {
  if (job.waiting) return `#${job.waiting.position} · ${job.waiting.message}`;
  if (job.queue_position) return `#${job.queue_position} in ${job.queue}`;
  if (job.error) return `${job.error.type}: ${job.error.message}`;
  return "";
}
