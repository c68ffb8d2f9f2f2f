// Web Vitals from the official web-vitals library (bundled at build time).
// The library decides when each value is final; every report becomes one
// record, so a later report of the same metric supersedes the earlier one.
//
// The attribution build is used where it is cheap (LCP, CLS: which element);
// INP uses the plain build, whose attribution would weigh more than the rest of
// the beacon, and names its target from the event entry instead.

// Per-metric modules share the library's internals (the package's two prebuilt
// entry files would each carry a copy).
import { onCLS } from "web-vitals/attribution/onCLS.js";
import { onLCP } from "web-vitals/attribution/onLCP.js";
import { onFCP } from "web-vitals/onFCP.js";
import { onINP } from "web-vitals/onINP.js";
import { onTTFB } from "web-vitals/onTTFB.js";
import { S } from "./state.js";
import { push } from "./transport.js";

export const vitals = { onCLS, onFCP, onINP, onLCP, onTTFB };

function selector(node) {
  if (!node || node.nodeType !== 1) return undefined;
  let out = node.localName;
  if (node.id) out += "#" + node.id;
  else if (node.classList.length) out += "." + Array.from(node.classList).join(".");
  return out;
}

function report(metric) {
  const a = metric.attribution || {};
  const entry = metric.entries[metric.entries.length - 1];
  push({
    kind: "vital",
    name: metric.name,
    value: metric.value,
    unit: metric.name === "CLS" ? "score" : "ms",
    t: Date.now(),
    route: S.landing,
    tags: {
      id: metric.id,
      rating: metric.rating,
      navigation: metric.navigationType,
      target: a.target || a.largestShiftTarget || (metric.name === "INP" && entry ? selector(entry.target) : undefined),
      url: a.url ? String(a.url).split("?")[0] : undefined,
      event: metric.name === "INP" && entry ? entry.name : undefined,
    },
  });
}

export function startVitals() {
  onTTFB(report);
  onFCP(report);
  onLCP(report);
  onCLS(report);
  onINP(report);
}
