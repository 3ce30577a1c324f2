// YAML through the vendored `yaml` library (eemeli/yaml, static/vendor/yaml): `toYaml` writes
// plain JSON data as YAML that the server's reader (PyYAML, YAML 1.1) reads back as the same data;
// `lineOf` finds the line of a field path such as `distill.losses.0.temperature` (what a 422
// problem's `errors[].field` names) in a YAML text, from the parser's source ranges.

import {
  Document,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  parseDocument,
  visit,
} from "../vendor/yaml/index.js";

// PyYAML reads a float only with a dot and, if any, a signed exponent (`1.0e-7`, never `1e-7`,
// which it keeps as a string): the same regular expression as its resolver.
const PY_FLOAT =
  /^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$/;

function pyNumber(n) {
  if (!Number.isFinite(n)) return Number.isNaN(n) ? ".nan" : n < 0 ? "-.inf" : ".inf";
  if (Number.isSafeInteger(n)) return String(n);
  const text = String(n);
  if (!Number.isInteger(n) && !text.includes("e")) return text; // 0.5, -0.0001: a dot, no exponent
  // past 2^53 (1e+21) or tiny (1e-7): an exponent form with a dot, read by PyYAML as a float
  const [mantissa, exponent] = n.toExponential().split("e"); // the exponent has its sign
  return `${mantissa.includes(".") ? mantissa : `${mantissa}.0`}e${exponent}`;
}

// Numbers, written the way PyYAML reads them. First in the list, so it wins over YAML 1.1's own
// number tags when a number is written; its test also quotes strings PyYAML would read as floats.
const numberTag = {
  identify: (value) => typeof value === "number",
  default: true,
  tag: "tag:yaml.org,2002:float",
  test: PY_FLOAT,
  resolve: (text) => Number.parseFloat(text.replace(/_/g, "")),
  stringify: ({ value }) => pyNumber(value),
};

// Strings PyYAML reads otherwise than YAML 1.1's schema here: `<<` and `=` (its merge and value
// keys: tags the server refuses), and those holding a tab (its plain scanner stops there), a C1
// control or DEL (its reader refuses them raw, and JSON leaves them raw), a Unicode line or
// paragraph separator (a line break to YAML 1.1), a byte-order mark or a non-character. Written
// double-quoted with JSON's escapes, which are valid YAML ones. First in the list of tags, so it
// wins over the merge tag, which would write `<<` plain.
const PY_KEYS = /^(?:<<|=)$/;
const RAW = /[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]/g;
const awkwardStringTag = {
  identify: (value) =>
    typeof value === "string" && (PY_KEYS.test(value) || value.includes("\t") || value.search(RAW) >= 0),
  default: true,
  tag: "tag:yaml.org,2002:str",
  test: /(?!)/, // never used to read: it only writes
  resolve: (text) => text,
  stringify: ({ value }) =>
    JSON.stringify(value).replace(RAW, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`),
};

const SCHEMA = {
  version: "1.1", // quotes `yes`, `on`, `007`, `1_000`, `1:20`: YAML 1.1 reads them as non-strings
  customTags: (tags) => [numberTag, awkwardStringTag, ...tags],
  aliasDuplicateObjects: false,
};
const FLOW_WIDTH = 60; // a collection of scalars this short goes on one line: `betas: [0.9, 0.999]`

// Whether a collection holds only scalars, and would be short written on one line.
function shortLeaf(node) {
  const parts = isMap(node)
    ? node.items.map((p) => (isScalar(p.value) ? `${p.key.value}: ${p.value.value}` : null))
    : node.items.map((item) => (isScalar(item) ? String(item.value) : null));
  return parts.every((p) => p !== null) && parts.join(", ").length + 2 <= FLOW_WIDTH;
}

// Plain JSON data as YAML: block style, but for short collections of scalars below the top
// level, on one line and unpadded as in the examples (`optimizer: {kind: adam, lr: 0.01}`);
// no string folded.
export function toYaml(value) {
  const doc = new Document(value, SCHEMA);
  const flow = (key, node) => void (node.flow = key !== null && shortLeaf(node));
  visit(doc, { Map: flow, Seq: flow });
  return doc.toString({ lineWidth: 0, flowCollectionPadding: false });
}

// The node under `node` that `segment` (a map key, or a list index) names, with the offset of the
// key (or of the item) in the text; null when there is none.
function child(doc, node, segment) {
  const target = isAlias(node) ? node.resolve(doc) : node;
  if (isMap(target)) {
    const pair = target.items.find(
      (p) => isScalar(p.key) && (String(p.key.value) === segment || p.key.source === segment),
    );
    return pair?.key?.range ? { offset: pair.key.range[0], node: pair.value } : null;
  }
  if (isSeq(target) && /^\d+$/.test(segment)) {
    const item = target.items[Number(segment)];
    return item?.range ? { offset: item.range[0], node: item } : null;
  }
  return null;
}

// The 1-based line of `field` (a dotted path) in YAML `text`; the deepest ancestor found when the
// field itself is absent (a missing key is reported at its parent); null when nothing matches.
export function lineOf(text, field) {
  if (!field || field === "(spec)" || field === "body") return null;
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines });
  let node = doc.contents;
  let offset = null;
  for (const segment of field.split(".")) {
    const next = child(doc, node, segment);
    if (!next) break;
    ({ offset, node } = next);
  }
  return offset === null ? null : lines.linePos(offset).line;
}
