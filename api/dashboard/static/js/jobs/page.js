// The jobs list (#/jobs): live (polled every 2 s), filtered by status, owner and name, with
// cursor pagination ("More") and checkboxes to pick jobs to compare. Wires data.js to view.js.

import { go, replaceParams } from "../router.js";
import { poll } from "../util.js";
import { JobList } from "./data.js";
import { jobsView } from "./view.js";

const POLL_MS = 2000;

export function render(view, { params }) {
  const list = new JobList(params);
  let stop = () => {};

  const ui = jobsView(list, {
    status(s, checked) {
      if (checked) list.filters.status.add(s);
      else list.filters.status.delete(s);
      refilter();
    },
    text(key, value) {
      list.filters[key] = value;
      refilter();
    },
    select(id, checked) {
      if (checked) list.selected.add(id);
      else list.selected.delete(id);
      syncUrl();
    },
    more: loadMore,
    compare: () => go("/compare", { ids: [...list.selected].join(",") }),
  });

  function syncUrl() {
    replaceParams(list.urlParams());
    ui.selection(list.selected.size);
  }

  async function tick() {
    try {
      if (!(await list.refresh())) return;
      ui.errors.clear();
      ui.draw();
      if (await list.readEpochs()) ui.draw();
    } catch (e) {
      ui.errors.show(e);
    }
  }

  async function loadMore() {
    ui.moreBusy(true);
    try {
      if (await list.loadMore()) ui.draw();
    } catch (e) {
      ui.errors.show(e);
    } finally {
      ui.moreBusy(false);
    }
  }

  function refilter() {
    list.reset();
    ui.loading();
    syncUrl();
    stop();
    stop = poll(tick, POLL_MS);
  }

  view.append(...ui.el);
  stop = poll(tick, POLL_MS);
  syncUrl();
  return () => stop();
}
