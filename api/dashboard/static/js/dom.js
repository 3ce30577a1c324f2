// Building elements. Text from the API only ever reaches the page as text nodes (never
// innerHTML), so a job name cannot inject markup.

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

// A job's status as a coloured label.
export function badge(status, testid = "status") {
  return h("span", { class: `badge status-${status}`, "data-testid": testid }, status);
}

// A job's progress: its fraction of the whole run (full once it succeeded).
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
