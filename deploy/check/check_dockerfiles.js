#!/usr/bin/env node
// Offline checks of docker/Dockerfile.* (no Docker engine runs here, so no image is built):
//   node check_dockerfiles.js REPO_ROOT
// - each parses, with no error from dockerfile-utils' linter (unknown instructions, missing
//   arguments, bad flags);
// - build stages on debian:12 (or the CUDA devel image for the GPU worker), runtime stages on
//   debian:12-slim (or the CUDA runtime image), the last stage running as a non-root USER;
// - the packages a Debian build stage installs are a subset of scripts/bootstrap.sh's PACKAGES,
//   so the images and the developers' builds use the same libraries;
// - every COPY source from the build context exists and .dockerignore keeps the build outputs
//   and fetched data out of the context;
// - every service image has a HEALTHCHECK; the GPU worker builds with -DLOPT_CUDA=ON and moves
//   the wheel's bundled protobuf headers aside (shared/gpu/README.md);
// - the Debian images' build stages are the same, instruction for instruction, up to and
//   including the RUN that compiles (it builds every service's target), so that building the
//   images one after the other compiles the project once (the later ones hit the layer cache);
// - every COPY --from names a stage of its file (or an image, which must have a tag).
// The CMake targets the images build are reported when no CMakeLists.txt defines them yet (the
// services are written in parallel), without failing. Exits 1 on any problem.
"use strict";
const fs = require("fs");
const path = require("path");
const { validate } = require("dockerfile-utils");
const { DockerfileParser } = require("dockerfile-ast");

const root = path.resolve(process.argv[2] || path.join(__dirname, "..", ".."));
const problems = [];
const notes = [];
const problem = (where, msg) => problems.push(`${where}: ${msg}`);

// scripts/bootstrap.sh's PACKAGES
const boot = fs.readFileSync(path.join(root, "scripts", "bootstrap.sh"), "utf8");
const pk = /^PACKAGES=\(([\s\S]*?)^\)/m.exec(boot);
const bootstrapPackages = new Set();
if (!pk) problem("scripts/bootstrap.sh", "no PACKAGES=( ... ) list found");
else for (const line of pk[1].split("\n")) {
  for (const w of line.replace(/#.*/, "").replace(/\$\([^)]*\)/g, "").split(/\s+/)) if (w) bootstrapPackages.add(w);
}

// .dockerignore
const ignoreFile = path.join(root, ".dockerignore");
if (!fs.existsSync(ignoreFile)) problem(".dockerignore", "missing");
else {
  const ignore = fs.readFileSync(ignoreFile, "utf8").split("\n").map((l) => l.trim());
  for (const must of ["build/", ".debs/", ".fmnist/", ".git"]) if (!ignore.includes(must)) problem(".dockerignore", `does not exclude ${must}`);
}

// CMake targets defined anywhere in the project
const cmakeTargets = new Set();
(function scan(dir) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) { if (!/^(\.|build|node_modules)/.test(e.name)) scan(path.join(dir, e.name)); }
    else if (e.name === "CMakeLists.txt")
      for (const m of fs.readFileSync(path.join(dir, e.name), "utf8").matchAll(/add_executable\(\s*([\w-]+)/g)) cmakeTargets.add(m[1]);
  }
})(root);

// The Debian images' shared build stage: file -> its instructions' text up to the compile.
const debianBuildStages = new Map();

