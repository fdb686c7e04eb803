"""CPU of the whole esmd process per 1000 check runs, next to a Consul agent running the same
checks as its own agent checks and wrk, in one run (a benchmark: it prints figures, asserts
nothing).

One nginx on loopback (one worker, `return 200 "ok"`, stub_status counting requests and
connections) listening on 127.0.0.1..127.0.0.8, one port; every check targets one of the 8
addresses in turn so that ephemeral ports do not run out at high connection rates (a Python
server stands in if nginx is missing; it falls behind beyond a few hundred runs per second).
For each point N:INTERVAL (default 2000 checks at 10 s = 200 runs/s and 20 000 at 10 s =
2000 runs/s) and each kind (HTTP, TCP):

  esmd    a fresh Consul dev agent on free loopback ports; N/10 external nodes of 10 checks
          each registered in the catalog (critical); one agentless esmd started; once Consul
          holds no critical check on those nodes (every check has run and its result was
          written) and a margin has passed, esmd's CPU (/proc/PID/stat utime + stime, all its
          threads) over WINDOW seconds; runs counted by nginx (requests for HTTP, connections
          for TCP) and cross-checked with esmd's own run counter; esmd stopped.
  consul  a fresh Consul dev agent: its idle CPU over a few seconds, then the N checks
          registered as agent checks (PUT /v1/agent/check/register), one interval and a margin,
          the agent's CPU over WINDOW seconds less its idle CPU, runs counted by nginx.

and once: wrk -t1 -c32 -dWRK_SECONDS -H 'Connection: close' against the same nginx (a fresh
connection per request, the floor for HTTP), its CPU from wait4's rusage.

Prints CPU-ms per 1000 runs for esmd, the Consul agent (less idle) and wrk, and the ratios
esmd / Consul (issue 15: at most 0.2) and esmd / wrk (issue 15: within 2x at 2000 runs/s).

  bench_daemon_cpu.py [--points N:INTERVAL ...] [--kinds http,tcp] [--window S]
                      [--wrk-seconds S] [--skip-consul] [--json FILE]

Env: CONSUL_BIN (default /root/.cache/consul-bin/consul), ESMD_BIN (default
build/release/app/esmd), ESMD_BENCH_KEEP (keep the logs; they are kept anyway when the run
fails). Every process it starts is stopped by its own pid; all traffic stays
on 127.0.0.0/8. With the defaults a run takes about 14 minutes (most of it Consul registering
20 000 agent checks); test/bench/report's points 2000:10s 10000:5s take about 8.
"""
import argparse
import concurrent.futures
import http.server
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "test", "deploy"))
from harness import api, cpu_seconds, free_ports, rss_kib, stop_pid, wait_for  # noqa: E402


def cpu_ms(pid):
    return cpu_seconds(pid) * 1000.0

ADDRESSES = 8
PER_NODE = 10
SERVICE = "esm-cpu"
KV = "bench-cpu/"


def now():
    return time.monotonic()

def consul_requests(admin):
    """esmd_consul_requests_total from esmd's /metrics, or None."""
    try:
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return None
    m = re.search(r"^esmd_consul_requests_total(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else None


def parse_interval(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)?", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad interval {text!r} (e.g. 10, 10s, 500ms)")
    v = float(m.group(1))
    return v / 1000 if m.group(2) == "ms" else v


def parse_point(text):
    n, _, iv = text.partition(":")
    if not n.isdigit() or int(n) <= 0 or not iv:
        raise argparse.ArgumentTypeError(f"bad point {text!r} (N:INTERVAL, e.g. 2000:10s)")
    return int(n), parse_interval(iv)


# ---------------------------------------------------------------- the target


