// A new job: a YAML spec editor started from the examples (GET /v1/spec/examples), checked as
// you type (POST /v1/spec/validate, 400 ms after the last key) with each field error listed and
// its line marked; Submit posts the same YAML to /v1/jobs and opens the job. Uploads below.

import { get, request } from "./api.js";
import { clear, debounce, h } from "./dom.js";
import { lineInMessage, lineOf, specEditor } from "./editor.js";
import { errorSlot } from "./notice.js";
import { go } from "./router.js";
import { uploadForms } from "./uploads.js";
import { toYaml } from "./yaml.js";

export const DRAFT_KEY = "distillery.draft";
const YAML = "application/yaml";

export function render(view) {
  let examples = [];
  let serial = 0; // the latest validation asked for; older answers are dropped
  let valid = false;

  const status = h("p", {
    id: "validation-status",
    class: "validation",
    role: "status",
    "data-testid": "validation-status",
  });
  const fieldErrors = h("ul", { class: "field-errors", "data-testid": "spec-errors" });
  const normalized = h("pre", { class: "code small" });
  const submitError = errorSlot("submit-error");
  const submitButton = h(
    "button",
    { type: "button", class: "primary", disabled: true, "data-testid": "submit-job", onclick: submit },
    "Submit job",
  );
  const select = h(
    "select",
    { id: "example", "data-testid": "example-select", onchange: () => loadExample(select.value) },
    h("option", { value: "" }, "Loading examples…"),
  );
  const about = h("p", { class: "muted small", "data-testid": "example-description" });
  const editor = specEditor({
    onInput: (text) => {
      sessionStorage.setItem(DRAFT_KEY, text);
      const template = examples.find((x) => x.name === select.value);
      if (template && template.text !== text) {
        select.value = ""; // edited: no longer the template
        about.textContent = "";
      }
      pending();
      check(text);
    },
  });

  function pending() {
    serial += 1;
    valid = false;
    submitButton.disabled = true;
    status.className = "validation checking";
    status.textContent = "Checking…";
  }

  const check = debounce(async (text) => {
    const mine = serial;
    try {
      const answer = await request("v1/spec/validate", { method: "POST", body: text, contentType: YAML });
      if (mine !== serial) return;
      showValid(answer.data.spec);
    } catch (e) {
      if (mine !== serial) return;
      showInvalid(e, text);
    }
  }, 400);

  function showValid(spec) {
    valid = true;
    submitButton.disabled = false;
    status.className = "validation ok";
    status.textContent = `✓ Valid spec: "${spec.name}".`;
    fieldErrors.replaceChildren();
    editor.mark(new Map());
    normalized.textContent = toYaml(spec);
  }

  function showInvalid(error, text) {
    valid = false;
    submitButton.disabled = true;
    status.className = "validation bad";
    const problems = error.errors.length ? error.errors : [{ field: "", message: error.message }];
    status.textContent =
      error.status === 422
        ? `✗ ${problems.length} problem${problems.length === 1 ? "" : "s"} in this spec.`
        : `✗ Could not check the spec: ${error.message}`;
    const marks = new Map();
    clear(
      fieldErrors,
      problems.map((p) => {
        const line = p.field === "body" ? lineInMessage(p.message) : lineOf(text, p.field);
        if (line) marks.set(line, `${p.field}: ${p.message}`);
        return h(
          "li",
          { "data-field": p.field, "data-line": line ?? "" },
          p.field ? h("code", {}, p.field) : null,
          p.field ? ": " : "",
          p.message,
          line
            ? h(
                "button",
                { type: "button", class: "link small", onclick: () => editor.goto(line) },
                ` line ${line}`,
              )
            : null,
        );
      }),
    );
    editor.mark(marks);
    normalized.textContent = "";
  }

  async function submit() {
    if (!valid) return;
    submitButton.disabled = true;
    submitError.clear();
    try {
      const job = await request("v1/jobs", { method: "POST", body: editor.value, contentType: YAML });
      go(`/jobs/${job.data.id}`);
    } catch (e) {
      submitError.show(e);
      if (e.status === 422) showInvalid(e, editor.value);
      else submitButton.disabled = false;
    }
  }

  function loadExample(name) {
    const example = examples.find((x) => x.name === name);
    if (!example) return;
    about.textContent = example.description;
    const current = editor.value.trim();
    const isExample = examples.some((x) => x.text.trim() === current);
    if (current && !isExample && !window.confirm("Replace the editor's text with this example?")) return;
    editor.value = example.text;
  }

  async function loadExamples() {
    try {
      examples = (await get("v1/spec/examples")).items;
    } catch (e) {
      submitError.show(e);
      examples = [];
    }
    clear(
      select,
      h("option", { value: "" }, examples.length ? "Start from an example…" : "No examples"),
      examples.map((x) => h("option", { value: x.name, title: x.description }, x.filename)),
    );
    if (!editor.value.trim() && examples.length) {
      const first = examples.find((x) => x.name === "mnist1d") || examples[0];
      select.value = first.name;
      about.textContent = first.description;
      editor.value = first.text;
    }
  }

  view.append(
    h("div", { class: "page-head" }, h("h1", {}, "New job")),
    h(
      "section",
      { class: "card" },
      h("div", { class: "toolbar" }, h("label", { for: "example" }, "Template"), select),
      about,
      h("label", { for: "spec-editor", class: "sr-only" }, "Job spec (YAML)"),
      editor.el,
      status,
      fieldErrors,
      h("div", { class: "actions" }, submitButton),
      submitError.el,
      h(
        "details",
        {},
        h("summary", {}, "The spec as the service reads it (every default filled in)"),
        normalized,
      ),
    ),
    h("h2", {}, "Uploads"),
    h("p", { class: "muted" }, "Upload a teacher model or a dataset, then name the path it gets in a spec."),
    uploadForms(),
  );
  const draft = sessionStorage.getItem(DRAFT_KEY);
  if (draft) editor.value = draft;
  loadExamples();
  return () => check.cancel();
}
