// perfnb Dashboard: one widget, every chart, plotly.js loaded once per page.
// The kernel sends per-second summaries (see perfnb/widgets/_protocols.py) at
// most twice a second; this side keeps them per second and redraws once per
// animation frame. The charts mirror perfnb/widgets/charts.py.

/* __PLOTLY_LOADER__ */

const CHARTS = [
  ["latency", "Latency per route (ms): p50 · p95 · p99"],
  ["throughput", "Throughput (requests/s)"],
  ["errors", "Error rate (%)"],
  ["server_network", "Where time goes (ms, mean): server vs network"],
  ["cpu_memory", "Process memory (MB) and CPU (%)"],
  ["vitals", "Web Vitals (p75)"],
  ["polling", "Polling cadence"],
];
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
const LIGHT_TITLES = {
  apiPolling: "API polling",
  serverResponse: "Server response",
  clientPerformance: "Client performance",
};
const WINDOWS = [60, 300, 600, 900, 1800, 3600];
// anywidget hands initialize() and render() different proxies of one model, so the
// state both share is keyed by the widget's own id (the `_uid` trait), page-wide.
const STATES = "__perfnbDashboardStates";

function modelState(model) {
  const all = (globalThis[STATES] = globalThis[STATES] || new Map());
  const uid = model.get("_uid");
  let st = all.get(uid);
  if (!st) {
    st = {
      seconds: new Map(),
      health: {},
      alerts: [],
      routes: [],
      sources: [],
      instances: {},
      stats: {},
      now: 0,
      paused: false,
      version: 0,
      views: new Set(),
    };
    all.set(uid, st);
  }
  return st;
}

function onMessage(model, msg, buffers) {
  if (msg.type === "plotly") {
    receivePlotly(buffers);
    return;
  }
  if (msg.type !== "update") {
    return;
  }
  const st = modelState(model);
  if (msg.reset) {
    st.seconds.clear();
  }
  for (const s of msg.seconds) {
    st.seconds.set(s.t, s);
  }
  st.now = Math.max(st.now, msg.now);
  const oldest = st.now - Math.max(msg.window, model.get("window"));
  for (const t of st.seconds.keys()) {
    if (t < oldest) {
      st.seconds.delete(t);
    }
  }
  st.health = msg.health;
  st.alerts = msg.alerts;
  st.routes = msg.routes;
  st.sources = msg.sources;
  st.instances = msg.instances || {};
  st.stats = msg.stats;
  st.paused = msg.paused;
  st.version += 1;
  for (const redraw of st.views) {
    redraw();
  }
}

// ---- figures (mirror of charts.py) --------------------------------------------------
function iso(t) {
  return new Date(t * 1000).toISOString().slice(0, 19) + "Z";
}

function topRoutes(rows, limit) {
  const counts = new Map();
  for (const s of rows) {
    for (const [route, n] of Object.entries(s.rps || {})) {
      counts.set(route, (counts.get(route) || 0) + n);
    }
  }
  return [...counts.entries()]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .slice(0, limit)
    .map((e) => e[0]);
}

function series(rows, pick) {
  const x = [];
  const y = [];
  for (const s of rows) {
    const v = pick(s);
    if (v !== undefined && v !== null) {
      x.push(iso(s.t));
      y.push(v);
    }
  }
  return [x, y];
}

function layout(title, color, extra) {
  return Object.assign(
    {
      title: { text: title, font: { size: 13 } },
      margin: { l: 50, r: 50, t: 36, b: 30 },
      height: 240,
      showlegend: true,
      legend: { orientation: "h", y: -0.2, font: { size: 10 } },
      xaxis: { type: "date" },
      uirevision: "perfnb",
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: { color },
    },
    extra || {},
  );
}

