#!/usr/bin/env python3
"""Offline checks of the Kubernetes manifests in deploy/kubernetes.

For every overlay: `kubectl kustomize` builds it (no API server, no network); every object
matches the Kubernetes OpenAPI schemas of the npm package kubernetes-models@4.5.1 with no
unknown field (test/deploy/validate_k8s.mjs; a broken object must be rejected, which proves
the validator runs); the Deployment's pods are hardened (non-root, read-only root file
system, no privilege escalation, every capability dropped, seccomp RuntimeDefault), probe
/healthz and /readyz on the named port http, read the ACL token from a mounted Secret
through CONSUL_HTTP_TOKEN_FILE, have requests and limits, a grace period above esmd's
6.5 s hard stop limit and Prometheus scrape annotations, spread across nodes and are guarded
by a PodDisruptionBudget; and the configuration, laid out as the kubelet mounts it (with the
container's environment and arguments), passes `esmd -validate` (ESMD_BIN).

Needs: kubectl 1.27 or later (kustomize v5), node and, once, npm; python3's standard
library only (the YAML is parsed by the npm package yaml), and yamllint (without it, its
case is skipped, which the test command counts as a failure).

Environment: ESMD_SOURCE_ROOT (required), ESMD_BIN (the esmd binary; without it the
`esmd -validate` case is skipped, likewise), KUBECTL (default: kubectl on PATH),
ESMD_TEST_NPM_DIR (default: ${XDG_CACHE_HOME:-$HOME/.cache}/esmd-test/npm). The only
network traffic is the npm install of kubernetes-models@4.5.1 and yaml@2.8.4 into that
directory, and only when they are missing; kubectl gets a kubeconfig whose server cannot exist. Every subprocess
has a timeout.
"""
import atexit
import base64
import fcntl
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import case, check, env_path, run, skip  # noqa: E402

SOURCE = env_path("ESMD_SOURCE_ROOT")
K8S = os.path.join(SOURCE, "deploy", "kubernetes")
VALIDATOR = os.path.join(SOURCE, "test", "deploy", "validate_k8s.mjs")
NPM_PACKAGES = {"kubernetes-models": "4.5.1", "yaml": "2.8.4"}

NAMESPACE = "esmd"
IMAGE = "localhost/esmd:0.1.0"  # what deploy/image/build tags (podman's local storage)
UID = GID = 65532
SELECTOR = {"app.kubernetes.io/name": "esmd", "app.kubernetes.io/instance": "esmd"}
TOKEN_ENV = "CONSUL_HTTP_TOKEN_FILE"
CONFIG_DIR = "/etc/esmd"
HARD_STOP_LIMIT_S = 6.5
FAKE_HOST_IP = "192.0.2.17"  # TEST-NET-1: what status.hostIP is replaced with here

# What each overlay must be. "address" is the Consul address esmd ends up with; "pss" the
# Pod Security Standard the namespace enforces, "pss_report" the one it warns and audits at.
OVERLAYS = {
    "agentless": dict(agentless=True, address="consul-server.consul.svc:8500",
                      ping_type="udp", sysctl=False, add_caps=[], uid=UID, pss="restricted",
                      pss_report="restricted"),
    "agent": dict(agentless=False, address=f"{FAKE_HOST_IP}:8500",
                  ping_type="udp", sysctl=False, add_caps=[], uid=UID, pss="restricted",
                  pss_report="restricted"),
    "pings": dict(agentless=True, address="consul-server.consul.svc:8500",
                  ping_type="udp", sysctl=True, add_caps=[], uid=UID, pss="restricted",
                  pss_report="restricted", ping_type_in_file=True),
    "pings-raw": dict(agentless=True, address="consul-server.consul.svc:8500",
                      ping_type="socket", sysctl=False, add_caps=["NET_RAW"], uid=0,
                      pss="privileged", pss_report="baseline", ping_type_in_file=True),
}
EXPECTED_KINDS = {"Namespace", "ServiceAccount", "ConfigMap", "Secret", "Service",
                  "Deployment", "PodDisruptionBudget"}
# Pod Security Standards: sysctls allowed by baseline (and so restricted), Kubernetes 1.29+.
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}

_tmp = tempfile.mkdtemp(prefix="esmd-k8s-test-")
atexit.register(shutil.rmtree, _tmp, ignore_errors=True)
_cache = {}


