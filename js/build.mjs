// Builds, into relay/web/static/ (npm ci first):
//   enhance.js            src/enhance.js: loaded with every page that has the form (small)
//   upload.js             src/upload.js with tus-js-client: loaded by enhance.js on demand
//   upload.licenses.txt   the licence of every package whose code is in upload.js, read from
//                         the bundler's own list of inputs, so none is forgotten
//
//   cd js && npm ci && npm run build

import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const staticDir = join(here, "..", "relay", "web", "static");
const bundle = join(staticDir, "upload.js");
const licences = join(staticDir, "upload.licenses.txt");

const common = {
  bundle: true,
  minify: true,
  format: "iife",
  platform: "browser",
  // Tor Browser 14 is Firefox ESR 128; nothing older needs these scripts (they are optional).
  target: ["firefox115", "chrome120"],
  legalComments: "none", // gathered whole into upload.licenses.txt instead
};

await build({
  ...common,
  entryPoints: [join(here, "src", "enhance.js")],
  outfile: join(staticDir, "enhance.js"),
});

const result = await build({
  ...common,
  globalName: "AmanahUpload",
  entryPoints: [join(here, "src", "upload.js")],
  banner: {
    js: "/*! Amanah upload script. Bundles tus-js-client and its dependencies: see /static/upload.licenses.txt */",
  },
  metafile: true,
  outfile: bundle,
});

function packageOf(input) {
  const parts = input.split("/");
  const at = parts.lastIndexOf("node_modules");
  if (at < 0) return null;
  const scoped = parts[at + 1].startsWith("@");
  return join(...parts.slice(0, at + (scoped ? 3 : 2)));
}

const packages = [...new Set(Object.keys(result.metafile.inputs).map(packageOf))]
  .filter(Boolean)
  .sort();
const sections = [
  "Third-party code in upload.js (bundled by js/build.mjs), and its licences.\n",
];
for (const folder of packages) {
  const manifest = JSON.parse(readFileSync(join(here, folder, "package.json"), "utf8"));
  const file = readdirSync(join(here, folder)).find((name) => /^licen[cs]e/i.test(name));
  if (!file) {
    throw new Error(`${manifest.name}: no licence file to ship with the bundle`);
  }
  const text = readFileSync(join(here, folder, file), "utf8").trim();
  sections.push(`${"=".repeat(78)}\n${manifest.name} ${manifest.version} (${manifest.license})\n\n${text}\n`);
}
writeFileSync(licences, sections.join("\n"));
for (const name of ["enhance.js", "upload.js"]) {
  console.log(`${name}: ${readFileSync(join(staticDir, name)).length} bytes`);
}
console.log(`upload.licenses.txt: licences of ${packages.length} packages`);
