// A small YAML writer for specs (plain JSON data): block mappings, short flow collections for
// leaves, and strings quoted as JSON (a valid YAML double-quoted scalar) whenever a plain
// scalar could be read back as something else. The output parses back (PyYAML, YAML 1.1) to
// the same data.

const PLAIN = /^[A-Za-z_][\w./-]*$/;
const RESERVED = /^(true|false|yes|no|on|off|y|n|null|~)$/i;
const FLOW_WIDTH = 90;

function scalar(v) {
  if (v === null || v === undefined) return "null";
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "number") return number(v);
  const s = String(v);
  return PLAIN.test(s) && !RESERVED.test(s) ? s : JSON.stringify(s);
}

function number(n) {
  if (!Number.isFinite(n)) return n > 0 ? ".inf" : n < 0 ? "-.inf" : ".nan";
  const s = String(n);
  if (!/e/i.test(s)) return s;
  // YAML 1.1 floats need a dot and a signed exponent: 1e-7 -> 1.0e-7
  const [mantissa, exponent] = n.toExponential().split("e");
  return `${mantissa.includes(".") ? mantissa : `${mantissa}.0`}e${/^[+-]/.test(exponent) ? exponent : `+${exponent}`}`;
}

const key = (k) => scalar(k);
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isLeaf = (v) => !isObject(v) && !Array.isArray(v);

// A flow form ({a: 1, b: [x, y]}) for small collections of scalars, else null.
function flow(v, depth = 0) {
  if (isLeaf(v)) return scalar(v);
  if (depth > 1) return null;
  const parts = [];
  if (Array.isArray(v)) {
    for (const item of v) {
      const f = flow(item, depth + 1);
      if (f === null) return null;
      parts.push(f);
    }
    return `[${parts.join(", ")}]`;
  }
  for (const [k, item] of Object.entries(v)) {
    const f = flow(item, depth + 1);
    if (f === null) return null;
    parts.push(`${key(k)}: ${f}`);
  }
  return `{${parts.join(", ")}}`;
}

function block(v, indent) {
  const pad = " ".repeat(indent);
  const lines = [];
  if (Array.isArray(v)) {
    for (const item of v) {
      const f = flow(item);
      if (f !== null && f.length + indent < FLOW_WIDTH) lines.push(`${pad}- ${f}`);
      else {
        const inner = block(item, indent + 2);
        lines.push(`${pad}- ${inner[0].trimStart()}`, ...inner.slice(1));
      }
    }
    return lines.length ? lines : [`${pad}[]`];
  }
  for (const [k, item] of Object.entries(v)) {
    const f = flow(item);
    if (f !== null && (isLeaf(item) || f.length + indent + k.length < FLOW_WIDTH)) {
      lines.push(`${pad}${key(k)}: ${f}`);
    } else {
      lines.push(`${pad}${key(k)}:`, ...block(item, indent + 2));
    }
  }
  return lines.length ? lines : [`${pad}{}`];
}

export function toYaml(value) {
  if (isLeaf(value)) return `${scalar(value)}\n`;
  return `${block(value, 0).join("\n")}\n`;
}
