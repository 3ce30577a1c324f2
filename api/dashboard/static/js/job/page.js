// One job (#/jobs/<id>): its state, live charts, report, events, artifacts and spec, with
// Cancel, Delete and "Edit as a new job". Polls every 2 s until the job is finished and all it
// wrote has been read. Wires data.js to view.js.

import { flash } from "../notice.js";
import { go } from "../router.js";
import { saveDraft } from "../submit/data.js";
import { poll } from "../util.js";
import { JobFeed, plots } from "./data.js";
import { jobView } from "./view.js";

const POLL_MS = 2000;

export function render(view, { id }) {
  const feed = new JobFeed(id);
  const ui = jobView({ cancel, remove, editAsNew, save });

  async function tick() {
    try {
      const moved = await feed.refresh();
      if (moved.changed) ui.drawJob(feed.job, () => feed.specText());
      else ui.drawSummary(feed.job);
      if (moved.metrics) ui.drawCharts(plots(feed.metrics));
      ui.addEvents(moved.events);
      if (moved.artifacts) ui.drawArtifacts(moved.artifacts);
      ui.errors.clear();
      return !feed.finished;
    } catch (e) {
      if (e.status === 404) {
        ui.notFound(view, e);
        return false;
      }
      ui.errors.show(e);
      return true;
    }
  }

  async function cancel() {
    if (!window.confirm(`Cancel job "${feed.job.name}"?`)) return;
    try {
      const job = await feed.cancel();
      ui.drawJob(job, () => feed.specText());
      flash(`Job ${job.name}: ${job.status}.`);
      restart();
    } catch (e) {
      ui.errors.show(e);
    }
  }

  async function remove() {
    const name = feed.job.name;
    if (!window.confirm(`Delete job "${name}" with its metrics and artifacts?`)) return;
    try {
      await feed.remove();
      flash(`Job ${name} deleted.`);
      go("/jobs");
    } catch (e) {
      ui.errors.show(e);
    }
  }

  async function save(button, artifact) {
    button.disabled = true;
    try {
      await feed.save(artifact);
    } catch (e) {
      ui.errors.show(e);
    } finally {
      button.disabled = false;
    }
  }

  function editAsNew() {
    if (!feed.job) return;
    saveDraft(feed.draft());
    go("/submit");
  }

  view.append(...ui.el);
  let stop = poll(tick, POLL_MS);
  function restart() {
    stop();
    stop = poll(tick, POLL_MS);
  }
  return () => {
    stop();
    ui.destroy();
  };
}
