#!/usr/bin/env node
// Debian's promtool is built without Kubernetes service discovery, so it rejects any
// kubernetes_sd_configs. This checks those blocks itself (known fields, a valid role, namespaces
// as names or own_namespace, selectors) and writes the config with each replaced by a
// static_configs target, so that promtool checks everything else (relabelling included):
//   node k8s_prometheus_config.js IN.yml OUT.yml
"use strict";
const fs = require("fs");
const YAML = require("yaml");
const [input, output] = process.argv.slice(2);
const cfg = YAML.parse(fs.readFileSync(input, "utf8"), { uniqueKeys: true });
const problems = [];
const FIELDS = new Set(["role", "namespaces", "selectors", "api_server", "kubeconfig_file", "attach_metadata",
  "basic_auth", "authorization", "oauth2", "proxy_url", "follow_redirects", "enable_http2", "tls_config"]);
const ROLES = new Set(["node", "pod", "service", "endpoints", "endpointslice", "ingress"]);
let n = 0;
for (const sc of cfg.scrape_configs || []) {
  const sds = sc.kubernetes_sd_configs;
  if (!sds) continue;
  if (!Array.isArray(sds) || !sds.length) { problems.push(`${sc.job_name}: kubernetes_sd_configs is not a non-empty list`); continue; }
  for (const sd of sds) {
    n++;
    for (const k of Object.keys(sd)) if (!FIELDS.has(k)) problems.push(`${sc.job_name}: kubernetes_sd_configs: unknown field ${k}`);
    if (!ROLES.has(sd.role)) problems.push(`${sc.job_name}: kubernetes_sd_configs: role ${sd.role} is not one of ${[...ROLES].join(", ")}`);
    if (sd.namespaces !== undefined) {
      for (const k of Object.keys(sd.namespaces)) if (!["names", "own_namespace"].includes(k)) problems.push(`${sc.job_name}: namespaces: unknown field ${k}`);
      if (sd.namespaces.names !== undefined && !(Array.isArray(sd.namespaces.names) && sd.namespaces.names.every((x) => typeof x === "string")))
        problems.push(`${sc.job_name}: namespaces.names is not a list of strings`);
      if (sd.namespaces.own_namespace !== undefined && typeof sd.namespaces.own_namespace !== "boolean")
        problems.push(`${sc.job_name}: namespaces.own_namespace is not a boolean`);
    }
    for (const s of sd.selectors || []) {
      if (!ROLES.has(s.role)) problems.push(`${sc.job_name}: selectors: role ${s.role} unknown`);
      for (const k of Object.keys(s)) if (!["role", "label", "field"].includes(k)) problems.push(`${sc.job_name}: selectors: unknown field ${k}`);
    }
  }
  // Debian's promtool is built without Kubernetes discovery and rejects the
  // block checked above; hand it a static target in its place so that it can
  // check the rest of the scrape config (relabelling, intervals) as written.
  // The file goes only to `promtool check config`, never to a server: the
  // target is in the reserved .invalid domain and is never scraped.
  delete sc.kubernetes_sd_configs;
  sc.static_configs = [...(sc.static_configs || []), { targets: ["discovered-by-kubernetes-sd.invalid:9100"] }];
}
if (problems.length) { console.error(problems.join("\n")); process.exit(1); }
fs.writeFileSync(output, YAML.stringify(cfg));
console.log(`k8s_prometheus_config: ${n} kubernetes_sd_configs entr${n === 1 ? "y" : "ies"} OK; the rest goes to promtool`);
