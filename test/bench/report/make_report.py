#!/usr/bin/python3
"""The benchmark report: runs esmd's benchmarks, keeps their output, draws the plots, writes
report.md (issue 15).

    /usr/bin/python3 test/bench/report/make_report.py            # full run, about 25 minutes
    /usr/bin/python3 test/bench/report/make_report.py --quick    # small N, short windows
    /usr/bin/python3 test/bench/report/make_report.py --from-raw # re-parse raw/, no benchmark run

Runs, each under the benchmark lock (/tmp/esmd-bench.lock, flock(2): two benchmarks never run
at once on this machine) and with a time limit:

  daemon_cpu      test/bench/daemon/bench_daemon_cpu.py --json: the whole esmd's CPU per 1000
                  check runs next to the Consul agent's and wrk's (HTTP and TCP);
  daemon_memory   test/bench/daemon/bench_daemon_memory.py: esmd's RSS growth per check
                  (skipped, and said so, when the script is missing);
  sustained_N     build/release/test/bench/checks/bench_engine --sustained N INTERVAL WINDOW:
                  the engine in-process, schedule lag p50/p99/max, CPU and malloc'd bytes per
                  check;
  failover        build/release/test/bench/bench_failover RUNS 10s 1s;
  control_plane   test/bench/control_plane/bench_control_plane.py --json.

Their output goes to test/bench/report/raw/NAME.txt (JSON ones also to raw/NAME.json); then
cpu.png, memory.png, lag.png, failover.png and report.md in test/bench/report/ (the figures,
the exact commands, the date, the commit). --only NAME... runs some benchmarks and re-parses
the others' raw output. A benchmark whose output lacks the expected lines fails the report
with the benchmark's name and the line expected.

Needs matplotlib for this interpreter (Debian's python3-matplotlib: run it with
/usr/bin/python3), the release build (app/esmd, test/bench/checks/bench_engine,
test/bench/bench_failover), nginx, wrk and a Consul binary (CONSUL_BIN, default
/root/.cache/consul-bin/consul).
"""
import argparse
import datetime
import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
RAW = os.path.join(HERE, "raw")
LOCK = "/tmp/esmd-bench.lock"
BUILD = os.path.join(ROOT, "build", "release")
ESMD = os.environ.get("ESMD_BIN") or os.path.join(BUILD, "app", "esmd")
CONSUL = os.environ.get("CONSUL_BIN") or "/root/.cache/consul-bin/consul"
BENCH_ENGINE = os.path.join(BUILD, "test", "bench", "checks", "bench_engine")
BENCH_FAILOVER = os.path.join(BUILD, "test", "bench", "bench_failover")
PY = sys.executable or "/usr/bin/python3"
CPU_SCRIPT = os.path.join(ROOT, "test", "bench", "daemon", "bench_daemon_cpu.py")
MEM_SCRIPT = os.path.join(ROOT, "test", "bench", "daemon", "bench_daemon_memory.py")
CP_SCRIPT = os.path.join(ROOT, "test", "bench", "control_plane", "bench_control_plane.py")

# The issue-15 targets the report checks.
TARGET_CPU_VS_CONSUL = 0.2
TARGET_CPU_VS_WRK = 2.0
TARGET_LAG_P99_MS = 100
TARGET_BYTES_PER_CHECK = 2048


class ReportError(Exception):
    pass


def rel(path):
    return os.path.relpath(path, ROOT)


# ---------------------------------------------------------------- the plan


def plan(quick):
    """The benchmark runs: name -> (argv, extra env, time limit s, files written besides stdout)."""
    runs = {}
    if quick:
        cpu_args = ["--points", "500:5s", "1000:5s", "--window", "8", "--idle-seconds", "3", "--wrk-seconds", "3"]
    else:
        cpu_args = ["--points", "2000:10s", "10000:5s", "--window", "30", "--idle-seconds", "5",
                    "--wrk-seconds", "10"]
    runs["daemon_cpu"] = ([PY, rel(CPU_SCRIPT), *cpu_args, "--json", rel(os.path.join(RAW, "daemon_cpu.json"))],
                          {}, 900 if quick else 1500, ["daemon_cpu.json"])
    if os.path.exists(MEM_SCRIPT):
        sizes = "0 2000" if quick else "0 2000 20000"
        runs["daemon_memory"] = ([PY, rel(MEM_SCRIPT)], {"ESMD_BENCH_CHECKS": sizes}, 600 if quick else 900, [])
        if not quick and "ESMD_BENCH_SHAPE" in open(MEM_SCRIPT).read():
            runs["daemon_memory_lean"] = ([PY, rel(MEM_SCRIPT)],
                                          {"ESMD_BENCH_CHECKS": sizes, "ESMD_BENCH_SHAPE": "lean"}, 900, [])
    sustained = [(2000, "5s", "10s"), (10000, "5s", "10s")] if quick else \
        [(2000, "10s", "30s"), (20000, "10s", "30s"), (50000, "10s", "30s"), (100000, "10s", "30s")]
    for n, iv, win in sustained:
        runs[f"sustained_{n}"] = ([rel(BENCH_ENGINE), "--sustained", str(n), iv, win], {}, 300, [])
    runs["failover"] = ([rel(BENCH_FAILOVER), "1" if quick else "3", "10s", "1s"], {}, 300 if quick else 600, [])
    # The rebalance phase runs on a fresh Consul with its nodes registered before any esmd starts.
    cp = ["--nodes", "1000", "--instances", "3", "--sample", "50", "--window", "10", "--rebalance-nodes", "5000",
          "--rounds", "1"] \
        if quick else ["--nodes", "10000", "--instances", "5", "--sample", "100", "--window", "30",
                       "--rebalance-nodes", "100000", "--rounds", "3"]
    runs["control_plane"] = ([PY, rel(CP_SCRIPT), *cp, "--json", rel(os.path.join(RAW, "control_plane.json"))],
                             {}, 600 if quick else 1200, ["control_plane.json"])
    return runs


