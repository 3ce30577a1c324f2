// The /v1 API, as the logged-in user: every call sends `Authorization: Bearer <token>`.
// Errors are RFC 9457 problem documents; they become ApiError with the problem's fields.
// A 401 anywhere ends the session: the token is forgotten and the login page says why.

const TOKEN_KEY = "distillery.token";
const BASE = new URL(".", document.baseURI); // the API serves the dashboard at its root

export const session = {
  get token() {
    return localStorage.getItem(TOKEN_KEY);
  },
  me: null,
  set(token, me) {
    localStorage.setItem(TOKEN_KEY, token);
    this.me = me;
  },
  clear() {
    localStorage.removeItem(TOKEN_KEY);
    this.me = null;
  },
};

export class ApiError extends Error {
  constructor(status, problem) {
    const title = problem?.title || `HTTP ${status}`;
    super(problem?.detail ? `${title}: ${problem.detail}` : title);
    this.status = status;
    this.title = title;
    this.detail = problem?.detail || "";
    this.errors = Array.isArray(problem?.errors) ? problem.errors : [];
    this.problem = problem;
  }
}

const listeners = new Set();

// Called with the ApiError when a request is refused with 401 (the app goes to the login page).
export function onUnauthorized(fn) {
  listeners.add(fn);
}

export function url(path, params) {
  const u = new URL(path.replace(/^\//, ""), BASE);
  for (const [key, value] of Object.entries(params || {})) {
    if (value === null || value === undefined || value === "") continue;
    for (const v of Array.isArray(value) ? value : [value]) u.searchParams.append(key, v);
  }
  return u;
}

async function problemOf(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    return { title: `HTTP ${response.status} ${response.statusText}`, detail: text.slice(0, 300) };
  }
}

// One request. Returns {status, data, etag}; 304 gives data null. Throws ApiError otherwise.
// Options: method, params, json, body, contentType, etag (sent as If-None-Match), token.
export async function request(path, options = {}) {
  const headers = { Accept: "application/json" };
  const token = options.token ?? session.token;
  if (token) headers.Authorization = `Bearer ${token}`;
  if (options.etag) headers["If-None-Match"] = options.etag;
  let body = options.body;
  if (options.json !== undefined) {
    body = JSON.stringify(options.json);
    headers["Content-Type"] = "application/json";
  } else if (options.contentType) {
    headers["Content-Type"] = options.contentType;
  }
  let response;
  try {
    response = await fetch(url(path, options.params), {
      method: options.method || "GET",
      headers,
      body,
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiError(0, { title: "The API cannot be reached", detail: String(e.message || e) });
  }
  if (response.status === 304) return { status: 304, data: null, etag: options.etag };
  if (!response.ok) {
    const error = new ApiError(response.status, await problemOf(response));
    if (response.status === 401 && !options.token) for (const fn of listeners) fn(error);
    throw error;
  }
  const etag = response.headers.get("ETag");
  if (response.status === 204) return { status: 204, data: null, etag };
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  return { status: response.status, data, etag };
}

export async function get(path, params) {
  return (await request(path, { params })).data;
}

export async function post(path, options = {}) {
  return (await request(path, { method: "POST", ...options })).data;
}

// Everything after `after` from a cursor-paged list ({items, next_cursor, has_more}).
export async function drain(path, params, after) {
  const items = [];
  let cursor = after;
  for (;;) {
    const page = await get(path, { ...params, after: cursor });
    items.push(...page.items);
    cursor = page.next_cursor;
    if (!page.has_more || !page.items.length) return { items, cursor };
  }
}

// A download needs the bearer header, so a link cannot point at the API: fetch the file, then
// hand the browser an object URL to save.
export async function download(path, filename) {
  const response = await fetch(url(path), {
    headers: { Authorization: `Bearer ${session.token}` },
    cache: "no-store",
  });
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  const blob = await response.blob();
  const href = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = href;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 60_000);
  return blob.size;
}