class Target:
    """nginx on 127.0.0.1..127.0.0.8, one port, `return 200 "ok"`, stub_status on /nginx_status;
    in the foreground so that the pid held is the master's. A Python server if nginx is missing
    (on 127.0.0.1 only then, counting connections and requests itself)."""

    def __init__(self, work):
        self.port = free_ports(1)[0]
        self.proc = None
        self.server = None
        self.addresses = ADDRESSES
        self._counts = [0, 0]  # accepts, requests (the Python server)
        self._lock = threading.Lock()
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
        if nginx:
            d = os.path.join(work, "nginx")
            os.makedirs(d)
            listen = "".join(f"    listen {self.ip(k)}:{self.port} backlog=4096;\n" for k in range(ADDRESSES))
            with open(os.path.join(d, "nginx.conf"), "w") as f:
                f.write(f"worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n"
                        f"worker_rlimit_nofile 16384;\nevents {{ worker_connections 8192; }}\n"
                        f"http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n"
                        f"  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n"
                        f"  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n"
                        f"  server {{\n{listen}"
                        f"    location = /nginx_status {{ stub_status; }}\n"
                        f"    location / {{ default_type text/plain; return 200 \"ok\\n\"; }}\n  }}\n}}\n")
            self.proc = subprocess.Popen([nginx, "-c", f"{d}/nginx.conf", "-p", f"{d}/", "-e", f"{d}/error.log"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
            wait_for("nginx answering on every address", self._answers, 10, 0.1)
            self.kind = "nginx"
            return
        self.addresses = 1
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                with target._lock:
                    target._counts[1] += 1
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "3")
                    self.end_headers()
                    self.wfile.write(b"ok\n")
                except OSError:
                    pass

            def log_message(self, *a):
                pass

        class Server(http.server.ThreadingHTTPServer):
            request_queue_size = 4096

            def process_request(self, request, client_address):
                with target._lock:
                    target._counts[0] += 1
                super().process_request(request, client_address)

        self.server = Server(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.kind = "python http.server"

    def ip(self, k):
        return f"127.0.0.{1 + k % self.addresses}"

    def hostport(self, k):
        return f"{self.ip(k)}:{self.port}"

    def _answers(self):
        if self.proc.poll() is not None:
            raise SystemExit(f"nginx exited with {self.proc.returncode} (see its error.log)")
        for k in range(ADDRESSES):
            try:
                with urllib.request.urlopen(f"http://{self.ip(k)}:{self.port}/", timeout=1) as r:
                    if r.status != 200:
                        return False
            except OSError:
                return False
        return True

    def counters(self):
        """(connections accepted, requests), our own status read excluded."""
        if self.server:
            with self._lock:
                return tuple(self._counts)
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/nginx_status", timeout=5) as r:
            text = r.read().decode()
        m = re.search(r"requests\s+(\d+)\s+(\d+)\s+(\d+)", text)
        if not m:
            raise RuntimeError(f"nginx stub_status without counters: {text!r}")
        return int(m.group(1)) - 1, int(m.group(3)) - 1

    def close(self):
        if self.proc:
            stop_pid(self.proc, signal.SIGTERM, 10)
        if self.server:
            self.server.shutdown()
            self.server.server_close()


# ---------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="esmd-bench-cpu-")
        self.target = None
        self.procs = []  # every process started and not yet stopped, stopped by close()

    def close(self, failed=False):
        for p in reversed(self.procs):
            stop_pid(p, signal.SIGTERM, 15)
        self.procs = []
        if self.target:
            self.target.close()
        if failed or os.environ.get("ESMD_BENCH_KEEP"):
            print(f"logs kept in {self.work}", flush=True)
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    def start(self, argv, name, env=None):
        log = open(os.path.join(self.work, f"{name}.log"), "ab")
        try:
            p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env, start_new_session=True)
        finally:
            log.close()
        self.procs.append(p)
        return p

    def stop(self, p):
        stop_pid(p, signal.SIGTERM, 15)
        self.procs.remove(p)

    def start_consul(self, name):
        http, server, lan, wan = free_ports(4)
        addr = f"127.0.0.1:{http}"
        p = self.start([self.args.consul, "agent", "-dev", f"-node={name}", "-bind=127.0.0.1",
                        "-client=127.0.0.1", f"-http-port={http}", f"-server-port={server}",
                        f"-serf-lan-port={lan}", f"-serf-wan-port={wan}", "-dns-port=-1", "-grpc-port=-1",
                        "-log-level=warn", "-hcl=limits { http_max_conns_per_client = 4000 }"], name)

        def leader():
            if p.poll() is not None:
                raise SystemExit(f"Consul exited with {p.returncode} (log: {self.work}/{name}.log)")
            return api(addr, "GET", "/v1/status/leader", None, 2)[1]

        wait_for("a Consul leader", leader, 30, 0.2)
        return p, addr

    def check_def(self, kind, i, interval):
        iv = f"{int(round(interval * 1000))}ms"
        if kind == "http":
            return {"HTTP": f"http://{self.target.hostport(i)}/c{i}", "Interval": iv, "Timeout": "5s"}
        return {"TCP": self.target.hostport(i), "Interval": iv, "Timeout": "5s"}

    def pool_run(self, what, fn, items, limit_s):
        """fn over items on 8 threads; fails if any returns false or it takes over limit_s."""
        t0 = now()
        failures = []
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(fn, x) for x in items]
            for f in futures:
                left = limit_s - (now() - t0)
                try:
                    ok = f.result(timeout=max(left, 0.1))
                except concurrent.futures.TimeoutError:
                    for g in futures:
                        g.cancel()
                    raise SystemExit(f"{what}: over {limit_s:.0f} s, giving up")
                if not ok:
                    failures.append(ok)
        if failures:
            raise SystemExit(f"{what}: {len(failures)} requests failed")
        return now() - t0

    def measure(self, pid, window):
        """(cpu ms, connections, requests, seconds) of pid over window seconds."""
        a0, r0 = self.target.counters()
        c0, t0 = cpu_ms(pid), now()
        time.sleep(window)
        c1, t1 = cpu_ms(pid), now()
        a1, r1 = self.target.counters()
        return c1 - c0, a1 - a0, r1 - r0, t1 - t0

    # ------------------------------------------------------------ esmd

    def esmd_phase(self, kind, n, interval):
        a = self.args
        consul, addr = self.start_consul(f"consul-esmd-{kind}-{n}")
        esmd = None
        try:
            nodes = (n + PER_NODE - 1) // PER_NODE

            def register(node):
                checks = [{"CheckID": f"{kind}{k}", "Name": f"{kind} {k}", "Status": "critical",
                           "Definition": self.check_def(kind, node * PER_NODE + k, interval)}
                          for k in range(PER_NODE) if node * PER_NODE + k < n]
                body = {"Node": f"cpu-{node}", "Address": self.target.ip(node),
                        "NodeMeta": {"external-node": "true"}, "Checks": checks}
                return api(addr, "PUT", "/v1/catalog/register", body, 60)[0] == 200

            admin = free_ports(1)[0]
            conf = os.path.join(self.work, f"esmd-{kind}-{n}.hcl")
            with open(conf, "w") as f:
                f.write(f'enable_agentless = true\ninstance_id = "bench-cpu"\nconsul_service = "{SERVICE}"\n'
                        f'consul_kv_path = "{KV}"\nhttp_addr = "{addr}"\nclient_address = "127.0.0.1:{admin}"\n'
                        f'log_level = "WARN"\n')
            env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
            esmd = self.start([a.esmd, "-config-file", conf], f"esmd-{kind}-{n}", env)

            def ready():
                if esmd.poll() is not None:
                    raise SystemExit(f"esmd exited with {esmd.returncode} (log: {self.work}/esmd-{kind}-{n}.log)")
                code, st = api(f"127.0.0.1:{admin}", "GET", "/v1/status", None, 5)
                return code == 200 and st and st.get("ready")

            wait_for("esmd ready (no checks yet)", ready, 60, 0.2)
            time.sleep(2)
            c0, ti = cpu_ms(esmd.pid), now()
            time.sleep(a.idle_seconds)
            idle_per_s = (cpu_ms(esmd.pid) - c0) / (now() - ti)
            rss0 = rss_kib(esmd.pid)

            took = self.pool_run(f"registering {nodes} catalog nodes", register, range(nodes), 600)
            print(f"  esmd, {n} {kind.upper()} checks at {interval:g} s: idle esmd (no checks) "
                  f"{idle_per_s:.1f} CPU-ms/s; {nodes} nodes registered in the catalog in {took:.1f} s",
                  flush=True)
            t0 = now()

            def critical_left():
                if esmd.poll() is not None:
                    raise SystemExit(f"esmd exited with {esmd.returncode} (log: {self.work}/esmd-{kind}-{n}.log)")
                code, checks = api(addr, "GET", "/v1/health/state/critical", None, 60)
                if code != 200:
                    return None
                return sum(1 for c in checks if c["Node"].startswith("cpu-"))

            wait_for(f"esmd: every one of {n} checks run and written passing",
                     lambda: critical_left() == 0, 120 + interval * 3 + n / 100, 1.0)
            ready_s = now() - t0
            # every check has run at least once and its write is done; past the first-run spread
            time.sleep(max(a.margin, interval - ready_s + a.margin))
            st0 = api(f"127.0.0.1:{admin}", "GET", "/v1/status", None, 10)[1] or {}
            q0 = consul_requests(f"127.0.0.1:{admin}")
            cpu, conns, reqs, dt = self.measure(esmd.pid, a.window)
            q1 = consul_requests(f"127.0.0.1:{admin}")
            st1 = api(f"127.0.0.1:{admin}", "GET", "/v1/status", None, 10)[1] or {}
            consul_reqs = q1 - q0 if q0 is not None and q1 is not None else None
            runs = reqs if kind == "http" else conns
            own = None
            try:
                own = st1["checks"]["runs"] - st0["checks"]["runs"]
            except (KeyError, TypeError):
                pass
            rss = rss_kib(esmd.pid)
            r = {"kind": kind, "checks": n, "interval_s": interval, "window_s": dt, "cpu_ms": cpu, "runs": runs,
                 "runs_esmd_counted": own, "runs_per_s": runs / dt, "due_per_s": n / interval,
                 "cpu_ms_per_1000": cpu / runs * 1000 if runs else None,
                 "idle_cpu_ms_per_s": idle_per_s,
                 "cpu_ms_per_1000_less_idle": (cpu - idle_per_s * dt) / runs * 1000 if runs else None,
                 "cpu_core_pct": cpu / dt / 10, "ready_s": ready_s, "rss_kib_before": rss0, "rss_kib": rss,
                 "rss_bytes_per_check": (rss - rss0) * 1024 / n,
                 "consul_requests": consul_reqs, "nginx_connections": conns, "nginx_requests": reqs}
            print(f"  esmd: every check passing in Consul {ready_s:.1f} s after the registration; over {dt:.1f} s "
                  f"{runs} runs ({runs / dt:.0f}/s of {n / interval:.0f} due; esmd counted {own}), "
                  f"CPU {cpu:.0f} ms ({r['cpu_core_pct']:.1f}% of a core), "
                  f"{fmt(r['cpu_ms_per_1000'])} CPU-ms/1000 runs (less idle {fmt(r['cpu_ms_per_1000_less_idle'])}), "
                  f"VmRSS {rss0} -> {rss} KiB; {fmt(consul_reqs, '%.0f')} requests to Consul in the window",
                  flush=True)
            return r
        finally:
            if esmd:
                self.stop(esmd)
            self.stop(consul)

    # ------------------------------------------------------------ the Consul agent

    def consul_phase(self, kind, n, interval):
        a = self.args
        consul, addr = self.start_consul(f"consul-agent-{kind}-{n}")
        try:
            time.sleep(2)  # settle after the leader election
            c0, t0 = cpu_ms(consul.pid), now()
            time.sleep(a.idle_seconds)
            idle_per_s = (cpu_ms(consul.pid) - c0) / (now() - t0)
            rss0 = rss_kib(consul.pid)

            def register(i):
                body = {"ID": f"c{i}", "Name": "bench", **self.check_def(kind, i, interval)}
                return api(addr, "PUT", "/v1/agent/check/register", body, 60)[0] == 200

            took = self.pool_run(f"registering {n} Consul agent checks", register, range(n), a.register_limit)
            print(f"  Consul agent, {n} {kind.upper()} checks at {interval:g} s: registered in {took:.1f} s; "
                  f"idle agent {idle_per_s:.1f} CPU-ms/s", flush=True)
            time.sleep(interval + a.margin)  # every check has run once
            rss1 = rss_kib(consul.pid)
            cpu, conns, reqs, dt = self.measure(consul.pid, a.window)
            runs = reqs if kind == "http" else conns
            net = cpu - idle_per_s * dt
            code, checks = api(addr, "GET", "/v1/agent/checks", None, 60)
            passing = sum(1 for c in (checks or {}).values() if c.get("Status") == "passing") if code == 200 else None
            r = {"kind": kind, "checks": n, "interval_s": interval, "window_s": dt, "cpu_ms": cpu,
                 "idle_cpu_ms_per_s": idle_per_s, "cpu_ms_net": net, "runs": runs, "runs_per_s": runs / dt,
                 "cpu_ms_per_1000": net / runs * 1000 if runs else None,
                 "cpu_ms_per_1000_gross": cpu / runs * 1000 if runs else None,
                 "register_s": took, "rss_kib_before": rss0, "rss_kib_after": rss1,
                 "rss_bytes_per_check": (rss1 - rss0) * 1024 / n, "passing": passing,
                 "nginx_connections": conns, "nginx_requests": reqs}
            print(f"  Consul agent: over {dt:.1f} s {runs} runs ({runs / dt:.0f}/s), CPU {cpu:.0f} ms, "
                  f"{fmt(r['cpu_ms_per_1000_gross'])} CPU-ms/1000 runs, less idle "
                  f"{fmt(r['cpu_ms_per_1000'])}; VmRSS {rss0} -> {rss1} KiB "
                  f"({r['rss_bytes_per_check']:.0f} B per check); {passing} passing", flush=True)
            return r
        finally:
            self.stop(consul)

    # ------------------------------------------------------------ wrk

    def wrk(self):
        a = self.args
        url = f"http://127.0.0.1:{self.target.port}/"
        argv = ["wrk", "-t1", "-c32", f"-d{a.wrk_seconds}s", "-H", "Connection: close", url]
        out_path = os.path.join(self.work, "wrk.out")
        with open(out_path, "wb") as out:
            p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(p)
        deadline = now() + a.wrk_seconds + 30
        ru = None
        while ru is None:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                ru = usage
                p.returncode = os.waitstatus_to_exitcode(status)
                break
            if now() > deadline:
                raise SystemExit(f"wrk (pid {p.pid}) overran {a.wrk_seconds + 30} s")
            time.sleep(0.05)
        self.procs.remove(p)
        text = open(out_path, errors="replace").read()
        m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", text)
        if p.returncode != 0 or not m:
            raise SystemExit(f"wrk failed (exit {p.returncode}), expected a line 'N requests in Xs':\n{text}")
        requests = int(m.group(1))
        cpu = (ru.ru_utime + ru.ru_stime) * 1000
        errors = re.search(r"Socket errors:.*|Non-2xx or 3xx responses: \d+", text)
        r = {"requests": requests, "seconds": a.wrk_seconds, "cpu_ms": cpu,
             "cpu_ms_per_1000": cpu / requests * 1000 if requests else None,
             "errors": errors.group(0) if errors else None}
        print(f"  wrk {' '.join(argv[1:])}: {requests} requests, CPU {cpu:.0f} ms, "
              f"{fmt(r['cpu_ms_per_1000'])} CPU-ms/1000 requests{'; ' + r['errors'] if errors else ''}",
              flush=True)
        return r


