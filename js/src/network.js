// The page's own network use: every fetch, XHR, WebSocket and EventSource
// (timing, size, errors), and a summary of the other resources it loaded.
//
// The wrappers change nothing the app can observe: the same arguments reach the
// browser (plus the X-Perfnb-Beacon header on same-origin requests while there
// is something to send), the same values and errors come back. Each checks
// S.on first and is a plain pass-through when monitoring is off.
//
// Durations and sizes come from Resource Timing when the browser reports an
// entry for the request (to the last byte); otherwise from the wrapper (to the
// response headers).

import { S, epoch, isOwn, like, ms, now, routeOf } from "./state.js";
import { beforeFlush, headerValue, push, readControl } from "./transport.js";

const HEADER = "X-Perfnb-Beacon";
const CONTROL = "x-perfnb-control";
const waiting = new Map(); // absolute URL -> request records waiting for their entry
const live = new Set(); // open WebSocket / EventSource observers
const started = now();
let summary = null;

function bodySize(body) {
  if (body == null) return undefined;
  if (typeof body === "string") return body.length; // characters: counting bytes would cost a copy
  if (body.byteLength !== undefined) return body.byteLength;
  if (body.size !== undefined) return body.size;
  if (body instanceof URLSearchParams) return String(body).length;
  return undefined;
}

function track(type, url, method, size) {
  const rec = { type, url, method, size, s: now(), same: url.origin === location.origin };
  const list = waiting.get(url.href);
  if (list) list.push(rec);
  else waiting.set(url.href, [rec]);
  return rec;
}

function settle(rec, status, error, bytes) {
  rec.end = now();
  rec.status = status;
  rec.bytes = bytes;
  if (error) rec.error = error;
  if (rec.rt || error) finish(rec);
}

function finish(rec) {
  const list = waiting.get(rec.url.href);
  if (list) {
    const i = list.indexOf(rec);
    if (i >= 0) list.splice(i, 1);
    if (!list.length) waiting.delete(rec.url.href);
  }
  const e = rec.rt;
  const out = {
    kind: "resource",
    name: rec.type,
    t: epoch(rec.s),
    route: routeOf(rec.url),
    method: rec.method.slice(0, 16),
    status: rec.status || 0,
    duration_ms: ms(e && e.responseEnd ? e.responseEnd - e.startTime : rec.end - rec.s),
    request_bytes: rec.size,
    tags: { page: location.pathname, carried: rec.carried ? "1" : undefined },
  };
  if (e && e.responseStart > 0) out.ttfb_ms = ms(e.responseStart - e.startTime);
  if (e && (rec.same || e.transferSize > 0)) out.response_bytes = e.encodedBodySize;
  else if (rec.bytes >= 0) out.response_bytes = rec.bytes;
  if (rec.error) {
    out.error_type = String(rec.error.name || "Error").slice(0, 128);
    out.error_message = String(rec.error.message || "").slice(0, 200);
  }
  push(out);
}

// Before a batch is cut: requests answered but never given a timing entry are
// sent with the wrapper's own timing once they are a second old (at once when
// the page is going away), and the resource summary goes out.
beforeFlush.push((final) => {
  const t = now();
  for (const list of Array.from(waiting.values())) {
    for (const rec of list.slice()) {
      if (rec.end !== undefined && (final || t - rec.end > 1000)) finish(rec);
    }
  }
  if (final) for (const obs of live) obs(true);
  if (summary) {
    const sum = summary;
    summary = null;
    push({
      kind: "resource",
      name: "resources",
      t: epoch(sum.first),
      value: sum.count,
      unit: "count",
      response_bytes: sum.bytes,
      tags: { slowest: sum.slowest, slowest_ms: ms(sum.slowestMs), types: typesText(sum.types) },
    });
  }
});

function typesText(types) {
  return Object.keys(types)
    .map((k) => k + ":" + types[k])
    .join(",");
}

