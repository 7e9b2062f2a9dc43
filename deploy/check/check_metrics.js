#!/usr/bin/env node
// Offline check of the Grafana dashboards and the Prometheus rules against what lopt exports:
//   node check_metrics.js DEPLOY_DIR
// - every dashboard (grafana/dashboards/*.json) is valid JSON with a unique uid, panel ids
//   unique, every query a refId and an expr;
// - every datasource a dashboard names is, by uid, one that grafana/provisioning provisions;
// - every metric name in a PromQL expression (dashboards, template variables, recording and
//   alerting rules, rule unit tests) is in check/exported_metrics.txt (a histogram NAME gives
//   NAME_bucket/_sum/_count), a recording rule of the rule files, or one Prometheus makes (up);
// - every label matcher on an exported metric names one of its labels or a target label.
// Exits 1, listing every problem, when there is one.
"use strict";
const fs = require("fs");
const path = require("path");
const YAML = require("yaml");

const deployDir = path.resolve(process.argv[2] || path.join(__dirname, ".."));
const problems = [];
const problem = (where, msg) => problems.push(`${path.relative(process.cwd(), where) || where}: ${msg}`);

// --- the exported metrics --------------------------------------------------------------------
const metricsFile = path.join(deployDir, "check", "exported_metrics.txt");
const exported = new Map(); // name -> {type, labels:Set}
fs.readFileSync(metricsFile, "utf8").split("\n").forEach((line, i) => {
  line = line.replace(/#.*/, "").trim();
  if (!line) return;
  const cols = line.split(/\s+/);
  if (cols.length !== 4) return problem(metricsFile, `line ${i + 1}: want 4 columns, got ${cols.length}`);
  const [name, type, , labels] = cols;
  if (!/^lopt_[a-z0-9_]+$/.test(name)) problem(metricsFile, `line ${i + 1}: ${name} lacks the lopt_ prefix or is not snake_case`);
  if (!["counter", "gauge", "histogram"].includes(type)) problem(metricsFile, `line ${i + 1}: unknown type ${type}`);
  if ((type === "counter") !== name.endsWith("_total")) problem(metricsFile, `line ${i + 1}: ${name}: counters, and only counters, end in _total`);
  if (exported.has(name)) problem(metricsFile, `line ${i + 1}: ${name} listed twice`);
  exported.set(name, { type, labels: new Set(labels === "-" ? [] : labels.split(",")) });
});
// Labels Prometheus itself attaches to every scraped series (Compose and Kubernetes configs).
const TARGET_LABELS = new Set(["job", "instance", "component", "namespace", "pod", "node", "container"]);
const PROMETHEUS_METRICS = new Set(["up", "scrape_duration_seconds", "scrape_samples_scraped",
  "scrape_series_added", "ALERTS", "ALERTS_FOR_STATE"]);

// --- rule files: their recording rules and expressions ----------------------------------------
const ruleFiles = [path.join(deployDir, "prometheus", "alerts.yml")];
const recorded = new Set();
const exprs = []; // [where, expr]
for (const f of ruleFiles) {
  const doc = YAML.parse(fs.readFileSync(f, "utf8"));
  for (const g of doc.groups || []) for (const r of g.rules || []) {
    if (r.record) recorded.add(r.record);
    exprs.push([`${f} (${r.record || r.alert})`, String(r.expr)]);
  }
}
const ruleTests = path.join(deployDir, "prometheus", "alerts_test.yml");
if (fs.existsSync(ruleTests)) {
  for (const t of YAML.parse(fs.readFileSync(ruleTests, "utf8")).tests || [])
    for (const s of t.input_series || []) exprs.push([`${ruleTests} (${t.name})`, s.series]);
}

// --- provisioned datasources ------------------------------------------------------------------
const dsDir = path.join(deployDir, "grafana", "provisioning", "datasources");
const dsUids = new Set();
for (const f of fs.readdirSync(dsDir).filter((f) => /\.ya?ml$/.test(f))) {
  for (const ds of YAML.parse(fs.readFileSync(path.join(dsDir, f), "utf8")).datasources || []) {
    if (!ds.uid) problem(path.join(dsDir, f), `datasource ${ds.name} has no uid`);
    else dsUids.add(ds.uid);
  }
}
if (dsUids.size === 0) problem(dsDir, "no datasource provisioned");

// --- dashboards -------------------------------------------------------------------------------
const dashDir = path.join(deployDir, "grafana", "dashboards");
const dashUids = new Map();
const dashFiles = fs.readdirSync(dashDir).filter((f) => f.endsWith(".json"));
if (dashFiles.length === 0) problem(dashDir, "no dashboard");
for (const f of dashFiles) {
  const file = path.join(dashDir, f);
  let dash;
  try { dash = JSON.parse(fs.readFileSync(file, "utf8")); } catch (e) { problem(file, `invalid JSON: ${e.message}`); continue; }
  if (!dash.uid) problem(file, "dashboard has no uid");
  else if (dashUids.has(dash.uid)) problem(file, `uid ${dash.uid} also used by ${dashUids.get(dash.uid)}`);
  else dashUids.set(dash.uid, f);
  if (!dash.title) problem(file, "dashboard has no title");
  const checkDs = (where, ds) => {
    if (ds === undefined || ds === null) return;
    if (typeof ds !== "object") return problem(file, `${where}: datasource named by string ${JSON.stringify(ds)}, not by uid`);
    if (ds.uid === "-- Grafana --" || ds.type === "datasource") return;
    if (!dsUids.has(ds.uid)) problem(file, `${where}: datasource uid ${JSON.stringify(ds.uid)} is not provisioned (have ${[...dsUids].join(", ")})`);
  };
  const panelIds = new Set();
  let queries = 0;
  const walk = (panels, where) => {
    for (const p of panels || []) {
      const pw = `${where}panel "${p.title}"`;
      if (p.id === undefined) problem(file, `${pw}: no id`);
      else if (panelIds.has(p.id)) problem(file, `${pw}: id ${p.id} repeated`);
      else panelIds.add(p.id);
      if (!p.gridPos) problem(file, `${pw}: no gridPos`);
      checkDs(pw, p.datasource);
      if (p.type !== "row" && p.type !== "text" && !(p.targets || []).length) problem(file, `${pw}: no query`);
      const refIds = new Set();
      for (const t of p.targets || []) {
        checkDs(`${pw} query ${t.refId}`, t.datasource);
        if (!t.refId) problem(file, `${pw}: a query without refId`);
        else if (refIds.has(t.refId)) problem(file, `${pw}: refId ${t.refId} repeated`);
        refIds.add(t.refId);
        if (typeof t.expr !== "string" || !t.expr.trim()) problem(file, `${pw} query ${t.refId}: no expr`);
        else { exprs.push([`${file} ${pw} ${t.refId}`, t.expr]); queries++; }
      }
      walk(p.panels, `${pw} > `);
    }
  };
  walk(dash.panels, "");
  for (const v of (dash.templating && dash.templating.list) || []) {
    checkDs(`variable ${v.name}`, v.datasource);
    if (v.type === "query") {
      const q = typeof v.query === "string" ? v.query : v.query && v.query.query;
      if (!q) problem(file, `variable ${v.name}: no query`);
      else exprs.push([`${file} variable ${v.name}`, q]);
    }
  }
  if (queries === 0) problem(file, "no PromQL query at all");
}

// --- PromQL: metric names and label matchers ---------------------------------------------------
const KEYWORDS = new Set(["and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
  "group_right", "bool", "offset", "inf", "nan", "atan2"]);
function metricNames(expr) {
  let e = expr
    .replace(/label_values\(\s*([^,()]+?)\s*,\s*\w+\s*\)/g, "$1")   // Grafana: label_values(sel, label)
    .replace(/label_values\(\s*\w+\s*\)/g, "")
    .replace(/\$\{[^}]*\}|\[\[[^\]]*\]\]|\$\w+/g, "1")             // Grafana variables
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""');  // strings
  const selectors = [];
  e = e.replace(/([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}/g, (m, name, body) => {
    selectors.push([name, body]);
    return name ? ` ${name} ` : " __nameless__ ";
  });
  e = e.replace(/\[[^\]]*\]/g, " ")                                   // ranges, subqueries
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ");
  const names = [];
  const re = /(?<![\w.:])([a-zA-Z_:][\w:]*)(\s*\()?/g;
  let m;
  while ((m = re.exec(e))) {
    if (m[2] || KEYWORDS.has(m[1].toLowerCase()) || m[1] === "__nameless__") continue;
    names.push(m[1]);
  }
  return { names, selectors };
}
function lookup(name) {
  if (exported.has(name)) return { ...exported.get(name), suffix: "" };
  const m = /^(.*)_(bucket|sum|count)$/.exec(name);
  if (m && exported.has(m[1]) && exported.get(m[1]).type === "histogram")
    return { ...exported.get(m[1]), suffix: m[2] };
  return null;
}
let checked = 0;
for (const [where, expr] of exprs) {
  const { names, selectors } = metricNames(expr);
  for (const n of names) {
    checked++;
    if (n.includes(":")) { if (!recorded.has(n)) problem(where, `${n} is no recording rule of ${ruleFiles.map((f) => path.basename(f)).join(", ")}`); }
    else if (!lookup(n) && !PROMETHEUS_METRICS.has(n)) problem(where, `metric ${n} is not exported (check/exported_metrics.txt): ${expr}`);
  }
  for (const [name, body] of selectors) {
    const info = name && lookup(name);
    if (!info) continue;
    for (const mm of body.matchAll(/([a-zA-Z_]\w*)\s*(=~|!~|!=|=)/g)) {
      const l = mm[1];
      if (l === "__name__" || info.labels.has(l) || TARGET_LABELS.has(l) || (l === "le" && info.suffix === "bucket")) continue;
      problem(where, `${name} has no label ${l} (labels: ${[...info.labels].join(", ") || "none"})`);
    }
  }
}
if (checked === 0) problem(deployDir, "found no metric name at all: the parser is broken");

if (problems.length) {
  console.error(problems.join("\n"));
  console.error(`check_metrics: ${problems.length} problem(s)`);
  process.exit(1);
}
console.log(`check_metrics: ${dashFiles.length} dashboard(s), ${exprs.length} expressions, ${checked} metric references, datasource uid(s) ${[...dsUids].join(", ")}: OK`);
