#!/usr/bin/env node
// Offline validation of the Kubernetes manifests of deploy/k8s, as `kubectl apply -k` would
// see them, with no cluster and no kustomize binary:
//   node validate_k8s.js K8S_DIR [FILE...]
// 1. kustomization.yaml: known fields only; every resource and generator file exists; every
//    *.yaml beside it is listed (none forgotten); the generated ConfigMaps are built as
//    kustomize builds them (name, one key a file).
// 2. Every object against the Kubernetes OpenAPI schema of the npm package kubernetes-models:
//    wrong types fail (its ajv validators), and so do unknown fields, which those validators
//    let through: each field is probed by giving it a value of an impossible type, and a
//    field whose probes all pass is one the schema does not know.
// 3. References: selectors match their pod templates, Services and PodDisruptionBudgets select
//    some pods, volumes name ConfigMaps, claims and Secrets that exist (a Secret, which is never
//    committed, may be missing only where optional), mounts name volumes, probes and scrape
//    annotations name container ports, RoleBindings and serviceAccountName name what exists,
//    pods run as non-root with memory limits, and GPU workers ask for nvidia.com/gpu in limits.
// With FILE arguments, validates those manifest files alone (steps 2 and 3), e.g. to show that
// a broken manifest fails. Exits 1, listing every problem, when there is one.
"use strict";
const fs = require("fs");
const path = require("path");
const YAML = require("yaml");

const problems = [];
const problem = (where, msg) => problems.push(`${where}: ${msg}`);

// --- models ------------------------------------------------------------------------------------
function modelFor(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string") return null;
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const dir = group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`;
  try {
    const mod = require(dir);
    return mod[kind] || mod.default || null;
  } catch (e) {
    return null;
  }
}
function schemaErrors(Model, obj) {
  try {
    new Model(obj).validate();
    return [];
  } catch (e) {
    if (Array.isArray(e.errors)) return e.errors;
    return [{ instancePath: "", message: e.message }];
  }
}
const pointer = (p) => p.map((k) => "/" + String(k).replace(/~/g, "~0").replace(/\//g, "~1")).join("");
function setAt(obj, p, value) {
  let o = obj;
  for (let i = 0; i < p.length - 1; i++) o = o[p[i]];
  o[p[p.length - 1]] = value;
}
// Fields the schema does not know: a known field rejects `true` or a string at its path.
function unknownFields(Model, doc) {
  const unknown = [];
  const known = (p) => {
    const ptr = pointer(p);
    for (const probe of [true, "\u0000probe"]) {
      const copy = structuredClone(doc);
      setAt(copy, p, probe);
      if (schemaErrors(Model, copy).some((e) => e.instancePath === ptr || e.instancePath.startsWith(ptr + "/")))
        return true;
    }
    return false;
  };
  const walk = (v, p) => {
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, [...p, i]));
    else if (v && typeof v === "object")
      for (const k of Object.keys(v)) {
        if (!known([...p, k])) unknown.push(p.concat(k).join("."));
        else walk(v[k], [...p, k]);
      }
  };
  walk(doc, []);
  return unknown;
}
function validateObject(where, doc) {
  if (!doc || typeof doc !== "object" || Array.isArray(doc)) return problem(where, "not a mapping");
  const Model = modelFor(doc.apiVersion, doc.kind);
  if (!Model) return problem(where, `unknown apiVersion/kind ${doc.apiVersion}/${doc.kind}`);
  const errors = schemaErrors(Model, doc);
  for (const e of errors) problem(where, `${e.instancePath || "/"} ${e.message}${e.params && e.params.allowedValues ? " " + JSON.stringify(e.params.allowedValues) : ""}`);
  if (errors.length === 0) for (const u of unknownFields(Model, doc)) problem(where, `unknown field ${u}`);
  if (!doc.metadata || !doc.metadata.name) problem(where, "metadata.name missing");
}

// --- loading --------------------------------------------------------------------------------------
function loadFile(file, label) {
  let docs;
  try {
    docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"), { uniqueKeys: true });
  } catch (e) {
    problem(label, `cannot read: ${e.message}`);
    return [];
  }
  const out = [];
  docs.forEach((d, i) => {
    for (const err of d.errors) problem(`${label}#${i + 1}`, `YAML: ${err.message}`);
    const js = d.toJS();
    if (js !== null && js !== undefined) out.push({ where: `${label}#${i + 1} ${js.kind || "?"}/${(js.metadata && js.metadata.name) || "?"}`, doc: js });
  });
  return out;
}

const KUSTOMIZE_FIELDS = new Set(["apiVersion", "kind", "namespace", "resources", "configMapGenerator",
  "secretGenerator", "generatorOptions", "images", "labels", "commonAnnotations", "patches", "replicas",
  "namePrefix", "nameSuffix"]);
