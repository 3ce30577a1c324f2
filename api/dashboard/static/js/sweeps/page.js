// One sweep (#/sweeps/<id>?sort=objective&dir=desc): polled every 5 s while it or a trial of it is
// live, the trials sorted by the clicked column (kept in the address bar), Cancel while it runs.
// Wires data.js to view.js.

import { flash } from "../notice.js";
import { replaceParams } from "../router.js";
import { poll } from "../util.js";
import { firstDirection, SweepFeed } from "./data.js";
import { sweepView } from "./view.js";

// A sweep moves by whole trials, and its GET has no ETag yet: each poll is a full read.
const POLL_MS = 5000;

export function render(view, { id, params }) {
  const feed = new SweepFeed(id);
  const sort = {
    key: params.get("sort") || "number",
    dir: params.get("dir") === "desc" ? "desc" : "asc",
  };
  const ui = sweepView({ cancel, sort: sortBy });

  async function tick() {
    try {
      const moved = await feed.refresh();
      if (moved.changed) ui.drawSweep(feed.sweep, sort);
      if (moved.best) ui.drawBest(feed.sweep, moved.best);
      ui.errors.clear();
      return !feed.settled;
    } catch (e) {
      if (e.status === 404 && !feed.sweep) {
        ui.notFound(view, e);
        return false;
      }
      ui.errors.show(e);
      return true;
    }
  }

  function sortBy(key) {
    if (sort.key === key) sort.dir = sort.dir === "asc" ? "desc" : "asc";
    else Object.assign(sort, { key, dir: firstDirection(key, feed.sweep?.objective) });
    replaceParams(new URLSearchParams({ sort: sort.key, dir: sort.dir }));
    if (feed.sweep) ui.drawTrials(feed.sweep, sort);
  }

  async function cancel() {
    if (!window.confirm(`Cancel sweep "${feed.sweep.name}" and its live trials?`)) return;
    try {
      const sweep = await feed.cancel();
      ui.drawSweep(sweep, sort);
      flash(`Sweep ${sweep.name}: ${sweep.status}.`);
      restart();
    } catch (e) {
      ui.errors.show(e);
    }
  }

  view.append(...ui.el);
  let stop = poll(tick, POLL_MS);
  function restart() {
    stop();
    stop = poll(tick, POLL_MS);
  }
  return () => stop();
}
