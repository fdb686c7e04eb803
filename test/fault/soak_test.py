"""The soak: esmd under steady load with flapping targets and leader changes, for a while.

A Consul dev agent; three esmd instances in agent mode; CHECKS checks (default 10 000: 1000
external nodes with 9 TCP checks and 1 HTTP check each, every 10 s, so 1000 runs a second in
all) against targets this test runs: a TCP listener that accepts and closes, and an HTTP
server whose 1000 checks flip every 30 s. Every 90 s the leader's session is destroyed
through the API, so leadership changes without any process restarting. Every instance's
resident memory and open file descriptors are sampled every 10 s.

Asserted: every instance stays up; after the warm-up (the first fifth of the run, at least
2 minutes) the resident memory of the three together grows at most 5 % (median of the first
three samples after the warm-up against the median of the last three; together, because the
leader's state moves with the leadership) and no instance's open descriptors grow (at most 16
more); every flip of the HTTP targets reaches the catalog within interval +
batch_flush_interval + 2 s, except those that start within 20 s of a leadership change; at
least two leadership changes happened; no "already held" in the logs.

ESMD_SOAK_SECONDS sets the length (default 600; 86400 for the 24-hour run),
ESMD_SOAK_CHECKS the number of checks (a multiple of 10). Env: CONSUL_BIN, ESMD_BIN.
"""
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "deploy"))
from harness import FlipTarget, TcpTarget, case, check, env_path, free_ports, run, stop_pid, wait_for  # noqa: E402
from harness import api as harness_api  # noqa: E402

CONSUL_BIN = env_path("CONSUL_BIN")
ESMD_BIN = env_path("ESMD_BIN")
SECONDS = int(os.environ.get("ESMD_SOAK_SECONDS", "600"))
CHECKS = int(os.environ.get("ESMD_SOAK_CHECKS", "10000"))
NODES = CHECKS // 10
INTERVAL = 10
FLUSH = 0.5
FLIP_EVERY = 30
LEADER_EVERY = 90
KV = "soak/"
SERVICE = "esm-soak"
WORK = tempfile.mkdtemp(prefix="esmd-soak-")


def now():
    return time.monotonic()

def api(addr, method, path, body=None, timeout=10):
    return harness_api(addr, method, path, body, timeout)


def proc_sample(pid):
    rss = None
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))

