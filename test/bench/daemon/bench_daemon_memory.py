"""Resident memory of esmd per configured check (a benchmark: it prints figures, asserts nothing).

A Consul dev agent and an HTTP target (nginx answering 200 "ok"), both on loopback. For each N in
ESMD_BENCH_CHECKS (default "0 2000 20000"), in that order on the same Consul: registers N/10
external nodes with 10 HTTP checks each (every 30 s, a realistic Definition with Method and
Header, a few hundred bytes of Notes and Output, registered critical), starts one esmd in agent
mode (its own consul_service and consul_kv_path), waits until every check has been run and its
result written (Consul holds no non-passing check on those nodes, and esmd's /v1/status counts
N passing checks with no probe in flight and nothing queued), lets it settle, reads VmRSS of
esmd and stops it. Prints RSS(N) and (RSS(N) - RSS(0)) / N, the bytes of growth per check, and
VmRSS split into RssAnon (esmd's own memory) and RssFile (pages of the binary and its libraries
it has touched: code paged in on first use, a fixed cost that a run with checks pays once and
a run with none does not), each as growth per check too.

ESMD_BENCH_SHAPE=lean registers the lean shape instead, as test/bench/checks/bench_engine.cpp
does: N nodes with one HTTP check each (URL, Interval and Timeout only, no Notes, a one-line
Output).

Run on the release build:

    CONSUL_BIN=/root/.cache/consul-bin/consul ESMD_BIN=build/release/app/esmd \\
        python3 test/bench/daemon/bench_daemon_memory.py

ESMD_BENCH_HEAP=1 also reads glibc's heap of esmd once RSS is read (gdb attaches and calls
malloc_stats(), which prints to esmd's stderr, its log here): the bytes in use (live blocks,
their headers included) and the bytes the heap holds from the system, each as growth per check
like RSS, so that the growth splits into what lives and what is free inside the heap. gdb
stops esmd for a moment. For the live bytes by structure see `bench_engine --share-memory`
(test/bench/checks/bench_engine.cpp).

Env: CONSUL_BIN (default /root/.cache/consul-bin/consul), ESMD_BIN (default
build/release/app/esmd), ESMD_BENCH_CHECKS, ESMD_BENCH_SHAPE ("fat", the default, or "lean"),
ESMD_BENCH_SETTLE (seconds after the last write, default 5), ESMD_BENCH_HEAP ("1": glibc's
heap too), ESMD_BENCH_TRIM ("1": then gdb makes esmd call malloc_trim(0) and VmRSS is read
again). Every process it starts is stopped by its own pid.
"""
import http.server
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy"))
from harness import api, free_ports, rss_kib, stop_pid, wait_for  # noqa: E402

CONSUL_BIN = os.environ.get("CONSUL_BIN") or "/root/.cache/consul-bin/consul"
ESMD_BIN = os.environ.get("ESMD_BIN") or "build/release/app/esmd"
SIZES = [int(x) for x in os.environ.get("ESMD_BENCH_CHECKS", "0 2000 20000").split()]
SETTLE = float(os.environ.get("ESMD_BENCH_SETTLE", "5"))
SHAPE = os.environ.get("ESMD_BENCH_SHAPE", "fat")
HEAP = os.environ.get("ESMD_BENCH_HEAP", "") == "1"
TRIM = os.environ.get("ESMD_BENCH_TRIM", "") == "1"
if SHAPE not in ("fat", "lean"):
    raise SystemExit(f"ESMD_BENCH_SHAPE: {SHAPE!r} is neither fat nor lean")
PER_NODE = 10 if SHAPE == "fat" else 1
INTERVAL = "30s"
WORK = tempfile.mkdtemp(prefix="esmd-mem-")
NOTES = ("Checks the storefront's order API through the regional load balancer; on failure page "
         "the on-call of team checkout (runbook: https://wiki.example.com/runbooks/checkout/api). "
         "Owned by checkout-platform, reviewed quarterly. ") * 2
OUTPUT = ("HTTP GET https://orders.example.com/healthz: 503 Service Unavailable Output: "
          "upstream connect error or disconnect/reset before headers. reset reason: connection "
          "failure, transport failure reason: delayed connect error: 111 (registered by the benchmark)")

