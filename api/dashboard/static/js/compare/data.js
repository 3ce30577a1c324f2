// The comparison's data: the jobs named in #/compare?ids=a,b,c, each polled with its ETag, their
// metric series, and what to chart (the distillation stage of each job, one curve per job).

import { request } from "../api.js";
import { MetricStore } from "../metrics.js";
import { TERMINAL } from "../util.js";

export const STAGE = "student"; // the distillation stage

// The job ids of a comma-separated list, each once, in order.
export function parseIds(text) {
  return [
    ...new Set(
      (text || "")
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean),
    ),
  ];
}

export class Comparison {
  constructor(ids) {
    this.ids = ids;
    this.jobs = new Map(); // id -> job, once read
    this.stores = new Map(ids.map((id) => [id, new MetricStore(id)]));
    this.etags = new Map();
  }

  // The jobs read so far, in the order asked for.
  shown() {
    return this.ids.filter((id) => this.jobs.has(id)).map((id) => this.jobs.get(id));
  }

  label(id) {
    const job = this.jobs.get(id);
    return job ? `${job.name} (${id.slice(0, 6)})` : id;
  }

  // One poll of every job. Returns {live (some job still runs), failed (the first error)}.
  async refresh() {
    let live = false;
    const results = await Promise.allSettled(
      this.ids.map(async (id) => {
        const answer = await request(`v1/jobs/${id}`, { etag: this.etags.get(id) });
        if (answer.status !== 304) {
          this.jobs.set(id, answer.data);
          this.etags.set(id, answer.etag);
        }
        await this.stores.get(id).fetchNew();
        if (!TERMINAL.has(this.jobs.get(id).status)) live = true;
      }),
    );
    const failed = results.find((r) => r.status === "rejected")?.reason ?? null;
    return { live, failed };
  }

  // The labels of the jobs read so far: one colour each, the same in every chart.
  labels() {
    return this.ids.filter((id) => this.jobs.has(id)).map((id) => this.label(id));
  }

  // What to chart: the student's validation accuracy, then each loss term any job has.
  plots() {
    const ids = this.ids.filter((id) => this.jobs.has(id));
    const series = (name) =>
      new Map(
        ids.map((id) => [this.label(id), this.stores.get(id).get(STAGE, name)]).filter(([, m]) => m.size),
      );
    const out = [
      {
        id: "compare-accuracy",
        title: "Student validation accuracy (top-1)",
        series: series("val/top1"),
        percent: true,
      },
    ];
    const terms = new Set();
    for (const id of ids) for (const n of this.stores.get(id).lossNames(STAGE)) terms.add(n);
    for (const term of terms) {
      out.push({ id: `compare-${term.replace("/", "-")}`, title: `Student ${term}`, series: series(term) });
    }
    return out;
  }
}