class Soak:
    def __init__(self):
        http, server, lan, wan = free_ports(4)
        self.addr = f"127.0.0.1:{http}"
        self.consul_log = open(os.path.join(WORK, "consul.log"), "wb")
        self.consul = subprocess.Popen(
            [CONSUL_BIN, "agent", "-dev", "-node=soak", "-bind=127.0.0.1", "-client=127.0.0.1",
             f"-http-port={http}", f"-server-port={server}", f"-serf-lan-port={lan}", f"-serf-wan-port={wan}",
             "-dns-port=-1", "-grpc-port=-1", "-log-level=warn"],
            stdout=self.consul_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for("a Consul leader", lambda: api(self.addr, "GET", "/v1/status/leader")[1], 30, 0.5)
        self.tcp = TcpTarget()
        self.http = FlipTarget(NODES)
        self.register()
        self.esmd = []
        for name in "abc":
            admin = free_ports(1)[0]
            conf = os.path.join(WORK, f"{name}.hcl")
            with open(conf, "w") as f:
                f.write(f'instance_id = "{name}"\nconsul_service = "{SERVICE}"\nconsul_kv_path = "{KV}"\n'
                        f'http_addr = "{self.addr}"\nclient_address = "127.0.0.1:{admin}"\n'
                        f'session_ttl = "10s"\nlock_delay = "1s"\nretry_interval = "1s"\n'
                        f'batch_flush_interval = "{int(FLUSH * 1000)}ms"\n')
            log = open(os.path.join(WORK, f"{name}.log"), "ab")
            env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
            p = subprocess.Popen([ESMD_BIN, "-config-file", conf], stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env, start_new_session=True)
            log.close()
            self.esmd.append({"name": name, "proc": p, "admin": f"127.0.0.1:{admin}", "samples": []})

    def register(self):
        for n in range(NODES):
            checks = [{"CheckID": f"tcp{k}", "Name": f"tcp{k}", "Status": "critical",
                       "Definition": {"TCP": f"127.0.0.1:{self.tcp.port}", "Interval": f"{INTERVAL}s",
                                      "Timeout": "2s"}} for k in range(9)]
            checks.append({"CheckID": "http", "Name": "http", "Status": "critical",
                           "Definition": {"HTTP": f"http://127.0.0.1:{self.http.port}/f/{n}",
                                          "Interval": f"{INTERVAL}s", "Timeout": "2s"}})
            body = {"Node": f"soak-{n}", "Address": "127.0.0.1", "NodeMeta": {"external-node": "true"},
                    "Checks": checks}
            code, _ = api(self.addr, "PUT", "/v1/catalog/register", body, 30)
            check(code == 200, f"registering soak-{n}: {code}")

    def states(self, check_filter=None):
        path = "/v1/health/state/any"
        if check_filter:
            path += "?filter=" + urllib.parse.quote(check_filter)
        code, checks = api(self.addr, "GET", path, None, 30)
        check(code == 200, f"health state unreadable ({code})")
        return checks

    def wrong_http(self):
        wrong = 0
        for c in self.states('CheckID == "http"'):  # 1000 of the 10 000: a quick read
            if c["CheckID"] == "http" and c["Node"].startswith("soak-"):
                n = int(c["Node"].split("-")[1])
                if c["Status"] != ("passing" if self.http.up[n] else "critical"):
                    wrong += 1
        return wrong

    def all_passing_tcp(self):
        return all(c["Status"] == "passing" for c in self.states()
                   if c["CheckID"].startswith("tcp") and c["Node"].startswith("soak-"))

    def leader_session(self):
        code, kv = api(self.addr, "GET", f"/v1/kv/{KV}leader")
        return kv[0].get("Session") if code == 200 and kv else None

    def close(self):
        codes = {e["name"]: stop_pid(e["proc"]) for e in self.esmd}
        self.tcp.close()
        self.http.close()
        stop_pid(self.consul, signal.SIGTERM, 15)
        self.consul_log.close()
        return codes


@case
def soak():
    """steady load, flapping targets and leader changes: flat memory, no descriptor growth, no lost flip"""
    s = Soak()
    try:
        wait_for("an esmd leader", s.leader_session, 60, 0.5)
        wait_for(f"all {CHECKS} checks running", s.all_passing_tcp, 120, 0.5)
        t_start = now()
        warm = max(120, SECONDS // 5)
        next_sample = next_flip = next_leader = t_start
        next_leader += LEADER_EVERY
        last_leader_change = -1e9
        flips = late = skipped = leader_changes = 0
        worst = 0.0
        while now() - t_start < SECONDS:
            t = now()
            for e in s.esmd:
                check(e["proc"].poll() is None, f"esmd {e['name']} exited {e['proc'].returncode}")
            if t >= next_sample:
                for e in s.esmd:
                    e["samples"].append((t - t_start,) + proc_sample(e["proc"].pid))
                next_sample += 10
            if t >= next_leader:
                session = s.leader_session()
                if session:
                    api(s.addr, "PUT", f"/v1/session/destroy/{session}")
                    leader_changes += 1
                    last_leader_change = t
                next_leader += LEADER_EVERY
            if t >= next_flip:
                for n in range(NODES):
                    s.http.up[n] = not s.http.up[n]
                flipped = now()
                bound = INTERVAL + FLUSH + 2
                while s.wrong_http() and now() - flipped < 3 * bound:
                    time.sleep(0.5)
                took = now() - flipped
                near_change = abs(flipped - last_leader_change) < 20
                flips += 1
                if near_change:
                    skipped += 1
                else:
                    worst = max(worst, took)
                    if took > bound:
                        late += 1
                        print(f"flip {flips}: {NODES} HTTP checks took {took:.1f} s (bound {bound:.1f} s)",
                              flush=True)
                next_flip = flipped + FLIP_EVERY
            time.sleep(0.5)
        print(f"{SECONDS} s with {CHECKS} checks: {flips} flips of {NODES} HTTP checks (slowest {worst:.1f} s, "
              f"{skipped} near a leader change not timed), {leader_changes} leader sessions destroyed", flush=True)
        check(late == 0, f"{late} flips reached the catalog late")
        check(leader_changes >= 2 or SECONDS < 2 * LEADER_EVERY, f"only {leader_changes} leader changes")
        # Memory is compared for the three together: the leader's state (the watched node and
        # instance lists) moves with the leadership, from one process to another.
        totals = [0, 0]
        for e in s.esmd:
            after = [x for x in e["samples"] if x[0] >= warm]
            check(len(after) >= 6, f"{e['name']}: too few samples after the warm-up")
            rss0 = statistics.median(x[1] for x in after[:3])
            rss1 = statistics.median(x[1] for x in after[-3:])
            totals[0] += rss0
            totals[1] += rss1
            fd0 = max(x[2] for x in after[:3])
            fd1 = max(x[2] for x in after[-3:])
            print(f"{e['name']}: resident {rss0} KiB after the warm-up, {rss1} KiB at the end "
                  f"({(rss1 - rss0) / rss0:+.1%}); descriptors {fd0} -> {fd1}", flush=True)
            check(fd1 <= fd0 + 16, f"{e['name']}: open descriptors grew from {fd0} to {fd1}")
        drift = (totals[1] - totals[0]) / totals[0]
        print(f"all three: resident {totals[0]} KiB after the warm-up, {totals[1]} KiB at the end ({drift:+.1%})")
        check(drift <= 0.05, f"resident memory of the three grew {drift:+.1%}")
        for e in s.esmd:
            text = open(os.path.join(WORK, f"{e['name']}.log"), errors="replace").read()
            check("already held" not in text, f"{e['name']}: 'already held' in its log")
    finally:
        codes = s.close()
    check(all(c == 0 for c in codes.values()), f"exit codes at the end: {codes}")


try:
    run()
finally:
    if os.environ.get("ESMD_SOAK_KEEP"):
        print(f"logs kept in {WORK}")
    else:
        shutil.rmtree(WORK, ignore_errors=True)
