// Builds perfnb/server/static/beacon.js from src/ with esbuild, and copies the
// plotly.js basic bundle the notebook widgets load into perfnb/widgets/static/.
//
//   npm ci && npm run build      write both into the Python package
//   npm run check                exit 1 when a committed file differs from a fresh build
//
// The output is deterministic (same sources and lockfile, same bytes), so the
// test suite can compare the committed file with a fresh build.

import { build } from "esbuild";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "perfnb", "server", "static", "beacon.js");
const vitals = JSON.parse(readFileSync(join(here, "node_modules", "web-vitals", "package.json"), "utf8"));

const result = await build({
  entryPoints: [join(here, "src", "beacon.js")],
  bundle: true,
  format: "iife",
  minify: true,
  target: ["chrome90", "firefox90", "safari15"],
  legalComments: "none",
  charset: "utf8",
  write: false,
  banner: {
    js: `/*! perfnb beacon, built from js/src (MIT); includes web-vitals ${vitals.version} (Apache-2.0, Google LLC) */`,
  },
});
const code = result.outputFiles[0].text;

// The widgets' chart library: shipped as the npm package publishes it.
const plotlyDir = join(here, "node_modules", "plotly.js-basic-dist-min");
const widgetsStatic = join(here, "..", "perfnb", "widgets", "static");
const copies = [
  [join(plotlyDir, "plotly-basic.min.js"), join(widgetsStatic, "plotly-basic.min.js")],
  [join(plotlyDir, "LICENSE"), join(widgetsStatic, "plotly-basic.LICENSE")],
];

function same(a, b) {
  try {
    return readFileSync(a).equals(readFileSync(b));
  } catch (err) {
    return false;
  }
}

if (process.argv.includes("--check")) {
  let committed = "";
  try {
    committed = readFileSync(out, "utf8");
  } catch (err) {
    committed = "";
  }
  if (committed !== code) {
    console.error("perfnb/server/static/beacon.js is stale: run `npm run build` in js/");
    process.exit(1);
  }
  for (const [from, to] of copies) {
    if (!same(from, to)) {
      console.error(`${to} differs from ${from}: run \`npm run build\` in js/`);
      process.exit(1);
    }
  }
  console.log("perfnb/server/static/beacon.js matches a fresh build");
} else if (process.argv.includes("--stdout")) {
  process.stdout.write(code);
} else {
  writeFileSync(out, code);
  console.log(`wrote ${out} (${code.length} bytes)`);
  for (const [from, to] of copies) {
    copyFileSync(from, to);
    console.log(`copied ${to}`);
  }
}