const files = fs.readdirSync(path.join(root, "docker")).filter((f) => f.startsWith("Dockerfile."));
if (!files.length) problem("docker/", "no Dockerfile.*");
for (const f of files) {
  const rel = `docker/${f}`;
  const text = fs.readFileSync(path.join(root, "docker", f), "utf8");
  for (const d of validate(text)) if (d.severity === 1) problem(`${rel}:${d.range.start.line + 1}`, d.message);
  const df = DockerfileParser.parse(text);
  // ARG defaults declared before the first FROM, to resolve the FROM lines
  const args = {};
  for (const a of df.getInitialARGs()) {
    const m = /^(\w+)=("?)(.*)\2$/.exec(a.getArgumentsContent() || "");
    if (m) args[m[1]] = m[3];
  }
  const resolve = (s) => s.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a, b) => args[a || b] ?? `\${${a || b}}`);
  const froms = df.getFROMs();
  const images = froms.map((x) => resolve(x.getImageName() + (x.getImageTag() ? ":" + x.getImageTag() : "")));
  const gpu = f === "Dockerfile.worker";
  const last = images[images.length - 1] || "";
  const build = froms.findIndex((x) => x.getBuildStage() === "build");
  if (build < 0) problem(rel, "no stage named build");
  if (gpu) {
    if (!/^nvidia\/cuda:13\.0\.\d+-cudnn-devel-ubuntu24\.04$/.test(images[build] || "")) problem(rel, `build stage on ${images[build]}, want nvidia/cuda:13.0.x-cudnn-devel-ubuntu24.04`);
    if (!/^nvidia\/cuda:13\.0\.\d+-(cudnn-)?runtime-ubuntu24\.04$/.test(last)) problem(rel, `runtime stage on ${last}, want nvidia/cuda:13.0.x-(cudnn-)runtime-ubuntu24.04`);
    if (!/-DLOPT_CUDA=ON/.test(text)) problem(rel, "does not configure with -DLOPT_CUDA=ON");
    if (!/mv [^\n]*torch\/include\/google/.test(text)) problem(rel, "does not move the wheel's bundled protobuf headers (torch/include/google) aside");
  } else {
    if (images[build] !== "debian:12") problem(rel, `build stage on ${images[build]}, want debian:12`);
    if (last !== "debian:12-slim") problem(rel, `runtime stage on ${last}, want debian:12-slim`);
  }
  // instructions of each stage
  const lines = text.split("\n");
  const stages = froms.map((x, i) => ({
    from: x, image: images[i],
    start: x.getRange().start.line,
    end: i + 1 < froms.length ? froms[i + 1].getRange().start.line : lines.length,
  }));
  const inStage = (ins, s) => ins.getRange().start.line >= s.start && ins.getRange().start.line < s.end;
  const instructions = df.getInstructions();
  const lastStage = stages[stages.length - 1];
  const users = instructions.filter((i) => i.getKeyword() === "USER" && inStage(i, lastStage));
  const user = users.length ? users[users.length - 1].getArgumentsContent().split(":")[0] : "root";
  if (user === "root" || user === "0") problem(rel, "the final stage runs as root (no non-root USER)");
  const isService = f !== "Dockerfile.ctl";
  if (isService && !instructions.some((i) => i.getKeyword() === "HEALTHCHECK" && inStage(i, lastStage))) problem(rel, "no HEALTHCHECK in the final stage");
  const stageNames = new Set(froms.map((x) => x.getBuildStage()).filter(Boolean));
  if (!gpu && build >= 0) {
    const text = (ins) => lines.slice(ins.getRange().start.line, ins.getRange().end.line + 1)
      .filter((l) => !/^\s*#/.test(l)).join("\n").replace(/\s+/g, " ").trim();
    const own = instructions.filter((i) => inStage(i, stages[build]));
    const upto = own.findIndex((i) => i.getKeyword() === "RUN" && /--target/.test(i.getArgumentsContent() || ""));
    if (upto < 0) problem(rel, "the build stage has no RUN that builds --target ...");
    else debianBuildStages.set(rel, [stages[build].from, ...own.slice(0, upto + 1)].map(text));
  }
  for (const ins of instructions) {
    const kw = ins.getKeyword();
    if (kw === "COPY" || kw === "ADD") {
      const from = /--from=(\S+)/i.exec(lines[ins.getRange().start.line]);
      if (from && !stageNames.has(from[1]) && !/[:@]/.test(from[1]))
        problem(`${rel}:${ins.getRange().start.line + 1}`, `COPY --from=${from[1]} names no stage of this file`);
      if (from) continue;
      const a = ins.getArguments().map((x) => x.getValue());
      const srcs = a.filter((x) => !x.startsWith("--")).slice(0, -1);
      for (const s of srcs) if (s !== "." && !fs.existsSync(path.join(root, s))) problem(`${rel}:${ins.getRange().start.line + 1}`, `COPY source ${s} does not exist`);
    }
    if (kw === "RUN") {
      const body = ins.getArgumentsContent() || "";
      const stage = stages.find((s) => inStage(ins, s));
      if (stage && stage.image === "debian:12" && stage.from.getBuildStage() === "build")
        for (const m of body.matchAll(/apt-get install((?:\s+(?:\\\s*)?[^&|;\s]+)+)/g))
          for (const p of m[1].split(/\s+/).filter((w) => w && w !== "\\" && !w.startsWith("-")))
            if (!bootstrapPackages.has(p)) problem(`${rel}:${ins.getRange().start.line + 1}`, `build package ${p} is not in scripts/bootstrap.sh's PACKAGES`);
      for (const m of body.matchAll(/--target((?:\s+[\w-]+)+)/g))
        for (const t of m[1].trim().split(/\s+/))
          if (!cmakeTargets.has(t)) notes.push(`${rel}: CMake target ${t} is not defined yet (no add_executable(${t}) in any CMakeLists.txt)`);
    }
  }
}
// The first Debian file's build stage is the reference; each other must match it.
const [refFile, ref] = [...debianBuildStages.entries()][0] || [];
for (const [rel, stage] of debianBuildStages) {
  if (rel === refFile) continue;
  const n = Math.max(stage.length, ref.length);
  for (let i = 0; i < n; ++i)
    if (stage[i] !== ref[i]) {
      problem(rel, `build stage differs from ${refFile}'s at its instruction ${i + 1} ` +
        `(${JSON.stringify((stage[i] || "<none>").slice(0, 80))} vs ${JSON.stringify((ref[i] || "<none>").slice(0, 80))}): ` +
        "the Debian images share one compile only while their build stages are the same");
      break;
    }
}
for (const n of [...new Set(notes)]) console.log(`note: ${n}`);
if (problems.length) {
  console.error(problems.join("\n"));
  console.error(`check_dockerfiles: ${problems.length} problem(s)`);
  process.exit(1);
}
console.log(`check_dockerfiles: ${files.length} Dockerfiles OK (${files.join(", ")})`);
