// Small DOM and formatting helpers. Text from the API only ever reaches the page as text nodes
// (never innerHTML), so a job name cannot inject markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "style") {
      // through the CSSOM: the page's Content-Security-Policy refuses style="" attributes
      Object.assign(el.style, value);
    } else if (key === "value" || key === "checked" || key === "disabled" || key === "selected") {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
export const STATUSES = [
  "queued",
  "starting",
  "running",
  "retrying",
  "cancelling",
  "succeeded",
  "failed",
  "cancelled",
];

export function badge(status, testid = "status") {
  return h("span", { class: `badge status-${status}`, "data-testid": testid }, status);
}

export function progressBar(progress, status) {
  const fraction = status === "succeeded" ? 1 : Math.max(0, Math.min(1, progress?.fraction ?? 0));
  const pct = Math.round(fraction * 100);
  return h(
    "div",
    {
      class: `progress status-${status}`,
      role: "progressbar",
      "aria-valuemin": 0,
      "aria-valuemax": 100,
      "aria-valuenow": pct,
      "aria-label": "progress",
      title: `${pct}%`,
    },
    h("div", { class: "progress-fill", style: { width: `${pct}%` } }),
  );
}

export function stageText(progress) {
  if (!progress?.stage) return "";
  const epochs = progress.epochs ? ` ${progress.epoch ?? 0}/${progress.epochs}` : "";
  return `${progress.stage}${epochs}`;
}

export function ago(iso, now = Date.now()) {
  if (!iso) return "";
  const s = Math.max(0, (now - Date.parse(iso)) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${Math.floor(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

export function count(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
}

export function pct(x, digits = 1) {
  return x === null || x === undefined ? "–" : `${(x * 100).toFixed(digits)}%`;
}

export function num(x, digits = 3) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
}

export function ratio(x) {
  return x === null || x === undefined ? "–" : `${Number(x).toFixed(1)}×`;
}

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
