"""esmd against a real Consul with ACLs enforced (default deny), with the tokens of
deploy/consul/esmd-policy.hcl (consul-esm's minimum policy) and
deploy/consul/esmd-policy-agentless.hcl (a narrower one), and with each rule taken away.

Environment: CONSUL_BIN (a Consul binary), ESMD_BIN (the esmd binary), ESMD_SOURCE_ROOT (the
repository, for the policy files). Each case starts its own Consul dev agent with ACLs on
free 127.0.0.1 ports and a temporary directory; every process the test starts is stopped by
its own pid in a finally block; every wait is bounded. The dead-node case runs in a private
network namespace (`unshare --net`, root), where an address without a route fails a ping at
once and no packet leaves the machine.

    CONSUL_BIN=... ESMD_BIN=... ESMD_SOURCE_ROOT=. python3 test/deploy/acl_test.py [case ...]

Cases: the minimum policy in agent mode (registration, leadership, assignment, an HTTP check
that follows its target both ways, externalNodeHealth, coordinates, service reaping, no
request refused, the SecretID never logged, a clean stop) and in agentless mode; key_prefix
read only (a clear error naming the missing permission, esmd keeps running, not ready); the
narrow agentless policy and its agent-mode variant; every rule removed or made read-only in
turn, in both modes (each is needed; what fails is printed); a dead node (probes key,
reaping) in a private network namespace. Prints doctest's summary line
(`[doctest] test cases: N | P passed | F failed | 0 skipped`).
"""
import base64
import http.server
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import case, check, env_path, run  # noqa: E402

CONSUL_BIN = env_path("CONSUL_BIN")
ESMD_BIN = env_path("ESMD_BIN")
SOURCE_ROOT = env_path("ESMD_SOURCE_ROOT")
POLICY_FILE = os.path.join(SOURCE_ROOT, "deploy", "consul", "esmd-policy.hcl")
NARROW_POLICY_FILE = os.path.join(SOURCE_ROOT, "deploy", "consul", "esmd-policy-agentless.hcl")

SERVICE = "consul-esm"
KV = "consul-esm/"
AGENT_NODE = "acl-dev"
# The external node and its service match the "ext-" rules of esmd-policy-agentless.hcl.
NODE = "ext-acl-1"
WEB = "ext-web"
CHECK_ID = "ext-web-check"
DOOMED = "ext-doomed"         # a service whose check always fails, reaped after 1 s critical
DEAD_NODE = "ext-dead-1"      # the dead-node case: an address without a route
ACL_ERRORS = re.compile(r'response code: 403|HTTP 403|status="?403|Permission denied|ACL not found|blocked by ACLs',
                        re.IGNORECASE)


# ----------------------------------------------------------------------------------------------
# Helpers


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(what, fn, timeout, interval=0.2):
    """Polls fn until it returns a true value (returned) or timeout seconds passed (fails)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = fn()
            if v:
                return v
            last = v
        except (OSError, ValueError, KeyError) as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def stop_process(p, sig=signal.SIGTERM, timeout=10):
    """Stops p (started by this test) by its own pid; returns its exit code."""
    if p.poll() is None:
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(5)
    return p.returncode


def policy_rules(text):
    """The rules of an HCL policy file as (kind, name, whole block), to change one of them."""
    return [(m.group(1), m.group(2), m.group(0))
            for m in re.finditer(r'^(\w+)\s+"([^"]*)"\s*\{[^}]*\}', text, re.MULTILINE)]


def policy_text(path=POLICY_FILE, drop=None, read_only=None):
    """A policy file's text, without the rule of kind `drop`, or with that of `read_only` read."""
    with open(path) as f:
        text = f.read()
    for kind, change in ((drop, "drop"), (read_only, "read")):
        if not kind:
            continue
        blocks = [b for b in policy_rules(text) if b[0] == kind]
        check(len(blocks) == 1, f"{path} has no single {kind} rule")
        block = blocks[0][2]
        text = text.replace(block, "" if change == "drop" else block.replace('"write"', '"read"'))
    return text


def go_time(raw):
    """Decodes Go's time.MarshalBinary (version 1 or 2): unix seconds (float), offset minutes."""
    check(raw[0] in (1, 2) and len(raw) == (15 if raw[0] == 1 else 16), f"not a Go binary time: {raw.hex()}")
    secs, nanos, offset = struct.unpack(">qih", raw[1:15])
    return secs - 62135596800 + nanos / 1e9, offset


