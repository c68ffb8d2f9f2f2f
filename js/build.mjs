// Builds perfnb/server/static/beacon.js from src/ with esbuild.
//
//   npm ci && npm run build      write the bundle into the Python package
//   npm run check                exit 1 when the committed bundle differs from a fresh build
//
// The output is deterministic (same sources and lockfile, same bytes), so the
// test suite can compare the committed file with a fresh build.

import { build } from "esbuild";
import { readFileSync, writeFileSync } from "node:fs";
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
  console.log("perfnb/server/static/beacon.js matches a fresh build");
} else if (process.argv.includes("--stdout")) {
  process.stdout.write(code);
} else {
  writeFileSync(out, code);
  console.log(`wrote ${out} (${code.length} bytes)`);
}
