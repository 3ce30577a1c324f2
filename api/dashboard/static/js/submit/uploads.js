// Upload forms (a view): a teacher model (POST /v1/models: TorchScript, or safetensors with the
// registry architecture as JSON) and a dataset (POST /v1/datasets: an .npz archive). The answer's
// `path` and `spec_fragment` say how a spec names the upload. `send(path, formData)` uploads.

import { clear, h } from "../dom.js";
import { bytes } from "../format.js";
import { problemBox } from "../notice.js";

function result(upload) {
  return h(
    "div",
    { class: "upload-result", "data-testid": "upload-result" },
    h(
      "p",
      {},
      "Stored as ",
      h("code", { "data-testid": "upload-path" }, upload.path),
      ` (${bytes(upload.size)}, ${upload.format}).`,
    ),
    h("p", { class: "small muted" }, "In a spec:"),
    h("pre", { class: "code small", "data-testid": "spec-fragment" }, upload.fragmentText),
  );
}

function uploadForm({ id, title, path, fields, hint }, send) {
  const out = h("div", { class: "upload-out" });
  const file = h("input", {
    id: `${id}-file`,
    name: "file",
    type: "file",
    required: true,
    "data-testid": `${id}-file`,
  });
  const button = h("button", { type: "submit", "data-testid": `${id}-upload` }, "Upload");

  async function submit(event) {
    event.preventDefault();
    if (!file.files.length) return;
    button.disabled = true;
    clear(out, h("p", { class: "muted" }, "Uploading…"));
    try {
      clear(out, result(await send(path, new FormData(event.target))));
    } catch (e) {
      clear(out, problemBox(e, `${id}-error`));
    } finally {
      button.disabled = false;
    }
  }

  return h(
    "form",
    { class: "card upload", "data-testid": `${id}-form`, onsubmit: submit },
    h("h3", {}, title),
    h("p", { class: "small muted" }, hint),
    h("label", { for: `${id}-file` }, "File"),
    file,
    fields,
    h("div", { class: "actions" }, button),
    out,
  );
}

export function uploadForms(send) {
  return h(
    "div",
    { class: "two-cols" },
    uploadForm(
      {
        id: "model",
        title: "Teacher model",
        path: "v1/models",
        hint: "TorchScript (self-contained), or safetensors weights with the architecture they fit. Pickles are refused.",
        fields: [
          h("label", { for: "model-format" }, "Format"),
          h(
            "select",
            { id: "model-format", name: "format" },
            h("option", { value: "" }, "detect from the file"),
            h("option", { value: "torchscript" }, "TorchScript"),
            h("option", { value: "safetensors" }, "safetensors"),
          ),
          h("label", { for: "model-architecture" }, "Architecture (JSON, safetensors only)"),
          h("textarea", {
            id: "model-architecture",
            name: "architecture",
            class: "mono",
            rows: 3,
            placeholder: '{"kind": "cnn1d", "channels": 64}',
          }),
        ],
      },
      send,
    ),
    uploadForm(
      {
        id: "dataset",
        title: "Dataset",
        path: "v1/datasets",
        hint: "An .npz archive with x_train, y_train, x_test, y_test (optionally x_val, y_val).",
        fields: [],
      },
      send,
    ),
  );
}
