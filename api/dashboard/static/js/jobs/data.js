// The jobs list's data: the filters and the selection (both kept in the address bar), the first
// page refreshed by polling GET /v1/jobs with If-None-Match, and the older rows "More" loaded.

import { get, request } from "../api.js";
import { STATUSES } from "../util.js";

const PAGE = 50;
const MAX_LIVE = 200; // the API's largest page: rows past it (after "More") stop updating
const EPOCHS_PER_POLL = 10; // job details read per poll, for the best epoch's "of M"

const newestFirst = (a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0);

export class JobList {
  constructor(params) {
    this.filters = {
      status: new Set((params.get("status") || "").split(",").filter((s) => STATUSES.includes(s))),
      owner: params.get("owner") || "",
      name: params.get("name") || "",
    };
    this.selected = new Set((params.get("selected") || "").split(",").filter(Boolean));
    // job id -> its number of distillation epochs, from its spec (the list's items carry no spec,
    // and a finished job's progress is its evaluation's): read once per succeeded job, as it
    // never changes; null where it could not be read
    this.epochs = new Map();
    this.reset();
  }

  // Forgets every row: the filters changed. Answers to the older queries are then dropped.
  reset() {
    this.live = []; // the first page, refreshed by polling
    this.older = new Map(); // rows below it: loaded with "More", or pushed down by newer jobs
    this.liveCursor = null;
    this.moreCursor = null;
    this.etag = null;
    this.generation = (this.generation ?? 0) + 1;
  }

  get filtered() {
    return Boolean(this.filters.status.size || this.filters.owner || this.filters.name);
  }

  // Where "More" reads from; null once everything is listed.
  get cursor() {
    return this.older.size ? this.moreCursor : this.liveCursor;
  }

  // What the address bar keeps, so that a reload shows the same list.
  urlParams() {
    return new URLSearchParams({
      status: [...this.filters.status].join(","),
      owner: this.filters.owner,
      name: this.filters.name,
      selected: [...this.selected].join(","),
    });
  }

  // The rows to show, newest first: the live page, then the older rows not on it.
  rows() {
    const ids = new Set(this.live.map((j) => j.id));
    const rest = [...this.older.values()].filter((j) => !ids.has(j.id)).sort(newestFirst);
    return [...this.live, ...rest];
  }

  query(extra) {
    const { status, owner, name } = this.filters;
    return { status: [...status], owner, name, ...extra };
  }

  // One poll of the first page (a 304 when nothing changed). False when the filters changed
  // meanwhile (the answer is dropped); an error is thrown only for the current filters.
  async refresh() {
    const generation = this.generation;
    const limit = Math.min(MAX_LIVE, Math.max(PAGE, this.live.length + this.older.size));
    let answer;
    try {
      answer = await request("v1/jobs", { params: this.query({ limit }), etag: this.etag });
    } catch (e) {
      if (generation !== this.generation) return false;
      throw e;
    }
    if (generation !== this.generation) return false;
    if (answer.status !== 304) this.takeLive(answer);
    return true;
  }

  takeLive(answer) {
    const items = answer.data.items;
    const ids = new Set(items.map((j) => j.id));
    const last = items.at(-1);
    if (this.older.size && last) {
      // a job pushed off the first page by newer ones stays listed (it is still there)
      for (const j of this.live)
        if (!ids.has(j.id) && j.created_at <= last.created_at) this.older.set(j.id, j);
    }
    for (const id of ids) this.older.delete(id);
    this.live = items;
    this.liveCursor = answer.data.next_cursor;
    this.etag = answer.etag;
  }

  // Reads the distillation epochs of the listed succeeded jobs that lack them, a few per call
  // (GET /v1/jobs/{id}: the spec). Returns whether any arrived.
  async readEpochs() {
    const wanted = this.rows()
      .filter((j) => j.status === "succeeded" && j.result && !this.epochs.has(j.id))
      .slice(0, EPOCHS_PER_POLL);
    const read = await Promise.all(wanted.map((j) => this.readJobEpochs(j.id)));
    return read.some((n) => n !== null);
  }

  async readJobEpochs(id) {
    try {
      const epochs = (await get(`v1/jobs/${id}`)).spec?.distill?.epochs ?? null;
      this.epochs.set(id, epochs);
      return epochs;
    } catch (e) {
      if (e.status !== 404) throw e;
      this.epochs.set(id, null); // deleted meanwhile: the next poll drops its row
      return null;
    }
  }

  // The next page below what is listed. False when the filters changed meanwhile.
  async loadMore() {
    const generation = this.generation;
    const page = (await request("v1/jobs", { params: this.query({ limit: PAGE, cursor: this.cursor }) }))
      .data;
    if (generation !== this.generation) return false;
    const ids = new Set(this.live.map((j) => j.id));
    for (const j of page.items) if (!ids.has(j.id)) this.older.set(j.id, j);
    this.moreCursor = page.next_cursor;
    return true;
  }
}

// "Results at a glance" for a succeeded job's row: the student's test top-1 (of the weights of
// its best validation epoch), the KD gain, that epoch, and `epochs`, the number of distillation
// epochs (the last one), once known. Null for a job without a result.
export function glance(job, epochs) {
  const result = job.status === "succeeded" ? job.result : null;
  if (!result) return null;
  const best = result.best_epoch ?? null;
  const known = epochs ?? null;
  return { ...result, epochs: known, notLast: best !== null && known !== null && best < known };
}
