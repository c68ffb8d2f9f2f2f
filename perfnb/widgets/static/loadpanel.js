// perfnb LoadTestPanel: settings, Start / Stop / Emergency stop, live progress, summary.
// Buttons send {type: "action"} messages; the kernel answers through the traits.

/* __PERFNB_DOM__ */

const FIELDS = [
  ["users", "users", 1, "int"],
  ["duration", "duration (s)", 1, "float"],
  ["rate", "rate (req/s, 0: users)", 1, "float"],
  ["payload_size", "payload (bytes)", 100, "int"],
  ["think_time", "think time (s)", 0.1, "float"],
  ["max_error_rate", "max error rate (0–1)", 0.01, "float"],
  ["max_p95_ms", "max p95 (ms, 0: off)", 10, "float"],
  ["max_memory_mb", "max app memory (MB, 0: off)", 10, "float"],
];

function fmt(v, digits) {
  return v === undefined || v === null ? "–" : Number(v).toFixed(digits);
}

function render({ model, el }) {
  el.classList.add("perfnb-panel");
  const title = h("b", { class: "perfnb-title" }, model.get("title"));
  const target = h("span", { class: "perfnb-status" }, ` → ${model.get("target")}`);
  const presetSel = h("select", { "data-control": "preset" });
  for (const p of model.get("presets")) {
    presetSel.append(h("option", { value: p.name, textContent: p.title, title: p.description }));
  }
  presetSel.value = model.get("preset");
  presetSel.addEventListener("change", () => {
    model.set("preset", presetSel.value);
    model.save_changes();
  });
  const form = h("div", { class: "perfnb-form" });
  const inputs = {};
  for (const [name, label, step, kind] of FIELDS) {
    const input = h("input", { type: "number", step: String(step), min: "0", "data-control": name });
    input.value = String(model.get(name));
    input.addEventListener("change", () => {
      const value = kind === "int" ? Math.round(Number(input.value)) : Number(input.value);
      if (Number.isFinite(value)) {
        model.set(name, value);
        model.save_changes();
      }
    });
    model.on(`change:${name}`, () => {
      input.value = String(model.get(name));
    });
    inputs[name] = input;
    form.append(h("label", {}, label, input));
  }
  const estop = h("input", { type: "checkbox", "data-control": "emergency_stop" });
  estop.checked = model.get("emergency_stop");
  estop.addEventListener("change", () => {
    model.set("emergency_stop", estop.checked);
    model.save_changes();
  });
  model.on("change:emergency_stop", () => {
    estop.checked = model.get("emergency_stop");
  });
  form.append(h("label", {}, "stop when a limit trips", estop));
  model.on("change:preset", () => {
    presetSel.value = model.get("preset");
  });

  const act = (action) => (event) => {
    // when the user clicked, on the page's clock: tests judge the stop against it
    event.currentTarget.dataset.clickedAt = String(Date.now() / 1000);
    model.send({ type: "action", action });
  };
  const start = h("button", { class: "perfnb-button", "data-action": "start", textContent: "▶ Start" });
  const stop = h("button", { class: "perfnb-button", "data-action": "stop", textContent: "■ Stop" });
  const emergency = h("button", {
    class: "perfnb-button perfnb-stop",
    "data-action": "emergency_stop",
    textContent: "⛔ Emergency stop",
  });
  start.addEventListener("click", act("start"));
  stop.addEventListener("click", act("stop"));
  emergency.addEventListener("click", act("emergency_stop"));

  const status = h("div", { class: "perfnb-run-status", "data-status": "idle" });
  const bar = h("progress", { max: 1, value: 0, style: "width: 100%" });
  const figures = h("div", { class: "perfnb-progress" });
  const error = h("div", { class: "perfnb-error", style: "color: #c62828" });
  const result = h("div", { class: "perfnb-result" });

  const paint = () => {
    const st = model.get("status");
    const p = model.get("progress") || {};
    status.dataset.status = st;
    status.textContent = `status: ${st}${p.run_id ? ` (${p.run_id})` : ""}`;
    const running = st === "running" || st === "starting" || st === "stopping";
    start.disabled = running;
    stop.disabled = !running;
    emergency.disabled = !running;
    const total = (p.elapsed_s || 0) + (p.remaining_s || 0);
    bar.value = total ? (p.elapsed_s || 0) / total : 0;
    figures.textContent =
      `elapsed ${fmt(p.elapsed_s, 1)} s · remaining ${fmt(p.remaining_s, 1)} s · ` +
      `${fmt(p.rate, 1)} req/s · ${p.requests || 0} requests · ${p.errors || 0} errors` +
      `${p.error_types ? ` (${p.error_types})` : ""} · ${p.reconnects || 0} reconnects · ` +
      `p95 ${fmt(p.p95_ms, 1)} ms · measurement: ${p.reliability || "–"}`;
    error.textContent = model.get("error");
    const s = model.get("summary") || {};
    if (!s.rows) {
      result.replaceChildren();
      return;
    }
    const cols = Object.keys(s.rows[0]);
    const table = h(
      "table",
      { class: "perfnb-table" },
      h("tr", {}, ...cols.map((c) => h("th", {}, c))),
      ...s.rows.map((r) => h("tr", {}, ...cols.map((c) => h("td", {}, String(r[c]))))),
    );
    const reliable = s.reliable ? "reliable" : `unreliable: ${s.unreliable_reasons.join("; ")}`;
    result.replaceChildren(
      h("div", { "data-stop-reason": s.stop_reason }, h("b", {}, `stopped: ${s.stop_reason}`), ` — ${s.stop_message} after ${s.elapsed_s} s, ${s.reconnects || 0} reconnects (${reliable})`),
      table,
    );
  };
  for (const name of ["status", "progress", "summary", "error"]) {
    model.on(`change:${name}`, paint);
  }
  paint();
  el.replaceChildren(
    h("div", { class: "perfnb-header" }, title, target),
    h("div", { class: "perfnb-controls" }, h("label", {}, "preset ", presetSel)),
    form,
    h("div", { class: "perfnb-controls" }, start, stop, emergency),
    status,
    bar,
    figures,
    error,
    result,
  );
}

export default { render };
