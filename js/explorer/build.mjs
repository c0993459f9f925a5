// Bundle the explorer page into the Python package (run with `make explorer-js`).
// The banner records a hash of the sources and the lock file, so that a test can tell,
// without node, whether the committed bundle was built from the committed sources.
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { build } from "esbuild";

const here = import.meta.dirname;
const OUT = join(here, "..", "..", "src", "astropt", "tasks", "explore", "static", "explorer.js");

export function sourcesHash() {
  const files = ["build.mjs", "package-lock.json", ...readdirSync(join(here, "src")).map((f) => `src/${f}`)];
  const hash = createHash("sha256");
  for (const file of files.sort()) {
    hash.update(`${file}\0`);
    hash.update(readFileSync(join(here, file)));
    hash.update("\0");
  }
  return hash.digest("hex");
}

await build({
  entryPoints: [join(here, "src", "main.js")],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  legalComments: "eof",
  charset: "utf8",
  outfile: OUT,
  banner: { js: `/* astropt explorer bundle; sources sha256 ${sourcesHash()}; rebuild: make explorer-js */` },
  logLevel: "info",
});
