// Validates Kubernetes manifests offline against the OpenAPI schemas that the npm package
// kubernetes-models bundles, and converts them to JSON for the caller
// (test/deploy/kubernetes_test.py).
//
//   node validate_k8s.mjs NODE_PREFIX FILE.yaml...
//
// NODE_PREFIX is the npm --prefix directory holding node_modules/kubernetes-models (4.5.1)
// and node_modules/yaml (2.x). Prints one JSON object on stdout:
//
//   {"files": {"FILE.yaml": {"error": null | "YAML error",
//                            "objects": [{"apiVersion", "kind", "name", "object",
//                                         "errors": [...], "unknown": [...]}]}}}
//
// "errors" are the schema's complaints (wrong types, missing required fields, bad enums),
// "unknown" the field paths the schema does not know. The schema validators do not reject
// unknown fields themselves (additionalProperties is open), so every object is handed to
// the validator wrapped in proxies that record which properties it reads: the generated
// validator reads each property its schema defines (and each entry of a map), so a key it
// never read is one the schema does not have (a misspelt readOnlyRootFilesystem, say).
// An object of a kind kubernetes-models does not know is an error too.
//
// Exit status: 0 when the files were read (whatever they contain), 2 on a usage or setup
// error. Nothing here touches the network.
import { createRequire } from "node:module";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [prefix, ...files] = process.argv.slice(2);
if (!prefix || files.length === 0) {
  process.stderr.write("usage: node validate_k8s.mjs NODE_PREFIX FILE.yaml...\n");
  process.exit(2);
}
const modules = path.join(path.resolve(prefix), "node_modules");
const modelsRoot = path.join(modules, "kubernetes-models");
if (!existsSync(path.join(modelsRoot, "package.json"))) {
  process.stderr.write(`kubernetes-models is not installed under ${modules}\n`);
  process.exit(2);
}
const require = createRequire(path.join(modules, "noop.js"));
const YAML = require("yaml");

const API_VERSION = /^(?:[a-z0-9]+(?:[.-][a-z0-9]+)*\/)?v[0-9]+(?:(?:alpha|beta)[0-9]+)?$/;
const KIND = /^[A-Z][A-Za-z0-9]*$/;
const modelCache = new Map();

async function modelFor(apiVersion, kind) {
  if (typeof apiVersion !== "string" || !API_VERSION.test(apiVersion))
    return { error: `apiVersion ${JSON.stringify(apiVersion)} is not a valid API version` };
  if (typeof kind !== "string" || !KIND.test(kind))
    return { error: `kind ${JSON.stringify(kind)} is not a valid kind` };
  const key = `${apiVersion}/${kind}`;
  if (!modelCache.has(key)) {
    const file = path.join(modelsRoot, ...apiVersion.split("/"), `${kind}.mjs`);
    let model = null;
    if (existsSync(file)) {
      const mod = await import(pathToFileURL(file).href);
      const ctor = mod[kind];
      if (ctor && ctor.apiVersion === apiVersion && ctor.kind === kind) model = ctor;
    }
    modelCache.set(key, model);
  }
  const model = modelCache.get(key);
  return model ? { model } : { error: `no schema for ${apiVersion} ${kind} in kubernetes-models` };
}

// A deep copy of value whose objects are proxies recording the properties read.
function tracked(value, where, records) {
  if (Array.isArray(value)) return value.map((v, i) => tracked(v, `${where}[${i}]`, records));
  if (value === null || typeof value !== "object") return value;
  const copy = {};
  for (const [k, v] of Object.entries(value)) copy[k] = tracked(v, `${where}.${k}`, records);
  const read = new Set();
  records.push({ where, keys: Object.keys(value), read });
  return new Proxy(copy, {
    get(target, prop, receiver) {
      if (typeof prop === "string") read.add(prop);
      return Reflect.get(target, prop, receiver);
    },
  });
}

async function check(object) {
  const result = {
    apiVersion: object?.apiVersion ?? null,
    kind: object?.kind ?? null,
    name: object?.metadata?.name ?? null,
    object,
    errors: [],
    unknown: [],
  };
  if (object === null || typeof object !== "object" || Array.isArray(object)) {
    result.errors.push("a document is not an object");
    return result;
  }
  const { model, error } = await modelFor(object.apiVersion, object.kind);
  if (error) {
    result.errors.push(error);
    return result;
  }
  const records = [];
  const subject = tracked(object, "", records);
  try {
    // The model's validate() runs the schema's validator on `this`: here, the proxy.
    model.prototype.validate.call(subject);
  } catch (e) {
    const details = Array.isArray(e?.errors)
      ? e.errors.map((x) => `${x.instancePath || "/"} ${x.message}`)
      : [String(e?.message ?? e)];
    result.errors.push(...details);
  }
  for (const r of records)
    for (const k of r.keys) if (!r.read.has(k)) result.unknown.push(`${r.where}.${k}`);
  return result;
}

const out = { files: {} };
for (const file of files) {
  const entry = { error: null, objects: [] };
  out.files[file] = entry;
  let docs;
  try {
    docs = YAML.parseAllDocuments(readFileSync(file, "utf8"), { uniqueKeys: true });
  } catch (e) {
    entry.error = `cannot read: ${e.message}`;
    continue;
  }
  for (const doc of docs) {
    const problems = [...doc.errors, ...doc.warnings];
    if (problems.length) {
      entry.error = problems.map((p) => p.message).join("; ");
      break;
    }
    const object = doc.toJS({ maxAliasCount: 0 });
    if (object === null || object === undefined) continue; // an empty document
    entry.objects.push(await check(object));
  }
}
process.stdout.write(JSON.stringify(out));
