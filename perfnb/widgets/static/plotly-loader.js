// Shared by perfnb's widgets (inlined into each widget's ESM by the kernel side):
// plotly.js is asked from the kernel once per page and evaluated once, whatever
// the number of widgets that draw charts.

const PERFNB_PLOTLY = "__perfnbPlotly";

function evaluatePlotly(source) {
  const previous = Object.prototype.hasOwnProperty.call(globalThis, "Plotly")
    ? globalThis.Plotly
    : undefined;
  const module = { exports: {} };
  // The bundle is UMD: given a `module`, its factory's result lands in module.exports.
  new Function("module", "exports", "define", source)(module, module.exports, undefined);
  // It also assigns window.Plotly; leave the page's own global as it was.
  if (previous === undefined) {
    delete globalThis.Plotly;
  } else {
    globalThis.Plotly = previous;
  }
  return module.exports;
}

/** The page's plotly.js loader: {promise, asked, resolve}. */
function plotlyLoader() {
  let loader = globalThis[PERFNB_PLOTLY];
  if (!loader) {
    let resolve;
    const promise = new Promise((r) => {
      resolve = r;
    });
    loader = { promise, resolve, asked: false, Plotly: null };
    globalThis[PERFNB_PLOTLY] = loader;
  }
  return loader;
}

/** Say hello to the kernel, asking for plotly.js only if no widget asked yet. */
function helloKernel(model) {
  const loader = plotlyLoader();
  const ask = !loader.asked && !loader.Plotly;
  loader.asked = loader.asked || ask;
  model.send({ type: "hello", plotly: ask });
}

/** Handle a {type: "plotly"} message (the source comes as the first buffer). */
function receivePlotly(buffers) {
  const loader = plotlyLoader();
  if (loader.Plotly || !buffers || !buffers.length) {
    return;
  }
  const view = buffers[0];
  const bytes = view instanceof ArrayBuffer ? new Uint8Array(view) : new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  loader.Plotly = evaluatePlotly(new TextDecoder().decode(bytes));
  loader.resolve(loader.Plotly);
}
