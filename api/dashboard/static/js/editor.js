// The spec editor: a monospace textarea with line numbers, where lines holding an error are
// marked (in the gutter and with a band behind the text). `lineOf` finds the line of a field
// path such as `distill.losses.0.temperature` in the YAML text.

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

// ---------------------------------------------------------------- finding a field's line

const blank = (line) => /^\s*(#.*)?$/.test(line);
const rawIndent = (line) => line.length - line.trimStart().length;
const DASH = /^(\s*)-(\s+|$)/;

// Where a line's content starts once list dashes are counted as indentation ("  - kind: kd" -> 4).
function keyIndent(line) {
  let rest = line;
  let m;
  let indent = 0;
  while ((m = DASH.exec(rest))) {
    indent += m[0].length;
    rest = rest.slice(m[0].length);
  }
  return indent + rawIndent(rest);
}

function keyOf(line) {
  const m = /^(?:\s*-\s+)*\s*(?:"([^"]*)"|'([^']*)'|([^\s:#{}[\],][^:#{}[\]]*?))\s*:(\s|$)(.*)$/.exec(line);
  return m ? { key: m[1] ?? m[2] ?? m[3], value: m[5].replace(/\s+#.*$/, "").trim() } : null;
}

// The end (exclusive) of the block that starts under line `at`, whose own indent is `indent`.
function blockEnd(lines, at, end, indent, isItem) {
  for (let i = at + 1; i < end; i += 1) {
    if (blank(lines[i])) continue;
    const ind = rawIndent(lines[i]);
    if (ind < indent || (ind === indent && (isItem || !DASH.test(lines[i])))) return i;
  }
  return end;
}

// The 1-based line of `field` (a dotted path) in YAML `text`; the deepest ancestor found when the
// field itself is absent (a missing key is reported at its parent); null when nothing matches.
export function lineOf(text, field) {
  if (!field || field === "(spec)") return null;
  const lines = text.split("\n");
  let start = 0;
  let end = lines.length;
  let found = null;
  let inline = false; // the key found last has its value on its own line ({...}, [...])
  for (const segment of field.split(".")) {
    if (inline) return found + 1; // the rest is inside that value
    const body = [];
    for (let i = start; i < end; i += 1) if (!blank(lines[i])) body.push(i);
    if (!body.length) break;
    let hit = null;
    if (/^\d+$/.test(segment)) {
      const items = body.filter((i) => DASH.test(lines[i]) && i !== found);
      const dashIndent = Math.min(...items.map((i) => rawIndent(lines[i])));
      const atLevel = items.filter((i) => rawIndent(lines[i]) === dashIndent);
      hit = atLevel[Number(segment)] ?? null;
      if (hit === null) break;
      const rest = lines[hit].replace(DASH, "").trim();
      found = hit;
      if (!keyOf(lines[hit]) && rest && !rest.startsWith("#")) return hit + 1; // "- {kind: kd, ...}"
      start = hit;
      end = blockEnd(lines, hit, end, dashIndent, true);
      continue;
    }
    const level = Math.min(...body.map((i) => keyIndent(lines[i])));
    hit = body.find((i) => keyIndent(lines[i]) === level && keyOf(lines[i])?.key === segment) ?? null;
    if (hit === null) break;
    found = hit;
    const value = keyOf(lines[hit]).value;
    inline = Boolean(value) && !/^[|>]/.test(value);
    start = hit + 1;
    end = blockEnd(lines, hit, end, rawIndent(lines[hit]), false);
  }
  return found === null ? null : found + 1;
}

// A YAML syntax error names its line in the message ("... (line 3, column 5): ...").
export function lineInMessage(message) {
  const m = /\bline (\d+)/.exec(message || "");
  return m ? Number(m[1]) : null;
}