def sh(argv, timeout, env=None):
    """Runs argv with a timeout; returns CompletedProcess (text). Never raises on exit codes."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{argv[0]} did not finish within {timeout} s: {' '.join(argv)}")


# ---------------------------------------------------------------------------------------------
# Tools: kubectl (kustomize) and the node validator.

# kubectl kustomize needs no cluster, but some kubectl builds (the Google Cloud SDK's
# dispatcher, kubectl "vX.Y.Z-dispatcher") ask the API server for its version first to pick
# a kubectl, by default at 127.0.0.1:8080, where another test's server might listen. Give
# every kubectl here a kubeconfig whose server cannot exist (port 0: refused at once).
_KUBECONFIG = os.path.join(_tmp, "kubeconfig")
with open(_KUBECONFIG, "w") as _f:
    _f.write("apiVersion: v1\nkind: Config\nclusters:\n- name: none\n  cluster:\n"
             "    server: https://127.0.0.1:0\ncontexts:\n- name: none\n  context:\n"
             "    cluster: none\ncurrent-context: none\nusers: []\n")


def kubectl_env():
    env = dict(os.environ)
    env["KUBECONFIG"] = _KUBECONFIG
    return env


def kubectl():
    if "kubectl" not in _cache:
        exe = os.environ.get("KUBECTL") or shutil.which("kubectl")
        check(exe and os.access(exe, os.X_OK),
              "kubectl not found (set KUBECTL or put kubectl on PATH): this test builds the "
              "manifests with `kubectl kustomize` (kubectl 1.27+ with kustomize v5; no cluster "
              "needed)")
        r = sh([exe, "version", "--client", "-o", "json"], 30, env=kubectl_env())
        check(r.returncode == 0, f"`{exe} version --client` failed: {r.stderr.strip()}")
        info = json.loads(r.stdout)
        kver = info.get("kustomizeVersion", "")
        m = re.match(r"v(\d+)\.(\d+)", kver)
        check(m and int(m.group(1)) >= 5,
              f"kubectl's kustomize is {kver or 'unknown'}; these manifests need kustomize v5 "
              f"(kubectl 1.27 or later)")
        _cache["kubectl"] = exe
        _cache["kubectl_version"] = f"{info['clientVersion']['gitVersion']}, kustomize {kver}"
    return _cache["kubectl"]


def npm_dir():
    if "npm_dir" in _cache:
        return _cache["npm_dir"]
    base = os.environ.get("ESMD_TEST_NPM_DIR")
    if not base:
        cache = os.environ.get("XDG_CACHE_HOME") or (
            os.path.join(os.environ["HOME"], ".cache") if os.environ.get("HOME") else
            os.path.join(tempfile.gettempdir(), f"esmd-test-cache-{os.getuid()}"))
        base = os.path.join(cache, "esmd-test", "npm")
    os.makedirs(base, exist_ok=True)

    def installed():
        for name, version in NPM_PACKAGES.items():
            try:
                with open(os.path.join(base, "node_modules", name, "package.json")) as f:
                    if json.load(f).get("version") != version:
                        return False
            except (OSError, ValueError):
                return False
        return True

    check(shutil.which("node"), "node not found: the schema validator runs on Node.js (20)")
    with open(os.path.join(base, ".lock"), "w") as lock:  # concurrent test runs
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not installed():
            npm = shutil.which("npm")
            check(npm, "npm not found: needed once to install "
                  + ", ".join(f"{n}@{v}" for n, v in NPM_PACKAGES.items()) + f" into {base}")
            print(f"installing {', '.join(f'{n}@{v}' for n, v in NPM_PACKAGES.items())} "
                  f"into {base}", flush=True)
            r = sh([npm, "install", "--prefix", base, "--no-audit", "--no-fund",
                    "--save-exact", "--loglevel=error"]
                   + [f"{n}@{v}" for n, v in NPM_PACKAGES.items()], 600)
            check(r.returncode == 0 and installed(),
                  f"npm install into {base} failed (exit {r.returncode}): "
                  f"{(r.stderr or r.stdout).strip()[-2000:]}")
    _cache["npm_dir"] = base
    return base


def validate_files(paths):
    """Runs the node validator on YAML files; returns {path: {"error", "objects"}}."""
    r = sh(["node", VALIDATOR, npm_dir()] + list(paths), 120)
    check(r.returncode == 0, f"validate_k8s.mjs failed (exit {r.returncode}): {r.stderr.strip()}")
    return json.loads(r.stdout)["files"]


def built(overlay):
    """The YAML file `kubectl kustomize` makes of an overlay (built once)."""
    key = ("built", overlay)
    if key not in _cache:
        exe = kubectl()
        r = sh([exe, "kustomize", os.path.join(K8S, "overlays", overlay)], 60,
               env=kubectl_env())
        check(r.returncode == 0,
              f"kubectl kustomize overlays/{overlay} failed: {r.stderr.strip()}")
        path = os.path.join(_tmp, f"{overlay}.yaml")
        with open(path, "w") as f:
            f.write(r.stdout)
        _cache[key] = path
    return _cache[key]


def results():
    """{overlay: [validator result per object]} for every overlay (validated once)."""
    if "results" not in _cache:
        paths = {o: built(o) for o in OVERLAYS}
        files = validate_files(paths.values())
        out = {}
        for overlay, path in paths.items():
            entry = files[path]
            check(entry["error"] is None,
                  f"overlays/{overlay}: the built YAML does not parse: {entry['error']}")
            out[overlay] = entry["objects"]
        _cache["results"] = out
    return _cache["results"]


def objects(overlay):
    return [r["object"] for r in results()[overlay]]


# ---------------------------------------------------------------------------------------------
# Helpers on objects.

def one(objs, kind, where):
    found = [o for o in objs if o.get("kind") == kind]
    check(len(found) == 1, f"{where}: expected exactly one {kind}, found {len(found)}")
    return found[0]


def by_name(objs, kind, name, where):
    found = [o for o in objs if o.get("kind") == kind and o["metadata"].get("name") == name]
    check(len(found) == 1, f"{where}: no {kind} named {name!r} in the built objects "
          f"(have: {[o['metadata'].get('name') for o in objs if o.get('kind') == kind]})")
    return found[0]


def selects(selector, labels):
    """True if a LabelSelector (matchLabels only) selects these labels."""
    if not selector or selector.get("matchExpressions"):
        return False
    ml = selector.get("matchLabels") or {}
    return bool(ml) and all(labels.get(k) == v for k, v in ml.items())


_UNITS = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(q, where):
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?", str(q))
    check(m, f"{where}: {q!r} is not a quantity this test understands")
    return float(m.group(1)) * _UNITS[m.group(2) or ""]


def effective(container_sc, pod_sc, key):
    """A container's effective security setting: the container's value, else the pod's."""
    if key in (container_sc or {}):
        return container_sc[key]
    return (pod_sc or {}).get(key)


