"""A tiny test harness for the Python tests (test/deploy, test/fault) and the Python
benchmarks (test/bench), with the pieces they share: free ports, bounded waits, stopping a
process by its pid, a Consul API call, /proc readings, and the checks' loopback targets.

Each test case is a function decorated with @case; run() calls them in order and prints
doctest's summary line, which deploy/dev/test counts like the C++ tests':

    [doctest] test cases: N | P passed | F failed | S skipped

A case fails when it raises (an AssertionError from check() or anything else); the
message names the case and what was expected. A case that cannot run here (a tool or an
input is missing) calls skip(reason): it is counted as skipped, not passed. The test command
counts a skipped case as failed, so a missing tool never passes unnoticed. Exit status 1
when any case failed or was skipped.
"""
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request

_cases = []


class Skip(Exception):
    """Raised by skip(): the case did not run (what it needs is missing here)."""


def skip(reason):
    """Ends the current case as skipped, with the reason in the log."""
    raise Skip(reason)


def case(fn):
    """Registers fn as a test case, run in the order of definition."""
    _cases.append(fn)
    return fn


def check(cond, message):
    if not cond:
        raise AssertionError(message)


def env_path(name, required=True):
    """An absolute path from the environment (meson sets ESMD_SOURCE_ROOT, ESMD_BIN, ...)."""
    value = os.environ.get(name, "")
    if required and not value:
        raise SystemExit(f"{name} is not set (run through meson test, or set it)")
    return value



# Helpers shared by the Python tests (test/deploy, test/fault).


def free_ports(n, ip="127.0.0.1"):
    """`n` distinct TCP ports free on `ip` a moment ago (the caller binds them soon)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((ip, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(what, fn, timeout, interval=0.2):
    """Polls fn until it returns a true value (returned); fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        check(time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def stop_pid(p, sig=signal.SIGTERM, timeout=10):
    """Stops a process this test started (a subprocess.Popen), by its own pid: `sig`, then
    SIGKILL after `timeout` seconds; its exit code."""
    if p.poll() is None:
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(10)
    return p.returncode


def api(addr, method, path, body=None, timeout=30):
    """One HTTP request to Consul (or esmd's admin server) at `addr`: (status, decoded JSON or
    None); (None, None) when nothing usable answered."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://{addr}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read().decode()
            return r.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        return e.code, None
    except (OSError, ValueError):
        return None, None


def rss_kib(pid):
    """VmRSS of `pid` in KiB, or None (the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid):
    """utime + stime of every thread of `pid`, in seconds (clock-tick resolution)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class TcpTarget:
    """Accepts and closes, on 127.0.0.1: a passing TCP check."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
                c.close()
            except OSError:
                if self.closed:
                    return

    def close(self):
        self.closed = True
        self.sock.close()


class FlipTarget:
    """An HTTP target on `host` whose path `/<any>/<i>` answers 200 "ok" or 500 "down" as
    `up[i]` says: checks the test makes flap."""

    def __init__(self, n, host="127.0.0.1"):
        self.up = [True] * n
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                code = 200 if target.up[int(self.path.rsplit("/", 1)[1])] else 500
                body = b"ok" if code == 200 else b"down"
                try:
                    self.send_response(code)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the prober gave up (its timeout, a stopped or killed esmd)

            def log_message(self, *a):
                pass

        class Server(http.server.ThreadingHTTPServer):
            # An instance runs every overdue check at once (after a pause, at a takeover); with
            # socketserver's backlog of 5 most SYNs would be dropped and the checks time out.
            request_queue_size = 1024

        self.server = Server((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def run(argv=None):
    only = (argv or sys.argv)[1:]
    passed = failed = skipped = 0
    for fn in _cases:
        if only and fn.__name__ not in only:
            continue
        name = (fn.__doc__ or fn.__name__).strip().splitlines()[0]
        print(f"=== {name}", flush=True)
        try:
            fn()
            passed += 1
            print(f"--- ok: {name}", flush=True)
        except Skip as e:
            skipped += 1
            print(f"--- SKIPPED: {name}: {e}", flush=True)
        except BaseException as e:  # noqa: BLE001 - a case's failure of any kind is reported
            if isinstance(e, KeyboardInterrupt):
                raise
            failed += 1
            print(f"--- FAILED: {name}: {e}", flush=True)
            traceback.print_exc(file=sys.stdout)
    total = passed + failed + skipped
    print(f"[doctest] test cases: {total} | {passed} passed | {failed} failed | {skipped} skipped",
          flush=True)
    sys.exit(1 if failed or skipped else 0)
