// One job's data: the job (polled with its ETag), its metric series and events (read after a
// cursor, so each poll reads only what is new), its artifacts once it is finished, and what
// to chart. Nothing is read once the job is finished and everything it wrote has been read.

import { download, drain, get, request } from "../api.js";
import { MetricStore } from "../metrics.js";
import { TERMINAL } from "../util.js";
import { toYaml } from "../yaml.js";

export class JobFeed {
  constructor(id) {
    this.id = id;
    this.job = null;
    this.etag = null;
    this.eventsCursor = undefined;
    this.artifactsRead = false;
    this.metrics = new MetricStore(id);
  }

  get finished() {
    return Boolean(this.job) && TERMINAL.has(this.job.status);
  }

  // One poll. Returns what moved: {changed (the job), metrics (rows), events (new ones),
  // artifacts (the list, the first time the job is seen finished)}.
  async refresh() {
    const answer = await request(`v1/jobs/${this.id}`, { etag: this.etag });
    const out = { changed: answer.status !== 304, metrics: 0, events: [], artifacts: null };
    if (out.changed) {
      this.job = answer.data;
      this.etag = answer.etag;
      // New metric rows and events move the job's version: after a 304 there are none to read.
      // Read after the job: once it is seen finished, these reads get everything it wrote.
      [out.metrics, out.events] = await Promise.all([this.metrics.fetchNew(), this.readEvents()]);
    }
    if (this.finished && !this.artifactsRead) {
      this.artifactsRead = true;
      out.artifacts = (await get(`v1/jobs/${this.id}/artifacts`)).items;
    }
    return out;
  }

  async readEvents() {
    const params = { format: "json", limit: 500 };
    const { items, cursor } = await drain(`v1/jobs/${this.id}/events`, params, this.eventsCursor);
    this.eventsCursor = cursor;
    return items;
  }

  async cancel() {
    this.job = (await request(`v1/jobs/${this.id}/cancel`, { method: "POST" })).data;
    this.etag = null; // the next poll reads the job whole
    return this.job;
  }

  async remove() {
    await request(`v1/jobs/${this.id}`, { method: "DELETE" });
  }

  save(artifact) {
    return download(`v1/artifacts/${artifact.id}`, artifact.filename);
  }

  // The spec as YAML, as the job page shows it.
  specText() {
    return toYaml(this.job.spec);
  }

  // A copy of the spec to start a new job from, renamed so that the two are told apart.
  draft() {
    return `# from job ${this.job.id}\n${toYaml({ ...this.job.spec, name: `${this.job.spec.name}-2` })}`;
  }
}

// What the job page charts: validation accuracy per stage, each stage's loss terms (with its
// validation loss, dashed), and the learning rate per stage.
export function plots(metrics) {
  const stages = metrics.stages;
  const perStage = (name) => new Map(stages.map((s) => [s, metrics.get(s, name)]).filter(([, m]) => m.size));
  const out = [
    { id: "accuracy", title: "Validation accuracy (top-1)", series: perStage("val/top1"), percent: true },
  ];
  for (const stage of stages) {
    const series = new Map(metrics.lossNames(stage).map((n) => [n, metrics.get(stage, n)]));
    const val = metrics.get(stage, "val/loss");
    if (series.size && val.size) series.set("val/loss", val);
    out.push({
      id: `loss-${stage}`,
      title: `Loss · ${stage}`,
      series,
      dashed: (label) => label.startsWith("val/"),
    });
  }
  out.push({ id: "lr", title: "Learning rate", series: perStage("lr") });
  return out;
}
