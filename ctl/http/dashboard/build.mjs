// Bundles the dashboard with esbuild (the build runs it: ctl/http/CMakeLists.txt):
//
//   node build.mjs --modules DIR/node_modules --out OUT [--node-out NODEOUT] [--notices-check FILE]
//
// OUT gets index.html, dashboard.js, dashboard.css and THIRD-PARTY-NOTICES.txt:
// everything the page needs, to be served by icefarm-http at / or copied to
// any web server. NODEOUT gets decode.mjs, the page's message decoders for
// node (tests/e2e/dashboard/golden.mjs). The notices list every production
// package of package-lock.json (a superset of what the bundle holds: mqtt's
// browser build carries its own dependencies) with its licence text;
// --notices-check FILE fails if FILE (the copy kept in the repository)
// differs from them.
import { readFileSync, writeFileSync, mkdirSync, existsSync, readdirSync, copyFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const here = dirname(fileURLToPath(import.meta.url));
const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
if (!args.modules || !args.out) {
  console.error("usage: node build.mjs --modules NODE_MODULES --out DIR [--node-out DIR] [--notices-check FILE]");
  process.exit(2);
}
const modules = args.modules;
// esbuild from the build's node_modules (npm ci runs there, not in the clone).
const esbuild = createRequire(join(modules, "noop.js"))("esbuild");
mkdirSync(args.out, { recursive: true });

const common = { bundle: true, nodePaths: [modules], logLevel: "warning", legalComments: "eof" };
await esbuild.build({
  ...common,
  entryPoints: [join(here, "src/main.js")],
  outfile: join(args.out, "dashboard.js"),
  platform: "browser",
  format: "iife",
  target: ["es2020"],
  minify: true,
});
if (args["node-out"]) {
  mkdirSync(args["node-out"], { recursive: true });
  await esbuild.build({
    ...common,
    entryPoints: [join(here, "src/decode.js")],
    outfile: join(args["node-out"], "decode.mjs"),
    platform: "node",
    format: "esm",
  });
}

// One stylesheet: uPlot's and ours.
const uplotCss = readFileSync(join(modules, "uplot/dist/uPlot.min.css"), "utf8");
writeFileSync(join(args.out, "dashboard.css"), `${uplotCss}\n${readFileSync(join(here, "src/style.css"), "utf8")}`);
copyFileSync(join(here, "index.html"), join(args.out, "index.html"));

// Third-party notices.
const lock = JSON.parse(readFileSync(join(dirname(modules), "package-lock.json"), "utf8"));
const parts = [
  "Third-party software in the icefarm dashboard (dashboard.js, dashboard.css)",
  "",
  "The bundle is built from these npm packages (package-lock.json, production",
  "dependencies). Each is listed with its version, licence and licence text.",
  "",
];
const pkgs = Object.entries(lock.packages)
  .filter(([path, p]) => path.startsWith("node_modules/") && !p.dev)
  .map(([path, p]) => ({ path, name: path.replace(/^.*node_modules\//, ""), version: p.version, license: p.license }))
  .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.version < b.version ? -1 : 1));
for (const p of pkgs) {
  const dir = join(dirname(modules), p.path);
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => /^(licen[cs]e|copying|notice)/i.test(f)).sort() : [];
  parts.push("=".repeat(78), `${p.name} ${p.version} (${p.license ?? "see its package"})`, "=".repeat(78));
  if (!files.length) parts.push(`(the package ships no licence file; its package.json says ${p.license})`);
  for (const f of files) parts.push(readFileSync(join(dir, f), "utf8").trim(), "");
  parts.push("");
}
const notices = parts.join("\n").replace(/\r\n/g, "\n");
writeFileSync(join(args.out, "THIRD-PARTY-NOTICES.txt"), notices);
if (args["notices-check"]) {
  const kept = readFileSync(args["notices-check"], "utf8");
  if (kept !== notices) {
    console.error(
      `${args["notices-check"]} differs from the notices of package-lock.json: copy ${join(args.out, "THIRD-PARTY-NOTICES.txt")} over it`,
    );
    process.exit(1);
  }
}