function onResource(e) {
  let url;
  try {
    url = new URL(e.name);
  } catch (err) {
    return;
  }
  if (e.initiatorType === "beacon" || isOwn(url)) return;
  if (e.initiatorType === "fetch" || e.initiatorType === "xmlhttprequest") {
    const list = waiting.get(url.href);
    const rec = list && list.find((r) => !r.rt && r.s <= e.startTime + 5);
    if (rec) {
      rec.rt = e;
      if (rec.end !== undefined) finish(rec);
      return;
    }
    if (e.startTime < started) {
      // A request the page made before the beacon ran: its entry is all we know.
      push({
        kind: "resource",
        name: e.initiatorType === "fetch" ? "fetch" : "xhr",
        t: epoch(e.startTime),
        route: routeOf(url),
        status: e.responseStatus || undefined,
        duration_ms: ms(e.duration),
        ttfb_ms: e.responseStart > 0 ? ms(e.responseStart - e.startTime) : undefined,
        response_bytes: e.encodedBodySize,
        tags: { page: location.pathname },
      });
    }
    return;
  }
  const sum = summary || (summary = { first: e.startTime, count: 0, bytes: 0, slowestMs: -1, types: {} });
  sum.count++;
  sum.bytes += e.transferSize || e.encodedBodySize || 0;
  sum.types[e.initiatorType] = (sum.types[e.initiatorType] || 0) + 1;
  if (e.duration > sum.slowestMs) {
    sum.slowestMs = e.duration;
    sum.slowest = routeOf(url);
  }
}

function wrapFetch() {
  const original = window.fetch;
  if (typeof original !== "function") return;
  window.fetch = like(function (input, init) {
    if (!S.on) return original.apply(this, arguments);
    let rec;
    let args = arguments;
    try {
      const req = input instanceof Request ? input : null;
      const url = new URL(req ? req.url : String(input), location.href);
      if (isOwn(url)) return original.apply(this, arguments);
      const method = String((init && init.method) || (req && req.method) || "GET").toUpperCase();
      rec = track("fetch", url, method, bodySize(init && init.body));
      const quiet = (init && (init.keepalive || init.mode === "no-cors")) || (req && (req.keepalive || req.mode === "no-cors"));
      if (rec.same && !quiet) {
        const value = headerValue();
        if (value) {
          // fetch(input, init) begins with new Request(input, init): doing it here
          // reads init exactly as the browser would. One the browser refuses is
          // left to fetch, which rejects it as before.
          let request = null;
          try {
            request = new Request(input, init);
          } catch (err) {
            request = null;
          }
          if (request) {
            request.headers.set(HEADER, value);
            args = [request];
            rec.carried = true;
          }
        }
      }
    } catch (err) {
      if (!rec) return original.apply(this, arguments);
    }
    // The caller gets a promise that settles exactly like the browser's, one
    // step later; an unhandled rejection stays unhandled.
    return original.apply(this, args).then(
      (res) => {
        try {
          if (rec.carried) readControl(res.headers.get(CONTROL));
          const length = res.headers.get("content-length");
          settle(rec, res.status, null, length === null ? -1 : Number(length));
        } catch (err) {
          // never let bookkeeping change the app's result
        }
        return res;
      },
      (error) => {
        settle(rec, 0, error, -1);
        throw error;
      },
    );
  }, original);
}

function wrapXHR() {
  if (typeof XMLHttpRequest !== "function") return;
  const proto = XMLHttpRequest.prototype;
  const open = proto.open;
  const send = proto.send;
  const setHeader = proto.setRequestHeader;
  const meta = new WeakMap();
  proto.open = like(function (method, url) {
    try {
      meta.set(this, { method: String(method).toUpperCase(), url: new URL(String(url), location.href) });
    } catch (err) {
      meta.delete(this);
    }
    return open.apply(this, arguments);
  }, open);
  proto.send = like(function (body) {
    const m = S.on && this.readyState === 1 && meta.get(this);
    if (m && !isOwn(m.url)) {
      try {
        const xhr = this;
        const rec = track("xhr", m.url, m.method, bodySize(body));
        if (rec.same) {
          const value = headerValue();
          if (value) {
            setHeader.call(xhr, HEADER, value);
            rec.carried = true;
          }
        }
        let failed = null;
        const fail = (e) => {
          failed = { name: e.type === "abort" ? "AbortError" : e.type === "timeout" ? "timeout" : "NetworkError" };
        };
        xhr.addEventListener("error", fail);
        xhr.addEventListener("abort", fail);
        xhr.addEventListener("timeout", fail);
        xhr.addEventListener("loadend", () => {
          let length = -1;
          try {
            if (rec.carried) readControl(xhr.getResponseHeader(CONTROL));
            if (rec.same && xhr.status) length = Number(xhr.getResponseHeader("content-length") ?? -1);
          } catch (err) {
            length = -1;
          }
          settle(rec, xhr.status, failed, length);
        });
      } catch (err) {
        // bookkeeping failed: the request itself goes out unchanged below
      }
    }
    return send.apply(this, arguments);
  }, send);
}

