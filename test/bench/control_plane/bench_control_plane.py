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
import socket
import subprocess
import sys
import tempfile
import threading
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

    def start_esmd(self, name, proxied=False):
        admin = free_ports(1)[0]
        proxy = CountingProxy(self.addr) if proxied else None
        conf = os.path.join(self.work, f"{name}.hcl")
        with open(conf, "w") as f:
            f.write(f'enable_agentless = true\ninstance_id = "{name}"\nconsul_service = "{SERVICE}"\n'
                    f'consul_kv_path = "{KV}"\nhttp_addr = "{proxy.addr if proxy else self.addr}"\nclient_address = "127.0.0.1:{admin}"\n'
                    f'session_ttl = "10s"\nlock_delay = "1s"\nretry_interval = "1s"\nlog_level = "INFO"\n')
        log_path = os.path.join(self.work, f"{name}.log")
        log = open(log_path, "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
        p = subprocess.Popen([self.args.esmd, "-config-file", conf], stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        log.close()
        e = {"name": name, "proc": p, "admin": f"127.0.0.1:{admin}", "log": log_path, "proxy": proxy}
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
            if e["proxy"]:
                e["proxy"].close()
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
        """A fresh Consul (the earlier phases' processes stopped), the nodes registered by
        transactions before any esmd starts, then ROUNDS times: a non-leading instance stopped,
        a new one started; the leader's cost of each rebalance."""
        a = self.args
        if a.rebalance_nodes <= 0:
            return
        for e in self.esmd:
            stop_pid(e["proc"], signal.SIGTERM, 15)
        self.esmd = []
        if self.consul:
            stop_pid(self.consul, signal.SIGTERM, 15)
        self.start_consul()
        t0 = now()
        for first in range(0, a.rebalance_nodes, 64):
            ops = [{"Node": {"Verb": "set", "Node": {"Node": f"rb-{n:06d}", "Address": "127.0.0.1",
                                                     "Meta": {"external-node": "true"}}}}
                   for n in range(first, min(a.rebalance_nodes, first + 64))]
            code, _ = api(self.addr, "PUT", "/v1/txn", ops, 60)
            if code != 200:
                raise RuntimeError(f"registering nodes from rb-{first:06d}: HTTP {code}")
        print(f"\nrebalance: {a.rebalance_nodes} nodes (no checks) registered by /v1/txn (64 a transaction, "
              f"no esmd running) in {now() - t0:.1f} s; Consul RSS {rss_kib(self.consul.pid)} KiB", flush=True)
        t0 = now()
        for i in range(a.instances):
            self.start_esmd(f"r{i}", proxied=True)
        wait_for(f"{a.rebalance_nodes} nodes covered", lambda: self.covered(a.rebalance_nodes), 300, 1)
        print(f"  {a.instances} instances started, every node covered after {now() - t0:.1f} s", flush=True)
        rounds, serial = [], a.instances
        for r in range(a.rounds):
            lead = self.leader()
            victim = next(e for e in reversed(self.esmd) if e is not lead and e["proc"].poll() is None)
            rounds.append(self.one_rebalance(
                "leave", lambda v=victim: self.stop_instance(v)))
            rounds.append(self.one_rebalance("join", lambda s=serial: self.start_esmd(f"r{s}", proxied=True)))
            serial += 1
        keys = ("wall_s", "membership_seen_s", "from_membership_s", "leader_cpu_s", "txns", "txn_bytes", "requests", "request_bytes",
                "response_bytes", "leader_rss_peak_kib", "pickup_s", "moved", "consul_cpu_s", "consul_rss_peak_kib")
        summary = {}
        print(f"  median [min - max] of {len(rounds)} rebalances at {a.rebalance_nodes} nodes, "
              f"{a.instances - 1}<->{a.instances} instances:")
        for k in keys:
            vals = [x[k] for x in rounds if x.get(k) is not None]
            if vals:
                summary[k] = {"median": pct(vals, 50), "min": min(vals), "max": max(vals)}
                print(f"    {k:20} {pct(vals, 50):12.3f}  [{min(vals):.3f} - {max(vals):.3f}]")
        out["rebalance"] = {"nodes": a.rebalance_nodes, "instances": a.instances, "rounds": rounds,
                            "summary": summary, "kv_bytes": self.assignments()[1]}

    def one_rebalance(self, what, trigger):
        """Runs `trigger` (a membership change) and measures until the leader has written the
        assignment and every instance holds its new share."""
        lead = self.leader()
        m0 = self.metrics(lead)
        c0 = self.proxy_counts(lead)
        cpu0, ccpu0 = cpu_seconds(lead["proc"].pid), cpu_seconds(self.consul.pid)
        rss_peak, crss_peak = rss_kib(lead["proc"].pid) or 0, rss_kib(self.consul.pid) or 0
        ids0 = self.healthy_ids()
        t0 = now()
        trigger()
        wrote, seen = None, None
        while now() - t0 < 120:
            if seen is None and self.healthy_ids() != ids0:
                seen = now() - t0
            rss_peak = max(rss_peak, rss_kib(lead["proc"].pid) or 0)
            crss_peak = max(crss_peak, rss_kib(self.consul.pid) or 0)
            m = self.metrics(lead)
            if m.get("esmd_leader_rebalances_total", 0) > m0.get("esmd_leader_rebalances_total", 0):
                wrote = now() - t0
                break
            time.sleep(0.02)
        if wrote is None:
            raise RuntimeError(f"{what}: no rebalance by the leader within 120 s")
        cpu = cpu_seconds(lead["proc"].pid) - cpu0
        c1 = self.proxy_counts(lead)
        owners, _ = self.assignments()
        want = {}
        for node, owner in owners.items():
            want[owner] = want.get(owner, 0) + 1
        live = [e for e in self.esmd if e["proc"].poll() is None]

        def picked_up():
            return all(((self.status(e).get("share") or {}).get("nodes")) == want.get(e["name"], 0) for e in live)

        while not picked_up() and now() - t0 < 120:
            time.sleep(0.05)
        pickup = now() - t0 if picked_up() else None
        m1 = self.metrics(lead)
        d = {k: c1[k] - c0[k] for k in c0}
        row = {"event": what, "wall_s": wrote, "membership_seen_s": seen,
               "from_membership_s": wrote - seen if seen is not None else None, "leader_cpu_s": cpu, "txns": d["txns"], "txn_bytes": d["txn_bytes"],
               "requests": d["requests"], "request_bytes": d["request_bytes"], "response_bytes": d["response_bytes"],
               "leader_rss_peak_kib": rss_peak, "pickup_s": pickup,
               "moved": m1.get("esmd_leader_nodes_moved_total", 0) - m0.get("esmd_leader_nodes_moved_total", 0),
               "consul_cpu_s": cpu_seconds(self.consul.pid) - ccpu0, "consul_rss_peak_kib": crss_peak}
        print(f"  {what:5} ({len(live)} instances after): membership changed in Consul after "
              f"{'%.2f s' % seen if seen is not None else '?'}, written after {wrote:.2f} s, leader {cpu:.2f} CPU-s, "
              f"{d['txns']} txns {d['txn_bytes'] / 1024:.0f} KiB, {d['requests']} requests "
              f"{d['request_bytes'] / 1024:.0f} KiB sent {d['response_bytes'] / 1024:.0f} KiB received, "
              f"RSS peak {rss_peak} KiB, {row['moved']:.0f} moved, every share picked up after "
              f"{'%.2f s' % pickup if pickup is not None else 'never (120 s)'}; Consul {row['consul_cpu_s']:.2f} CPU-s, "
              f"RSS peak {crss_peak} KiB", flush=True)
        return row

    def stop_instance(self, e):
        stop_pid(e["proc"], signal.SIGTERM, 15)
        e["proxy"].close()
        self.esmd.remove(e)

    def healthy_ids(self):
        code, entries = api(self.addr, "GET", f"/v1/health/service/{SERVICE}?passing", None, 5)
        return sorted(x["Service"]["ID"] for x in entries or []) if code == 200 else None

    def metrics(self, e):
        try:
            with urllib.request.urlopen(f"http://{e['admin']}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return {}
        return {m.group(1): float(m.group(2))
                for m in re.finditer(r"^(esmd_[a-z_]+)(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)}

    def proxy_counts(self, e):
        p = e.get("proxy")
        with p.lock:
            return dict(p.counts)


class CountingProxy:
    """A TCP relay between one esmd and Consul that counts the HTTP requests it forwards (by
    their request line and Content-Length) and the bytes in each direction."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.lock = threading.Lock()
        self.counts = {"requests": 0, "request_bytes": 0, "response_bytes": 0, "txns": 0, "txn_bytes": 0}
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.addr = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.open:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            host, port = self.upstream.rsplit(":", 1)
            try:
                u = socket.create_connection((host, int(port)))
            except OSError:
                c.close()
                continue
            threading.Thread(target=self._up, args=(c, u), daemon=True).start()
            threading.Thread(target=self._down, args=(u, c), daemon=True).start()

    def _up(self, c, u):
        buf, need = b"", None  # need: body bytes still to come of the current request
        try:
            while True:
                data = c.recv(262144)
                if not data:
                    break
                u.sendall(data)
                buf += data
                while True:
                    if need is not None:
                        take = min(need, len(buf))
                        buf, need = buf[take:], need - take
                        if need:
                            break
                        need = None
                    head_end = buf.find(b"\r\n\r\n")
                    if head_end < 0:
                        break
                    head, buf = buf[:head_end + 4], buf[head_end + 4:]
                    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                    body = int(m.group(1)) if m else 0
                    with self.lock:
                        self.counts["requests"] += 1
                        self.counts["request_bytes"] += len(head) + body
                        if head.startswith(b"PUT /v1/txn"):
                            self.counts["txns"] += 1
                            self.counts["txn_bytes"] += body
                    need = body or None
        except OSError:
            pass
        finally:
            for s in (c, u):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _down(self, u, c):
        try:
            while True:
                data = u.recv(262144)
                if not data:
                    break
                c.sendall(data)
                with self.lock:
                    self.counts["response_bytes"] += len(data)
        except OSError:
            pass
        finally:
            for s in (c, u):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self):
        self.open = False
        self.sock.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=10000)
    p.add_argument("--instances", type=int, default=5)
    p.add_argument("--sample", type=int, default=100)
    p.add_argument("--window", type=float, default=60)
    p.add_argument("--rebalance-nodes", type=int, default=100000)
    p.add_argument("--rounds", type=int, default=3, help="rebalance rounds (each: one leave, one join)")
    p.add_argument("--only-rebalance", action="store_true", help="the rebalance phase alone")
    p.add_argument("--json")
    p.add_argument("--consul", default=os.environ.get("CONSUL_BIN", "/root/.cache/consul-bin/consul"))
    p.add_argument("--esmd", default=os.environ.get("ESMD_BIN", os.path.join(ROOT, "build/release/app/esmd")))
    args = p.parse_args()
    if args.sample * 2 > args.nodes:
        p.error("--nodes must be at least twice --sample")
    b = Bench(args)
    out = {"nodes": args.nodes, "instances": args.instances, "sample": args.sample}
    try:
        if not args.only_rebalance:
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