class Target:
    """An HTTP check target on 127.0.0.1: / answers `status` (set by the test), /dead 500."""

    def __init__(self):
        self.status = 200
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                code = 500 if self.path.startswith("/dead") else target.status
                body = f"status {code}\n".encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class Consul:
    """A Consul dev agent with ACLs enabled, default deny, on free loopback ports."""

    def __init__(self, workdir):
        self.management = str(uuid.uuid4())
        self.http, server, lan, wan = free_ports(4)
        self.addr = f"127.0.0.1:{self.http}"
        self.version = self._version()
        # The bootstrap token is `master` before Consul 1.11 and `initial_management` from it on.
        # The agent token lets the dev agent register its own node.
        name = "initial_management" if self.version >= (1, 11) else "master"
        acl = ('acl { enabled = true default_policy = "deny" enable_token_persistence = false '
               'tokens { %s = "%s" agent = "%s" } }' % (name, self.management, self.management))
        self.log_path = os.path.join(workdir, "consul.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [CONSUL_BIN, "agent", "-dev", f"-node={AGENT_NODE}", "-bind=127.0.0.1", "-client=127.0.0.1",
             f"-http-port={self.http}", f"-server-port={server}", f"-serf-lan-port={lan}",
             f"-serf-wan-port={wan}", "-dns-port=-1", "-grpc-port=-1", f"-hcl={acl}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir,
            start_new_session=True)
        try:
            wait_for("a Consul leader", self._has_leader, 30)
            wait_for("ACLs to accept the management token",
                     lambda: self.api("GET", "/v1/acl/token/self")[0] == 200, 30)
            wait_for("the dev agent's node in the catalog",
                     lambda: self.api("GET", f"/v1/catalog/node/{AGENT_NODE}")[1], 30)
        except BaseException:
            self.close()
            raise

    def _version(self):
        out = subprocess.run([CONSUL_BIN, "version"], capture_output=True, text=True, timeout=30).stdout
        m = re.search(r"Consul v(\d+)\.(\d+)\.(\d+)", out)
        check(m, f"`consul version` printed no version: {out!r}")
        return tuple(int(x) for x in m.groups())

    def _has_leader(self):
        check(self.proc.poll() is None, f"Consul exited ({self.proc.returncode}); see {self.log_path}")
        code, body = self.api("GET", "/v1/status/leader", token=None)
        return code == 200 and body not in ("", None)

    def api(self, method, path, body=None, token="management", timeout=10):
        """(status, decoded JSON or text) of one request; the management token by default."""
        headers = {}
        if token == "management":
            token = self.management
        if token:
            headers["X-Consul-Token"] = token
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://{self.addr}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                code, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            code, text = e.code, e.read().decode(errors="replace")
        try:
            return code, json.loads(text) if text else None
        except ValueError:
            return code, text

    def ok(self, method, path, body=None, **kw):
        code, answer = self.api(method, path, body, **kw)
        check(200 <= code < 300, f"{method} {path} answered {code}: {answer!r}")
        return answer

    def cli(self, *args, timeout=30):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
        env.update(CONSUL_HTTP_ADDR=self.addr, CONSUL_HTTP_TOKEN=self.management)
        p = subprocess.run([CONSUL_BIN, *args], env=env, capture_output=True, text=True, timeout=timeout)
        check(p.returncode == 0, f"consul {' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")
        return p.stdout

    def make_token(self, name, rules_file):
        """The SecretID of a new token whose only policy is rules_file (made by the CLI)."""
        self.cli("acl", "policy", "create", "-name", name, "-rules", "@" + rules_file)
        out = self.cli("acl", "token", "create", "-description", name, "-policy-name", name, "-format=json")
        return json.loads(out)["SecretID"]

    def log_text(self, offset=0):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def log_size(self):
        self.log.flush()
        return os.path.getsize(self.log_path)

    def refused(self, offset=0):
        """The requests Consul refused with an ACL error since offset, as 'METHOD path'."""
        found = re.findall(r'Request error: method=(\S+) url=(\S+) .*error="(?:rpc error.*?)?Permission denied',
                           self.log_text(offset))
        return sorted({f"{m} {u.split('?')[0]}" for m, u in found})

    def close(self):
        try:
            stop_process(self.proc, signal.SIGTERM, timeout=15)
        finally:
            self.log.close()