function figures(rows, maxRoutes, color) {
  const figs = {};
  const latency = [];
  topRoutes(rows, maxRoutes).forEach((route, i) => {
    const c = PALETTE[i % PALETTE.length];
    [["p50", "dot", 1], ["p95", "solid", 2], ["p99", "dash", 1]].forEach(([label, dash, width], k) => {
      const [x, y] = series(rows, (s) => (s.lat && s.lat[route] ? s.lat[route][k] : undefined));
      latency.push({
        type: "scatter", mode: "lines", name: `${route} ${label}`, legendgroup: route,
        showlegend: label === "p95", x, y, line: { color: c, dash, width },
      });
    });
  });
  figs.latency = [latency, layout(CHARTS[0][1], color)];
  const [tx, ty] = series(rows, (s) => s.n || 0);
  figs.throughput = [
    [{ type: "scatter", mode: "lines", name: "requests/s", x: tx, y: ty, fill: "tozeroy", line: { color: PALETTE[0] } }],
    layout(CHARTS[1][1], color),
  ];
  const [ex, ey] = series(rows, (s) => (s.n ? Math.round((100000 * (s.err || 0)) / s.n) / 1000 : undefined));
  figs.errors = [
    [{ type: "scatter", mode: "lines", name: "errors %", x: ex, y: ey, line: { color: PALETTE[3] } }],
    layout(CHARTS[2][1], color, { yaxis: { rangemode: "tozero" } }),
  ];
  const [sx, sy] = series(rows, (s) => s.srv);
  const [nx, ny] = series(rows, (s) => s.net);
  figs.server_network = [
    [
      { type: "scatter", mode: "lines", name: "server", stackgroup: "time", x: sx, y: sy, line: { color: PALETTE[0] } },
      { type: "scatter", mode: "lines", name: "network", stackgroup: "time", x: nx, y: ny, line: { color: PALETTE[1] } },
    ],
    layout(CHARTS[3][1], color),
  ];
  const [rx, ry] = series(rows, (s) => s.rss);
  const [cx, cy] = series(rows, (s) => s.cpu);
  figs.cpu_memory = [
    [
      { type: "scatter", mode: "lines", name: "RSS MB", x: rx, y: ry, line: { color: PALETTE[4] } },
      { type: "scatter", mode: "lines", name: "CPU %", x: cx, y: cy, yaxis: "y2", line: { color: PALETTE[2] } },
    ],
    layout(CHARTS[4][1], color, {
      yaxis: { title: { text: "MB" } },
      yaxis2: { title: { text: "CPU %" }, overlaying: "y", side: "right" },
    }),
  ];
  const names = [...new Set(rows.flatMap((s) => Object.keys(s.vit || {})))].sort();
  figs.vitals = [
    names.map((name, i) => {
      const [x, y] = series(rows, (s) => (s.vit ? s.vit[name] : undefined));
      const trace = { type: "scatter", mode: "markers+lines", name, x, y, marker: { color: PALETTE[i % PALETTE.length], size: 6 } };
      if (name === "CLS") {
        trace.yaxis = "y2";
      }
      return trace;
    }),
    layout(CHARTS[5][1], color, {
      yaxis: { title: { text: "ms" } },
      yaxis2: { title: { text: "CLS" }, overlaying: "y", side: "right" },
    }),
  ];
  const [px, py] = series(rows, (s) => s.poll);
  const [qx, qy] = series(rows, (s) => s.polls);
  figs.polling = [
    [
      { type: "scatter", mode: "lines+markers", name: "median interval (s)", x: px, y: py, line: { color: PALETTE[0] } },
      { type: "bar", name: "polls/s", x: qx, y: qy, yaxis: "y2", marker: { color: PALETTE[7], opacity: 0.4 } },
    ],
    layout(CHARTS[6][1], color, {
      yaxis: { title: { text: "s" }, rangemode: "tozero" },
      yaxis2: { title: { text: "polls/s" }, overlaying: "y", side: "right" },
    }),
  ];
  return figs;
}

// ---- view ---------------------------------------------------------------------------
/* __PERFNB_DOM__ */

function fmtTime(t) {
  return new Date(t * 1000).toTimeString().slice(0, 8);
}

