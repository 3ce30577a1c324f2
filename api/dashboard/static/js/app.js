// The dashboard's entry point: the header (who is logged in), the navigation and the pages.
// Each page is `render(view, context)` and returns a function that stops its polling.

import { get, onUnauthorized, session } from "./api.js";
import * as compare from "./compare/page.js";
import { clear, h } from "./dom.js";
import * as job from "./job/page.js";
import * as jobs from "./jobs/page.js";
import * as login from "./login.js";
import * as pool from "./pool/page.js";
import { current, go, match } from "./router.js";
import * as submit from "./submit/page.js";
import * as sweep from "./sweeps/page.js";
import * as sweeps from "./sweeps/list-page.js";

const ROUTES = {
  "/login": login.render,
  "/jobs": jobs.render,
  "/jobs/:id": job.render,
  "/compare": compare.render,
  "/submit": submit.render,
  "/pool": pool.render,
  "/sweeps": sweeps.render,
  "/sweeps/:id": sweep.render,
};
const PUBLIC = new Set(["/login"]);

let stopPage = null;
let rendered = 0;

function whoami() {
  const slot = document.getElementById("whoami");
  const me = session.me;
  if (!me) {
    slot.replaceChildren();
    return;
  }
  clear(
    slot,
    h(
      "span",
      { class: "who", "data-testid": "whoami", title: `token ${me.token_id}` },
      h("strong", {}, me.user),
      ` · ${me.team ?? "no team"} · ${me.role}`,
    ),
    h("button", { type: "button", class: "link", "data-testid": "logout", onclick: logout }, "Log out"),
  );
}

function logout() {
  session.clear();
  login.setMessage("You are logged out.");
  go("/login");
}

function highlightNav(path) {
  for (const a of document.querySelectorAll("nav.main a")) {
    const target = a.getAttribute("href").slice(1);
    a.classList.toggle("active", path === target || path.startsWith(`${target}/`));
  }
}

async function show() {
  const serial = ++rendered;
  const { path, params } = current();
  if (path === "/") return go("/jobs");
  if (!session.token && !PUBLIC.has(path)) return go("/login", { next: location.hash });
  if (session.token && !session.me && !PUBLIC.has(path)) {
    try {
      session.me = await get("v1/me");
    } catch (e) {
      if (e.status !== 401) login.setMessage(`Could not check your token: ${e.message}`);
      return go("/login", { next: location.hash });
    }
    if (serial !== rendered) return; // another navigation happened meanwhile
  }
  whoami();
  highlightNav(path);
  stopPage?.();
  stopPage = null;
  const view = document.getElementById("view");
  view.replaceChildren();
  const found = match(ROUTES, path);
  if (!found) {
    clear(view, h("h1", {}, "Not found"), h("p", {}, "No page at ", h("code", {}, path), "."));
    return;
  }
  stopPage = found.handler(view, { params, ...found.args }) || null;
  view.focus({ preventScroll: true });
}

onUnauthorized((error) => {
  const next = current().path === "/login" ? null : location.hash;
  session.clear();
  login.setMessage(`Your token was refused: ${error.detail || error.title}. Log in again.`);
  go("/login", next ? { next } : undefined);
});

window.addEventListener("hashchange", show);
show();
