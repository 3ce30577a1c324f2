// A new job's view: the template picker, the spec editor with its validation status and field
// errors (each linked to its line), Submit, the spec as the service reads it, and the uploads.

import { clear, h } from "../dom.js";
import { specEditor } from "../editor.js";
import { errorSlot } from "../notice.js";
import { uploadForms } from "./uploads.js";

function problemItem(p, editor) {
  return h(
    "li",
    { "data-field": p.field, "data-line": p.line ?? "" },
    p.field ? h("code", {}, p.field) : null,
    p.field ? ": " : "",
    p.message,
    p.line
      ? h(
          "button",
          { type: "button", class: "link small", onclick: () => editor.goto(p.line) },
          ` line ${p.line}`,
        )
      : null,
  );
}

// The page's elements. `on` holds the callbacks: input(text), example(name), submit(),
// upload(path, formData).
export function submitView(on) {
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
    { type: "button", class: "primary", disabled: true, "data-testid": "submit-job", onclick: on.submit },
    "Submit job",
  );
  const select = h(
    "select",
    { id: "example", "data-testid": "example-select", onchange: () => on.example(select.value) },
    h("option", { value: "" }, "Loading examples…"),
  );
  const about = h("p", { class: "muted small", "data-testid": "example-description" });
  const editor = specEditor({ onInput: on.input });
  const el = [
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
    uploadForms(on.upload),
  ];

  function verdict(kind, text, canSubmit) {
    status.className = `validation ${kind}`;
    status.textContent = text;
    submitButton.disabled = !canSubmit;
  }

  return {
    el,
    editor,
    submitError,
    checking: () => verdict("checking", "Checking…", false),
    valid(spec, normalizedText) {
      verdict("ok", `✓ Valid spec: "${spec.name}".`, true);
      fieldErrors.replaceChildren();
      editor.mark(new Map());
      normalized.textContent = normalizedText;
    },
    invalid(error, problems) {
      const n = problems.length;
      verdict(
        "bad",
        error.status === 422
          ? `✗ ${n} problem${n === 1 ? "" : "s"} in this spec.`
          : `✗ Could not check the spec: ${error.message}`,
        false,
      );
      clear(
        fieldErrors,
        problems.map((p) => problemItem(p, editor)),
      );
      editor.mark(new Map(problems.filter((p) => p.line).map((p) => [p.line, `${p.field}: ${p.message}`])));
      normalized.textContent = "";
    },
    submitting(busy) {
      submitButton.disabled = busy;
    },
    // The template picker, with `chosen` (an example) selected.
    examples(examples, chosen) {
      clear(
        select,
        h("option", { value: "" }, examples.length ? "Start from an example…" : "No examples"),
        examples.map((x) => h("option", { value: x.name, title: x.description }, x.filename)),
      );
      if (chosen) this.template(chosen);
    },
    template(example) {
      select.value = example?.name ?? "";
      about.textContent = example?.description ?? "";
    },
    get chosen() {
      return select.value;
    },
  };
}
