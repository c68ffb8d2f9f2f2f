// Navigation timing of the page load, and single-page route changes timed from
// the history change to the next paint (a frame, then the task after it).

import { S, epoch, like, ms, now } from "./state.js";
import { push } from "./transport.js";

// A task after the current one without a timer: a message to ourselves.
export function afterTask(fn) {
  const ch = new MessageChannel();
  ch.port1.onmessage = () => {
    ch.port1.close();
    fn();
  };
  ch.port2.postMessage(0);
}

function loadRecord() {
  const nav = performance.getEntriesByType("navigation")[0];
  if (!nav || !nav.loadEventEnd) return;
  const span = (a, b) => (nav[a] > 0 && nav[b] >= nav[a] ? ms(nav[b] - nav[a]) : undefined);
  push({
    kind: "navigation",
    name: "load",
    t: epoch(nav.startTime),
    duration_ms: ms(nav.loadEventEnd - nav.startTime),
    ttfb_ms: ms(nav.responseStart - nav.startTime),
    response_bytes: nav.encodedBodySize,
    route: S.landing,
    tags: {
      type: nav.type,
      dns_ms: span("domainLookupStart", "domainLookupEnd"),
      connect_ms: span("connectStart", "connectEnd"),
      tls_ms: span("secureConnectionStart", "connectEnd"),
      request_ms: span("requestStart", "responseStart"),
      response_ms: span("responseStart", "responseEnd"),
      dom_interactive_ms: ms(nav.domInteractive),
      dom_content_loaded_ms: ms(nav.domContentLoadedEventEnd),
      dom_complete_ms: ms(nav.domComplete),
      transfer_bytes: nav.transferSize,
      protocol: nav.nextHopProtocol,
    },
  });
}

// A fragment that names a view (#chat, #/cards/2) is part of the route; one that
// looks like data (#access_token=...) is not, and never leaves the page.
function viewHash() {
  const h = location.hash;
  return /^#!?\/?[\w\-/.]{0,80}$/.test(h) ? h : "";
}

let where = location.pathname + location.search + viewHash();
let pending = null;

function changed(trigger) {
  const next = location.pathname + location.search + viewHash();
  if (next === where) return;
  const from = where;
  where = next;
  if (pending) return; // several changes before one paint: one route change
  const change = (pending = { trigger, from, s: now() });
  requestAnimationFrame(() =>
    afterTask(() => {
      pending = null;
      push({
        kind: "navigation",
        name: "route",
        t: epoch(change.s),
        route: location.pathname,
        duration_ms: ms(now() - change.s),
        tags: { trigger: change.trigger, from: change.from.split("?")[0], to: location.pathname + viewHash() },
      });
    }),
  );
}

export function startTiming() {
  if (document.readyState === "complete") afterTask(loadRecord);
  else addEventListener("load", () => afterTask(loadRecord), { once: true });
  for (const name of ["pushState", "replaceState"]) {
    const original = history[name];
    if (typeof original !== "function") continue;
    history[name] = like(function () {
      const out = original.apply(this, arguments);
      if (S.on) changed(name);
      return out;
    }, original);
  }
  addEventListener("popstate", () => S.on && changed("popstate"));
  addEventListener("hashchange", () => S.on && changed("hashchange"));
}
