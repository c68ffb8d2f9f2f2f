// Shared state of one page's beacon: the settings from the script tag, what the
// server allows (updated from the X-Perfnb-Control response header), the queue.
//
// Everything here is plain data; nothing runs at import time.

export const S = {
  on: false, // monitoring on: every wrapper checks this first and passes straight through when off
  kinds: null, // Set of record kinds the server keeps, or null for all
  frames: false, // frame-rate sampling asked for
  prefix: "/api/performance-metrics",
  endpoint: "/api/performance-metrics/beacon",
  headerBytes: 4096, // cap on the X-Perfnb-Beacon value (encoded bytes); proxies limit header lines
  maxRecords: 200, // records per batch accepted by the intake
  memoryEvery: 10000, // ms between heap / DOM samples (taken at flush time only)
  landing: location.pathname, // the page the hard navigation loaded
  session: "",
};

// Listeners told when the control state changes (frame sampling starts and stops).
export const onControl = [];

export function wants(kind) {
  return S.on && (!S.kinds || S.kinds.has(kind));
}

// Apply a control document ({"enabled", "kinds", "frames"}) from the page config
// or from a response header. Unknown or malformed parts are ignored.
export function applyControl(doc) {
  if (!doc || typeof doc !== "object") return;
  if (typeof doc.enabled === "boolean") S.on = doc.enabled;
  if ("kinds" in doc) S.kinds = Array.isArray(doc.kinds) ? new Set(doc.kinds) : null;
  if (typeof doc.frames === "boolean") S.frames = doc.frames;
  for (const fn of onControl) fn();
}

export const now = () => performance.now();
// Epoch milliseconds of a performance.now() time.
export const epoch = (t) => Math.round(performance.timeOrigin + t);
// Milliseconds to 0.1 ms: plenty for the intake, and short on the wire.
export const ms = (x) => Math.round(x * 10) / 10;

// Same-origin path of a URL, or //host/path for another origin (query and
// fragment never leave the page: they may hold tokens).
// (A WebSocket to this page's host counts as same-origin: ws: pairs with http:.)
export function routeOf(url) {
  const ws = url.protocol.replace("ws", "http");
  const same = url.host === location.host && ws === location.protocol;
  return same ? url.pathname : "//" + url.host + url.pathname;
}

// perfnb's own endpoints and script: never recorded as the app's, never carriers.
export function isOwn(url) {
  const p = url.pathname;
  return (
    url.origin === location.origin &&
    (p === S.prefix || p.startsWith(S.prefix + "/") || p.startsWith("/_perfnb/"))
  );
}

// A wrapper answers to the original's name and length (some code checks them).
export function like(wrapper, original) {
  try {
    Object.defineProperty(wrapper, "name", { value: original.name });
    Object.defineProperty(wrapper, "length", { value: original.length });
  } catch (err) {
    // non-configurable in some engine: the wrapper still works
  }
  return wrapper;
}
