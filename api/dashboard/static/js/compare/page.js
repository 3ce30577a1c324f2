// Several jobs side by side (#/compare?ids=a,b,c): their student's validation accuracy and
// distillation loss terms overlaid, one curve per job, and their final numbers in columns.
// Polls every 3 s while one of them runs. Wires data.js to view.js.

import { go, replaceParams } from "../router.js";
import { poll } from "../util.js";
import { Comparison, parseIds } from "./data.js";
import { compareView } from "./view.js";

const POLL_MS = 3000;

export function render(view, { params }) {
  const comparison = new Comparison(parseIds(params.get("ids")));
  const ui = compareView(comparison.ids, (text) => go("/compare", { ids: text.replace(/\s+/g, "") }));
  view.append(...ui.el);
  if (!comparison.ids.length) return null;

  async function tick() {
    const { live, failed } = await comparison.refresh();
    if (failed) ui.errors.show(failed);
    else ui.errors.clear();
    ui.draw(comparison.shown(), comparison.plots(), comparison.labels());
    replaceParams(new URLSearchParams({ ids: comparison.ids.join(",") }));
    return live || Boolean(failed && failed.status !== 404);
  }

  const stop = poll(tick, POLL_MS);
  return () => {
    stop();
    ui.destroy();
  };
}
