// Visible errors: an API problem is always shown (title, detail and each field), never swallowed.

import { clear, h } from "./dom.js";

export function problemBox(error, testid = "problem") {
  const fields = error?.errors || [];
  return h(
    "div",
    { class: "problem", role: "alert", "data-testid": testid },
    h("strong", { class: "problem-title" }, error?.title || "Error"),
    error?.status ? h("span", { class: "problem-status" }, ` (${error.status})`) : null,
    error?.detail ? h("div", { class: "problem-detail" }, error.detail) : null,
    !error?.title && !error?.detail ? h("div", {}, String(error?.message || error)) : null,
    fields.length
      ? h(
          "ul",
          { class: "problem-fields" },
          fields.map((f) => h("li", {}, h("code", {}, f.field), ": ", f.message)),
        )
      : null,
  );
}

// A slot on a page that shows the latest error of some activity, and clears when it succeeds.
export function errorSlot(testid = "problem") {
  const el = h("div", { class: "error-slot" });
  return {
    el,
    show(error) {
      clear(el, problemBox(error, testid));
    },
    clear() {
      el.replaceChildren();
    },
  };
}

let bannerTimer = null;

// A short message at the top of the page (e.g. "job cancelled").
export function flash(message, kind = "info") {
  const banner = document.getElementById("banner");
  clear(banner, h("div", { class: `flash flash-${kind}`, role: "status" }, message));
  clearTimeout(bannerTimer);
  bannerTimer = setTimeout(() => banner.replaceChildren(), 6000);
}
