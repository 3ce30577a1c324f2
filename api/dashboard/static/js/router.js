// Hash routing: #/jobs, #/jobs/<id>, #/compare?ids=a,b, #/submit, #/pool, #/sweeps, #/sweeps/<id>,
// #/login.

export function current() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const cut = raw.indexOf("?");
  const path = cut < 0 ? raw : raw.slice(0, cut);
  const query = cut < 0 ? "" : raw.slice(cut + 1);
  return { path: path.replace(/\/+$/, "") || "/", params: new URLSearchParams(query) };
}

export function href(path, params) {
  const query = params ? new URLSearchParams(params).toString() : "";
  return `#${path}${query ? `?${query}` : ""}`;
}

export function go(path, params) {
  location.hash = href(path, params);
}

// Rewrites the query of the current route without a new history entry or a re-render
// (filters and selections live in the URL so that a reload keeps them).
export function replaceParams(params) {
  const { path } = current();
  for (const [key, value] of [...params.entries()]) if (!value) params.delete(key);
  history.replaceState(null, "", href(path, params));
}

// Finds the handler for a path: `routes` maps patterns like "/jobs/:id" to handlers.
export function match(routes, path) {
  for (const [pattern, handler] of Object.entries(routes)) {
    const names = [];
    const re = new RegExp(
      `^${pattern.replace(/:(\w+)/g, (_, name) => {
        names.push(name);
        return "([^/]+)";
      })}$`,
    );
    const m = re.exec(path);
    if (m) {
      const args = Object.fromEntries(names.map((name, i) => [name, decodeURIComponent(m[i + 1])]));
      return { handler, args };
    }
  }
  return null;
}