def shown(argv, env):
    """The command as a reader would type it from the repository's root."""
    pre = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    argv = ["/usr/bin/python3" if a == PY else a for a in argv]
    return f"flock {LOCK} env {pre + ' ' if pre else ''}CONSUL_BIN={CONSUL} ESMD_BIN={rel(ESMD)} " + \
        " ".join(shlex.quote(a) for a in argv)


# ---------------------------------------------------------------- running


class LockTimeout(Exception):
    pass


def lock(limit_s):
    """The benchmark lock (the same flock(2) lock flock(1) takes), waited for at most limit_s
    in a blocking flock (queued like flock(1)'s waiters; SIGALRM ends the wait)."""
    f = open(LOCK, "a")

    def expired(signum, frame):
        raise LockTimeout()

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(int(limit_s))
    try:
        fcntl.flock(f, fcntl.LOCK_EX)
        return f
    except LockTimeout:
        f.close()
        raise ReportError(f"{LOCK} still held by another benchmark after {limit_s} s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def descendants(pid):
    """The pids of pid's children, theirs and so on (from /proc/PID/task/TID/children)."""
    out, todo = [], [pid]
    while todo and len(out) < 10000:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tids:
            try:
                kids = [int(k) for k in open(f"/proc/{p}/task/{t}/children").read().split()]
            except (OSError, ValueError):
                continue
            out += kids
            todo += kids
    return out


def stop_tree(p):
    """Stops a benchmark we started and what it started, each by its own pid: SIGINT to the
    benchmark first (the Python benchmarks then stop their processes in their finally blocks;
    the C++ ones die at once), then SIGTERM to whatever of its descendants is left, then
    SIGKILL."""
    kids = descendants(p.pid)
    for sig, wait in ((signal.SIGINT, 60), (signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        if p.poll() is None:
            os.kill(p.pid, sig)
            try:
                p.wait(wait)
            except subprocess.TimeoutExpired:
                pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = [k for k in kids if os.path.exists(f"/proc/{k}")]
        for k in left:
            try:
                os.kill(k, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while left and time.monotonic() < deadline:
            left = [k for k in left if os.path.exists(f"/proc/{k}") and
                    open(f"/proc/{k}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
            time.sleep(0.2)
        if not left:
            break


def run_one(name, argv, env, limit_s):
    """Runs one benchmark under the lock, its output to raw/NAME.txt and to our stdout; the
    benchmark and what it started are stopped if it overruns limit_s or we are interrupted."""
    out_path = os.path.join(RAW, f"{name}.txt")
    full_env = dict(os.environ, CONSUL_BIN=CONSUL, ESMD_BIN=ESMD, **env)
    print(f"\n=== {name}: {' '.join(argv)}", flush=True)
    if os.path.exists(LOCK):
        print(f"    waiting for {LOCK} if another benchmark holds it", flush=True)
    held = lock(3600)
    try:
        t0 = time.monotonic()
        with open(out_path, "w") as out:
            p = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, text=True, errors="replace", start_new_session=True)

            def pump():
                for line in p.stdout:
                    out.write(line)
                    out.flush()
                    sys.stdout.write(f"  | {line}")
                    sys.stdout.flush()

            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
            try:
                p.wait(limit_s)
            except subprocess.TimeoutExpired:
                stop_tree(p)
                reader.join(5)
                raise ReportError(f"{name} overran its limit of {limit_s} s (stopped; output in {rel(out_path)})")
            finally:
                if p.poll() is None:  # our own exception (KeyboardInterrupt): stop it too
                    stop_tree(p)
            reader.join(10)
        took = time.monotonic() - t0
    finally:
        held.close()
    if p.returncode != 0:
        raise ReportError(f"{name} exited with {p.returncode} (output in {rel(out_path)})")
    print(f"=== {name}: done in {took:.0f} s", flush=True)
    return took


# ---------------------------------------------------------------- parsing


def raw_text(name):
    path = os.path.join(RAW, f"{name}.txt")
    if not os.path.exists(path):
        raise ReportError(f"{name}: no raw output {rel(path)} (run it: --only {name})")
    return open(path, errors="replace").read()


def need(name, pattern, text, example, flags=0):
    m = re.search(pattern, text, flags)
    if not m:
        raise ReportError(f"{name}: expected a line like {example!r} in {rel(os.path.join(RAW, name + '.txt'))}")
    return m


def parse_daemon_cpu():
    path = os.path.join(RAW, "daemon_cpu.json")
    raw_text("daemon_cpu")
    if not os.path.exists(path):
        raise ReportError(f"daemon_cpu: no {rel(path)} (bench_daemon_cpu.py --json)")
    d = json.load(open(path))
    if not d.get("rows"):
        raise ReportError(f"daemon_cpu: {rel(path)} has no rows")
    return d


def parse_memory(name):
    text = raw_text(name)
    rows = []
    for m in re.finditer(r"checks\s+(\d+): VmRSS\s+(\d+) KiB.*?(?:growth per check\s+(-?\d+) B)?$", text, re.M):
        n = int(m.group(1))
        if n:
            if m.group(3) is None:
                raise ReportError(f"{name}: the line for {n} checks has no 'growth per check N B'")
            rows.append({"checks": n, "rss_kib": int(m.group(2)), "bytes_per_check": int(m.group(3))})
    if not rows:
        raise ReportError(f"{name}: expected lines like 'checks   2000: VmRSS  51234 KiB ..., growth per check "
                          f"12853 B' in raw/{name}.txt")
    shape = re.search(r"(fat|lean) shape, (\d+) HTTP check", text)
    return {"rows": rows, "shape": shape.group(1) if shape else "fat",
            "per_node": int(shape.group(2)) if shape else 10}


def parse_sustained(name):
    text = raw_text(name)
    head = need(name, r"Sustained: (\d+) HTTP checks, interval ([\d.]+) s, window ([\d.]+) s", text,
                "Sustained: 100000 HTTP checks, interval 10.0 s, window 30.0 s, ...")
    lag = need(name, r"schedule lag over (\d+) runs .*?: p50 (\d+) ms, p99 (\d+) ms, max (\d+) ms", text,
               "  schedule lag over 300000 runs (1 ms buckets, upper bounds): p50 1 ms, p99 10 ms, max 40 ms")
    s = need(name, r"sustained: ([\d.]+) runs/s achieved of ([\d.]+) due per second \(([\d.]+)%\), p99 lag (\d+) ms, "
                   r"CPU ([\d.]+)% of one core, ([\d.]+) CPU-ms/1000 runs, (\d+) B per check", text,
             "sustained: 10000 runs/s achieved of 10000 due per second (100.0%), p99 lag 10 ms, CPU 83.0% of one "
             "core, 82.5 CPU-ms/1000 runs, 1800 B per check")
    return {"checks": int(head.group(1)), "interval_s": float(head.group(2)), "window_s": float(head.group(3)),
            "p50_ms": int(lag.group(2)), "p99_ms": int(lag.group(3)), "max_ms": int(lag.group(4)),
            "runs_per_s": float(s.group(1)), "due_per_s": float(s.group(2)), "core_pct": float(s.group(5)),
            "cpu_ms_per_1000": float(s.group(6)), "bytes_per_check": int(s.group(7))}


def parse_failover():
    name = "failover"
    text = raw_text(name)
    runs = [(int(m.group(1)), m.group(2), float(m.group(3)))
            for m in re.finditer(r"^run (\d+) (SIGTERM|kill -9)\s+failover ([\d.]+) s", text, re.M)]
    if not runs:
        raise ReportError(f"{name}: expected lines like 'run 1 SIGTERM  failover 1.23 s' in raw/{name}.txt")
    med = need(name, r"session_ttl (\S+), lock_delay (\S+), (\d+) runs: median failover after SIGTERM ([\d.]+) s, "
                     r"after kill -9 ([\d.]+) s", text,
               "session_ttl 10s, lock_delay 1s, 5 runs: median failover after SIGTERM 1.10 s, after kill -9 11.5 s")
    return {"runs": runs, "session_ttl": med.group(1), "lock_delay": med.group(2),
            "median_sigterm_s": float(med.group(4)), "median_kill_s": float(med.group(5))}


def parse_control_plane():
    raw_text("control_plane")
    path = os.path.join(RAW, "control_plane.json")
    if not os.path.exists(path):
        raise ReportError(f"control_plane: no {rel(path)} (bench_control_plane.py --json)")
    d = json.load(open(path))
    for key in ("steady", "flip", "new_check"):
        if key not in d:
            raise ReportError(f"control_plane: {rel(path)} has no {key!r} figures")
    return d


# ---------------------------------------------------------------- plots


def duration_s(text):
    m = re.fullmatch(r"([\d.]+)(ms|s|m)", text or "")
    if not m:
        return None
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]



def plots(fig, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import FuncFormatter, NullFormatter

    made = []

    def plain(ax):
        """Log axes labelled 200, 2000, ... rather than 2 x 10^2."""
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() != "log":
                continue
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())

    def save(f, name):
        path = os.path.join(out_dir, name)
        f.tight_layout()
        for ax in f.axes:
            plain(ax)
        f.savefig(path, dpi=110)
        plt.close(f)
        made.append(name)

    cpu = fig["daemon_cpu"]
    sustained = fig["sustained"]
    # cpu.png: CPU per 1000 runs against runs/s, HTTP and TCP side by side
    f, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    for ax, kind in zip(axes, ("http", "tcp")):
        rows = sorted((r for r in cpu["rows"] if r["kind"] == kind), key=lambda r: r["due_per_s"])
        if not rows:
            ax.set_visible(False)
            continue
        x = [r["due_per_s"] for r in rows]
        ax.plot(x, [r["esmd"]["cpu_ms_per_1000"] for r in rows], "o-", color="C0", label="esmd daemon (whole process)")
        if all(r["consul"] for r in rows):
            c = [r["consul"]["cpu_ms_per_1000"] for r in rows]
            ax.plot(x, c, "s-", color="C3", label="Consul agent checks (less idle)")
            ax.plot(x, [v * TARGET_CPU_VS_CONSUL for v in c], ":", color="C3", label="0.2 x Consul (target)")
        if kind == "http":
            if sustained:
                ax.plot([s["due_per_s"] for s in sustained], [s["cpu_ms_per_1000"] for s in sustained], "^--",
                        color="C2", label="esmd engine in-process (bench_engine --sustained)")
            if cpu.get("wrk"):
                w = cpu["wrk"]["cpu_ms_per_1000"]
                ax.axhline(w, color="0.4", ls="--", label=f"wrk -c32, Connection: close ({w:.0f})")
                ax.axhline(w * TARGET_CPU_VS_WRK, color="0.6", ls=":", label="2 x wrk (target at 2000 runs/s)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("check runs per second (due)")
        ax.set_title(f"{kind.upper()} checks")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    axes[0].set_ylabel("CPU-ms per 1000 check runs")
    f.suptitle("CPU per 1000 check runs (shared 2-core VM)", fontsize=11)
    save(f, "cpu.png")

    # memory.png: bytes per check against checks
    f, ax = plt.subplots(figsize=(7.5, 4.6))
    for key, label, marker in (("daemon_memory", "esmd daemon RSS growth, fat checks (bench_daemon_memory)", "o-"),
                               ("daemon_memory_lean", "esmd daemon RSS growth, lean checks (bench_daemon_memory)",
                                "o--")):
        m = fig.get(key)
        if m:
            ax.plot([r["checks"] for r in m["rows"]], [r["bytes_per_check"] for r in m["rows"]], marker, color="C0"
                    if key == "daemon_memory" else "C9", label=label)
    if sustained:
        ax.plot([s["checks"] for s in sustained], [s["bytes_per_check"] for s in sustained], "^-", color="C2",
                label="esmd engine, malloc'd bytes (bench_engine --sustained)")
    for kind, marker in (("http", "s-"), ("tcp", "s--")):
        rows = sorted((r for r in cpu["rows"] if r["kind"] == kind and r["consul"]), key=lambda r: r["checks"])
        if rows:
            ax.plot([r["checks"] for r in rows], [r["consul"]["rss_bytes_per_check"] for r in rows], marker,
                    color="C3", label=f"Consul agent RSS growth, {kind.upper()} agent checks")
    ax.axhline(TARGET_BYTES_PER_CHECK, color="0.5", ls=":", label="2 KiB (target)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("configured checks")
    ax.set_ylabel("bytes per check")
    ax.set_title("Memory per configured check (shared 2-core VM)", fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    save(f, "memory.png")

    # lag.png
    if sustained:
        f, ax = plt.subplots(figsize=(7.5, 4.4))
        x = [s["due_per_s"] for s in sustained]
        for key, label, marker in (("p50_ms", "p50", "o-"), ("p99_ms", "p99", "s-"), ("max_ms", "max", "^--")):
            ax.plot(x, [max(s[key], 0.5) for s in sustained], marker, label=label)
        ax.axhline(TARGET_LAG_P99_MS, color="0.5", ls=":", label="100 ms (p99 target at 10 000 runs/s)")
        for s in sustained:
            ax.annotate(f"{s['runs_per_s']:.0f}/s done", (s["due_per_s"], max(s["max_ms"], 0.5)), fontsize=7,
                        textcoords="offset points", xytext=(-20, 6))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(x)
        ax.set_xlabel("check runs per second due (HTTP checks, engine in-process)")
        ax.set_ylabel("schedule lag, ms (1 ms buckets, upper bounds)")
        ax.set_title("Schedule lag against the rate (bench_engine --sustained, shared 2-core VM)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        save(f, "lag.png")

    # failover.png: a timeline per run, from the signal to the other instance's takeover
    fo = fig.get("failover")
    if fo:
        runs = sorted(fo["runs"], key=lambda r: (r[0], r[1] != "SIGTERM"))
        f, ax = plt.subplots(figsize=(8, 2.2 + 0.38 * len(runs)))
        ys = list(range(len(runs)))[::-1]
        for y, (r, sig, sec) in zip(ys, runs):
            color = "C0" if sig == "SIGTERM" else "C3"
            ax.barh(y, max(sec, 0.05), left=0, height=0.6, color=color, alpha=0.8)
            ax.text(max(sec, 0.05) + 0.2, y, f"{sec:.2f} s", va="center", fontsize=8)
        ax.set_yticks(ys)
        ax.set_yticklabels([f"run {r}, {sig}" for r, sig, _ in runs], fontsize=8)
        ttl, delay = duration_s(fo["session_ttl"]), duration_s(fo["lock_delay"])
        if ttl:
            ax.axvline(ttl, color="0.4", ls="--", lw=1, label=f"session_ttl ({fo['session_ttl']})")
            ax.axvline(2 * ttl + (delay or 0), color="0.6", ls=":", lw=1,
                       label="2 x session_ttl + lock_delay (Consul's bound)")
        ax.set_xlim(0, 1.3 * max([sec for _, _, sec in runs] + [2 * (ttl or 0) + (delay or 0)]))
        ax.set_xlabel("seconds from the signal to the leader until the other esmd holds the lock")
        ax.set_title(f"Leader failover, two esmd: median {fo['median_sigterm_s']:.2f} s after SIGTERM, "
                     f"{fo['median_kill_s']:.2f} s after kill -9 (lock_delay {fo['lock_delay']})", fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="upper right", framealpha=1)
        save(f, "failover.png")
    return made


# ---------------------------------------------------------------- report.md


def git(*args):
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def f1(v, fmt="%.1f"):
    return "-" if v is None else (fmt % v)


def thousands(v):
    return f"{v:,.0f}".replace(",", " ")


def write_report(fig, images, meta, path):
    L = []
    add = L.append
    add("# esmd benchmark report\n")
    wall = f" ({meta['wall_min']:.0f} minutes with the waits for the lock)" if meta["wall_min"] else ""
    add(f"Made by `{meta['command']}` on {meta['date']}: the benchmarks ran for {meta['elapsed_min']:.0f} "
        f"minutes{wall}, mode "
        f"**{meta['mode']}**, at commit `{meta['commit']}`{meta['dirty']}. Release build. All figures are "
        f"from a **shared 2-core VM** ({meta['cpus']} CPUs, load average {meta['load']} at the start) on which "
        f"other builds and tests ran; every benchmark held `{LOCK}` so no two benchmarks ran at once, but the "
        f"absolute numbers are noisy: compare within a run. Raw output of every benchmark is in `raw/`."
        f"{' ' + meta['note'] if meta.get('note') else ''}\n")
    cpu = fig["daemon_cpu"]
    targets = []

    # ---- CPU
    add("## CPU per 1000 check runs\n")
    add("Whole processes, in one run of `bench_daemon_cpu.py` against one loopback nginx on 127.0.0.1-8: "
        "esmd (agentless, one instance, its CPU from /proc over the window, runs counted by nginx), a Consul "
        "agent running the same checks as its own agent checks (less the idle agent's CPU), wrk "
        "(`-t1 -c32 -H 'Connection: close'`, CPU-ms per 1000 requests, HTTP only). Window "
        f"{cpu['window_s']:g} s after one interval.\n")
    add("| kind | checks | interval | runs/s done | esmd | esmd less its idle | Consul agent (less idle) | "
        "Consul gross | wrk | esmd / Consul | esmd / wrk | esmd VmRSS growth per check | Consul VmRSS growth "
        "per check |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    w = cpu["wrk"]["cpu_ms_per_1000"] if cpu.get("wrk") else None
    for r in cpu["rows"]:
        e, c = r["esmd"], r["consul"]
        ec = e["cpu_ms_per_1000"]
        cc = c["cpu_ms_per_1000"] if c else None
        vs_c = ec / cc if ec is not None and cc else None
        vs_w = ec / w if r["kind"] == "http" and ec is not None and w else None
        add(f"| {r['kind'].upper()} | {thousands(r['checks'])} | {r['interval_s']:g} s | {e['runs_per_s']:.0f} | "
            f"{f1(ec)} | {f1(e.get('cpu_ms_per_1000_less_idle'))} | {f1(cc)} | "
            f"{f1(c['cpu_ms_per_1000_gross']) if c else '-'} | {f1(w) if r['kind'] == 'http' else '-'} | "
            f"{f1(vs_c, '%.2f')} | {f1(vs_w, '%.2f')} | {f1(e.get('rss_bytes_per_check'), '%.0f')} B | "
            f"{f1(c['rss_bytes_per_check'], '%.0f') + ' B' if c else '-'} |")
        rate = f"{r['kind'].upper()}, {r['due_per_s']:.0f} runs/s"
        if vs_c is not None:
            targets.append((f"esmd CPU at most 0.2 x the Consul agent's, {rate}", f"{vs_c:.2f}",
                            vs_c <= TARGET_CPU_VS_CONSUL))
        if vs_w is not None and r["due_per_s"] >= 2000:
            targets.append((f"esmd CPU within 2 x wrk's, {rate}", f"{vs_w:.2f}", vs_w <= TARGET_CPU_VS_WRK))
    add("")
    idle = [r["esmd"].get("idle_cpu_ms_per_s") for r in cpu["rows"]]
    add(f"Idle esmd (no checks yet, same process, before the registration): "
        f"{', '.join(f1(v) for v in idle)} CPU-ms/s. The Consul figure is the dev agent's CPU less its idle "
        "CPU (a dev agent is also a server); esmd's is the whole daemon with nothing taken off. esmd's VmRSS "
        "growth here is measured while the checks run (buffers of probes in flight included), not the "
        "settled figure of the memory benchmark. "
        f"esmd's own run counter agreed with nginx's: "
        f"{', '.join(str(r['esmd'].get('runs_esmd_counted')) + '/' + str(r['esmd']['runs']) for r in cpu['rows'])}"
        ".\n")
    sustained = fig["sustained"]
    if sustained:
        add("Engine in-process (`bench_engine --sustained`, HTTP, 8 addresses, max_concurrent 1024): " +
            "; ".join(f"{s['due_per_s']:.0f} runs/s: {s['cpu_ms_per_1000']:.1f} CPU-ms/1000 runs "
                      f"({s['core_pct']:.0f} % of a core)" for s in sustained) + ".\n")
    if "cpu.png" in images:
        add("![CPU per 1000 runs](cpu.png)\n")

    # ---- memory
    add("## Memory per configured check\n")
    add("| source | checks | bytes per check |")
    add("|---|---|---|")
    for key, label in (("daemon_memory", "esmd daemon, VmRSS growth, 10 fat HTTP checks per node "
                                         "(bench_daemon_memory.py)"),
                       ("daemon_memory_lean", "esmd daemon, VmRSS growth, 1 lean HTTP check per node "
                                              "(bench_daemon_memory.py, ESMD_BENCH_SHAPE=lean)")):
        m = fig.get(key)
        if m:
            for r in m["rows"]:
                add(f"| {label} | {thousands(r['checks'])} | {thousands(r['bytes_per_check'])} |")
                targets.append((f"memory at most 2 KiB per check, esmd daemon, {m['shape']} checks, "
                                f"{thousands(r['checks'])}", f"{thousands(r['bytes_per_check'])} B",
                                r["bytes_per_check"] <= TARGET_BYTES_PER_CHECK))
    for s in sustained:
        add(f"| esmd engine in-process, malloc'd bytes (bench_engine --sustained) | {thousands(s['checks'])} | "
            f"{thousands(s['bytes_per_check'])} |")
    for r in cpu["rows"]:
        if r["consul"]:
            add(f"| Consul agent, VmRSS growth one interval after registering {r['kind'].upper()} agent checks "
                f"(bench_daemon_cpu.py) | {thousands(r['checks'])} | {thousands(r['consul']['rss_bytes_per_check'])} |")
    add("")
    if not fig.get("daemon_memory"):
        add(f"The whole daemon's memory was not measured in this run: {meta.get('memory_note', 'skipped')}.\n")
    if "memory.png" in images:
        add("![Memory per check](memory.png)\n")

    # ---- lag
    add("## Schedule lag against the rate\n")
    if sustained:
        add("`bench_engine --sustained N INTERVAL WINDOW`: N HTTP checks on esmd's engine in-process (no Consul), "
            "lag from due time to start of each run, 1 ms buckets (upper bounds).\n")
        add("| checks | interval | runs/s due | runs/s done | p50 | p99 | max | CPU-ms/1000 runs | CPU of one core |")
        add("|---|---|---|---|---|---|---|---|---|")
        for s in sustained:
            add(f"| {thousands(s['checks'])} | {s['interval_s']:g} s | {s['due_per_s']:.0f} | {s['runs_per_s']:.0f} | "
                f"{s['p50_ms']} ms | {s['p99_ms']} ms | {s['max_ms']} ms | {s['cpu_ms_per_1000']:.1f} | "
                f"{s['core_pct']:.0f} % |")
        top = max(sustained, key=lambda s: s["due_per_s"])
        if top["due_per_s"] >= 10000:
            targets.append(("p99 schedule lag under 100 ms at 10 000 runs/s", f"{top['p99_ms']} ms "
                            f"({top['runs_per_s']:.0f} runs/s done)", top["p99_ms"] < TARGET_LAG_P99_MS))
        add("")
    if "lag.png" in images:
        add("![Schedule lag](lag.png)\n")

    # ---- failover
    fo = fig.get("failover")
    add("## Leader failover\n")
    if fo:
        add(f"`bench_failover`: two esmd on a Consul dev agent, the leader stopped, seconds until the other "
            f"logs `Obtained leadership`; session_ttl {fo['session_ttl']}, lock_delay {fo['lock_delay']}.\n")
        add("| run | after SIGTERM | after kill -9 |")
        add("|---|---|---|")
        by_run = {}
        for r, k, s in fo["runs"]:
            by_run.setdefault(r, {})[k] = s
        for r in sorted(by_run):
            add(f"| {r} | {f1(by_run[r].get('SIGTERM'), '%.2f')} s | {f1(by_run[r].get('kill -9'), '%.2f')} s |")
        add(f"| median | {fo['median_sigterm_s']:.2f} s | {fo['median_kill_s']:.2f} s |\n")
    if "failover.png" in images:
        add("![Failover](failover.png)\n")

    # ---- control plane
    cp = fig.get("control_plane")
    add("## Control plane\n")
    if cp:
        st = cp["steady"]
        add(f"`bench_control_plane.py`: {cp['instances']} agentless esmd sharing {thousands(cp['nodes'])} external "
            f"nodes (one TCP check each at 30 s, {cp['sample']} HTTP checks at 5 s), one Consul dev agent; steady "
            f"state over {st['window_s']:.0f} s.\n")
        add("| instance | leader | Consul requests/min | CPU-s/min | RSS KiB |")
        add("|---|---|---|---|---|")
        for r in st["instances"]:
            add(f"| {r['instance']} | {'yes' if r['leader'] else ''} | {r['requests_per_min']:.1f} | "
                f"{r['cpu_s_per_min']:.2f} | {r['rss_kib']} |")
        add("")
        add("| event | count | p50 | p95 | max |")
        add("|---|---|---|---|---|")
        for key, label in (("flip", f"{cp['sample']} HTTP targets switched: new status in the catalog"),
                           ("new_check", f"{cp['sample']} new HTTP checks registered: passing in the catalog")):
            v = cp[key]
            add(f"| {label} | {v['count']} | {v['p50']:.2f} s | {v['p95']:.2f} s | {v['max']:.2f} s |")
        add("")
        rb = cp.get("rebalance")
        if rb and "summary" in rb:
            sm = rb["summary"]

            def mm(k, f="{:.2f}"):
                v = sm.get(k)
                return f"{f.format(v['median'])} [{f.format(v['min'])} - {f.format(v['max'])}]" if v else "-"
            add(f"Rebalance at {thousands(rb['nodes'])} nodes (fresh Consul, nodes registered before any esmd), "
                f"{len(rb['rounds'])} rebalances, one instance leaving (SIGTERM) or joining "
                f"{rb['instances'] - 1} <-> {rb['instances']} instances; median [min - max]:\n")
            add("| figure | value |")
            add("|---|---|")
            for k, label, f in (("wall_s", "trigger to the leader's write, s", "{:.2f}"),
                                ("from_membership_s", "membership change seen in Consul to the write, s", "{:.2f}"),
                                ("leader_cpu_s", "leader CPU, s", "{:.2f}"), ("txns", "leader transactions", "{:.0f}"),
                                ("txn_bytes", "leader transaction bytes", "{:.0f}"),
                                ("requests", "leader requests to Consul", "{:.0f}"),
                                ("leader_rss_peak_kib", "leader RSS peak, KiB", "{:.0f}"),
                                ("pickup_s", "trigger to every share picked up, s", "{:.2f}"),
                                ("moved", "nodes moved", "{:.0f}"), ("consul_cpu_s", "Consul CPU, s", "{:.2f}"),
                                ("consul_rss_peak_kib", "Consul RSS peak, KiB", "{:.0f}")):
                add(f"| {label} | {mm(k, f)} |")
            add("")
        else:
            add("No rebalance figures in this run.\n")
        add("(No plot: a handful of numbers, the tables say it.)\n")

    # ---- targets
    add("## Issue 15 targets\n")
    add("| target | measured | met |")
    add("|---|---|---|")
    for what, value, ok in targets:
        add(f"| {what} | {value} | {'yes' if ok else '**no**'} |")
    add("")

    if meta["failed"]:
        add("## Not measured in this run\n")
        for n, m in meta["failed"].items():
            add(f"- {n}: {m}")
        add("")

    # ---- commands
    add("## Commands\n")
    add("Each run as below, from the repository's root (make_report.py takes the lock itself, as flock(1) "
        "does):\n")
    add("```")
    for name, cmd, took in meta["commands"]:
        state = " (failed)" if name in meta["failed"] else \
            f" ({took:.0f} s)" if took is not None else " (not re-run: parsed from raw/)"
        add(f"# {name}{state}")
        add(cmd)
    add("```\n")
    open(path, "w").write("\n".join(L))
    return targets


# ---------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small N and short windows (a few minutes)")
    p.add_argument("--from-raw", action="store_true", help="run nothing: parse raw/ and remake plots and report")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks, parse the others from raw/")
    p.add_argument("--out", default=HERE, help="where the PNGs and report.md go (default test/bench/report)")
    args = p.parse_args()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit(f"matplotlib is not installed for {sys.executable}: run this with /usr/bin/python3 "
                         "(Debian's python3-matplotlib)")
    os.makedirs(RAW, exist_ok=True)
    runs = plan(args.quick)
    if args.only:
        unknown = [n for n in args.only if n not in runs]
        if unknown:
            p.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(runs)}")
    todo = [] if args.from_raw else [n for n in runs if not args.only or n in args.only]
    if todo:
        for what, path in (("esmd", ESMD), ("bench_engine", BENCH_ENGINE), ("bench_failover", BENCH_FAILOVER),
                           ("Consul", CONSUL)):
            if not os.access(path, os.X_OK):
                raise SystemExit(f"{what} not found at {path} (flock /tmp/esmd-build.lock ninja -C build/release "
                                 "app/esmd test/bench/checks/bench_engine test/bench/bench_failover)")
    meta_path = os.path.join(RAW, "meta.json")
    old_meta = json.load(open(meta_path)) if os.path.exists(meta_path) else {}
    took = dict(old_meta.get("took", {}))
    t0 = time.monotonic()
    load = open("/proc/loadavg").read().split()[:3]
    commit = git("rev-parse", "--short", "HEAD")  # at the start: the binaries were built before
    dirty = git("status", "--short", "--untracked-files=no").splitlines()
    failed = {n: m for n, m in old_meta.get("failed", {}).items() if n in runs and n not in todo}
    try:
        for name in todo:
            argv, env, limit, _ = runs[name]
            try:
                took[name] = run_one(name, argv, env, limit)
            except ReportError as e:  # the others still run; the report says what is missing
                print(f"make_report: {e}", flush=True)
                failed[name] = str(e)
    except KeyboardInterrupt:
        raise SystemExit("make_report: interrupted")
    wall = time.monotonic() - t0
    mode = "quick" if args.quick else "full"
    if todo:
        meta_store = {"mode": mode, "took": took, "elapsed_s": sum(took.get(n, 0) for n in runs),
                      "wall_s": wall if len(todo) == len(runs) else None,
                      "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                      "commit": commit, "load": " ".join(load), "dirty": dirty, "failed": failed}
        json.dump(meta_store, open(meta_path, "w"), indent=1)
    else:
        meta_store = old_meta
        if not meta_store:
            raise SystemExit("make_report: raw/meta.json is missing: run the benchmarks first")

    if "daemon_cpu" in failed:
        raise SystemExit(f"make_report: no report without daemon_cpu: {failed['daemon_cpu']}")

    def ok(name):
        return name in runs and name not in failed

    try:
        fig = {"daemon_cpu": parse_daemon_cpu(),
               "sustained": sorted((parse_sustained(n) for n in runs if n.startswith("sustained_") and ok(n)),
                                   key=lambda s: s["due_per_s"]),
               "failover": parse_failover() if ok("failover") else None,
               "control_plane": parse_control_plane() if ok("control_plane") else None}
        memory_note = None
        if ok("daemon_memory"):
            fig["daemon_memory"] = parse_memory("daemon_memory")
        elif "daemon_memory" in failed:
            memory_note = failed["daemon_memory"]
        else:
            memory_note = f"{rel(MEM_SCRIPT)} is not there"
        if ok("daemon_memory_lean"):
            fig["daemon_memory_lean"] = parse_memory("daemon_memory_lean")
    except ReportError as e:
        raise SystemExit(f"make_report: {e}")

    images = plots(fig, args.out)
    dirty = meta_store.get("dirty") or []
    quick = meta_store["mode"] == "quick"
    meta = {"command": "/usr/bin/python3 test/bench/report/make_report.py" + (" --quick" if quick else ""),
            "date": meta_store["date"], "elapsed_min": meta_store["elapsed_s"] / 60,
            "wall_min": (meta_store.get("wall_s") or 0) / 60, "mode": meta_store["mode"],
            "commit": meta_store["commit"], "cpus": os.cpu_count(), "load": meta_store["load"],
            "dirty": (f" with {len(dirty)} files modified in the working tree by concurrent work "
                      f"({', '.join(d.split()[-1] for d in dirty[:8])}{', ...' if len(dirty) > 8 else ''}), "
                      "built into the binaries measured") if dirty else "",
            "memory_note": memory_note, "failed": failed, "note": meta_store.get("note"),
            "commands": [(n, shown(runs[n][0], runs[n][1]), took.get(n) if n in todo else None) for n in runs]}
    if args.from_raw and quick != args.quick:
        raise SystemExit(f"make_report: raw/ holds a {meta_store['mode']} run: pass --quick accordingly")
    targets = write_report(fig, images, meta, os.path.join(args.out, "report.md"))
    print(f"\nreport: {rel(os.path.join(args.out, 'report.md'))}; plots: {', '.join(images)}")
    for what, value, met in targets:
        print(f"  {'met    ' if met else 'NOT met'}  {what}: {value}")
    if failed:
        raise SystemExit("make_report: the report lacks " + "; ".join(f"{n} ({m})" for n, m in failed.items()))


if __name__ == "__main__":
    main()