def expand_env(env, where):
    """The container's environment as the kubelet makes it ($(VAR) from earlier entries)."""
    out = {}
    fields = {"status.hostIP": FAKE_HOST_IP, "status.podIP": "10.244.0.7",
              "metadata.name": "esmd-5d9c7b8f6d-abcde", "metadata.namespace": NAMESPACE}
    for e in env or []:
        if "valueFrom" in e:
            ref = e["valueFrom"].get("fieldRef", {}).get("fieldPath")
            check(ref in fields, f"{where}: env {e['name']} comes from {e['valueFrom']}, "
                  f"which this test cannot resolve")
            out[e["name"]] = fields[ref]
            continue
        value = e.get("value", "")

        def sub(m):
            if m.group(0) == "$$":
                return "$"
            return out.get(m.group(1), m.group(0))
        out[e["name"]] = re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, value)
    return out


def write_volume(root, mount_path, files):
    """Lays files out as the kubelet's atomic writer does: ..<ts>/f, ..data -> ..<ts>, f ->
    ..data/f (so esmd sees symlinks and dot-directories, as in a pod)."""
    target = os.path.join(root, mount_path.lstrip("/"))
    stamp = os.path.join(target, "..2026_01_01_00_00_00.000000001")
    os.makedirs(stamp)
    for name, data in files.items():
        with open(os.path.join(stamp, name), "wb") as f:
            f.write(data)
    os.symlink(os.path.basename(stamp), os.path.join(target, "..data"))
    for name in files:
        os.symlink(os.path.join("..data", name), os.path.join(target, name))


def volume_files(objs, volume, where):
    """{file name: bytes} a configMap or secret volume holds."""
    if "configMap" in volume:
        src = volume["configMap"]
        obj = by_name(objs, "ConfigMap", src["name"], where)
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    elif "secret" in volume:
        src = volume["secret"]
        obj = by_name(objs, "Secret", src["secretName"], where)
        data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        data.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
    else:
        raise AssertionError(f"{where}: volume {volume['name']} is neither a configMap nor a "
                             f"secret: {sorted(volume)}")
    if src.get("items"):
        out = {}
        for item in src["items"]:
            check(item["key"] in data, f"{where}: volume {volume['name']} maps key "
                  f"{item['key']!r}, which its source does not have ({sorted(data)})")
            check("/" not in item["path"], f"{where}: nested item path {item['path']!r}")
            out[item["path"]] = data[item["key"]]
        return out
    return data


# ---------------------------------------------------------------------------------------------
# Cases.

@case
def kustomize_builds_every_overlay():
    """kubectl kustomize builds every overlay offline"""
    exe = kubectl()
    print(f"kubectl: {exe} ({_cache['kubectl_version']})")
    present = sorted(d for d in os.listdir(os.path.join(K8S, "overlays"))
                     if os.path.isfile(os.path.join(K8S, "overlays", d, "kustomization.yaml")))
    check(present == sorted(OVERLAYS),
          f"overlays on disk {present} differ from the ones this test knows {sorted(OVERLAYS)}")
    for overlay in OVERLAYS:
        with open(built(overlay)) as f:
            text = f.read()
        print(f"built overlays/{overlay}: {text.count(chr(10))} lines")


@case
def kustomizations_are_local():
    """every kustomization and component refers to local files only (no remote bases)"""
    paths = []
    for dirpath, _, names in os.walk(K8S):
        paths += [os.path.join(dirpath, n) for n in names if n == "kustomization.yaml"]
    check(paths, "no kustomization.yaml under deploy/kubernetes")
    files = validate_files(paths)
    for path in sorted(paths):
        rel = os.path.relpath(path, SOURCE)
        entry = files[path]
        check(entry["error"] is None, f"{rel}: does not parse: {entry['error']}")
        check(len(entry["objects"]) == 1, f"{rel}: expected one document")
        k = entry["objects"][0]["object"]
        check(k.get("kind") in ("Kustomization", "Component"), f"{rel}: kind {k.get('kind')}")
        for key in ("helmCharts", "helmGlobals", "openapi", "crds", "bases", "commonLabels",
                    "patchesStrategicMerge", "patchesJson6902", "vars"):
            check(key not in k, f"{rel}: uses {key} (remote, deprecated or not offline-safe)")
        refs = list(k.get("resources", [])) + list(k.get("components", []))
        refs += [p["path"] for p in k.get("patches", []) if "path" in p]
        for g in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
            refs += [f.split("=", 1)[-1] for f in g.get("files", [])]
        for ref in refs:
            check("://" not in ref and not ref.startswith(("github.com", "git@")),
                  f"{rel}: remote reference {ref!r}")
            target = os.path.normpath(os.path.join(os.path.dirname(path), ref))
            check(os.path.exists(target), f"{rel}: {ref!r} does not exist")
            check(os.path.commonpath([target, K8S]) == K8S,
                  f"{rel}: {ref!r} lies outside deploy/kubernetes")
    print(f"{len(paths)} kustomization files, all local")


