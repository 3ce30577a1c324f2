// A job's metric rows, read incrementally (GET /v1/jobs/{id}/metrics?after=<cursor>) and kept
// as series: (stage, name) -> epoch -> value. The engine records, per stage and epoch:
// train/loss and train/<term> (each loss term), val/top1, val/top5, val/loss, lr, samples_per_s.

import { drain } from "./api.js";

const PAGE = 5000;

export class MetricStore {
  constructor(jobId) {
    this.jobId = jobId;
    this.cursor = undefined;
    this.series = new Map(); // `${stage}\n${name}` -> Map(epoch -> value)
    this.stages = []; // in the order they first appear: teacher, teacher1, baseline, student
  }

  // Reads the rows written since the last call; returns how many arrived.
  async fetchNew() {
    const { items, cursor } = await drain(`v1/jobs/${this.jobId}/metrics`, { limit: PAGE }, this.cursor);
    this.cursor = cursor;
    for (const m of items) {
      if (!this.stages.includes(m.stage)) this.stages.push(m.stage);
      const key = `${m.stage}\n${m.name}`;
      if (!this.series.has(key)) this.series.set(key, new Map());
      this.series.get(key).set(m.epoch, m.value); // a replayed epoch overwrites, as in the database
    }
    return items.length;
  }

  get(stage, name) {
    return this.series.get(`${stage}\n${name}`) || new Map();
  }

  names(stage) {
    const out = [];
    for (const key of this.series.keys()) {
      const [s, name] = key.split("\n");
      if (s === stage) out.push(name);
    }
    return out;
  }

  // The loss terms of a stage: train/loss first, then each term (train/kd, train/ce, ...).
  lossNames(stage) {
    const train = this.names(stage).filter((n) => n.startsWith("train/"));
    return train.sort((a, b) => (a === "train/loss" ? -1 : b === "train/loss" ? 1 : a.localeCompare(b)));
  }
}

// uPlot's data: one x array (the union of epochs) and one y array per series, null where a
// series has no point at that epoch. `series` is a Map label -> Map(epoch -> value).
export function align(series) {
  const epochs = new Set();
  for (const points of series.values()) for (const e of points.keys()) epochs.add(e);
  const x = [...epochs].sort((a, b) => a - b);
  const ys = new Map();
  for (const [label, points] of series)
    ys.set(
      label,
      x.map((e) => points.get(e) ?? null),
    );
  return { x, ys };
}