function loadKustomization(dir) {
  const kfile = path.join(dir, "kustomization.yaml");
  const where = path.relative(process.cwd(), kfile) || kfile;
  const k = YAML.parse(fs.readFileSync(kfile, "utf8"), { uniqueKeys: true });
  for (const key of Object.keys(k)) if (!KUSTOMIZE_FIELDS.has(key)) problem(where, `unknown or unsupported field ${key}`);
  if (k.apiVersion !== "kustomize.config.k8s.io/v1beta1" || k.kind !== "Kustomization")
    problem(where, "want apiVersion kustomize.config.k8s.io/v1beta1, kind Kustomization");
  const objects = [];
  const listed = new Set();
  for (const r of k.resources || []) {
    const f = path.join(dir, r);
    listed.add(path.resolve(f));
    if (!fs.existsSync(f)) { problem(where, `resource ${r} does not exist`); continue; }
    objects.push(...loadFile(f, path.relative(process.cwd(), f)));
  }
  for (const f of fs.readdirSync(dir))
    if (/\.ya?ml$/.test(f) && f !== "kustomization.yaml" && !listed.has(path.resolve(dir, f)))
      problem(where, `${f} is not listed in resources`);
  for (const g of k.configMapGenerator || []) {
    const data = {};
    for (const f of g.files || []) {
      const [key, src] = f.includes("=") ? f.split("=", 2) : [path.basename(f), f];
      const p = path.join(dir, src);
      if (!fs.existsSync(p)) { problem(where, `configMapGenerator ${g.name}: ${src} does not exist`); continue; }
      if (path.relative(dir, path.resolve(p)).startsWith("..")) problem(where, `configMapGenerator ${g.name}: ${src} is outside the kustomization's directory, which kustomize refuses`);
      data[key] = fs.readFileSync(p, "utf8");
    }
    for (const lit of g.literals || []) { const [key, v] = lit.split("=", 2); data[key] = v; }
    objects.push({ where: `${where} configMapGenerator ${g.name}`, generated: true,
      doc: { apiVersion: "v1", kind: "ConfigMap", metadata: { name: g.name }, data } });
  }
  for (const img of k.images || []) if (!img.name) problem(where, "an images entry without name");
  return { k, objects };
}

// --- references ---------------------------------------------------------------------------------
const matches = (selector, labels) =>
  selector && Object.keys(selector).length > 0 && Object.entries(selector).every(([key, v]) => labels && labels[key] === v);

