// The GPU pool (#/pool, polled every 3 s): each worker host, its devices and the jobs on them, and
// the queue per team and per GPU type. Wires data.js to view.js.

import { poll } from "../util.js";
import { readPool } from "./data.js";
import { poolView } from "./view.js";

const POLL_MS = 3000;

export function render(view) {
  const ui = poolView();
  view.append(...ui.el);

  async function tick() {
    try {
      const pool = await readPool();
      ui.errors.clear();
      ui.draw(pool);
    } catch (e) {
      ui.errors.show(e);
    }
  }

  return poll(tick, POLL_MS);
}
