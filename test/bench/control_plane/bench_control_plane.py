"""Benchmark (prints figures, not a test): esmd's control plane at scale, whole processes.

A Consul dev agent on loopback; INSTANCES agentless esmd processes sharing NODES external
nodes (default 5 and 10 000). Each node has one TCP check every 30 s against a listener this
script runs (it accepts and closes); SAMPLE of them (default 100) also have an HTTP check every
5 s against a target whose answers the script switches. Phases:

  steady      over WINDOW seconds (default 60) once every node is covered and every check has
              run: Consul requests per minute of each instance (esmd_consul_requests_total),
              its CPU per minute, its resident memory;
  flip        the SAMPLE HTTP targets switched at once: seconds until each new status is in the
              catalog (p50, p95, max; includes the wait for the check's next run, up to 5 s);
  new-check   SAMPLE new HTTP checks registered at once in the catalog (status critical, the
              target answering 200): seconds until each is passing in the catalog (the watch,
              the plan, the first run, the write);
  rebalance   nodes added up to REBALANCE_NODES (default 100 000, node entries without
              checks), then one non-leading instance stopped (SIGTERM): seconds from the stop
              to the leader's rebalance write, the leader's CPU in that time, and the bytes of
              the assignment values in KV.

  bench_control_plane.py [--nodes N] [--instances K] [--sample S] [--window SECONDS]
                         [--rebalance-nodes R] [--json FILE]

--json writes the figures to FILE as well (test/bench/report uses it). Every process it starts
is stopped by its own pid; all traffic stays on 127.0.0.1. Env: CONSUL_BIN (default the
cached Consul), ESMD_BIN (default build/release/app/esmd).
"""
import argparse
import base64
import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "test", "deploy"))
from harness import FlipTarget, TcpTarget, api, cpu_seconds, free_ports, rss_kib, stop_pid, wait_for  # noqa: E402

SERVICE = "esm-cp"
KV = "cp/"
TICKS = os.sysconf("SC_CLK_TCK")


def now():
    return time.monotonic()

def pct(values, p):
    s = sorted(values)
    if p == 100:
        return s[-1] if s else float("nan")
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] if s else float("nan")

