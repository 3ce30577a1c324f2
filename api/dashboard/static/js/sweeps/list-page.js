// The sweeps list (#/sweeps): the team's sweeps, newest first, the first page polled every 5 s,
// older ones with "More". Wires data.js to list-view.js.

import { poll } from "../util.js";
import { SweepList } from "./data.js";
import { sweepsView } from "./list-view.js";

// A sweep moves by whole trials, and its GET has no ETag yet: each poll is a full read.
const POLL_MS = 5000;

export function render(view) {
  const list = new SweepList();
  const ui = sweepsView(list, { more: loadMore });

  async function tick() {
    try {
      if (await list.refresh()) ui.draw();
      ui.errors.clear();
    } catch (e) {
      ui.errors.show(e);
    }
  }

  async function loadMore() {
    ui.moreBusy(true);
    try {
      await list.loadMore();
      ui.draw();
    } catch (e) {
      ui.errors.show(e);
    } finally {
      ui.moreBusy(false);
    }
  }

  view.append(...ui.el);
  return poll(tick, POLL_MS);
}