function renderControls(model, st, root) {
  const bind = (name, input) => {
    input.checked = model.get(name);
    input.addEventListener("change", () => {
      model.set(name, input.checked);
      model.save_changes();
    });
    model.on(`change:${name}`, () => {
      input.checked = model.get(name);
    });
    return input;
  };
  const load = bind("exclude_load", h("input", { type: "checkbox", "data-control": "exclude_load" }));
  const own = bind("exclude_perfnb", h("input", { type: "checkbox", "data-control": "exclude_perfnb" }));
  const pause = h("button", { class: "perfnb-button", "data-control": "pause" });
  const paintPause = () => {
    pause.textContent = model.get("paused") ? "▶ Resume" : "⏸ Pause";
  };
  paintPause();
  pause.addEventListener("click", () => {
    model.set("paused", !model.get("paused"));
    model.save_changes();
  });
  model.on("change:paused", paintPause);
  const windowSel = h("select", { "data-control": "window" });
  const maxWindow = model.get("max_window");
  const choices = [...new Set([...WINDOWS.filter((w) => w <= maxWindow), model.get("window")])].sort((a, b) => a - b);
  for (const w of choices) {
    windowSel.append(h("option", { value: String(w), textContent: w < 120 ? `${w} s` : `${w / 60} min` }));
  }
  windowSel.value = String(model.get("window"));
  windowSel.addEventListener("change", () => {
    model.set("window", Number(windowSel.value));
    model.save_changes();
  });
  model.on("change:window", () => {
    windowSel.value = String(model.get("window"));
  });
  const routesSel = h("select", { multiple: true, size: 3, "data-control": "routes", title: "routes (none selected: all)" });
  const sourcesBox = h("span", { class: "perfnb-sources", "data-control": "sources" });
  // one group per host: the host itself (all its processes), then each process
  const instSel = h("select", {
    multiple: true,
    size: 3,
    "data-control": "instances",
    title: "app processes, or a whole host (none selected: all)",
  });
  const instLabel = h("label", { class: "perfnb-instances" }, "instances ", instSel);
  const paintInstances = () => {
    const chosen = new Set(model.get("instances"));
    const groups = Object.assign({}, st.instances);
    const seen = new Set(Object.entries(groups).flatMap(([host, list]) => [host, ...list]));
    for (const c of chosen) {
      if (!seen.has(c)) {
        groups[c] = [];
      }
    }
    const known = JSON.stringify(Object.entries(groups).sort());
    if (instSel.dataset.known !== known) {
      instSel.dataset.known = known;
      instSel.replaceChildren(
        ...Object.keys(groups)
          .sort()
          .map((host) => {
            if (host === "") {
              return h("option", { value: "", textContent: "(no instance)" });
            }
            const procs = groups[host].filter((i) => i !== host);
            return h(
              "optgroup",
              { label: host },
              h("option", { value: host, textContent: `all of ${host}` }),
              ...procs.map((i) => h("option", { value: i, textContent: i.startsWith(`${host}-`) ? i.slice(host.length + 1) : i })),
            );
          }),
      );
    }
    for (const o of instSel.options) {
      o.selected = chosen.has(o.value);
    }
    // one process and nothing chosen: nothing to pick from
    instLabel.style.display = instSel.options.length > 1 || chosen.size ? "" : "none";
  };
  const paintChoices = () => {
    const chosen = new Set(model.get("routes"));
    const known = [...new Set([...st.routes, ...chosen])].sort();
    if (routesSel.options.length !== known.length || [...routesSel.options].some((o, i) => o.value !== known[i])) {
      routesSel.replaceChildren(...known.map((r) => h("option", { value: r, textContent: r })));
    }
    for (const o of routesSel.options) {
      o.selected = chosen.has(o.value);
    }
    const srcChosen = new Set(model.get("sources"));
    const srcKnown = [...new Set([...st.sources, ...srcChosen])].sort();
    if (sourcesBox.dataset.known !== srcKnown.join(",")) {
      sourcesBox.dataset.known = srcKnown.join(",");
      sourcesBox.replaceChildren(
        ...srcKnown.map((s) => {
          const box = h("input", { type: "checkbox", value: s });
          box.addEventListener("change", () => {
            const picked = [...sourcesBox.querySelectorAll("input:checked")].map((i) => i.value);
            model.set("sources", picked);
            model.save_changes();
          });
          return h("label", {}, box, ` ${s}`);
        }),
      );
    }
    for (const box of sourcesBox.querySelectorAll("input")) {
      box.checked = srcChosen.has(box.value);
    }
    paintInstances();
  };
  routesSel.addEventListener("change", () => {
    model.set("routes", [...routesSel.selectedOptions].map((o) => o.value));
    model.save_changes();
  });
  instSel.addEventListener("change", () => {
    model.set("instances", [...instSel.selectedOptions].map((o) => o.value));
    model.save_changes();
  });
  model.on("change:routes", paintChoices);
  model.on("change:sources", paintChoices);
  model.on("change:instances", paintChoices);
  root.append(
    h("label", {}, load, " exclude load tests"),
    h("label", {}, own, " exclude perfnb's own traffic"),
    pause,
    h("label", {}, "window ", windowSel),
    h("label", { class: "perfnb-routes" }, "routes ", routesSel),
    h("label", {}, "sources (none: auto) ", sourcesBox),
    instLabel,
  );
  return paintChoices;
}

function renderLights(st, root) {
  root.replaceChildren(
    ...Object.entries(LIGHT_TITLES).map(([key, title]) => {
      const light = st.health[key] || { state: "unknown", level: "unknown", reason: "waiting for data" };
      return h(
        "div",
        { class: `perfnb-light perfnb-${light.level}`, "data-light": key, "data-state": light.state },
        h("span", { class: "perfnb-dot" }),
        h("b", {}, `${title}: ${light.state}`),
        h("div", { class: "perfnb-reason" }, light.reason),
      );
    }),
  );
}

function renderAlerts(st, root) {
  if (!st.alerts.length) {
    root.replaceChildren(h("li", { class: "perfnb-none" }, "no alerts"));
    return;
  }
  root.replaceChildren(
    ...st.alerts.slice(0, 12).map((a) =>
      h("li", { class: `perfnb-alert perfnb-${a.level}` }, `${fmtTime(a.t)} `, h("b", {}, a.level), ` ${a.message}`),
    ),
  );
}

async function nextFrame() {
  await new Promise((resolve) => requestAnimationFrame(() => resolve()));
}

