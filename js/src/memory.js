// Memory: the JS heap where the browser exposes it and the DOM node count,
// sampled when a batch is cut (at most every S.memoryEvery ms), never on a timer.

import { S, now } from "./state.js";
import { beforeFlush, push } from "./transport.js";

let last = -Infinity;

function sample(final) {
  const t = now();
  // A hidden page flushes twice (visibilitychange, then pagehide): one sample.
  if (t - last < (final ? 1000 : S.memoryEvery)) return;
  last = t;
  const at = Date.now();
  const mem = performance.memory;
  if (mem && mem.usedJSHeapSize) {
    push({
      kind: "process",
      name: "js_heap_bytes",
      value: mem.usedJSHeapSize,
      unit: "bytes",
      t: at,
      tags: { total_bytes: mem.totalJSHeapSize, limit_bytes: mem.jsHeapSizeLimit },
    });
  }
  push({ kind: "process", name: "dom_nodes", value: document.getElementsByTagName("*").length, unit: "count", t: at });
}

export function startMemory() {
  beforeFlush.push(sample);
}
