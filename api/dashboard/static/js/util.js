// Helpers without the DOM, shared by the pages' data parts: job statuses, polling, debouncing.

export const TERMINAL = new Set(["succeeded", "failed", "cancelled", "pruned"]);
export const STATUSES = [
  "queued",
  "starting",
  "running",
  "retrying",
  "cancelling",
  "succeeded",
  "failed",
  "cancelled",
  "pruned",
];

export function debounce(fn, ms) {
  let timer = null;
  const run = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  run.cancel = () => clearTimeout(timer);
  return run;
}

// Runs `tick` now and then every `ms` after each run ends (never two at once). `tick` returns
// false to stop. The returned function stops it (pages call it when they are left).
export function poll(tick, ms) {
  let stopped = false;
  let timer = null;
  const loop = async () => {
    if (stopped) return;
    let again = true;
    try {
      again = (await tick()) !== false;
    } catch (e) {
      console.error(e);
    }
    if (!stopped && again) timer = setTimeout(loop, ms);
  };
  loop();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