class Bench:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="esmd-bench-cp-")
        self.consul, self.esmd, self.tcp, self.http = None, [], None, None

    def start_consul(self):
        http, server, lan, wan = free_ports(4)
        self.addr = f"127.0.0.1:{http}"
        log = open(os.path.join(self.work, "consul.log"), "wb")
        self.consul = subprocess.Popen(
            [self.args.consul, "agent", "-dev", "-node=bench-cp", "-bind=127.0.0.1", "-client=127.0.0.1",
             f"-http-port={http}", f"-server-port={server}", f"-serf-lan-port={lan}", f"-serf-wan-port={wan}",
             "-dns-port=-1", "-grpc-port=-1", "-log-level=warn",
             "-hcl=limits { http_max_conns_per_client = 4000 }"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        wait_for("a Consul leader", lambda: api(self.addr, "GET", "/v1/status/leader")[1], 30, 0.5)

    def register(self, first, last, with_checks):
        def one(n):
            body = {"Node": f"cp-{n}", "Address": "127.0.0.1", "NodeMeta": {"external-node": "true"}}
            if with_checks:
                checks = [{"CheckID": "tcp", "Name": "tcp", "Status": "critical",
                           "Definition": {"TCP": f"127.0.0.1:{self.tcp.port}", "Interval": "30s", "Timeout": "2s"}}]
                if n < self.args.sample:
                    checks.append({"CheckID": "http", "Name": "http", "Status": "critical",
                                   "Definition": {"HTTP": f"http://127.0.0.1:{self.http.port}/f/{n}",
                                                  "Interval": "5s", "Timeout": "2s"}})
                body["Checks"] = checks
            code, _ = api(self.addr, "PUT", "/v1/catalog/register", body)
            if code != 200:
                raise RuntimeError(f"registering cp-{n}: HTTP {code}")

        t0 = now()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(first, last)))
        return now() - t0

    def start_esmd(self, name):
        admin = free_ports(1)[0]
        conf = os.path.join(self.work, f"{name}.hcl")
        with open(conf, "w") as f:
            f.write(f'enable_agentless = true\ninstance_id = "{name}"\nconsul_service = "{SERVICE}"\n'
                    f'consul_kv_path = "{KV}"\nhttp_addr = "{self.addr}"\nclient_address = "127.0.0.1:{admin}"\n'
                    f'session_ttl = "10s"\nlock_delay = "1s"\nretry_interval = "1s"\nlog_level = "INFO"\n')
        log_path = os.path.join(self.work, f"{name}.log")
        log = open(log_path, "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
        p = subprocess.Popen([self.args.esmd, "-config-file", conf], stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        log.close()
        e = {"name": name, "proc": p, "admin": f"127.0.0.1:{admin}", "log": log_path}
        self.esmd.append(e)
        return e

    def status(self, e):
        return api(e["admin"], "GET", "/v1/status", None, 5)[1] or {}

    def requests_total(self, e):
        try:
            with urllib.request.urlopen(f"http://{e['admin']}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        m = re.search(r"^esmd_consul_requests_total(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
        return float(m.group(1)) if m else None

    def assignments(self):
        code, kvs = api(self.addr, "GET", f"/v1/kv/{KV}agents/?recurse")
        if code != 200 or not kvs:
            return {}, 0
        owners, size = {}, 0
        for kv in kvs:
            raw = base64.b64decode(kv["Value"] or b"")
            size += len(raw)
            value = json.loads(raw or b"null") or {}
            for n in (value.get("Nodes") or []) + (value.get("Probes") or []):
                owners[n] = kv["Key"].rsplit(":", 1)[1]
        return owners, size

    def covered(self, total):
        owners, _ = self.assignments()
        return len(owners) == total

    def check_states(self, check_id):
        code, checks = api(self.addr, "GET", "/v1/health/state/any?filter=" +
                           urllib.parse.quote(f'CheckID == "{check_id}"'), None, 60)
        if code != 200:
            return {}
        return {c["Node"]: c["Status"] for c in checks}

    def leader(self):
        for e in self.esmd:
            if e["proc"].poll() is None and self.status(e).get("leader"):
                return e
        return None

    def close(self):
        for e in self.esmd:
            stop_pid(e["proc"], signal.SIGTERM, 15)
        if self.tcp:
            self.tcp.close()
        if self.http:
            self.http.close()
        if self.consul:
            stop_pid(self.consul, signal.SIGTERM, 15)
        if os.environ.get("ESMD_BENCH_KEEP"):
            print(f"logs kept in {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    # ---------------------------------------------------------------- phases

    def steady(self, out):
        a = self.args
        self.start_consul()
        self.tcp, self.http = TcpTarget(), FlipTarget(2 * a.sample)  # the flip's, then new-check's
        took = self.register(0, a.nodes, True)
        print(f"registered {a.nodes} nodes ({a.nodes + a.sample} checks) in {took:.1f} s", flush=True)
        t0 = now()
        for i in range(a.instances):
            self.start_esmd(f"i{i}")
        wait_for("every node covered", lambda: self.covered(a.nodes), 180, 1)
        wait_for("every TCP check passing", lambda: sum(
            s == "passing" for s in self.check_states("tcp").values()) == a.nodes, 120, 2)
        print(f"every node covered and every check passing {now() - t0:.1f} s after the start", flush=True)
        time.sleep(5)
        before = {e["name"]: (self.requests_total(e), cpu_seconds(e["proc"].pid)) for e in self.esmd}
        t1 = now()
        time.sleep(a.window)
        dt = now() - t1
        rows = []
        for e in self.esmd:
            r0, c0 = before[e["name"]]
            r1, c1 = self.requests_total(e), cpu_seconds(e["proc"].pid)
            st = self.status(e)
            rows.append({"instance": e["name"], "leader": bool(st.get("leader")),
                         "requests_per_min": (r1 - r0) * 60 / dt, "cpu_s_per_min": (c1 - c0) * 60 / dt,
                         "rss_kib": rss_kib(e["proc"].pid)})
        print(f"\nsteady state over {dt:.0f} s, {a.instances} instances, {a.nodes} nodes, "
              f"{a.nodes / 30 + a.sample / 5:.0f} check runs/s in all:")
        print("  instance  leader  Consul requests/min  CPU-s/min  RSS KiB")
        for r in rows:
            print(f"  {r['instance']:8}  {'yes' if r['leader'] else '   ':6}  {r['requests_per_min']:19.1f}  "
                  f"{r['cpu_s_per_min']:9.2f}  {r['rss_kib']:7}")
        out["steady"] = {"window_s": dt, "instances": rows}

    def flip(self, out):
        a = self.args
        wait_for("every HTTP check passing", lambda: sum(
            s == "passing" for s in self.check_states("http").values()) == a.sample, 60, 0.5)
        t0 = now()
        for i in range(a.sample):
            self.http.up[i] = False
        seen = {}
        while len(seen) < a.sample and now() - t0 < 60:
            for node, s in self.check_states("http").items():
                if s == "critical" and node not in seen:
                    seen[node] = now() - t0
            time.sleep(0.1)
        lat = list(seen.values())
        print(f"\nflip: {len(lat)} of {a.sample} HTTP targets (5 s interval) in the catalog after "
              f"p50 {pct(lat, 50):.2f} s, p95 {pct(lat, 95):.2f} s, max {pct(lat, 100):.2f} s")
        out["flip"] = {"count": len(lat), "p50": pct(lat, 50), "p95": pct(lat, 95), "max": pct(lat, 100)}
        for i in range(a.sample):
            self.http.up[i] = True

    def new_check(self, out):
        a = self.args

        def add(n):
            body = {"Node": f"cp-{n}", "Address": "127.0.0.1", "NodeMeta": {"external-node": "true"},
                    "Check": {"CheckID": "new", "Name": "new", "Status": "critical",
                              "Definition": {"HTTP": f"http://127.0.0.1:{self.http.port}/f/{n}",
                                             "Interval": "5s", "Timeout": "2s"}}}
            api(self.addr, "PUT", "/v1/catalog/register", body)

        nodes = list(range(a.sample, 2 * a.sample))
        t0 = now()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(add, nodes))
        registered = now() - t0
        seen = {}
        while len(seen) < len(nodes) and now() - t0 < 60:
            for node, s in self.check_states("new").items():
                if s == "passing" and node not in seen:
                    seen[node] = now() - t0
            time.sleep(0.1)
        lat = list(seen.values())
        print(f"new-check: {len(nodes)} checks registered in {registered:.2f} s; {len(lat)} passing in the "
              f"catalog after p50 {pct(lat, 50):.2f} s, p95 {pct(lat, 95):.2f} s, max {pct(lat, 100):.2f} s")
        out["new_check"] = {"count": len(lat), "p50": pct(lat, 50), "p95": pct(lat, 95), "max": pct(lat, 100)}

    def rebalance(self, out):
        a = self.args
        if a.rebalance_nodes <= a.nodes:
            return
        took = self.register(a.nodes, a.rebalance_nodes, False)
        print(f"\nregistered nodes up to {a.rebalance_nodes} in {took:.1f} s", flush=True)
        t0 = now()
        wait_for(f"{a.rebalance_nodes} nodes covered", lambda: self.covered(a.rebalance_nodes), 300, 1)
        print(f"  all {a.rebalance_nodes} covered {now() - t0:.1f} s after the registration ended", flush=True)
        time.sleep(5)
        lead = self.leader()
        victim = next(e for e in self.esmd if e is not lead and e["proc"].poll() is None)
        lines_before = len(open(lead["log"], errors="replace").readlines())
        cpu0 = cpu_seconds(lead["proc"].pid)
        t1 = now()
        stop_pid(victim["proc"], signal.SIGTERM, 15)

        def rebalanced():
            lines = open(lead["log"], errors="replace").readlines()[lines_before:]
            return next((ln for ln in lines if "Rebalanced external nodes" in ln), None)

        line = wait_for("the leader's rebalance", rebalanced, 120, 0.05)
        wrote = now() - t1
        cpu = cpu_seconds(lead["proc"].pid) - cpu0
        wait_for("every node covered again", lambda: self.covered(a.rebalance_nodes), 120, 0.5)
        covered = now() - t1
        _, size = self.assignments()
        print(f"rebalance at {a.rebalance_nodes} nodes, {victim['name']} stopped: the leader wrote after "
              f"{wrote:.2f} s using {cpu * 1000:.0f} CPU-ms (from the stop to the write; its watch included); "
              f"all covered after {covered:.2f} s; assignment values {size / 1024:.0f} KiB in all; "
              f"leader RSS {rss_kib(lead['proc'].pid)} KiB")
        print(f"  {line.strip()[:200]}")
        out["rebalance"] = {"nodes": a.rebalance_nodes, "write_s": wrote, "leader_cpu_ms": cpu * 1000,
                            "covered_s": covered, "kv_bytes": size, "leader_rss_kib": rss_kib(lead["proc"].pid)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=10000)
    p.add_argument("--instances", type=int, default=5)
    p.add_argument("--sample", type=int, default=100)
    p.add_argument("--window", type=float, default=60)
    p.add_argument("--rebalance-nodes", type=int, default=100000)
    p.add_argument("--json")
    p.add_argument("--consul", default=os.environ.get("CONSUL_BIN", "/root/.cache/consul-bin/consul"))
    p.add_argument("--esmd", default=os.environ.get("ESMD_BIN", os.path.join(ROOT, "build/release/app/esmd")))
    args = p.parse_args()
    if args.sample * 2 > args.nodes:
        p.error("--nodes must be at least twice --sample")
    b = Bench(args)
    out = {"nodes": args.nodes, "instances": args.instances, "sample": args.sample}
    try:
        b.steady(out)
        b.flip(out)
        b.new_check(out)
        b.rebalance(out)
    finally:
        b.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