@case
def validator_rejects_broken_objects():
    """the schema validator rejects broken objects and reports unknown fields (negative test)"""
    good = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ok"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}},
                              "spec": {"containers": [{
                                  "name": "c", "image": IMAGE,
                                  "securityContext": {"readOnlyRootFilesystem": True}}]}}}}
    wrong_type = json.loads(json.dumps(good))
    wrong_type["metadata"]["name"] = "wrong-type"
    wrong_type["spec"]["replicas"] = "three"
    no_name = json.loads(json.dumps(good))
    no_name["metadata"]["name"] = "no-name"
    del no_name["spec"]["template"]["spec"]["containers"][0]["name"]
    misspelt = json.loads(json.dumps(good))
    misspelt["metadata"]["name"] = "misspelt"
    sc = misspelt["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    sc["readOnlyRootFilesytem"] = sc.pop("readOnlyRootFilesystem")
    bad_pdb = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
               "metadata": {"name": "bad-pdb"}, "spec": {"maxUnavailable": {"one": 1}}}
    no_kind = {"apiVersion": "apps/v1", "kind": "Deploymnet", "metadata": {"name": "no-kind"}}
    # (A container without image is valid for the schema, where image is optional, so the
    # overlay checks assert the image themselves.)
    path = os.path.join(_tmp, "broken.yaml")
    with open(path, "w") as f:  # JSON documents are YAML documents
        f.write("\n---\n".join(json.dumps(o) for o in
                               (good, wrong_type, no_name, misspelt, bad_pdb, no_kind)) + "\n")
    got = {r["name"]: r for r in validate_files([path])[path]["objects"]}
    check(got["ok"]["errors"] == [] and got["ok"]["unknown"] == [],
          f"a correct Deployment was rejected: {got['ok']['errors']} {got['ok']['unknown']}")
    check(any("/spec/replicas" in e and "integer" in e for e in got["wrong-type"]["errors"]),
          f"replicas: \"three\" was not rejected: {got['wrong-type']['errors']}")
    check(any("name" in e and "required" in e for e in got["no-name"]["errors"]),
          f"a container without a name was not rejected: {got['no-name']['errors']}")
    check(got["misspelt"]["errors"] == [] and got["misspelt"]["unknown"] ==
          [".spec.template.spec.containers[0].securityContext.readOnlyRootFilesytem"],
          f"a misspelt field was not reported as unknown: {got['misspelt']}")
    check(got["bad-pdb"]["errors"], "maxUnavailable: {one: 1} was not rejected")
    check(any("no schema" in e for e in got["no-kind"]["errors"]),
          f"an unknown kind was not rejected: {got['no-kind']['errors']}")
    print("rejected: replicas \"three\", a container without name, an object as maxUnavailable, "
          "kind Deploymnet; unknown field readOnlyRootFilesytem reported; a good Deployment "
          "accepted")


@case
def objects_match_schemas():
    """every built object matches the Kubernetes OpenAPI schemas and has no unknown field"""
    for overlay, res in results().items():
        for r in res:
            what = f"overlays/{overlay}: {r['kind']} {r['name']}"
            check(r["errors"] == [], f"{what}: schema errors: {r['errors']}")
            check(r["unknown"] == [], f"{what}: fields the schema does not know: {r['unknown']}")
        print(f"overlays/{overlay}: {len(res)} objects valid "
              f"({', '.join(r['kind'] for r in res)})")


