// The sweeps' data, without DOM: the list (its first page polled, older pages read with "More"),
// one sweep (polled with If-None-Match while it or a trial is live, its best trial's job read
// once per best trial), and the trials' order and plot points the sweep page draws.

import { get, request } from "../api.js";
import { TERMINAL } from "../util.js";

const PAGE = 50;

export class SweepList {
  constructor() {
    this.live = []; // the first page, refreshed by polling
    this.older = new Map(); // rows below it, loaded with "More"
    this.liveCursor = null;
    this.moreCursor = null;
    this.etag = null;
  }

  get cursor() {
    return this.older.size ? this.moreCursor : this.liveCursor;
  }

  rows() {
    const ids = new Set(this.live.map((s) => s.id));
    return [...this.live, ...[...this.older.values()].filter((s) => !ids.has(s.id))];
  }

  // One poll of the first page; false when nothing changed (a 304).
  async refresh() {
    const answer = await request("v1/sweeps", { params: { limit: PAGE }, etag: this.etag });
    if (answer.status === 304) return false;
    this.live = answer.data.items;
    this.liveCursor = answer.data.next_cursor;
    this.etag = answer.etag;
    return true;
  }

  async loadMore() {
    const page = await get("v1/sweeps", { limit: PAGE, cursor: this.cursor });
    for (const s of page.items) this.older.set(s.id, s);
    this.moreCursor = page.next_cursor;
  }
}

// Whether the objective is better when higher (the API's default: maximize unless a loss).
export function maximizes(objective) {
  return objective?.direction ? objective.direction === "maximize" : objective?.metric !== "val/loss";
}

// A trial still to move: its job is not finished ("invalid" trials never had a job).
const liveTrial = (t) => t.status !== "invalid" && !TERMINAL.has(t.status);

export class SweepFeed {
  constructor(id) {
    this.id = id;
    this.sweep = null;
    this.etag = null;
    this.best = null; // the best trial's job (with its report)
  }

  // Poll on while the sweep runs, a trial of it is still live (a cancelled sweep's running
  // trial is "cancelling" for a few seconds), or its best trial's report is not read yet.
  get settled() {
    const s = this.sweep;
    if (!s || s.status === "running" || s.trials.some(liveTrial)) return false;
    return !s.best_job_id || this.best?.id === s.best_job_id;
  }

  // One poll: {changed (the sweep), best (its best trial's job, when that changed)}.
  async refresh() {
    const answer = await request(`v1/sweeps/${this.id}`, { etag: this.etag });
    const out = { changed: answer.status !== 304, best: null };
    if (out.changed) {
      this.sweep = answer.data;
      this.etag = answer.etag;
    }
    const bestId = this.sweep.best_job_id;
    if (bestId && this.best?.id !== bestId) {
      try {
        this.best = await get(`v1/jobs/${bestId}`);
      } catch (e) {
        if (e.status !== 404) throw e;
        this.best = { id: bestId, gone: true }; // deleted: nothing to show, nothing to read again
      }
      out.best = this.best;
    }
    return out;
  }

  async cancel() {
    this.sweep = (await request(`v1/sweeps/${this.id}/cancel`, { method: "POST" })).data;
    this.etag = null; // the next poll reads the sweep whole
    return this.sweep;
  }
}

// The sweep's parameter paths, in the request's order.
export function paramNames(sweep) {
  const names = Object.keys(sweep.request?.params || {});
  for (const t of sweep.trials) for (const k of Object.keys(t.params)) if (!names.includes(k)) names.push(k);
  return names;
}

// Short column labels: each path's shortest dotted suffix that no other path ends with
// (`distill.losses.0.temperature` → `temperature`; two `weight`s keep their loss index).
export function shortNames(paths) {
  return Object.fromEntries(
    paths.map((path) => {
      const parts = path.split(".");
      for (let n = 1; n <= parts.length; n += 1) {
        const tail = parts.slice(-n).join(".");
        if (!paths.some((p) => p !== path && (p === tail || p.endsWith(`.${tail}`)))) return [path, tail];
      }
      return [path, path];
    }),
  );
}

// A trial's objective, if it completed. A pruned trial also carries one (Optuna keeps the last
// value reported before the pruner stopped it), but an early epoch's value ranks nothing.
export function objectiveOf(trial) {
  return trial.status === "succeeded" ? (trial.objective ?? null) : null;
}

const STATUS_ORDER = ["running", "starting", "queued", "retrying", "cancelling", "succeeded", "pruned"];

// The value a column sorts by; null sorts last whichever the direction.
function sortValue(trial, key) {
  if (key === "objective") return objectiveOf(trial);
  if (key === "number") return trial.number;
  if (key === "status") {
    const i = STATUS_ORDER.indexOf(trial.status);
    return i < 0 ? STATUS_ORDER.length : i;
  }
  if (key.startsWith("param:")) return trial.params[key.slice(6)] ?? null;
  return null;
}

function compare(a, b) {
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b), "en", { numeric: true });
}

// The trials in the order of one column: `dir` "asc" or "desc"; ties by trial number.
export function sortTrials(trials, key, dir) {
  const sign = dir === "desc" ? -1 : 1;
  return [...trials].sort((x, y) => {
    const a = sortValue(x, key);
    const b = sortValue(y, key);
    if (a === null || b === null) return a === b ? x.number - y.number : a === null ? 1 : -1;
    return sign * compare(a, b) || x.number - y.number;
  });
}

// The first click on a column: the objective best first, the others ascending.
export function firstDirection(key, objective) {
  if (key !== "objective") return "asc";
  return maximizes(objective) ? "desc" : "asc";
}

// How a parameter's axis runs: "category" where a value is not a number (a string, a boolean);
// "log" for a range sampled on a log scale, or a list of positive values a decade or more apart
// (learning rates); else "linear".
function axisKind(space, xs) {
  if (!xs.every((x) => typeof x === "number")) return "category";
  if (!xs.every((x) => x > 0)) return "linear";
  const listed = Array.isArray(space) && space.every((v) => typeof v === "number" && v > 0);
  const spread = listed && Math.max(...space) / Math.min(...space) >= 10;
  return space?.log || spread ? "log" : "linear";
}

// One plot per parameter: [{path, points: [{x, y, number, best}], kind}] from the completed trials.
export function plotData(sweep) {
  const done = sweep.trials.filter((t) => objectiveOf(t) !== null);
  const bestNumber = sweep.best?.number;
  return paramNames(sweep).map((path) => {
    const space = sweep.request?.params?.[path];
    const points = done
      .filter((t) => t.params[path] !== undefined)
      .map((t) => ({ x: t.params[path], y: t.objective, number: t.number, best: t.number === bestNumber }));
    return {
      path,
      points,
      kind: axisKind(
        space,
        points.map((p) => p.x),
      ),
    };
  });
}
