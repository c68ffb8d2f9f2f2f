// The queue and the two ways out: a batch in the X-Perfnb-Beacon header of the
// app's own next same-origin request, and navigator.sendBeacon when the page is
// hidden or goes away. No timer, no request of the beacon's own while visible.
//
// Records are serialised in idle time (requestIdleCallback) so that building a
// header on the app's request path is only string joins and one base64 pass.

import { S, applyControl, wants } from "./state.js";

const MAX_QUEUE = 1000; // records kept waiting; beyond it the oldest are dropped (and counted)
const enc = new TextEncoder();
const queue = []; // {page, rec, json, bytes}
let dropped = 0;
let idlePending = false;
let lastCarried = 0; // performance.now() of the last batch put on a request
const ASK_EVERY = 30000; // ms: with nothing to send, an empty batch asks for the control state

// Work that must run before a batch is cut (finishing request records, samples).
export const beforeFlush = [];

export function push(rec) {
  if (!wants(rec.kind)) return;
  if (rec.tags) rec.tags = cleanTags(rec.tags);
  queue.push({ page: location.pathname, rec, json: null, bytes: 0 });
  if (queue.length > MAX_QUEUE) {
    queue.shift();
    dropped++;
  }
  idle();
}

function cleanTags(tags) {
  const out = {};
  let n = 0;
  for (const k in tags) {
    const v = tags[k];
    if (v === undefined || v === null || v === "" || n >= 16) continue;
    out[k.slice(0, 64)] = String(v).slice(0, 256);
    n++;
  }
  return n ? out : undefined;
}

function serialise(item) {
  if (item.json === null) {
    item.json = JSON.stringify(item.rec);
    item.bytes = enc.encode(item.json).length;
  }
}

function idle() {
  if (idlePending || typeof requestIdleCallback !== "function") return;
  idlePending = true;
  requestIdleCallback(() => {
    idlePending = false;
    for (const item of queue) serialise(item);
  });
}

function prepare(final) {
  for (const fn of beforeFlush) fn(final);
  if (dropped && wants("process")) {
    const n = dropped;
    dropped = 0;
    push({ kind: "process", t: Date.now(), name: "beacon_dropped", value: n, unit: "count" });
  }
}

// Cut one batch of at most maxBytes (of JSON) from the head of the queue: the
// leading records of one page. Returns the JSON text, or null when empty.
function cut(maxBytes, ask) {
  if (!queue.length && !ask) return null;
  const page = queue.length ? queue[0].page : location.pathname;
  const head =
    '{"v":1,"page":' + JSON.stringify(page) + ',"session":' + JSON.stringify(S.session) + ',"records":[';
  let size = enc.encode(head).length + 2;
  const parts = [];
  while (queue.length && parts.length < S.maxRecords && queue[0].page === page) {
    const item = queue[0];
    serialise(item);
    if (item.bytes + 2 > maxBytes - enc.encode(head).length) {
      queue.shift(); // can never fit: drop it rather than block the queue
      dropped++;
      continue;
    }
    if (size + item.bytes + 1 > maxBytes) break; // defer the rest to the next carrier
    parts.push(item.json);
    size += item.bytes + 1;
    queue.shift();
  }
  return parts.length || ask ? head + parts.join(",") + "]}" : null;
}

function base64url(text) {
  const bytes = enc.encode(text);
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// The X-Perfnb-Beacon value for the app's request about to go out, or null.
export function headerValue() {
  if (!S.on) return null;
  prepare(false);
  // base64 makes 4 bytes of every 3: the JSON may use 3/4 of the cap. A page
  // whose records are all deselected still asks now and then (an empty batch),
  // so it learns when the selection changes again.
  const t = performance.now();
  const json = cut(Math.floor((S.headerBytes * 3) / 4) - 4, t - lastCarried > ASK_EVERY);
  if (json) lastCarried = t;
  return json && base64url(json);
}

// A response to a request that carried a batch says what the server now wants.
export function readControl(value) {
  if (!value) return;
  try {
    applyControl(JSON.parse(value));
  } catch (e) {
    return;
  }
  // What the server no longer wants is not sent (it would be dropped on arrival).
  for (let i = queue.length - 1; i >= 0; i--) if (!wants(queue[i].rec.kind)) queue.splice(i, 1);
}

// The page is hidden or going away: send everything left with sendBeacon.
export function flushAll() {
  if (!S.on || typeof navigator.sendBeacon !== "function") return;
  prepare(true);
  for (let json = cut(60000, false); json; json = cut(60000, false)) {
    let sent = false;
    try {
      sent = navigator.sendBeacon(S.endpoint, json);
    } catch (e) {
      sent = false;
    }
    if (!sent) return; // over the browser's quota: the rest waits, in case the page comes back
  }
}
