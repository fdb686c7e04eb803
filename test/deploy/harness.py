"""A tiny test harness for the deployment tests (Python scripts run by meson).

Each test case is a function decorated with @case; run() calls them in order and prints
doctest's summary line, which deploy/dev/test counts like the C++ tests':

    [doctest] test cases: N | P passed | F failed | S skipped

A case fails when it raises (an AssertionError from check() or anything else); the
message names the case and what was expected. A case that cannot run here (a tool or an
input is missing) calls skip(reason): it is counted as skipped, not passed. The test command
counts a skipped case as failed, so a missing tool never passes unnoticed. Exit status 1
when any case failed or was skipped.
"""
import os
import signal
import socket
import subprocess
import sys
import time
import traceback

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
