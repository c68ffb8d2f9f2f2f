// perfnb HealthBoard: app-wide lights, per-endpoint health with reasons, monitoring controls.

/* __PERFNB_DOM__ */

const TITLES = { apiPolling: "API polling", serverResponse: "Server response", clientPerformance: "Client performance" };

function render({ model, el }) {
  el.classList.add("perfnb-healthboard");
  const lights = h("div", { class: "perfnb-lights" });
  const table = h("table", { class: "perfnb-table" });
  const controls = h("div", { class: "perfnb-controls" });
  const controlError = h("div", { style: "color: #c62828" });

  const send = (change) => model.send(Object.assign({ type: "control" }, change));
  const enabled = h("input", { type: "checkbox", "data-control": "enabled" });
  enabled.addEventListener("change", () => send({ enabled: enabled.checked }));
  const sample = h("input", { type: "number", min: "0", max: "1", step: "0.05", style: "width: 70px", "data-control": "sample" });
  sample.addEventListener("change", () => send({ sample: Number(sample.value) }));
  const kindsBox = h("span", { "data-control": "kinds" });
  for (const kind of model.get("kinds")) {
    const box = h("input", { type: "checkbox", value: kind });
    box.addEventListener("change", () => {
      const picked = [...kindsBox.querySelectorAll("input:checked")].map((i) => i.value);
      send({ kinds: picked.length === model.get("kinds").length ? [] : picked });
    });
    kindsBox.append(h("label", {}, box, ` ${kind} `));
  }
  if (model.get("has_app")) {
    controls.append(h("label", {}, enabled, " monitoring on"), h("label", {}, "sample ", sample), h("span", {}, "kinds: "), kindsBox);
  } else {
    controls.append(h("span", { class: "perfnb-status" }, "monitoring controls need app_url"));
  }

  const paint = () => {
    const ls = model.get("lights") || {};
    lights.replaceChildren(
      ...Object.entries(TITLES).map(([key, title]) => {
        const l = ls[key] || { state: "unknown", level: "unknown", reason: "waiting for data" };
        return h("div", { class: `perfnb-light perfnb-${l.level}`, "data-light": key, "data-state": l.state },
          h("span", { class: "perfnb-dot" }), h("b", {}, `${title}: ${l.state}`), h("div", { class: "perfnb-reason" }, l.reason));
      }),
    );
    const rows = model.get("endpoints") || [];
    table.replaceChildren(
      h("tr", {}, ...["", "endpoint", "state", "requests", "errors", "p95 ms", "reason"].map((c) => h("th", {}, c))),
      ...rows.map((r) =>
        h("tr", { class: `perfnb-${r.level}`, "data-route": r.route, "data-state": r.state },
          h("td", {}, h("span", { class: "perfnb-dot" })), h("td", {}, r.route), h("td", {}, r.state),
          h("td", {}, String(r.requests)), h("td", {}, String(r.errors)), h("td", {}, String(r.p95_ms)), h("td", {}, r.reason)),
      ),
    );
    const c = model.get("control") || {};
    enabled.checked = c.enabled !== false;
    sample.value = c.sample === undefined ? "1" : String(c.sample);
    const on = c.kinds ? new Set(c.kinds) : null;
    for (const box of kindsBox.querySelectorAll("input")) {
      box.checked = on === null || on.has(box.value);
    }
    controlError.textContent = model.get("control_error");
  };
  for (const name of ["lights", "endpoints", "control", "control_error"]) {
    model.on(`change:${name}`, paint);
  }
  paint();
  el.replaceChildren(h("div", { class: "perfnb-header" }, h("b", { class: "perfnb-title" }, model.get("title"))), lights, controls, controlError, table);
}

export default { render };
