// A new job's data: the examples (GET /v1/spec/examples), the draft (kept for the browser tab),
// validation as you type (POST /v1/spec/validate, answers about an older text dropped), each
// problem's line in the text, submission (POST /v1/jobs) and uploads.

import { get, request } from "../api.js";
import { lineOf, toYaml } from "../yaml.js";

const DRAFT_KEY = "distillery.draft";
const YAML = "application/yaml";

export function saveDraft(text) {
  sessionStorage.setItem(DRAFT_KEY, text);
}

export function loadDraft() {
  return sessionStorage.getItem(DRAFT_KEY);
}

export async function loadExamples() {
  return (await get("v1/spec/examples")).items;
}

// A YAML syntax error names its line in the message ("... (line 3, column 5): ...").
function lineInMessage(message) {
  const m = /\bline (\d+)/.exec(message || "");
  return m ? Number(m[1]) : null;
}

// A refused spec's problems, each with the line of its field in `text` (null when not found).
export function problemsOf(error, text) {
  const problems = error.errors.length ? error.errors : [{ field: "", message: error.message }];
  return problems.map((p) => ({
    field: p.field,
    message: p.message,
    line: p.field === "body" ? lineInMessage(p.message) : lineOf(text, p.field),
  }));
}

export class SpecCheck {
  constructor() {
    this.serial = 0; // the latest text asked about
  }

  // A new text was typed: answers about older ones are dropped from now on.
  invalidate() {
    this.serial += 1;
  }

  // Validates `text`: {spec, normalized} (the spec with every default, and as YAML) or
  // {error, problems}; null when a newer text came meanwhile.
  async check(text) {
    const mine = this.serial;
    try {
      const answer = await request("v1/spec/validate", { method: "POST", body: text, contentType: YAML });
      if (mine !== this.serial) return null;
      return { spec: answer.data.spec, normalized: toYaml(answer.data.spec) };
    } catch (e) {
      if (mine !== this.serial) return null;
      return { error: e, problems: problemsOf(e, text) };
    }
  }
}

// Posts the spec as it is written; returns the new job.
export async function submitSpec(text) {
  return (await request("v1/jobs", { method: "POST", body: text, contentType: YAML })).data;
}

// An upload (POST /v1/models or /v1/datasets) of a form's fields, the empty ones left out;
// returns its {path, size, format, spec_fragment}, with the fragment as YAML.
export async function upload(path, form) {
  for (const [key, value] of [...form.entries()]) if (value === "") form.delete(key);
  const { data } = await request(path, { method: "POST", body: form });
  return { ...data, fragmentText: toYaml(data.spec_fragment) };
}