function crossCheck(objects, kustomization) {
  const by = (kind) => objects.filter((o) => o.doc.kind === kind);
  const names = (kind) => new Set(by(kind).map((o) => o.doc.metadata && o.doc.metadata.name));
  const workloads = objects.filter((o) => ["Deployment", "StatefulSet", "DaemonSet", "Job"].includes(o.doc.kind));
  const podLabels = workloads.map((o) => (o.doc.spec && o.doc.spec.template && o.doc.spec.template.metadata && o.doc.spec.template.metadata.labels) || {});
  const configMaps = names("ConfigMap"), secrets = names("Secret"), pvcs = names("PersistentVolumeClaim");
  const serviceAccounts = names("ServiceAccount"), roles = names("Role"), services = by("Service");
  const ns = kustomization && kustomization.namespace;

  const seen = new Set();
  for (const o of objects) {
    const key = `${o.doc.kind}/${o.doc.metadata && o.doc.metadata.name}`;
    if (seen.has(key)) problem(o.where, `${key} defined twice`);
    seen.add(key);
    const objNs = o.doc.metadata && o.doc.metadata.namespace;
    if (ns && objNs && objNs !== ns) problem(o.where, `namespace ${objNs} differs from the kustomization's ${ns}`);
  }
  for (const o of workloads) {
    const spec = o.doc.spec || {}, tmpl = spec.template || {}, pod = tmpl.spec || {};
    const labels = (tmpl.metadata && tmpl.metadata.labels) || {};
    if (!spec.selector || !matches(spec.selector.matchLabels, labels)) problem(o.where, "selector.matchLabels does not match the pod template's labels");
    if (o.doc.kind === "StatefulSet") {
      const svc = services.find((s) => s.doc.metadata.name === spec.serviceName);
      if (!svc) problem(o.where, `serviceName ${spec.serviceName} names no Service`);
      else if (svc.doc.spec.clusterIP !== "None") problem(o.where, `serviceName ${spec.serviceName} is not headless (clusterIP: None)`);
      if (!(spec.volumeClaimTemplates || []).length) problem(o.where, "a StatefulSet without volumeClaimTemplates");
    }
    const sc = pod.securityContext || {};
    if (sc.runAsNonRoot !== true) problem(o.where, "pod securityContext.runAsNonRoot is not true");
    if (pod.serviceAccountName && !serviceAccounts.has(pod.serviceAccountName)) problem(o.where, `serviceAccountName ${pod.serviceAccountName} names no ServiceAccount`);
    const volumes = new Set((pod.volumes || []).map((v) => v.name));
    for (const t of spec.volumeClaimTemplates || []) volumes.add(t.metadata && t.metadata.name);
    for (const v of pod.volumes || []) {
      if (v.configMap && !configMaps.has(v.configMap.name) && !v.configMap.optional) problem(o.where, `volume ${v.name}: ConfigMap ${v.configMap.name} does not exist`);
      if (v.persistentVolumeClaim && !pvcs.has(v.persistentVolumeClaim.claimName)) problem(o.where, `volume ${v.name}: PersistentVolumeClaim ${v.persistentVolumeClaim.claimName} does not exist`);
      if (v.secret && !secrets.has(v.secret.secretName) && v.secret.optional !== true) problem(o.where, `volume ${v.name}: Secret ${v.secret.secretName} is not in the manifests and not optional`);
    }
    const ports = new Map();
    for (const c of [...(pod.initContainers || []), ...(pod.containers || [])]) {
      for (const p of c.ports || []) { ports.set(p.containerPort, p); if (p.name) ports.set(p.name, p); }
      const cw = `${o.where} container ${c.name}`;
      for (const m of c.volumeMounts || []) if (!volumes.has(m.name)) problem(cw, `volumeMount ${m.name} names no volume`);
      const csc = c.securityContext || {};
      if (csc.allowPrivilegeEscalation !== false) problem(cw, "securityContext.allowPrivilegeEscalation is not false");
      const res = c.resources || {};
      if (!res.requests || !res.requests.cpu || !res.requests.memory) problem(cw, "no cpu and memory requests");
      if (!res.limits || !res.limits.memory) problem(cw, "no memory limit");
      if (/worker/.test(c.image || "") && !(res.limits && res.limits["nvidia.com/gpu"])) problem(cw, "a GPU worker without nvidia.com/gpu in limits");
      for (const kind of ["startupProbe", "readinessProbe", "livenessProbe"]) {
        const pr = c[kind];
        if (!pr) { if (kind !== "startupProbe") problem(cw, `no ${kind}`); continue; }
        const port = (pr.grpc && pr.grpc.port) || (pr.httpGet && pr.httpGet.port) || (pr.tcpSocket && pr.tcpSocket.port);
        if (port !== undefined && !ports.has(port)) problem(cw, `${kind} port ${port} is no container port`);
      }
    }
    const ann = (tmpl.metadata && tmpl.metadata.annotations) || {};
    if (ann["prometheus.io/scrape"] === "true" && !ports.has(Number(ann["prometheus.io/port"])))
      problem(o.where, `prometheus.io/port ${ann["prometheus.io/port"]} is no container port`);
    o.ports = ports;
  }
  for (const s of services) {
    const sel = s.doc.spec && s.doc.spec.selector;
    const targets = workloads.filter((w, i) => matches(sel, podLabels[i]));
    if (!targets.length) { problem(s.where, "selects no pod template"); continue; }
    for (const p of s.doc.spec.ports || []) {
      const tp = p.targetPort === undefined ? p.port : p.targetPort;
      if (!targets.some((w) => w.ports && w.ports.has(tp))) problem(s.where, `port ${p.name || p.port}: targetPort ${tp} is no container port of the pods it selects`);
    }
  }
  for (const pdb of by("PodDisruptionBudget")) {
    const sel = pdb.doc.spec && pdb.doc.spec.selector && pdb.doc.spec.selector.matchLabels;
    if (!podLabels.some((l) => matches(sel, l))) problem(pdb.where, "selects no pod template");
  }
  for (const rb of by("RoleBinding")) {
    if (rb.doc.roleRef && rb.doc.roleRef.kind === "Role" && !roles.has(rb.doc.roleRef.name)) problem(rb.where, `roleRef ${rb.doc.roleRef.name} names no Role`);
    for (const s of rb.doc.subjects || []) if (s.kind === "ServiceAccount" && !serviceAccounts.has(s.name)) problem(rb.where, `subject ${s.name} names no ServiceAccount`);
  }
}

// --- main ---------------------------------------------------------------------------------------
const args = process.argv.slice(2);
if (!args.length) { console.error("usage: validate_k8s.js K8S_DIR [FILE...]"); process.exit(2); }
let objects, kustomization = null;
if (args.length > 1) {
  objects = args.slice(1).flatMap((f) => loadFile(f, f));
} else {
  const loaded = loadKustomization(path.resolve(args[0]));
  objects = loaded.objects;
  kustomization = loaded.k;
}
for (const o of objects) validateObject(o.where, o.doc);
crossCheck(objects, kustomization);
if (problems.length) {
  console.error(problems.join("\n"));
  console.error(`validate_k8s: ${problems.length} problem(s)`);
  process.exit(1);
}
const kinds = {};
for (const o of objects) kinds[o.doc.kind] = (kinds[o.doc.kind] || 0) + 1;
console.log(`validate_k8s: ${objects.length} objects OK (${Object.entries(kinds).map(([k, n]) => `${n} ${k}`).join(", ")})`);