function render({ model, el }) {
  const st = modelState(model);
  const loader = plotlyLoader();
  el.classList.add("perfnb-dashboard");
  const status = h("span", { class: "perfnb-status" }, "connecting to the kernel…");
  const header = h("div", { class: "perfnb-header" }, h("b", { class: "perfnb-title" }, model.get("title")), status);
  const controls = h("div", { class: "perfnb-controls" });
  const lights = h("div", { class: "perfnb-lights" });
  const readouts = h("div", { class: "perfnb-readouts" });
  const grid = h("div", { class: "perfnb-grid" });
  const alerts = h("ul", { class: "perfnb-alerts" });
  const divs = {};
  for (const [id] of CHARTS) {
    divs[id] = h("div", { class: "perfnb-chart", "data-chart": id, "data-updates": "0" });
    grid.append(divs[id]);
  }
  el.replaceChildren(header, controls, lights, readouts, grid, h("div", { class: "perfnb-subtitle" }, "Alerts"), alerts);
  // one line each: perfnb's own share of server time, and the last load run's bottleneck
  const paintReadouts = () => {
    const text = model.get("readouts") || {};
    readouts.replaceChildren(
      ...["overhead", "bottleneck"]
        .filter((key) => text[key])
        .map((key) => h("span", { class: "perfnb-readout", "data-readout": key }, text[key])),
    );
  };
  paintReadouts();
  model.on("change:readouts", paintReadouts);
  const paintChoices = renderControls(model, st, controls);
  model.on("change:title", () => {
    header.querySelector(".perfnb-title").textContent = model.get("title");
  });

  let Plotly = null;
  let pending = false;
  let drawing = false;
  let drawnVersion = -1;
  let alive = true;
  const painted = new Set();

  const paintText = () => {
    const n = (st.stats && st.stats.records) || 0;
    const updated = st.now ? ` · data to ${fmtTime(st.now)}` : "";
    status.textContent = `${n.toLocaleString()} records${updated}${st.paused ? " · paused" : ""}`;
    el.dataset.paused = st.paused ? "1" : "0";
    renderLights(st, lights);
    renderAlerts(st, alerts);
    paintChoices();
  };

  const draw = async () => {
    if (!alive || !Plotly || drawing) {
      return;
    }
    drawing = true;
    try {
      while (alive && drawnVersion !== st.version) {
        drawnVersion = st.version;
        paintText();
        const windowS = model.get("window");
        const rows = [...st.seconds.values()].filter((s) => s.t > st.now - windowS).sort((a, b) => a.t - b.t);
        const color = getComputedStyle(el).color || "#333";
        const figs = figures(rows, model.get("max_routes"), color);
        const config = { displaylogo: false, displayModeBar: false, responsive: true };
        for (const [id] of CHARTS) {
          if (!alive) {
            break;
          }
          const [data, lay] = figs[id];
          const div = divs[id];
          if (!painted.has(id)) {
            // a chart drawn before its output is on the page would take a default width
            while (alive && !div.clientWidth) {
              await nextFrame();
            }
            await Plotly.newPlot(div, data, lay, config);
            painted.add(id);
            div.dataset.painted = String(performance.now());
            // first charts show at once; the rest follow frame by frame
            await nextFrame();
          } else {
            await Plotly.react(div, data, lay, config);
          }
          div.dataset.updates = String(Number(div.dataset.updates) + 1);
          div.dataset.points = String(data.reduce((acc, t) => acc + t.x.length, 0));
        }
      }
    } finally {
      drawing = false;
    }
  };

  const schedule = () => {
    if (pending) {
      return;
    }
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      if (Plotly) {
        draw();
      } else {
        paintText();
      }
    });
  };
  st.views.add(schedule);
  // charts follow their cell's width (the notebook's, a sidebar's) as it changes
  const resizer = new ResizeObserver(() => {
    if (Plotly) {
      for (const id of painted) {
        Plotly.Plots.resize(divs[id]);
      }
    }
  });
  resizer.observe(grid);
  model.on("change:window", () => {
    st.version += 1;
    schedule();
  });
  model.on("change:max_routes", () => {
    st.version += 1;
    schedule();
  });
  loader.promise.then((P) => {
    Plotly = P;
    st.version += 1;
    schedule();
  });
  if (st.version > 0) {
    schedule();
  }
  return () => {
    alive = false;
    resizer.disconnect();
    st.views.delete(schedule);
    if (Plotly) {
      for (const div of Object.values(divs)) {
        Plotly.purge(div);
      }
    }
  };
}

function initialize({ model }) {
  modelState(model);
  model.on("msg:custom", (msg, buffers) => onMessage(model, msg, buffers));
  helloKernel(model);
  return () => globalThis[STATES].delete(model.get("_uid"));
}

export default { initialize, render };
