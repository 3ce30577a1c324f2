// Log in with an API token: it is checked with GET /v1/me and kept in localStorage.

import { request, session } from "./api.js";
import { h } from "./dom.js";
import { problemBox } from "./notice.js";

let message = null;

// What the login page says next time it opens (why the user was sent there).
export function setMessage(text) {
  message = text;
}

export function render(view, { params }) {
  const note = message;
  message = null;
  const error = h("div", { class: "error-slot" });
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "current-password",
    required: true,
    placeholder: "dst_…",
    "data-testid": "token-input",
  });
  const button = h("button", { type: "submit", class: "primary", "data-testid": "login-submit" }, "Log in");

  async function submit(event) {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    button.disabled = true;
    error.replaceChildren();
    try {
      const { data } = await request("v1/me", { token });
      session.set(token, data);
      const next = params.get("next");
      location.hash = next && !next.startsWith("#/login") ? next : "#/jobs";
    } catch (e) {
      error.replaceChildren(problemBox(e, "login-error"));
    } finally {
      button.disabled = false;
    }
  }

  view.append(
    h(
      "section",
      { class: "card login" },
      h("h1", {}, "Log in"),
      note ? h("p", { class: "note", "data-testid": "login-message", role: "status" }, note) : null,
      h(
        "form",
        { onsubmit: submit, "data-testid": "login-form" },
        h("label", { for: "token" }, "API token"),
        input,
        h(
          "p",
          { class: "hint" },
          "An admin makes one with ",
          h("code", {}, "distill admin token create <user>"),
          ". It stays in this browser until you log out.",
        ),
        button,
      ),
      error,
    ),
  );
  input.focus();
}
