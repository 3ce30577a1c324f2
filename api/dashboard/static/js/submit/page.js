// A new job (#/submit): a YAML spec editor started from the examples, checked as you type
// (400 ms after the last key) with each field error listed and its line marked; Submit posts
// the same YAML and opens the job. Uploads below. Wires data.js to view.js.

import { go } from "../router.js";
import { debounce } from "../util.js";
import { loadDraft, loadExamples, problemsOf, saveDraft, SpecCheck, submitSpec, upload } from "./data.js";
import { submitView } from "./view.js";

const CHECK_MS = 400;

export function render(view) {
  let examples = [];
  let valid = false;
  const checker = new SpecCheck();
  const ui = submitView({ input, example: useExample, submit, upload });
  const editor = ui.editor;

  const check = debounce(async (text) => {
    const answer = await checker.check(text);
    if (!answer) return; // about an older text
    valid = Boolean(answer.spec);
    if (valid) ui.valid(answer.spec, answer.normalized);
    else ui.invalid(answer.error, answer.problems);
  }, CHECK_MS);

  function input(text) {
    saveDraft(text);
    const template = examples.find((x) => x.name === ui.chosen);
    if (template && template.text !== text) ui.template(null); // edited: no longer the template
    checker.invalidate();
    valid = false;
    ui.checking();
    check(text);
  }

  async function submit() {
    if (!valid) return;
    ui.submitting(true);
    ui.submitError.clear();
    try {
      go(`/jobs/${(await submitSpec(editor.value)).id}`);
    } catch (e) {
      ui.submitError.show(e);
      if (e.status === 422) {
        valid = false;
        ui.invalid(e, problemsOf(e, editor.value));
      } else ui.submitting(false);
    }
  }

  function useExample(name) {
    const example = examples.find((x) => x.name === name);
    if (!example) return;
    ui.template(example);
    const current = editor.value.trim();
    const isExample = examples.some((x) => x.text.trim() === current);
    if (current && !isExample && !window.confirm("Replace the editor's text with this example?")) return;
    editor.value = example.text;
  }

  async function start() {
    try {
      examples = await loadExamples();
    } catch (e) {
      ui.submitError.show(e);
      examples = [];
    }
    const first = editor.value.trim() ? null : examples.find((x) => x.name === "mnist1d") || examples[0];
    ui.examples(examples, first);
    if (first) editor.value = first.text;
  }

  view.append(...ui.el);
  const draft = loadDraft();
  if (draft) editor.value = draft;
  start();
  return () => check.cancel();
}