def fmt(v, f="%.1f"):
    return "-" if v is None else f % v


def ratio(a, b):
    return a / b if a is not None and b else None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--points", nargs="+", type=parse_point, default=[(2000, 10.0), (20000, 10.0)],
                   metavar="N:INTERVAL", help="checks and interval per point (default 2000:10s 20000:10s)")
    p.add_argument("--kinds", default="http,tcp")
    p.add_argument("--window", type=float, default=30, help="measured seconds per phase (default 30)")
    p.add_argument("--margin", type=float, default=3, help="seconds waited past one interval (default 3)")
    p.add_argument("--idle-seconds", type=float, default=10, help="the idle Consul agent's window (default 10)")
    p.add_argument("--register-limit", type=float, default=900,
                   help="give up registering agent checks after this many seconds (default 900)")
    p.add_argument("--wrk-seconds", type=int, default=10)
    p.add_argument("--skip-consul", action="store_true")
    p.add_argument("--json")
    p.add_argument("--consul", default=os.environ.get("CONSUL_BIN") or "/root/.cache/consul-bin/consul")
    p.add_argument("--esmd", default=os.environ.get("ESMD_BIN") or os.path.join(ROOT, "build/release/app/esmd"))
    args = p.parse_args()
    kinds = [k.strip().lower() for k in args.kinds.split(",") if k.strip()]
    if not kinds or any(k not in ("http", "tcp") for k in kinds):
        p.error("--kinds takes http, tcp or both")
    for what, path in (("Consul", args.consul), ("esmd", args.esmd)):
        if not os.access(path, os.X_OK):
            p.error(f"{what} binary {path} not found or not executable")
    if not shutil.which("wrk"):
        p.error("wrk not found (apt-get install wrk)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by nginx, esmd, Consul

    b = Bench(args)
    out = {"esmd": args.esmd, "consul": args.consul, "window_s": args.window, "rows": [], "wrk": None}
    t_start = now()
    failed = True
    try:
        b.target = Target(b.work)
        out["target"] = f"{b.target.kind} on {b.target.addresses} address(es)"
        print(f"target: {out['target']}, port {b.target.port}; window {args.window:g} s; "
              f"esmd {args.esmd}; Consul {args.consul}", flush=True)
        out["wrk"] = b.wrk()
        for n, interval in args.points:
            for kind in kinds:
                e = b.esmd_phase(kind, n, interval)
                c = None if args.skip_consul else b.consul_phase(kind, n, interval)
                out["rows"].append({"kind": kind, "checks": n, "interval_s": interval,
                                    "due_per_s": n / interval, "esmd": e, "consul": c})
        failed = False
    finally:
        b.close(failed)
    out["elapsed_s"] = now() - t_start

    w = out["wrk"]["cpu_ms_per_1000"] if out["wrk"] else None
    print(f"\nCPU-ms per 1000 runs (whole processes; Consul less its idle CPU; wrk {fmt(w)} per 1000 requests); "
          f"run took {out['elapsed_s']:.0f} s")
    print(f"{'kind':5} {'checks':>7} {'interval':>8} {'runs/s':>7} {'esmd':>8} {'Consul':>8} {'wrk':>7} "
          f"{'esmd/Consul':>11} {'esmd/wrk':>8}")
    for r in out["rows"]:
        e = r["esmd"]["cpu_ms_per_1000"]
        c = r["consul"]["cpu_ms_per_1000"] if r["consul"] else None
        ww = w if r["kind"] == "http" else None  # wrk speaks HTTP only
        r["esmd_over_consul"] = ratio(e, c)
        r["esmd_over_wrk"] = ratio(e, ww)
        print(f"{r['kind'].upper():5} {r['checks']:7d} {r['interval_s']:7g}s {r['esmd']['runs_per_s']:7.0f} "
              f"{fmt(e):>8} {fmt(c):>8} {fmt(ww):>7} {fmt(r['esmd_over_consul'], '%.3f'):>11} "
              f"{fmt(r['esmd_over_wrk'], '%.2f'):>8}")
    print("issue 15 targets: esmd/Consul at most 0.2; esmd/wrk within 2 at 2000 runs/s (HTTP)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
