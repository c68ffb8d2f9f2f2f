// perfnb's browser beacon. Include it with the tag perfnb's middleware writes:
//
//   <script src="/_perfnb/beacon.js" data-perfnb='{"enabled":true,"kinds":null,...}'></script>
//
// It measures the page (Web Vitals, navigation and route timing, network,
// rendering, memory) and sends the records home on the app's own requests,
// with no timer, no polling loop and no request of its own while the page is
// visible. See docs/beacon.md.

import { S, applyControl } from "./state.js";
import { flushAll } from "./transport.js";
import { startNetwork } from "./network.js";
import { startTiming } from "./timing.js";
import { startRender } from "./render.js";
import { startMemory } from "./memory.js";
import { startVitals, vitals } from "./vitals.js";

function config() {
  const el = document.currentScript;
  try {
    return JSON.parse((el && el.getAttribute("data-perfnb")) || "{}") || {};
  } catch (err) {
    return {};
  }
}

function session() {
  const key = "perfnb-session";
  let id = "";
  try {
    id = sessionStorage.getItem(key) || "";
  } catch (err) {
    id = "";
  }
  if (!id) {
    id = Math.random().toString(36).slice(2, 12);
    try {
      sessionStorage.setItem(key, id);
    } catch (err) {
      // storage refused (private mode, sandbox): one id for this page
    }
  }
  return id;
}

function start() {
  if (window.perfnb) return; // included twice: the first one does the work
  const cfg = config();
  window.perfnb = { version: 1, vitals };
  if (cfg.enabled === false) return;
  const sample = typeof cfg.sample === "number" ? cfg.sample : 1;
  if (!(Math.random() < sample)) return; // this page view is not in the sample
  if (typeof cfg.prefix === "string") S.prefix = cfg.prefix;
  S.endpoint = typeof cfg.endpoint === "string" ? cfg.endpoint : S.prefix + "/beacon";
  if (cfg.header > 0) S.headerBytes = cfg.header;
  if (cfg.records > 0) S.maxRecords = cfg.records;
  if (cfg.memory_every >= 0) S.memoryEvery = cfg.memory_every * 1000;
  S.session = session();
  applyControl(cfg);
  S.on = true;
  startNetwork();
  startTiming();
  startRender();
  startMemory();
  startVitals();
  // Registered on the document (target phase) so that they run after the
  // web-vitals library's capture listeners on window have reported.
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") flushAll();
  });
  addEventListener("pagehide", flushAll);
}

start();