function size(data) {
  if (typeof data === "string") return data.length;
  return (data && (data.byteLength ?? data.size)) || 0;
}

// Construct through a Proxy so the constructor, its prototype, statics and
// instanceof all stay the browser's own.
function watchConstructor(name, observe) {
  const Original = window[name];
  if (typeof Original !== "function") return null;
  window[name] = new Proxy(Original, {
    construct(target, args, newTarget) {
      const obj = Reflect.construct(target, args, newTarget);
      if (S.on) {
        try {
          observe(obj);
        } catch (err) {
          // the socket works whether or not it is watched
        }
      }
      return obj;
    },
  });
  return Original;
}

function socketRecord(type, st, code, error, open) {
  push({
    kind: "resource",
    name: type,
    t: epoch(st.s),
    route: routeOf(st.url),
    method: type === "websocket" ? "WS" : "GET",
    duration_ms: ms(now() - st.s),
    ttfb_ms: st.opened ? ms(st.opened - st.s) : undefined,
    request_bytes: type === "websocket" ? st.outBytes : undefined,
    response_bytes: st.inBytes,
    error_type: error,
    tags: {
      page: location.pathname,
      messages_in: st.in,
      messages_out: type === "websocket" ? st.out : undefined,
      errors: st.errors || undefined,
      state: open ? "open" : undefined,
      // The intake takes HTTP statuses (up to 999) in status; close codes are 1000+.
      close_code: code || undefined,
    },
  });
}

function observeSocket(type, sock, stats) {
  const st = { url: new URL(sock.url), s: now(), opened: 0, in: 0, inBytes: 0, out: 0, outBytes: 0, errors: 0 };
  if (stats) stats.set(sock, st);
  // Called with true when the page goes away with the socket still open.
  const obs = (leaving) => {
    live.delete(obs);
    if (leaving) socketRecord(type, st, 0, undefined, true);
  };
  live.add(obs);
  const end = (code, error) => {
    if (!live.has(obs)) return;
    live.delete(obs);
    socketRecord(type, st, code, error, false);
  };
  sock.addEventListener("open", () => {
    st.opened = now();
  });
  sock.addEventListener("message", (e) => {
    st.in++;
    st.inBytes += size(e.data);
  });
  sock.addEventListener("error", () => {
    st.errors++;
    // An EventSource retries by itself; it is over only once CLOSED.
    if (type === "eventsource" && sock.readyState === 2) end(0, "EventSourceError");
  });
  if (type === "websocket") {
    sock.addEventListener("close", (e) => end(e.code, st.errors || !e.wasClean ? "WebSocketError" : undefined));
  }
  return end;
}

function wrapSockets() {
  const stats = new WeakMap();
  const WS = watchConstructor("WebSocket", (ws) => observeSocket("websocket", ws, stats));
  if (WS) {
    const send = WS.prototype.send;
    WS.prototype.send = like(function (data) {
      const st = stats.get(this);
      if (st && this.readyState === 1) {
        st.out++;
        st.outBytes += size(data);
      }
      return send.apply(this, arguments);
    }, send);
  }
  const ends = new WeakMap();
  const ES = watchConstructor("EventSource", (es) => ends.set(es, observeSocket("eventsource", es, null)));
  if (ES) {
    const close = ES.prototype.close;
    ES.prototype.close = like(function () {
      const end = ends.get(this);
      if (end) end(0, undefined);
      return close.apply(this, arguments);
    }, close);
  }
}

export function startNetwork() {
  wrapFetch();
  wrapXHR();
  wrapSockets();
  try {
    new PerformanceObserver((list) => {
      if (S.on) for (const e of list.getEntries()) onResource(e);
    }).observe({ type: "resource", buffered: true });
  } catch (err) {
    // no Resource Timing: the wrappers' own timings stand
  }
}
