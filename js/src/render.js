// Rendering: long animation frames (or long tasks where those are all the
// browser has), User Timing measures as component render times, and frame-rate
// sampling only while the server asks for it.

import { S, epoch, ms, onControl, routeOf } from "./state.js";
import { push } from "./transport.js";

function observe(type, fn) {
  try {
    if (!PerformanceObserver.supportedEntryTypes.includes(type)) return false;
    new PerformanceObserver((list) => {
      if (S.on) for (const e of list.getEntries()) fn(e);
    }).observe({ type, buffered: true });
    return true;
  } catch (err) {
    return false;
  }
}

// A script URL as a path (no query: it may hold tokens); other text as it is.
function path(text) {
  try {
    return /^https?:/.test(text) ? routeOf(new URL(text)) : text || "";
  } catch (err) {
    return "";
  }
}

function scriptOf(e) {
  let worst = null;
  for (const s of e.scripts || []) if (!worst || s.duration > worst.duration) worst = s;
  if (!worst) return {};
  return {
    script: path(worst.sourceURL) + (worst.sourceFunctionName ? " " + worst.sourceFunctionName : ""),
    invoker: path(worst.invoker),
  };
}

function longFrame(e) {
  const s = scriptOf(e);
  push({
    kind: "render",
    name: e.entryType === "long-animation-frame" ? "long-animation-frame" : "long-task",
    value: ms(e.duration),
    unit: "ms",
    t: epoch(e.startTime),
    tags: { blocking_ms: e.blockingDuration ? ms(e.blockingDuration) : undefined, script: s.script, invoker: s.invoker },
  });
}

function measure(e) {
  push({ kind: "render", name: e.name.slice(0, 128), duration_ms: ms(e.duration), t: epoch(e.startTime) });
}

// Frame rate: a requestAnimationFrame loop that runs only while S.frames is on,
// one record per second of frames.
let sampling = false;
function sampleFrames() {
  if (sampling || !S.frames || !S.on) return;
  sampling = true;
  let start = 0;
  let last = 0;
  let frames = 0;
  let worst = 0;
  const frame = (t) => {
    if (!S.frames || !S.on) {
      sampling = false;
      return;
    }
    if (!start || t - last > 1000) {
      start = last = t; // first frame, or back from hidden: start a new window
      frames = worst = 0;
    } else {
      frames++;
      worst = Math.max(worst, t - last);
      last = t;
      if (t - start >= 1000) {
        push({
          kind: "render",
          name: "fps",
          value: ms((frames * 1000) / (t - start)),
          unit: "fps",
          t: epoch(start),
          tags: { worst_frame_ms: ms(worst) },
        });
        start = t;
        frames = worst = 0;
      }
    }
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}

export function startRender() {
  if (!observe("long-animation-frame", longFrame)) observe("longtask", longFrame);
  observe("measure", measure);
  onControl.push(sampleFrames);
  sampleFrames();
}