def check_overlay(overlay):
    want = OVERLAYS[overlay]
    w = f"overlays/{overlay}"
    objs = objects(overlay)
    kinds = [o["kind"] for o in objs]
    check(set(kinds) == EXPECTED_KINDS and len(kinds) == len(EXPECTED_KINDS),
          f"{w}: objects {sorted(kinds)}, expected one each of {sorted(EXPECTED_KINDS)} "
          f"(no RBAC, no other workload)")

    # Namespace, labels.
    ns = one(objs, "Namespace", w)
    check(ns["metadata"]["name"] == NAMESPACE, f"{w}: namespace {ns['metadata']['name']}")
    for o in objs:
        md = o["metadata"]
        what = f"{w}: {o['kind']} {md.get('name')}"
        if o["kind"] != "Namespace":
            check(md.get("namespace") == NAMESPACE, f"{what}: namespace {md.get('namespace')}")
            for k, v in SELECTOR.items():
                check((md.get("labels") or {}).get(k) == v, f"{what}: label {k}={v} missing")
        check((md.get("labels") or {}).get("app.kubernetes.io/name") == "esmd",
              f"{what}: label app.kubernetes.io/name=esmd missing")
    pss = ns["metadata"].get("labels", {})
    check(pss.get("pod-security.kubernetes.io/enforce") == want["pss"],
          f"{w}: Pod Security Standard enforced {pss.get('pod-security.kubernetes.io/enforce')},"
          f" expected {want['pss']}")
    # warn and audit: privileged would report nothing; baseline still flags any other pod
    # created in the namespace that asks for more than esmd's NET_RAW and uid 0.
    for mode in ("warn", "audit"):
        got = pss.get(f"pod-security.kubernetes.io/{mode}")
        check(got == want["pss_report"],
              f"{w}: Pod Security Standard {mode} is {got}, expected {want['pss_report']}")

    # Deployment and its pods.
    dep = one(objs, "Deployment", w)
    spec = dep["spec"]
    tmpl = spec["template"]
    pod = tmpl["spec"]
    labels = tmpl["metadata"].get("labels", {})
    check(spec.get("replicas") == 3, f"{w}: replicas {spec.get('replicas')}, expected 3")
    check(selects(spec["selector"], labels), f"{w}: the Deployment's selector does not "
          f"select its own pods")
    for k, v in SELECTOR.items():
        check(spec["selector"]["matchLabels"].get(k) == v, f"{w}: selector lacks {k}={v}")
    check(not pod.get("initContainers") and not pod.get("ephemeralContainers"),
          f"{w}: init or ephemeral containers present")
    check(len(pod["containers"]) == 1, f"{w}: {len(pod['containers'])} containers, expected 1")
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        check(not pod.get(host), f"{w}: {host} is set")
    grace = pod.get("terminationGracePeriodSeconds")
    check(isinstance(grace, int) and grace > HARD_STOP_LIMIT_S,
          f"{w}: terminationGracePeriodSeconds {grace} is not above esmd's hard stop limit "
          f"{HARD_STOP_LIMIT_S} s")
    sa = one(objs, "ServiceAccount", w)
    check(pod.get("serviceAccountName") == sa["metadata"]["name"],
          f"{w}: pods use service account {pod.get('serviceAccountName')}, not "
          f"{sa['metadata']['name']}")
    check(sa.get("automountServiceAccountToken") is False,
          f"{w}: the ServiceAccount does not set automountServiceAccountToken: false")
    check(pod.get("automountServiceAccountToken") is False,
          f"{w}: the pods do not set automountServiceAccountToken: false")

    psc = pod.get("securityContext") or {}
    check(psc.get("runAsNonRoot") is True, f"{w}: pod runAsNonRoot is not true")
    check(psc.get("runAsUser") == UID and psc.get("runAsGroup") == GID,
          f"{w}: pod runs as {psc.get('runAsUser')}:{psc.get('runAsGroup')}, expected "
          f"{UID}:{GID}")
    check((psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
          f"{w}: pod seccompProfile is not RuntimeDefault")
    sysctls = {s["name"]: s["value"] for s in psc.get("sysctls", [])}
    check(set(sysctls) <= SAFE_SYSCTLS, f"{w}: unsafe sysctls {set(sysctls) - SAFE_SYSCTLS}")
    if want["sysctl"]:
        rng = sysctls.get("net.ipv4.ping_group_range")
        check(rng, f"{w}: no net.ipv4.ping_group_range sysctl")
        lo, hi = (int(x) for x in rng.split())
        check(lo <= GID <= hi, f"{w}: ping_group_range {rng!r} does not include gid {GID}")
        check(rng == "0 2147483647", f"{w}: ping_group_range {rng!r}")
    else:
        check(not sysctls, f"{w}: unexpected sysctls {sysctls}")

    # Spreading across nodes.
    spread = [t for t in pod.get("topologySpreadConstraints", [])
              if t.get("topologyKey") == "kubernetes.io/hostname"
              and selects(t.get("labelSelector"), labels)]
    anti = [t for t in ((pod.get("affinity") or {}).get("podAntiAffinity") or {})
            .get("preferredDuringSchedulingIgnoredDuringExecution", [])
            if t["podAffinityTerm"].get("topologyKey") == "kubernetes.io/hostname"
            and selects(t["podAffinityTerm"].get("labelSelector"), labels)]
    check(spread or anti, f"{w}: nothing spreads the pods across nodes")
    check(all(t.get("maxSkew") == 1 for t in spread), f"{w}: hostname maxSkew is not 1")

    # Prometheus annotations.
    ann = tmpl["metadata"].get("annotations", {})
    for k, v in (("prometheus.io/scrape", "true"), ("prometheus.io/port", "8080"),
                 ("prometheus.io/path", "/metrics")):
        check(ann.get(k) == v, f"{w}: pod annotation {k} is {ann.get(k)!r}, expected {v!r}")

    # The container.
    c = pod["containers"][0]
    cw = f"{w}: container {c['name']}"
    check(c.get("image") == IMAGE, f"{cw}: image {c.get('image')}, expected {IMAGE}")
    check(not c.get("command"), f"{cw}: overrides the image's entrypoint")
    ports = {p.get("name"): p for p in c.get("ports", [])}
    check("http" in ports and ports["http"]["containerPort"] == 8080
          and ports["http"].get("protocol", "TCP") == "TCP",
          f"{cw}: no TCP port named http on 8080 ({c.get('ports')})")
    check(ann.get("prometheus.io/port") == str(ports["http"]["containerPort"]),
          f"{w}: the scrape port is not the http port")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        p = c.get(probe) or {}
        g = p.get("httpGet") or {}
        check(g.get("path") == path and g.get("port") in ("http", 8080),
              f"{cw}: {probe} is {p}, expected httpGet {path} on port http")
        check(g.get("scheme", "HTTP") == "HTTP", f"{cw}: {probe} scheme {g.get('scheme')}")
        check(not any(k in p for k in ("exec", "tcpSocket", "grpc")), f"{cw}: {probe} mixes "
              f"handlers")
    res = c.get("resources") or {}
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            check(r in (res.get(kind) or {}), f"{cw}: resources.{kind}.{r} missing")
    for r in ("cpu", "memory"):
        req = quantity(res["requests"][r], cw)
        lim = quantity(res["limits"][r], cw)
        check(0 < req <= lim, f"{cw}: {r} request {res['requests'][r]} above limit "
              f"{res['limits'][r]}")
    check(quantity(res["limits"]["cpu"], cw) == 1,
          f"{cw}: cpu limit {res['limits']['cpu']}: esmd is single-threaded, 1 is its bound")

    sc = c.get("securityContext") or {}
    for key, value in (("readOnlyRootFilesystem", True), ("allowPrivilegeEscalation", False),
                       ("privileged", False)):
        check(key in sc and sc[key] is value, f"{cw}: securityContext.{key} is "
              f"{sc.get(key, 'unset')}, expected {value}")
    caps = sc.get("capabilities") or {}
    check(caps.get("drop") == ["ALL"], f"{cw}: capabilities.drop is {caps.get('drop')}, "
          f"expected [ALL]")
    check(sorted(caps.get("add", [])) == sorted(want["add_caps"]),
          f"{cw}: capabilities.add is {caps.get('add', [])}, expected {want['add_caps']}")
    uid = effective(sc, psc, "runAsUser")
    non_root = effective(sc, psc, "runAsNonRoot")
    check(uid == want["uid"], f"{cw}: runs as uid {uid}, expected {want['uid']}")
    check(non_root is (want["uid"] != 0), f"{cw}: effective runAsNonRoot {non_root}")
    check(effective(sc, psc, "runAsGroup") == GID, f"{cw}: group is not {GID}")
    check(sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type") ==
          "RuntimeDefault", f"{cw}: effective seccomp profile is not RuntimeDefault")
    if want["pss"] == "restricted":
        check(non_root is True and uid != 0, f"{cw}: restricted requires a non-root user")
        check(set(caps.get("add", [])) <= {"NET_BIND_SERVICE"},
              f"{cw}: restricted allows adding NET_BIND_SERVICE only")

    # Volumes: only the ConfigMap and the Secret, mounted read-only.
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    for v in vols.values():
        kinds_of = set(v) - {"name"}
        check(kinds_of <= {"configMap", "secret"}, f"{w}: volume {v['name']} is {kinds_of}")
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    for m in mounts.values():
        check(m.get("readOnly") is True, f"{cw}: mount {m['mountPath']} is not read-only")
        check(m["name"] in vols, f"{cw}: mount of unknown volume {m['name']}")
    cm_mount = mounts.get(CONFIG_DIR)
    check(cm_mount and "configMap" in vols[cm_mount["name"]],
          f"{cw}: no ConfigMap mounted at {CONFIG_DIR}")
    cm = by_name(objs, "ConfigMap", vols[cm_mount["name"]]["configMap"]["name"], w)
    check(re.fullmatch(r"esmd-config-[a-z0-9]{10}", cm["metadata"]["name"]),
          f"{w}: ConfigMap {cm['metadata']['name']} is not generated (no content hash): "
          f"changes would not roll the pods")
    check(f"-config-dir={CONFIG_DIR}" in c.get("args", []),
          f"{cw}: args {c.get('args')} do not read {CONFIG_DIR}")
    hcl = cm.get("data") or {}
    check(hcl and all(k.endswith(".hcl") for k in hcl), f"{w}: ConfigMap keys {sorted(hcl)}")
    text = "\n".join(hcl[k] for k in sorted(hcl))
    check(re.search(r'(?m)^\s*client_address\s*=\s*":8080"', text),
          f"{w}: the configuration does not set client_address = \":8080\"")
    check(not re.search(r"(?m)^\s*token\s*=", text), f"{w}: a token in the ConfigMap")
    check(bool(re.search(r"(?m)^\s*enable_agentless\s*=\s*true", text)) == want["agentless"],
          f"{w}: enable_agentless is not {want['agentless']}")
    if want.get("ping_type_in_file"):
        check(re.search(rf'(?m)^\s*ping_type\s*=\s*"{want["ping_type"]}"', text),
              f"{w}: the configuration does not set ping_type = \"{want['ping_type']}\"")

    # The token: CONSUL_HTTP_TOKEN_FILE -> a read-only mount of a Secret key.
    env = {e["name"]: e for e in c.get("env", [])}
    check("CONSUL_HTTP_TOKEN" not in env, f"{cw}: the token in a plain env var")
    check(TOKEN_ENV in env and "value" in env[TOKEN_ENV], f"{cw}: no {TOKEN_ENV}")
    token_path = env[TOKEN_ENV]["value"]
    mount_dir, file_name = os.path.split(token_path)
    check(mount_dir in mounts, f"{cw}: {TOKEN_ENV}={token_path} is not in a mounted volume")
    check(os.path.commonpath([mount_dir, CONFIG_DIR]) != CONFIG_DIR,
          f"{cw}: the token lies inside the config dir {CONFIG_DIR}")
    tvol = vols[mounts[mount_dir]["name"]]
    check("secret" in tvol, f"{cw}: {token_path} comes from {set(tvol) - {'name'}}, not a "
          f"Secret")
    secret = by_name(objs, "Secret", tvol["secret"]["secretName"], w)
    check(re.fullmatch(r"esmd-token-[a-z0-9]{10}", secret["metadata"]["name"]),
          f"{w}: Secret {secret['metadata']['name']} is not generated")
    tfiles = volume_files(objs, tvol, w)
    check(file_name in tfiles, f"{cw}: {token_path}: the Secret volume has no file "
          f"{file_name} ({sorted(tfiles)})")
    token = tfiles[file_name].decode().strip()
    check(token and "REPLACE" in token and not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}", token),
          f"{w}: the shipped token is not an obvious placeholder: {token!r}")
    mode = tvol["secret"].get("defaultMode", 0o644)
    check(mode & 0o007 == 0, f"{w}: the token file is world-readable (mode {mode:o})")
    # Secret files belong to root, group fsGroup: uid 0 reads them as the owner, esmd's uid
    # through its group 65532.
    readable = (mode & 0o400) if want["uid"] == 0 else (
        (mode & 0o040) and psc.get("fsGroup") == GID)
    check(readable, f"{w}: uid {want['uid']} cannot read the token file (mode {mode:o}, "
          f"fsGroup {psc.get('fsGroup')})")

    # Agent mode: the node's agent through the downward API.
    if not want["agentless"]:
        names = [e["name"] for e in c.get("env", [])]
        check("HOST_IP" in env and env["HOST_IP"].get("valueFrom", {}).get("fieldRef", {})
              .get("fieldPath") == "status.hostIP", f"{cw}: HOST_IP is not status.hostIP")
        check(env.get("CONSUL_HTTP_ADDR", {}).get("value") == "$(HOST_IP):8500",
              f"{cw}: CONSUL_HTTP_ADDR is {env.get('CONSUL_HTTP_ADDR')}")
        check(names.index("HOST_IP") < names.index("CONSUL_HTTP_ADDR"),
              f"{cw}: HOST_IP must come before CONSUL_HTTP_ADDR for $(HOST_IP) to expand")
        check(not re.search(r"(?m)^\s*http_addr\s*=", text),
              f"{w}: http_addr in a file would beat CONSUL_HTTP_ADDR")
    else:
        check("CONSUL_HTTP_ADDR" not in env, f"{cw}: CONSUL_HTTP_ADDR set in agentless mode")
        check(re.search(rf'(?m)^\s*http_addr\s*=\s*"{re.escape(want["address"])}"', text),
              f"{w}: http_addr is not {want['address']}")

    # The PodDisruptionBudget and the Service.
    pdb = one(objs, "PodDisruptionBudget", w)
    ps = pdb["spec"]
    check(ps.get("maxUnavailable") == 1 or ps.get("minAvailable") == 2,
          f"{w}: PDB {ps}, expected maxUnavailable 1 (or minAvailable 2)")
    check(selects(ps.get("selector"), labels), f"{w}: the PDB does not select the pods")
    check(ps["selector"]["matchLabels"] == spec["selector"]["matchLabels"],
          f"{w}: the PDB's selector differs from the Deployment's")
    svc = one(objs, "Service", w)
    check(selects({"matchLabels": svc["spec"].get("selector")}, labels),
          f"{w}: the Service does not select the pods")
    sp = {p.get("name"): p for p in svc["spec"].get("ports", [])}
    check("http" in sp and sp["http"]["port"] == 8080 and sp["http"].get("targetPort") in
          ("http", 8080), f"{w}: the Service has no port http -> http ({svc['spec']})")

    print(f"{w}: {len(objs)} objects; {dep['metadata']['namespace']}/{dep['metadata']['name']}"
          f" x{spec['replicas']} {c['image']} uid {uid}:{GID}"
          f" {'agentless' if want['agentless'] else 'agent'}"
          f" -> {want['address'] if want['agentless'] else env['CONSUL_HTTP_ADDR']['value']},"
          f" ping_type {want['ping_type']}"
          f"{' + ping_group_range' if sysctls else ''}"
          f"{' + ' + ','.join(caps.get('add', [])) if caps.get('add') else ''};"
          f" requests {res['requests']['cpu']}/{res['requests']['memory']}"
          f" limits {res['limits']['cpu']}/{res['limits']['memory']}; grace {grace}s;"
          f" PDB maxUnavailable {ps.get('maxUnavailable')}; PSS enforce {want['pss']},"
          f" warn/audit {want['pss_report']}")


