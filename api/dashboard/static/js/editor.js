// The spec editor: a monospace textarea with line numbers, where lines holding an error are
// marked (in the gutter and with a band behind the text). yaml.js's `lineOf` finds the line of
// a field path such as `distill.losses.0.temperature` in its text.

import { h } from "./dom.js";

const LINE_PX = 20; // must match .editor's line-height in app.css
const PAD_PX = 8; // and its padding-top

export function specEditor({ onInput }) {
  const gutter = h("div", { class: "gutter", "aria-hidden": "true" });
  const bands = h("div", { class: "bands", "aria-hidden": "true" });
  const area = h("textarea", {
    id: "spec-editor",
    class: "editor-text",
    spellcheck: false,
    autocapitalize: "off",
    autocomplete: "off",
    wrap: "off",
    "aria-describedby": "validation-status",
    "data-testid": "spec-editor",
  });
  const el = h("div", { class: "editor" }, gutter, h("div", { class: "editor-body" }, bands, area));
  let marks = new Map(); // 1-based line -> message

  function draw() {
    const n = area.value.split("\n").length;
    gutter.replaceChildren(
      ...Array.from({ length: n }, (_, i) =>
        h(
          "div",
          { class: marks.has(i + 1) ? "bad" : null, title: marks.get(i + 1) || null, "data-line": i + 1 },
          String(i + 1),
        ),
      ),
    );
    bands.replaceChildren(
      ...[...marks.keys()].map((line) =>
        h("div", {
          class: "band",
          "data-testid": "marked-line",
          "data-line": line,
          style: { top: `${PAD_PX + (line - 1) * LINE_PX}px` },
        }),
      ),
    );
    scroll();
  }

  function scroll() {
    gutter.scrollTop = area.scrollTop;
    bands.style.transform = `translate(${-area.scrollLeft}px, ${-area.scrollTop}px)`;
  }

  area.addEventListener("input", () => {
    draw();
    onInput(area.value);
  });
  area.addEventListener("scroll", scroll);
  area.addEventListener("keydown", (e) => {
    if (e.key === "Tab" && !e.shiftKey && !e.ctrlKey && !e.metaKey) {
      e.preventDefault(); // YAML wants spaces; keep focus in the editor
      area.setRangeText("  ", area.selectionStart, area.selectionEnd, "end");
      area.dispatchEvent(new Event("input"));
    }
  });

  return {
    el,
    area,
    get value() {
      return area.value;
    },
    set value(text) {
      area.value = text;
      draw();
      onInput(text);
    },
    mark(lines) {
      marks = lines;
      draw();
    },
    goto(line) {
      const lines = area.value.split("\n");
      const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
      area.focus();
      area.setSelectionRange(start, start + (lines[line - 1] || "").length);
      area.scrollTop = Math.max(0, (line - 4) * LINE_PX);
    },
  };
}