class Esmd:
    """esmd with a token file (0600), an admin address and a config file; its log in one file."""

    def __init__(self, workdir, consul, token, extra_config="", name="esmd"):
        self.admin = f"127.0.0.1:{free_ports(1)[0]}"
        self.token_file = os.path.join(workdir, f"{name}.token")
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        self.config = os.path.join(workdir, f"{name}.hcl")
        with open(self.config, "w") as f:
            f.write(f'client_address = "{self.admin}"\n'
                    'ping_type = "socket"\n'        # raw ICMP: the test runs as root
                    'node_probe_interval = "1s"\n'
                    'node_probe_timeout = "1s"\n'
                    'retry_interval = "1s"\n'
                    'blocking_query_wait = "5s"\n'
                    'log_level = "DEBUG"\n' + extra_config)
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.log = open(self.log_path, "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
        env.update(CONSUL_HTTP_ADDR=consul.addr, CONSUL_HTTP_TOKEN_FILE=self.token_file)
        self.proc = subprocess.Popen([ESMD_BIN, f"-config-file={self.config}"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)

    def text(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def alive(self):
        return self.proc.poll() is None

    def get(self, path):
        try:
            with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def status(self):
        code, body = self.get("/v1/status")
        check(code == 200, f"/v1/status answered {code}")
        return json.loads(body)

    def stop(self, timeout=7):
        """SIGTERM; (exit code or None, seconds). Killed after timeout if still running."""
        start = time.monotonic()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        took = time.monotonic() - start
        if self.proc.poll() is None:
            stop_process(self.proc, signal.SIGKILL, timeout=5)
            return None, took
        return self.proc.returncode, took

    def close(self):
        try:
            if self.proc.poll() is None:
                stop_process(self.proc, signal.SIGTERM, timeout=10)
        finally:
            self.log.close()


class Setup:
    """A work directory, a check target and an ACL-enforcing Consul; closed in reverse order."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="esmd-acl-")
        self.target = None
        self.consul = None
        self.esmds = []
        try:
            self.target = Target()
            self.consul = Consul(self.dir)
        except BaseException:
            self.close()
            raise

    def token(self, name, text):
        path = os.path.join(self.dir, name + ".hcl")
        with open(path, "w") as f:
            f.write(text)
        return self.consul.make_token(name, path)

    def esmd(self, token, extra_config="", name="esmd"):
        e = Esmd(self.dir, self.consul, token, extra_config, name)
        self.esmds.append(e)
        return e

    def close(self, keep=False):
        try:
            for e in reversed(self.esmds):
                e.close()
        finally:
            try:
                if self.consul:
                    self.consul.close()
            finally:
                if self.target:
                    self.target.close()
                if not keep:
                    shutil.rmtree(self.dir, ignore_errors=True)

    def register(self, node=NODE, address="127.0.0.1", service=WEB, check_id=CHECK_ID, path="/health",
                 extra_definition=None):
        """An external, probed node with a service and its HTTP check (registered critical)."""
        definition = {"HTTP": f"http://127.0.0.1:{self.target.port}{path}", "Interval": "1s", "Timeout": "1s"}
        definition.update(extra_definition or {})
        self.consul.ok("PUT", "/v1/catalog/register", {
            "Node": node, "Address": address,
            "NodeMeta": {"external-node": "true", "external-probe": "true"},
            "Service": {"ID": service, "Service": service, "Port": self.target.port},
            "Checks": [{"CheckID": check_id, "Name": f"{service} HTTP check", "ServiceID": service,
                        "Status": "critical", "Definition": definition}]})

    def register_doomed(self):
        """A second service on NODE whose check always fails: reaped after 1 s critical."""
        self.register(service=DOOMED, check_id=DOOMED + "-check", path="/dead",
                      extra_definition={"DeregisterCriticalServiceAfter": "1s"})

    def node_checks(self, node=NODE):
        return {c["CheckID"]: c for c in self.consul.ok("GET", f"/v1/health/node/{node}")}

    def check_status(self, check_id=CHECK_ID, node=NODE):
        c = self.node_checks(node).get(check_id)
        return c and c["Status"]

    def node_health(self, node=NODE):
        return self.node_checks(node).get("externalNodeHealth")

    def kv(self, key):
        code, answer = self.consul.api("GET", "/v1/kv/" + key)
        if code == 404:
            return None
        check(code == 200, f"GET /v1/kv/{key} answered {code}: {answer!r}")
        return answer[0]

    def instances(self):
        return self.consul.ok("GET", f"/v1/catalog/service/{SERVICE}")


def with_setup(body):
    """Runs body(setup) and closes the setup whatever happens; keeps the files on a failure."""
    s = Setup()
    ok = False
    try:
        body(s)
        ok = True
    finally:
        if not ok:
            print(f"(logs kept in {s.dir})", flush=True)
        s.close(keep=not ok)


def metrics_refused(e):
    """The Consul endpoints esmd's own metrics show refused (401/403), as label sets."""
    code, metrics = e.get("/metrics")
    check(code == 200, f"/metrics answered {code}")
    check(re.search(r'esmd_consul_request_duration_seconds_count\{[^}]*status="200"', metrics),
          "no successful request in esmd_consul_request_duration_seconds")
    return sorted({m.group(1) for m in re.finditer(
        r'esmd_consul_request_duration_seconds_count\{([^}]*status="40[13]"[^}]*)\}', metrics)})


def assert_no_acl_errors(s, e, secret, since=0):
    text = e.text()
    check(secret not in text, "esmd's log contains the token's SecretID")
    check(s.consul.management not in text, "esmd's log contains the management token")
    bad = [line for line in text.splitlines() if ACL_ERRORS.search(line)]
    check(not bad, "esmd's log has ACL errors:\n  " + "\n  ".join(bad[:10]))
    refused = s.consul.refused(since)
    check(not refused, f"Consul refused requests: {refused}")
    blocked = [line for line in s.consul.log_text(since).splitlines() if "blocked by ACLs" in line]
    check(not blocked, "Consul's anti-entropy was blocked by ACLs:\n  " + "\n  ".join(blocked[:5]))
    if e.alive():
        refused = metrics_refused(e)
        check(not refused, f"esmd's metrics show refused requests: {refused}")


def assert_clean_stop(s, e, instance_gone, what="the instance to be deregistered"):
    code, took = e.stop(7)
    check(code is not None, f"esmd did not exit within 7 s of SIGTERM ({took:.1f} s)")
    check(code == 0, f"esmd exited {code} after SIGTERM, not 0")
    wait_for(what, instance_gone, 5)
    check("Shutting down" in e.text(), "no 'Shutting down' line in esmd's log")


def follow_main_flow(s, e, agentless, refusals_expected=False):
    """Registration, leadership, assignment, a check both ways, externalNodeHealth,
    coordinates, readiness: what the agent-mode and agentless cases share. Returns the
    instance's service ID. With refusals_expected (a node outside the token's policy is
    registered too), Consul's 403s are the caller's to account for."""
    c = s.consul
    inst = wait_for("esmd's service in the catalog", s.instances, 20)
    check(len(inst) == 1, f"expected one esmd instance, got {inst!r}")
    sid = inst[0]["ServiceID"]
    check(sid.startswith(SERVICE + ":"), f"service id {sid!r}")
    check(inst[0]["ServiceMeta"].get("external-source") == "consul-esm", f"meta {inst[0]['ServiceMeta']!r}")
    if agentless:
        check(inst[0]["Node"] == sid + ":node", f"agentless instance on node {inst[0]['Node']!r}")
    else:
        check(inst[0]["Node"] == AGENT_NODE, f"agent-mode instance on node {inst[0]['Node']!r}")
        check(sid + ":agent-ttl" in c.ok("GET", "/v1/agent/checks"), f"no TTL check {sid}:agent-ttl")
    # Leader: /v1/status says so, and the lock key holds a session.
    wait_for("esmd to be leader (/v1/status)", lambda: e.status().get("leader") is True, 20)
    wait_for("the leader key to hold a session", lambda: (s.kv(KV + "leader") or {}).get("Session"), 10)

    def assigned():
        v = s.kv(KV + "agents/" + sid)
        if not v or not v.get("Value"):
            return None
        a = json.loads(base64.b64decode(v["Value"]))
        return a if NODE in (a.get("Probes") or []) else None
    a = wait_for("the node in this instance's assignment", assigned, 20)
    # consul-esm's format: two members, a probed node listed in Probes only.
    check(list(a) == ["Nodes", "Probes"] and not a["Nodes"], f"assignment value {a!r}")
    # The check follows its target: passing, critical on a 500, passing again.
    wait_for("the HTTP check to turn passing", lambda: s.check_status() == "passing", 20)
    s.target.status = 500
    wait_for("the HTTP check to turn critical", lambda: s.check_status() == "critical", 20)
    out = s.node_checks()[CHECK_ID]["Output"]
    check("500" in out, f"the critical output does not name the 500: {out!r}")
    s.target.status = 200
    wait_for("the HTTP check to turn passing again", lambda: s.check_status() == "passing", 20)
    # The node prober: externalNodeHealth passing (127.0.0.1 answers pings), no probes key
    # for a live node, and its coordinate written.
    h = wait_for("externalNodeHealth passing", lambda: (s.node_health() or {}).get("Status") == "passing"
                 and s.node_health(), 20)
    check(h["Name"] == "External Node Status" and h["Output"] == "Node alive or reachable",
          f"externalNodeHealth {h!r}")
    check(s.kv(KV + "probes/" + NODE) is None, "a probes key exists for a node that answers")
    wait_for("the node's coordinate", lambda: c.api("GET", f"/v1/coordinate/node/{NODE}")[0] == 200, 30)
    code, body = e.get("/readyz")
    check(code == 200, f"/readyz answered {code}: {body!r}")
    st = e.status()
    if not refusals_expected:
        check("403" not in str((st.get("consul") or {}).get("last_error")), f"/v1/status: {st.get('consul')!r}")
    check(e.alive(), "esmd exited")
    return sid


def wait_reaped(s, e):
    """The doomed service (its check always critical, DeregisterCriticalServiceAfter 1 s) is
    deregistered by esmd's reaper, which looks every 30 s."""
    wait_for("the always-failing service to be reaped",
             lambda: not any(x["ID"] == DOOMED for x in s.consul.ok("GET", f"/v1/catalog/node/{NODE}")[
                 "Services"].values()), 45, interval=0.5)
    check("deregistered service" in e.text(), "no 'deregistered service' line in esmd's log")


# ----------------------------------------------------------------------------------------------
# Cases


@case
def minimum_policy_agent_mode():
    """esmd-policy.hcl is enough in agent mode: register, lead, assign, check, ping, reap, stop"""
    def body(s):
        secret = s.token("esmd", policy_text())
        s.register()
        s.register_doomed()
        since = s.consul.log_size()
        e = s.esmd(secret)
        sid = follow_main_flow(s, e, agentless=False)
        wait_reaped(s, e)
        assert_no_acl_errors(s, e, secret, since)
        assert_clean_stop(s, e, lambda: not s.instances())
        check(not (s.kv(KV + "leader") or {}).get("Session"), "the leader key still holds a session")
        check(sid not in s.consul.ok("GET", "/v1/agent/services"), "the service is still on the agent")
        assert_no_acl_errors(s, e, secret, since)
    with_setup(body)


@case
def policy_with_key_read_only():
    """key_prefix read instead of write: esmd names the missing permission, keeps running, is not ready"""
    def body(s):
        secret = s.token("esmd-key-read", policy_text(read_only="key_prefix"))
        s.register()
        e = s.esmd(secret)
        needs = 'needs="key_prefix \\"consul-esm/\\" write"'
        wait_for("the error naming the missing permission", lambda: needs in e.text() or not e.alive(), 20)
        check(e.alive(), f"esmd exited ({e.proc.returncode}):\n{e.text()[-2000:]}")
        line = next(line for line in e.text().splitlines() if needs in line)
        check("[ERROR]" in line and "Failed to acquire the leader key" in line, f"the error line: {line!r}")
        check(secret not in e.text(), "esmd's log contains the token's SecretID")
        check(s.kv(KV + "leader") is None, "a leader key was written without permission")
        check(s.instances(), "esmd is not registered")
        check(e.status().get("leader") is False, "/v1/status says leader")
        # Refusals back off (at most one every retry_interval, 1 s here, after 250 ms at first).
        time.sleep(5)
        n = e.text().count(needs)
        check(n <= 12, f"{n} refused acquisitions logged in about 6 s: no backoff")
        check(e.alive(), "esmd exited")
        # No instance can lead, so nobody assigned anything: not ready.
        code, answer = e.get("/readyz")
        check(code == 503, f"/readyz answered {code} {answer.strip()!r} although no leader ever assigned "
                           "a share (the assignment key does not exist)")
        assert_clean_stop(s, e, lambda: not s.instances())
    with_setup(body)


@case
def minimum_policy_agentless():
    """esmd-policy.hcl is enough in agentless mode (synthetic node, sessions in the catalog)"""
    def body(s):
        secret = s.token("esmd", policy_text())
        s.register()
        since = s.consul.log_size()
        e = s.esmd(secret, 'enable_agentless = true\n')
        sid = follow_main_flow(s, e, agentless=True)
        assert_no_acl_errors(s, e, secret, since)
        assert_clean_stop(s, e, lambda: not s.instances() and s.consul.api(
            "GET", f"/v1/catalog/node/{sid}:node")[1] is None, "the synthetic node to be removed")
        assert_no_acl_errors(s, e, secret, since)
    with_setup(body)


@case
def narrow_policy_agentless():
    """esmd-policy-agentless.hcl is enough in agentless mode; a check outside it is refused, visibly"""
    def body(s):
        secret = s.token("esmd-narrow", policy_text(NARROW_POLICY_FILE))
        s.register()
        s.register_doomed()
        # A node and service the narrow policy does not let esmd write.
        s.register(node="other-1", service="other-web", check_id="other-check")
        since = s.consul.log_size()
        e = s.esmd(secret, 'enable_agentless = true\n')
        sid = follow_main_flow(s, e, agentless=True, refusals_expected=True)
        wait_reaped(s, e)
        refused = wait_for("the refused write of the check outside the policy",
                           lambda: [x for x in e.text().splitlines() if "Check status write refused" in x
                                    and "other-check" in x], 20)
        check("Permission denied" in refused[0] and "[WARN]" in refused[0], f"refusal line {refused[0]!r}")
        check(s.check_status("other-check", node="other-1") == "critical", "other-check was written")
        # other-1 answers pings too: its coordinate update is refused (403), named once at WARN,
        # counted, and costs the permitted node nothing (its coordinate was written above).
        lines = wait_for("the refused coordinate update of the node outside the policy",
                         lambda: [x for x in e.text().splitlines() if "Coordinate update refused" in x], 30)
        check("[WARN]" in lines[0] and "node=other-1" in lines[0] and "403" in lines[0],
              f"coordinate refusal line {lines[0]!r}")
        named = [x for x in lines if f"node={NODE}" in x]
        check(not named, f"coordinate updates of {NODE} refused: {named[:3]}")
        m = re.search(r'^esmd_coordinate_updates_total\{result="refused"\} (\S+)$', e.get("/metrics")[1],
                      re.MULTILINE)
        check(m and float(m.group(1)) >= 1, f"esmd_coordinate_updates_total refused is {m and m.group(1)}")
        other = sorted(set(s.consul.refused(since)) - {"PUT /v1/coordinate/update"})
        check(not other, f"Consul refused more than other-1's coordinate updates: {other}")
        check(secret not in e.text(), "esmd's log contains the token's SecretID")
        assert_clean_stop(s, e, lambda: not s.instances() and s.consul.api(
            "GET", f"/v1/catalog/node/{sid}:node")[1] is None, "the synthetic node to be removed")
    with_setup(body)


@case
def narrow_policy_agent_mode():
    """the agent-mode narrowing (agent and session of the agent's node only) is enough"""
    def body(s):
        text = policy_text(NARROW_POLICY_FILE)
        text = text.replace('agent_prefix "" {', f'agent "{AGENT_NODE}" {{')
        text = text.replace('session_prefix "consul-esm:" {', f'session "{AGENT_NODE}" {{')
        synthetic = [b[2] for b in policy_rules(text) if b[:2] == ("node_prefix", "consul-esm:")]
        check(len(synthetic) == 1, "no node_prefix \"consul-esm:\" rule in the narrow policy")
        text = text.replace(synthetic[0], "")
        secret = s.token("esmd-narrow-agent", text)
        s.register()
        since = s.consul.log_size()
        e = s.esmd(secret)
        follow_main_flow(s, e, agentless=False)
        assert_no_acl_errors(s, e, secret, since)
        assert_clean_stop(s, e, lambda: not s.instances())
    with_setup(body)


# What fails without each rule (or with read instead of write): the variant, whether esmd
# keeps running, a log line that must appear, the requests Consul must refuse. Agent mode:
RULE_VARIANTS = [
    ("drop", "agent_prefix", False, "Error querying agent version", ["GET /v1/agent/self"]),
    ("drop", "key_prefix", True, "Failed to read the leader key", ["GET /v1/kv/consul-esm/leader"]),
    # Consul filters what the token cannot read: no 403, no instance, nothing assigned.
    ("drop", "node_prefix", True, "No healthy ESM instances: not assigning external nodes: nodes=0", []),
    ("drop", "service_prefix", False, "Missing service:write on consul-esm", ["PUT /v1/agent/service/register"]),
    ("drop", "session_prefix", True, "Failed to create the leader session", ["PUT /v1/session/create"]),
    ("read", "node_prefix", True, "Node status write refused by Consul", ["PUT /v1/coordinate/update"]),
    ("read", "service_prefix", False, "Missing service:write on consul-esm", ["PUT /v1/agent/service/register"]),
    ("read", "session_prefix", True, "Failed to create the leader session", ["PUT /v1/session/create"]),
]
# Agentless mode: the synthetic node's registration needs node and service write.
AGENTLESS_RULE_VARIANTS = [
    ("drop", "agent_prefix", False, "Error querying agent version", ["GET /v1/agent/self"]),
    ("drop", "key_prefix", True, "Failed to read the leader key", ["GET /v1/kv/consul-esm/leader"]),
    ("drop", "node_prefix", False, "Failed to register the ESM instance in the catalog", ["PUT /v1/catalog/register"]),
    ("drop", "service_prefix", False, "Failed to register the ESM instance in the catalog",
     ["PUT /v1/catalog/register"]),
    ("drop", "session_prefix", True, "Failed to create the leader session", ["PUT /v1/session/create"]),
    ("read", "node_prefix", False, "Failed to register the ESM instance in the catalog", ["PUT /v1/catalog/register"]),
    ("read", "service_prefix", False, "Failed to register the ESM instance in the catalog",
     ["PUT /v1/catalog/register"]),
    ("read", "session_prefix", True, "Failed to create the leader session", ["PUT /v1/session/create"]),
]


def each_rule_is_needed(variants, extra_config, mode):
    def body(s):
        s.register()
        report = []
        for change, kind, stays, line, refused in variants:
            name = f"{mode}-{change}-{kind}"
            text = policy_text(drop=kind) if change == "drop" else policy_text(read_only=kind)
            secret = s.token(name, text)
            since = s.consul.log_size()
            e = s.esmd(secret, extra_config, name=name)
            what = f"{kind} {'removed' if change == 'drop' else 'read only'} ({mode})"
            wait_for(f"'{line}' with {what}", lambda: line in e.text() and all(
                r in s.consul.refused(since) for r in refused), 20)
            if stays:
                time.sleep(1)
                check(e.alive(), f"esmd exited ({e.proc.returncode}) with {what}")
                check(e.status().get("leader") is False or kind == "node_prefix",
                      f"esmd is leader with {what}")
                code, took = e.stop(7)
                check(code == 0, f"esmd exited {code} after SIGTERM with {what}")
            else:
                wait_for(f"esmd to exit with {what}", lambda: not e.alive(), 15)
                check(e.proc.returncode == 11, f"esmd exited {e.proc.returncode} with {what}, not 11")
            check(secret not in e.text(), f"esmd's log contains the token's SecretID with {what}")
            check(s.check_status() != "passing" or (kind, change) == ("node_prefix", "read"),
                  f"the check was written with {what}")
            report.append(f"  {what}: esmd {'runs' if stays else 'exits 11'}; Consul refused "
                          f"{s.consul.refused(since) or 'nothing (hidden by ACL filtering)'}")
            # The next variant starts from scratch: no KV, the check and node as registered.
            s.consul.ok("DELETE", "/v1/kv/consul-esm/?recurse")
            s.consul.ok("PUT", "/v1/catalog/deregister", {"Node": NODE})
            s.register()
            wait_for("no instance left", lambda: not s.instances(), 10)
        print("\n".join(report), flush=True)
    with_setup(body)


@case
def every_rule_is_needed():
    """each rule of esmd-policy.hcl is needed in agent mode: without it (or read only) esmd fails visibly"""
    each_rule_is_needed(RULE_VARIANTS, "", "agent")


@case
def every_rule_is_needed_agentless():
    """each rule of esmd-policy.hcl is needed in agentless mode"""
    each_rule_is_needed(AGENTLESS_RULE_VARIANTS, "enable_agentless = true\n", "agentless")


def dead_node_inside_netns():
    """(inside a private network namespace) a node without a route: critical, the probes key,
    reaped after node_reconnect_timeout; all with esmd-policy.hcl."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)

    def body(s):
        secret = s.token("esmd", policy_text())
        s.register()
        # TEST-NET-1: no route in this namespace, so each ping fails at once (ENETUNREACH).
        s.register(node=DEAD_NODE, address="192.0.2.1", service="ext-dead-web", check_id="ext-dead-check")
        since = s.consul.log_size()
        started = time.time()
        e = s.esmd(secret, 'node_reconnect_timeout = "4s"\n')
        wait_for("externalNodeHealth passing on the live node",
                 lambda: (s.node_health() or {}).get("Status") == "passing", 20)
        h = wait_for("externalNodeHealth critical on the dead node",
                     lambda: (s.node_health(DEAD_NODE) or {}).get("Status") == "critical" and s.node_health(DEAD_NODE),
                     20)
        check(h["Output"] == "Node not live or unreachable", f"externalNodeHealth {h!r}")
        key = wait_for("the dead node's probes key", lambda: s.kv(KV + "probes/" + DEAD_NODE), 10)
        since_t, offset = go_time(base64.b64decode(key["Value"]))
        check(offset == -1, f"the probes key's zone offset is {offset}, not UTC (-1)")
        check(started - 5 <= since_t <= time.time() + 1, f"critical-since {since_t} is not recent")
        wait_for("the dead node to be reaped",
                 lambda: s.consul.api("GET", f"/v1/catalog/node/{DEAD_NODE}")[1] is None, 20)
        wait_for("the probes key to be removed", lambda: s.kv(KV + "probes/" + DEAD_NODE) is None, 10)
        # The reap is logged and counted even when the share's watch drops the node before the
        # prober reads the transaction's answer (both are woken by the same commit).
        reaped = wait_for("the reaping line in esmd's log",
                          lambda: "reaping node has been failed for too long" in e.text(), 3) and True
        code, metrics = e.get("/metrics")
        m = re.search(r"^esmd_nodes_reaped_total (\S+)$", metrics, re.MULTILINE)
        check(reaped and m and float(m.group(1)) == 1, f"esmd_nodes_reaped_total is {m and m.group(1)}, not 1")
        check(s.node_checks().get(CHECK_ID), "the live node lost its check")
        assert_no_acl_errors(s, e, secret, since)
        assert_clean_stop(s, e, lambda: not s.instances())
    with_setup(body)


@case
def dead_node_probes_key_and_reaping():
    """esmd-policy.hcl covers a dead node: externalNodeHealth critical, the probes key, reaping"""
    check(os.geteuid() == 0, "needs root (unshare --net, raw ICMP)")
    unshare = shutil.which("unshare")
    check(unshare and shutil.which("ip"), "needs unshare (util-linux) and ip (iproute2)")
    # A private PID namespace too: if the inner test dies, the kernel ends every process it
    # started (Consul, esmd), and --kill-child ends the inner test if unshare is killed.
    p = subprocess.run([unshare, "--net", "--pid", "--fork", "--kill-child", "--", sys.executable,
                        os.path.abspath(__file__), "--inside-netns"],
                       capture_output=True, text=True, timeout=180)
    sys.stdout.write("".join("  | " + line + "\n" for line in p.stdout.splitlines()))
    check(p.returncode == 0, f"the case inside the network namespace failed ({p.returncode}): "
                             f"{(p.stdout + p.stderr).strip().splitlines()[-1:] }")


if __name__ == "__main__":
    if sys.argv[1:] == ["--inside-netns"]:
        try:
            dead_node_inside_netns()
        except BaseException as e:  # noqa: BLE001 - reported to the parent by the exit status
            import traceback
            traceback.print_exc(file=sys.stdout)
            print(f"FAILED: {e}", flush=True)
            sys.exit(1)
        sys.exit(0)
    run()