def _overlay_case(overlay):
    def fn():
        check_overlay(overlay)
    fn.__name__ = "overlay_" + overlay.replace("-", "_")
    fn.__doc__ = (f"overlays/{overlay}: hardening, probes, token, resources, spreading, PDB, "
                  f"scrape annotations, configuration")
    return case(fn)


for _o in OVERLAYS:
    _overlay_case(_o)


@case
def esmd_validates_each_configuration():
    """esmd -validate accepts each overlay's configuration as the pod would see it"""
    esmd = os.environ.get("ESMD_BIN", "")
    if not esmd:
        skip("ESMD_BIN is not set (meson passes the built esmd)")
    check(os.access(esmd, os.X_OK), f"ESMD_BIN={esmd} is not executable")
    for overlay, want in OVERLAYS.items():
        w = f"overlays/{overlay}"
        objs = objects(overlay)
        pod = one(objs, "Deployment", w)["spec"]["template"]["spec"]
        c = pod["containers"][0]
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        root = os.path.join(_tmp, "pod-" + overlay)
        mount_paths = []
        for m in c.get("volumeMounts", []):
            write_volume(root, m["mountPath"], volume_files(objs, vols[m["name"]], w))
            mount_paths.append(m["mountPath"])

        def local(value):
            for mp in sorted(mount_paths, key=len, reverse=True):
                if value == mp or value.startswith(mp + "/"):
                    return os.path.join(root, value.lstrip("/"))
            return value
        env = {k: local(v) for k, v in expand_env(c.get("env"), w).items()}
        args = []
        for a in c.get("args", []):
            flag, eq, value = a.partition("=")
            args.append(flag + eq + local(value) if eq else a)
        r = sh([esmd, "-validate"] + args, 20, env=env)
        check(r.returncode == 0, f"{w}: esmd -validate {' '.join(args)} exited {r.returncode}:"
              f" {(r.stderr or r.stdout).strip()}")
        eff = json.loads(r.stdout)
        for key, value in (("client_address", ":8080"), ("consul_service", "consul-esm"),
                           ("consul_kv_path", "consul-esm/"), ("log_level", "INFO"),
                           ("enable_agentless", want["agentless"]),
                           ("ping_type", want["ping_type"]),
                           # a random instance_id per container start: a crashed one's
                           # registration goes after 5 min, not the default 30
                           ("instance_deregister_after", "5m0s")):
            check(eff.get(key) == value, f"{w}: effective {key} is {eff.get(key)!r}, expected "
                  f"{value!r}")
        check(eff["consul"]["address"] == want["address"],
              f"{w}: effective Consul address {eff['consul']['address']!r}, expected "
              f"{want['address']!r}")
        check(eff["consul"]["token"] == "<redacted>",
              f"{w}: no token was read from {TOKEN_ENV} (effective token "
              f"{eff['consul']['token']!r})")
        port = eff["client_address"].rpartition(":")[2]
        http = [p for p in c["ports"] if p.get("name") == "http"][0]
        check(port == str(http["containerPort"]), f"{w}: esmd listens on {port}, the pod's "
              f"port http is {http['containerPort']}")
        if not want["agentless"]:
            ipaddress.ip_address(eff["consul"]["address"].rpartition(":")[0])
        print(f"{w}: esmd -validate ok: {'agentless' if eff['enable_agentless'] else 'agent'}"
              f" -> {eff['consul']['address']}, ping_type {eff['ping_type']}, admin "
              f"{eff['client_address']}, token from {env[TOKEN_ENV].replace(root, '')}")

    bad = os.path.join(_tmp, "bad-config")
    os.makedirs(bad)
    with open(os.path.join(bad, "00-esmd.hcl"), "w") as f:
        f.write('client_adress = ":8080"\n')
    r = sh([esmd, "-validate", f"-config-dir={bad}"], 20, env={})
    check(r.returncode == 11, f"esmd -validate accepted a misspelt key (exit {r.returncode})")
    print("esmd -validate rejects client_adress (exit 11)")


@case
def yamllint_accepts_the_manifests():
    """yamllint accepts the manifests (deploy/kubernetes/.yamllint; skipped where not installed)"""
    exe = shutil.which("yamllint")
    if not exe:
        skip("yamllint is not installed (Debian package yamllint)")
    r = sh([exe, "-f", "parsable", "-c", os.path.join(K8S, ".yamllint"), K8S], 60)
    check(r.returncode == 0, f"yamllint: {r.stdout.strip()} {r.stderr.strip()}")
    print("yamllint: no problems")


@case
def readme_describes_the_overlays():
    """deploy/kubernetes/README.md describes every overlay, the build, the token and sizing"""
    with open(os.path.join(K8S, "README.md")) as f:
        text = f.read()
    for overlay in OVERLAYS:
        check(f"overlays/{overlay}" in text, f"README.md does not mention overlays/{overlay}")
    for needle in ("kubectl kustomize deploy/kubernetes/overlays/agentless | kubectl apply -f -",
                   "esmd-token", TOKEN_ENV, "4.3 KB", "ping_group_range", "NET_RAW"):
        check(needle in text, f"README.md does not mention {needle!r}")


if __name__ == "__main__":
    run()