class Target:
    """nginx on 127.0.0.1 answering every GET with 200 "ok" (one worker, foreground, its own
    prefix in WORK); a Python server if nginx is missing, which falls behind beyond a few
    thousand checks."""

    def __init__(self):
        self.port = free_ports(1)[0]
        self.proc = None
        self.server = None
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
        if nginx:
            d = os.path.join(WORK, "nginx")
            os.makedirs(d)
            with open(os.path.join(d, "nginx.conf"), "w") as f:
                f.write(f"worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n"
                        f"worker_rlimit_nofile 16384;\nevents {{ worker_connections 8192; }}\n"
                        f"http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n"
                        f"  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n"
                        f"  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n"
                        f"  server {{\n    listen 127.0.0.1:{self.port} backlog=4096;\n"
                        f"    location / {{ default_type text/plain; return 200 \"ok\\n\"; }}\n  }}\n}}\n")
            self.proc = subprocess.Popen([nginx, "-c", f"{d}/nginx.conf", "-p", f"{d}/"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
            wait_for("nginx", self._answers, 10)
            return

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _answers(self):
        if self.proc.poll() is not None:
            raise SystemExit("nginx exited")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def close(self):
        if self.proc:
            stop_pid(self.proc)
        if self.server:
            self.server.shutdown()
            self.server.server_close()


def node_body(n, port):
    if SHAPE == "lean":
        url = f"http://127.0.0.1:{port}/"
        return {"Node": f"mem-{n}", "Address": "127.0.0.1", "NodeMeta": {"external-node": "true"},
                "Checks": [{"CheckID": f"mem-{n}-http", "Name": "http", "Status": "critical",
                            "ServiceID": "", "Output": f"HTTP GET {url}: 503 Service Unavailable",
                            "Definition": {"HTTP": url, "Interval": INTERVAL, "Timeout": "5s"}}]}
    checks = []
    for k in range(PER_NODE):
        checks.append({
            "CheckID": f"mem-{n}-http{k}", "Name": f"orders api {k}", "Status": "critical",
            "ServiceID": "", "Notes": NOTES, "Output": OUTPUT,
            "Definition": {
                "HTTP": f"http://127.0.0.1:{port}/health/{n}/{k}?region=eu-west-1&probe=esmd",
                "Method": "GET", "Interval": INTERVAL, "Timeout": "5s",
                "Header": {"Accept": ["application/json"], "X-Probe": ["esmd-benchmark"],
                           "Authorization": ["Bearer not-a-secret-just-bytes-0123456789"]},
            },
        })
    return {"Node": f"mem-{n}", "Address": "127.0.0.1",
            "NodeMeta": {"external-node": "true", "rack": f"r{n % 40}"}, "Checks": checks}


def rss_split_kib(pid):
    """(RssAnon, RssFile) of `pid` in KiB from /proc/PID/status: the process's own memory and
    the pages of the binary and libraries it has touched (shared, clean, reclaimable), or None."""
    got = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("RssAnon", "RssFile"):
                    got[k] = int(v.split()[0])
    except OSError:
        return None
    return (got["RssAnon"], got["RssFile"]) if len(got) == 2 else None


def register(addr, nodes, port):
    """(Re)registers nodes 0..nodes-1, every check critical with the long Output."""
    for n in range(nodes):
        code, _ = api(addr, "PUT", "/v1/catalog/register", node_body(n, port))
        if code != 200:
            raise SystemExit(f"registering mem-{n}: {code}")


def not_passing(addr):
    code, checks = api(addr, "GET", "/v1/health/state/any", None, 60)
    if code != 200:
        return None
    return sum(1 for c in checks if c["Node"].startswith("mem-") and c["Status"] != "passing")


def heap_bytes(pid, log_path):
    """(system bytes, in use bytes) of glibc's malloc_stats() "Total (incl. mmap)" in esmd,
    or None when gdb is missing or the figures did not show up in its log."""
    gdb = shutil.which("gdb")
    if not gdb:
        return None
    before = os.path.getsize(log_path)
    subprocess.run([gdb, "-p", str(pid), "-batch", "-ex", "call (void)malloc_stats()"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                   timeout=120)
    with open(log_path, "rb") as f:
        f.seek(before)
        text = f.read().decode("utf-8", "replace")
    at = text.rfind("Total (incl. mmap):")
    if at < 0:
        return None
    figures = {}
    for line in text[at:].splitlines()[1:3]:
        key, _, value = line.partition("=")
        figures[key.strip()] = int(value)
    if "system bytes" not in figures or "in use bytes" not in figures:
        return None
    return figures["system bytes"], figures["in use bytes"]


def trimmed_rss(pid):
    """VmRSS of esmd after gdb made it call malloc_trim(0): what the heap's free pages cost,
    or None when gdb is missing."""
    gdb = shutil.which("gdb")
    if not gdb:
        return None
    subprocess.run([gdb, "-p", str(pid), "-batch", "-ex", "call (int)malloc_trim(0)"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                   timeout=120)
    return rss_kib(pid)


def measure(addr, n, port):
    register(addr, n // PER_NODE, port)
    admin = free_ports(1)[0]
    name = f"mem{n}"
    conf = os.path.join(WORK, f"{name}.hcl")
    with open(conf, "w") as f:
        f.write(f'instance_id = "{name}"\nconsul_service = "esm-{name}"\nconsul_kv_path = "bench-mem-{name}/"\n'
                f'http_addr = "{addr}"\nclient_address = "127.0.0.1:{admin}"\nlog_level = "WARN"\n'
                f'batch_flush_interval = "200ms"\n')
    log_path = os.path.join(WORK, f"{name}.log")
    log = open(log_path, "ab")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    started = time.monotonic()
    p = subprocess.Popen([ESMD_BIN, "-config-file", conf], stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    log.close()
    try:
        def status():
            code, st = api(f"127.0.0.1:{admin}", "GET", "/v1/status", None, 10)
            return st if code == 200 else None

        def done():
            st = status()
            if not st or not st.get("ready") or st["share"]["checks"] != n:
                return False
            c = st["checks"]
            if c["by_status"].get("passing", 0) != n or c["in_flight"] or c["queued"]:
                return False
            return not_passing(addr) == 0

        wait_for(f"{n} checks run and written", done, 300 + n / 50, 1.0)
        took = time.monotonic() - started
        time.sleep(SETTLE)
        peak = 0
        for _ in range(5):
            peak = max(peak, rss_kib(p.pid))
            time.sleep(0.5)
        rss = rss_kib(p.pid)
        split = rss_split_kib(p.pid)
        runs = status()["checks"]["runs"]
        heap = heap_bytes(p.pid, log_path) if HEAP else None
        if TRIM:
            print(f"  after malloc_trim(0): VmRSS {trimmed_rss(p.pid)} KiB (before {rss} KiB)", flush=True)
        return rss, peak, took, runs, heap, split
    finally:
        stop_pid(p)


def main():
    http_port, server, lan, wan = free_ports(4)
    addr = f"127.0.0.1:{http_port}"
    consul_log = open(os.path.join(WORK, "consul.log"), "wb")
    consul = subprocess.Popen(
        [CONSUL_BIN, "agent", "-dev", "-node=bench-mem", "-bind=127.0.0.1", "-client=127.0.0.1",
         f"-http-port={http_port}", f"-server-port={server}", f"-serf-lan-port={lan}",
         f"-serf-wan-port={wan}", "-dns-port=-1", "-grpc-port=-1", "-log-level=warn"],
        stdout=consul_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    target = Target()
    try:
        wait_for("a Consul leader", lambda: api(addr, "GET", "/v1/status/leader")[1], 30, 0.5)
        print(f"esmd: {ESMD_BIN}; {SHAPE} shape, {PER_NODE} HTTP check(s) per node, interval {INTERVAL}",
              flush=True)
        base = None
        base_heap = None
        base_split = None
        for n in SIZES:
            rss, peak, took, runs, heap, split = measure(addr, n, target.port)
            if n == 0:
                base = rss
                base_heap = heap
                base_split = split
            line = f"checks {n:6d}: VmRSS {rss:8d} KiB (max of 5 samples {peak} KiB), ready in {took:5.1f} s, runs {runs}"
            if n and base is not None:
                line += f", growth per check {(rss - base) * 1024 / n:7.0f} B"
            print(line, flush=True)
            if split:
                line = f"  VmRSS = RssAnon {split[0]} KiB + RssFile {split[1]} KiB"
                if n and base_split:
                    line += (f"; growth per check: anon {(split[0] - base_split[0]) * 1024 / n:.0f} B, "
                             f"file {(split[1] - base_split[1]) * 1024 / n:.0f} B")
                print(line, flush=True)
            if HEAP:
                if heap is None:
                    print("  glibc heap: not read (gdb missing, or no malloc_stats output)", flush=True)
                    continue
                line = f"  glibc heap: system {heap[0] // 1024} KiB, in use {heap[1] // 1024} KiB"
                if n and base_heap is not None:
                    line += (f"; growth per check: system {(heap[0] - base_heap[0]) / n:.0f} B, "
                             f"in use {(heap[1] - base_heap[1]) / n:.0f} B")
                print(line, flush=True)
    finally:
        target.close()
        stop_pid(consul, signal.SIGTERM, 15)
        consul_log.close()
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
