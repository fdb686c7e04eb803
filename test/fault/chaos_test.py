"""The chaos suite: three esmd processes on a three-server Consul cluster, under faults.

Consul servers on 127.0.0.2, .3 and .4 (raft_multiplier 1) and a client agent on 127.0.0.5;
three esmd instances, each in a network namespace of its own that this test makes (a veth
pair: 10.231.K.2 inside, 10.231.K.1 and the shared 10.231.0.1 on the host side), each talking
to Consul through its own TCP proxy on 10.231.K.1: a and b are agentless and their proxies
lead to one server each, as behind a load balancer; c runs in agent mode and its proxy leads
to the client agent. NODES external nodes with one HTTP check each against a target this test
runs on 10.231.0.1 (its answers switched by the test to make checks flap). An observer samples
every instance's /v1/status all along. Faults, one after the other, each followed by a wait
for the invariants:

  consul-leader-kill   the Consul leader server killed (SIGKILL), restarted 3 s later
  consul-follower      a follower server restarted
  partition-short      the esmd leader's path to Consul cut silently for session_ttl / 2, then
                       healed: nftables in its namespace drops every packet to and from its
                       proxy, so connections stay open and nothing arrives
  partition-long       the same for 2.5 x session_ttl: it steps down, another takes over
  degraded             for 2.5 x session_ttl the esmd leader's path gets DELAY s more each
                       way (in its proxy) and LOSS % of the packets from its proxy dropped at
                       random (nftables in its namespace): it keeps leading, and flaps still
                       reach the catalog (time printed, bound FLAP_BOUND + 3 s)
  pause                the esmd leader stopped with SIGSTOP for 2.5 x session_ttl, resumed
  kill-restart         the esmd leader killed with SIGKILL, restarted once with its instance_id:
                       it waits for its old registration's liveness to lapse, then takes over
  term-during-burst    every check flips, and the esmd leader gets SIGTERM at once

The kernel this suite was written on has no sch_netem (`tc qdisc add ... netem` says
"Specified qdisc kind is unknown"), so the added latency is the proxy's, per chunk of bytes;
the loss is real packet loss, which TCP has to retransmit.

Invariants, asserted:
  - never two instances saying they lead in the same observer round;
  - no assignment written by an instance between its "Lost leadership" and its next
    "Obtained leadership" (and none by the paused leader after it resumed);
  - after each fault, within 2 x session_ttl + lock_delay + 5 s, every external node is
    assigned to exactly one live, healthy instance;
  - outside fault windows every flap reaches the catalog within interval +
    batch_flush_interval + 2 s; after the SIGTERM burst every check ends in its target's
    state (no status change lost across the handover);
  - no "already held" in any log; no esmd process ends unless the test ended it; resident
    memory of each instance within 1.5 x (+16 MiB) of its size after warm-up.
It prints a timeline per fault: detection (the old leader's "Lost leadership"), takeover
(the next "Obtained leadership"), the new leader's first assignment write, coverage.

ESMD_CHAOS_ROUNDS=N repeats the fault sequence N times (default 1: about 6 minutes);
ESMD_CHAOS_NODES sets the number of external nodes (default 200). Needs root (network
namespaces), iproute2 and nftables.
Env: CONSUL_BIN, ESMD_BIN, ESMD_SOURCE_ROOT (meson sets them).
"""
import base64
import datetime
import json
import os
import queue
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "deploy"))
from harness import FlipTarget, case, rss_kib, check, env_path, run, stop_pid, wait_for  # noqa: E402

CONSUL_BIN = env_path("CONSUL_BIN")
ESMD_BIN = env_path("ESMD_BIN")
NODES = int(os.environ.get("ESMD_CHAOS_NODES", "200"))
ROUNDS = int(os.environ.get("ESMD_CHAOS_ROUNDS", "1"))
SESSION_TTL = 10
LOCK_DELAY = 1
COVER_BOUND = 2 * SESSION_TTL + LOCK_DELAY + 5
CHECK_INTERVAL = 2
FLUSH = 0.5
FLAP_BOUND = CHECK_INTERVAL + FLUSH + 2
KV = "chaos/"
SERVICE = "esm-chaos"
IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
AGENT_IP = "127.0.0.5"
SHARED_IP = "10.231.0.1"  # the host side of every namespace's veth: the checks' target
ADMIN_PORT = 9100  # inside each namespace (a port space of its own)
DELAY = 0.15
LOSS = 10
NS_PREFIX = "esmd-chaos-"
WORK = tempfile.mkdtemp(prefix="esmd-chaos-")


def now():
    return time.time()


def get_json(addr, path, timeout=2):
    try:
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=timeout) as r:
            return r.status, json.loads(r.read().decode() or "null")
    except urllib.error.HTTPError as e:
        return e.code, None
    except (OSError, ValueError):
        return None, None


def put(addr, path, body, timeout=5):
    req = urllib.request.Request(f"http://{addr}{path}", data=json.dumps(body).encode(), method="PUT")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status


def free_port_on_all(ips, count):
    """`count` ports free on every address in `ips`."""
    while True:
        socks, ports = [], []
        try:
            for _ in range(count):
                s = socket.socket()
                s.bind((ips[0], 0))
                socks.append(s)
                ports.append(s.getsockname()[1])
            ok = True
            for ip in ips[1:]:
                for p in ports:
                    t = socket.socket()
                    try:
                        t.bind((ip, p))
                    except OSError:
                        ok = False
                    finally:
                        t.close()
            if ok:
                return ports
        finally:
            for s in socks:
                s.close()


class Server:
    """A Consul server (i 0-2, on IPS[i]) or, with i 3, the client agent on AGENT_IP."""

    def __init__(self, i, ports):
        self.i = i
        self.ip = IPS[i] if i < 3 else AGENT_IP
        self.http, server, lan, wan = ports
        self.addr = f"{self.ip}:{self.http}"
        data = os.path.join(WORK, f"s{i}")
        os.makedirs(data, exist_ok=True)
        role = ["-server", "-bootstrap-expect=3", f"-node=s{i}"] if i < 3 else ["-node=agent"]
        self.args = [CONSUL_BIN, "agent"] + role + [
                     f"-bind={self.ip}", f"-advertise={self.ip}", f"-client={self.ip}", f"-data-dir={data}",
                     "-retry-interval=1s", "-disable-host-node-id", "-log-level=warn",
                     "-hcl=performance{raft_multiplier=1}", f"-http-port={self.http}",
                     f"-server-port={server}", f"-serf-lan-port={lan}", f"-serf-wan-port={wan}",
                     "-dns-port=-1", "-grpc-port=-1"] + [f"-retry-join={ip}:{lan}" for ip in IPS]
        self.proc = None
        self.start()

    def start(self):
        log = open(os.path.join(WORK, f"s{self.i}.log"), "ab")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()

    def kill(self):
        stop_pid(self.proc, signal.SIGKILL)

    def stop(self):
        stop_pid(self.proc, signal.SIGTERM, 15)

    def leader(self):
        code, body = get_json(self.addr, "/v1/status/leader", 1)
        return body if code == 200 and body else None


class Cluster:
    def __init__(self):
        ports = free_port_on_all(IPS + [AGENT_IP], 4)
        self.servers, self.agent = [], None
        try:
            for i in range(3):
                self.servers.append(Server(i, ports))
            self.agent = Server(3, ports)
            self.wait_leader(60)
            wait_for("the client agent to join", lambda: self.agent.leader(), 60)
        except BaseException:
            self.close()
            raise

    def running(self):
        return [s for s in self.servers if s.proc.poll() is None]

    def wait_leader(self, timeout):
        end = now() + timeout
        while now() < end:
            for s in self.running():
                if s.leader():
                    return s.leader()
            time.sleep(0.2)
        raise AssertionError(f"the Consul cluster has no leader after {timeout} s (logs in {WORK})")

    def leader_index(self):
        for s in self.running():
            lead = s.leader()
            if lead:
                ip = lead.split(":")[0]
                return IPS.index(ip) if ip in IPS else None
        return None

    def any_addr(self):
        for s in self.running():
            if s.leader():
                return s.addr
        return self.running()[0].addr

    def close(self):
        if self.agent:
            self.agent.stop()
        for s in self.servers:
            s.stop()


class Netns:
    """A network namespace this test makes for one esmd instance: a veth pair, 10.231.K.2 inside
    and 10.231.K.1 plus SHARED_IP on the host side, and an nftables table inside whose rules
    drop packets between the instance and its proxy (10.231.K.1:port) only: the observer's and
    the checks' traffic stays untouched."""

    def __init__(self, k):
        self.k = k
        self.name = f"{NS_PREFIX}{os.getpid()}-{k}"
        self.host_if, self.ns_if = f"ec{os.getpid() % 100000}h{k}", f"ec{os.getpid() % 100000}n{k}"
        self.host_ip, self.ns_ip = f"10.231.{k}.1", f"10.231.{k}.2"
        try:
            self._make()
        except BaseException:
            self.close()
            raise

    def _make(self):
        sh = self.sh
        sh("ip", "netns", "add", self.name)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        sh("ip", "link", "set", self.ns_if, "netns", self.name)
        sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        sh("ip", "addr", "add", f"{SHARED_IP}/32", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        self.ns("ip", "link", "set", "lo", "up")
        self.ns("ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
        self.ns("ip", "link", "set", self.ns_if, "up")
        self.ns("ip", "route", "add", f"{SHARED_IP}/32", "dev", self.ns_if, "src", self.ns_ip)
        self.ns("nft", "add table inet chaos; "
                "add chain inet chaos inbound { type filter hook input priority 0; policy accept; }; "
                "add chain inet chaos outbound { type filter hook output priority 0; policy accept; }")

    @staticmethod
    def sh(*args):
        r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        check(r.returncode == 0, f"{' '.join(args)}: {r.stdout.strip()}")

    def ns(self, *args):
        self.sh("ip", "netns", "exec", self.name, *args)

    def cut(self, port):
        """A silent partition: every packet to and from the proxy dropped; sockets stay open."""
        self.ns("nft", f"add rule inet chaos inbound ip saddr {self.host_ip} tcp sport {port} drop; "
                       f"add rule inet chaos outbound ip daddr {self.host_ip} tcp dport {port} drop")

    def lossy(self, port, percent):
        """`percent` % of the packets from the proxy dropped at random (TCP retransmits them)."""
        self.ns("nft", f"add rule inet chaos inbound ip saddr {self.host_ip} tcp sport {port} "
                       f"numgen random mod 100 < {percent} drop")

    def heal(self):
        self.ns("nft", "flush chain inet chaos inbound; flush chain inet chaos outbound")

    def close(self):
        # Deleting the namespace deletes its end of the veth, and with it the host end (deleted
        # by itself too, for a pair that never reached the namespace).
        subprocess.run(["ip", "netns", "del", self.name], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "link", "del", self.host_if], stderr=subprocess.DEVNULL)

    @staticmethod
    def remove_stale():
        """Namespaces of earlier runs whose process is gone (a run killed before its clean-up)."""
        r = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE, text=True)
        for line in r.stdout.splitlines():
            name = line.split()[0] if line.split() else ""
            m = re.match(re.escape(NS_PREFIX) + r"(\d+)-\d+$", name)
            if m and not os.path.exists(f"/proc/{m.group(1)}"):
                subprocess.run(["ip", "netns", "del", name], stderr=subprocess.DEVNULL)


class Proxy:
    """A TCP proxy on `listen_ip` in front of one Consul agent (as a load balancer would be).
    `delay` seconds are added to each direction: every chunk read is sent `delay` after it
    was read, in order."""

    def __init__(self, listen_ip, target):
        self.target = target
        self.delay = 0.0
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((listen_ip, 0))
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        host, port = self.target.rsplit(":", 1)
        try:
            s = socket.create_connection((host, int(port)), timeout=5)
        except OSError:
            c.close()
            return
        s.settimeout(None)
        done = threading.Event()
        for src, dst in ((c, s), (s, c)):
            threading.Thread(target=self._pump, args=(src, dst, done), daemon=True).start()
        done.wait()
        for sock in (c, s):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _pump(self, src, dst, done):
        """Reads src, queues (read time, bytes); a writer sends each `delay` after its read."""
        q = queue.Queue()

        def writer():
            try:
                while True:
                    t, data = q.get()
                    if data is None:
                        return
                    wait = t + self.delay - now()
                    if wait > 0:
                        time.sleep(wait)
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                done.set()

        w = threading.Thread(target=writer, daemon=True)
        w.start()
        try:
            while not self.closed and not done.is_set():
                ready, _, _ = select.select([src], [], [], 0.2)
                if not ready:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                q.put((now(), data))
        except (OSError, ValueError):  # ValueError: select on a socket _serve closed meanwhile
            pass
        finally:
            q.put((now(), None))
            w.join()

    def close(self):
        self.closed = True
        self.listener.close()

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z \[(\w+)\] +esmd: (.*)$")


class Esmd:
    """One esmd in its own namespace `ns`, talking to Consul through `proxy` (agentless, or in
    agent mode through the client agent behind it); its admin server on the namespace's
    address."""

    def __init__(self, name, ns, proxy, agentless=True):
        self.name, self.ns, self.proxy, self.agentless = name, ns, proxy, agentless
        self.addr = f"{ns.ns_ip}:{ADMIN_PORT}"
        self.conf = os.path.join(WORK, f"esmd-{name}.hcl")
        with open(self.conf, "w") as f:
            f.write(f'enable_agentless = {"true" if agentless else "false"}\ninstance_id = "{name}"\n'
                    f'consul_service = "{SERVICE}"\n'
                    f'consul_kv_path = "{KV}"\nhttp_addr = "{ns.host_ip}:{proxy.port}"\n'
                    f'client_address = "{self.addr}"\nsession_ttl = "{SESSION_TTL}s"\n'
                    f'lock_delay = "{LOCK_DELAY}s"\nretry_interval = "1s"\nbatch_flush_interval = "{int(FLUSH * 1000)}ms"\n'
                    f'blocking_query_wait = "10s"\ninstance_deregister_after = "30s"\n')
        self.log_path = os.path.join(WORK, f"esmd-{name}.log")
        self.proc = None
        self.paused = False
        self.resumed_at = 0.0
        self.expected_exit = False
        self.start()

    def start(self):
        log = open(self.log_path, "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
        # `ip netns exec` execs the program in place: the pid is esmd's own.
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns.name, ESMD_BIN, "-config-file", self.conf],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                     start_new_session=True)
        log.close()
        self.expected_exit = False

    def alive(self):
        return self.proc.poll() is None

    def status(self):
        code, body = get_json(self.addr, "/v1/status", 0.5)
        return body if code == 200 else None

    def rss_kib(self):
        return rss_kib(self.proc.pid)

    def lines(self):
        """(epoch seconds, level, message) of every log line so far."""
        out = []
        with open(self.log_path, errors="replace") as f:
            for raw in f:
                m = LOG_LINE.match(raw.rstrip("\n"))
                if m:
                    t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f")
                    out.append((t.replace(tzinfo=datetime.timezone.utc).timestamp(), m.group(2), m.group(3)))
        return out

    def signal(self, sig):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def close(self):
        if self.paused:
            self.signal(signal.SIGCONT)
        self.expected_exit = True
        return stop_pid(self.proc, signal.SIGTERM, 10)


class Observer(threading.Thread):
    """Samples every instance's /v1/status every 100 ms: leader overlaps, unexpected exits."""

    def __init__(self, instances):
        super().__init__(daemon=True)
        self.instances = instances
        self.overlaps = []
        self.crashes = []
        self.stopped = threading.Event()
        self.rounds = 0

    def run(self):
        while not self.stopped.is_set():
            leaders = []
            for e in self.instances:
                if not e.alive():
                    if not e.expected_exit and e.name not in [c[0] for c in self.crashes]:
                        self.crashes.append((e.name, e.proc.returncode, now()))
                    continue
                if e.paused or now() - e.resumed_at < 1.0:
                    # A stopped process acts on nothing and answers nothing; in the first
                    # second after SIGCONT its status may still say "leader" before its
                    # election has run (it writes nothing then: checked from its log).
                    continue
                st = e.status()
                if st and st.get("leader"):
                    leaders.append(e.name)
            if len(leaders) > 1:
                self.overlaps.append((now(), leaders))
            self.rounds += 1
            time.sleep(0.1)


class Chaos:
    def __init__(self, namespaces):
        self.namespaces = namespaces
        self.cluster, self.targets, self.observer = None, None, None
        self.proxies, self.esmd = [], []
        self.timeline = []
        self.baseline_rss = {}
        try:
            self.cluster = Cluster()
            self.targets = FlipTarget(NODES, SHARED_IP)
            self.register_nodes()
            # a and b agentless, each behind a proxy to one server; c in agent mode, behind a
            # proxy to the client agent.
            upstream = [self.cluster.servers[0].addr, self.cluster.servers[1].addr, self.cluster.agent.addr]
            for i, n in enumerate("abc"):
                self.proxies.append(Proxy(self.namespaces[i].host_ip, upstream[i]))
                self.esmd.append(Esmd(n, self.namespaces[i], self.proxies[i], agentless=(n != "c")))
            self.observer = Observer(self.esmd)
            self.observer.start()
        except BaseException:
            self.close()
            raise

    def register_nodes(self):
        addr = self.cluster.any_addr()
        for i in range(NODES):
            body = {"Node": f"chaos-{i}", "Address": "127.0.0.1", "NodeMeta": {"external-node": "true"},
                    "Service": {"ID": "web", "Service": "web", "Port": self.targets.port},
                    "Checks": [{"CheckID": "web", "Name": "web", "ServiceID": "web", "Status": "critical",
                                "Definition": {"HTTP": f"http://{SHARED_IP}:{self.targets.port}/c/{i}",
                                               "Interval": f"{CHECK_INTERVAL}s", "Timeout": "1s"}}]}
            check(put(addr, "/v1/catalog/register", body) == 200, f"registering chaos-{i}")

    def live(self):
        return [e for e in self.esmd if e.alive() and not e.paused]

    def leader(self):
        for e in self.live():
            st = e.status()
            if st and st.get("leader"):
                return e
        return None

    def wait_leader(self, timeout=60):
        end = now() + timeout
        while now() < end:
            e = self.leader()
            if e:
                return e
            time.sleep(0.2)
        raise AssertionError(f"no esmd leader after {timeout} s")

    def coverage(self):
        """None when every node is assigned to exactly one live, healthy instance; else why not."""
        addr = self.cluster.any_addr()
        code, kvs = get_json(addr, f"/v1/kv/{KV}agents/?recurse", 3)
        if code != 200 or not kvs:
            return f"no assignment keys ({code})"
        code, health = get_json(addr, f"/v1/health/service/{SERVICE}?passing=1", 3)
        if code != 200:
            return f"instances unreadable ({code})"
        healthy = {h["Service"]["ID"].split(":", 1)[1] for h in health}
        live = {e.name for e in self.live()}
        owners = {}
        for kv in kvs:
            inst = kv["Key"].rsplit(":", 1)[1]
            value = json.loads(base64.b64decode(kv["Value"] or b"") or b"null") or {}
            for n in (value.get("Nodes") or []) + (value.get("Probes") or []):
                owners.setdefault(n, []).append(inst)
        for i in range(NODES):
            o = owners.get(f"chaos-{i}", [])
            if len(o) != 1:
                return f"chaos-{i} has owners {o}"
            if o[0] not in live or o[0] not in healthy:
                return f"chaos-{i} is owned by {o[0]} (live {sorted(live)}, healthy {sorted(healthy)})"
        return None

    def wait_coverage(self, t0, what):
        end = t0 + COVER_BOUND
        last = None
        while now() < end:
            last = self.coverage()
            if last is None:
                return now() - t0
            time.sleep(0.25)
        raise AssertionError(f"{what}: nodes not covered {COVER_BOUND} s after the fault: {last}")

    def catalog_states(self):
        code, checks = get_json(self.cluster.any_addr(), "/v1/health/state/any", 5)
        check(code == 200, f"health state unreadable ({code})")
        return {c["Node"]: c["Status"] for c in checks if c["CheckID"] == "web" and c["Node"].startswith("chaos-")}

    def wait_states(self, bound, what):
        """Waits until every check in the catalog shows its target's state; the time it took."""
        t0 = now()
        while True:
            states = self.catalog_states()
            wrong = [n for n in range(NODES)
                     if states.get(f"chaos-{n}") != ("passing" if self.targets.up[n] else "critical")]
            if not wrong:
                return now() - t0
            if now() - t0 > bound:
                raise AssertionError(f"{what}: {len(wrong)} checks not in their target's state after {bound:.1f} s, "
                                     f"e.g. chaos-{wrong[0]}: {states.get(f'chaos-{wrong[0]}')}")
            time.sleep(0.2)

    def settle(self, what, timeout=60):
        """After a fault: a leader, every live instance ready, every node covered."""
        end = now() + timeout
        why = None
        while now() < end:
            if self.leader() is None:
                why = "no leader"
            else:
                unready = [e.name for e in self.live() if not (e.status() or {}).get("ready")]
                why = f"not ready: {unready}" if unready else self.coverage()
                if why is None:
                    return
            time.sleep(0.25)
        raise AssertionError(f"{what}: not settled {timeout} s after the fault: {why}")

    def flap(self, count=20, bound=FLAP_BOUND):
        """Flips `count` checks and measures how long the catalog takes to show them all."""
        idx = list(range(0, NODES, max(1, NODES // count)))[:count]
        for i in idx:
            self.targets.up[i] = not self.targets.up[i]
        took = self.wait_states(bound, "flap outside a fault window")
        return took

    def events(self, since):
        """Leadership events of every instance after `since`: (t, instance, kind)."""
        out = []
        for e in self.esmd:
            for t, _, msg in e.lines():
                if t < since - 0.5:
                    continue
                if msg.startswith("Obtained leadership"):
                    out.append((t, e.name, "obtained"))
                elif msg.startswith("Lost leadership") or msg.startswith("Releasing leadership on shutdown"):
                    out.append((t, e.name, "lost"))
                elif msg.startswith("Rebalanced external nodes"):
                    out.append((t, e.name, "wrote"))
        return sorted(out)

    def record(self, name, t0, old, covered):
        ev = self.events(t0)
        detect = next((t for t, n, k in ev if n == (old.name if old else None) and k == "lost"), None)
        takeover = next(((t, n) for t, n, k in ev if k == "obtained"), None)
        first = next((t for t, n, k in ev if takeover and n == takeover[1] and k == "wrote" and t >= takeover[0]), None)
        fmt = (lambda t: f"{t - t0:6.2f} s" if t else "     -  ")
        row = (name, old.name if old else "-", fmt(detect), (takeover[1] if takeover else "-"),
               fmt(takeover[0] if takeover else None), fmt(first), f"{covered:6.2f} s")
        self.timeline.append(row)
        print(f"[{name}] old leader {row[1]}: step-down {row[2]}; takeover by {row[3]} at {row[4]}; "
              f"first write {row[5]}; all nodes covered after {row[6]}", flush=True)

    # ------------------------------------------------------------------ faults

    def consul_leader_kill(self):
        old = self.leader()
        li = self.cluster.leader_index()
        check(li is not None, "no Consul leader")
        t0 = now()
        self.cluster.servers[li].kill()
        time.sleep(3)
        self.cluster.servers[li].start()
        self.cluster.wait_leader(30)
        covered = self.wait_coverage(t0, "consul-leader-kill")
        self.record("consul-leader-kill", t0, old, covered)

    def consul_follower(self):
        old = self.leader()
        li = self.cluster.leader_index()
        fi = next(i for i in range(3) if i != li)
        t0 = now()
        self.cluster.servers[fi].stop()
        self.cluster.servers[fi].start()
        self.cluster.wait_leader(30)
        covered = self.wait_coverage(t0, "consul-follower")
        self.record("consul-follower", t0, old, covered)

    def partition(self, name, seconds):
        """The bound counts from the heal: a cut instance is live (running) but cannot act."""
        old = self.wait_leader()
        t0 = now()
        old.ns.cut(old.proxy.port)
        try:
            time.sleep(seconds)
        finally:
            old.ns.heal()
        self.wait_coverage(now(), name)
        self.record(name, t0, old, now() - t0)

    def degraded(self):
        """Latency and loss on the leader's path for longer than its session: it keeps leading
        (a renewal gets through within its TTL), and checks keep reaching the catalog."""
        old = self.wait_leader()
        t0 = now()
        old.proxy.delay = DELAY
        old.ns.lossy(old.proxy.port, LOSS)
        try:
            took = self.flap(bound=FLAP_BOUND + 3)
            time.sleep(max(0.0, 2.5 * SESSION_TTL - (now() - t0)))
        finally:
            old.proxy.delay = 0.0
            old.ns.heal()
        lost = [t for t, n, k in self.events(t0) if n == old.name and k == "lost"]
        check(not lost, f"{old.name} lost leadership on a path with {DELAY} s latency and {LOSS} % loss")
        check(self.leader() is old, f"{old.name} no longer leads after the degraded path healed")
        check(took <= FLAP_BOUND + 3, f"a flap took {took:.2f} s on the degraded path")
        print(f"[degraded] {old.name} kept leading through {2.5 * SESSION_TTL:.0f} s of +{DELAY * 1000:.0f} ms "
              f"each way and {LOSS} % loss; a flap of 20 checks reached the catalog in {took:.2f} s", flush=True)
        self.wait_coverage(now(), "degraded")
        self.record("degraded", t0, old, now() - t0)

    def pause(self):
        """The bound counts from SIGCONT, the end of the fault window."""
        old = self.wait_leader()
        t0 = now()
        old.paused = True
        old.signal(signal.SIGSTOP)
        time.sleep(2.5 * SESSION_TTL)
        t_resume = now()
        old.resumed_at = now()
        old.signal(signal.SIGCONT)
        old.paused = False
        self.wait_coverage(t_resume, "pause")
        # The resumed instance wrote nothing as leader before it stepped down.
        end = now() + 5
        while True:
            after = [(t, k) for t, n, k in self.events(t_resume) if n == old.name and t >= t_resume - 0.05]
            lost = next((t for t, k in after if k == "lost"), None)
            if lost is not None or now() > end:
                break
            time.sleep(0.1)
        check(lost is not None, f"{old.name} never logged 'Lost leadership' after it resumed: {after}")
        wrote = [t for t, k in after if k == "wrote" and t <= lost]
        check(not wrote, f"{old.name} wrote an assignment after it resumed, before stepping down: {after}")
        self.record("pause", t0, old, now() - t0)

    def kill_restart(self):
        victim = self.wait_leader()
        t0 = now()
        victim.expected_exit = True
        victim.signal(signal.SIGKILL)
        victim.proc.wait(10)
        # Restarted at once, as a supervisor would (systemd Restart=on-failure, a pod's
        # container restart). Its previous registration looks alive until Consul expires the
        # killed process's health session (agent mode: until the agent turns its TTL check
        # critical); the new process waits for that and takes over: one start, no exit 11.
        time.sleep(1)
        mark = os.path.getsize(victim.log_path)

        def took_over():
            if victim.proc.poll() is not None:
                return True
            with open(victim.log_path, errors="replace") as f:
                f.seek(mark)
                return "Taking over the registration" in f.read()

        victim.start()
        wait_for(f"{victim.name} to take over its registration", took_over, 3 * COVER_BOUND)
        with open(victim.log_path, errors="replace") as f:
            f.seek(mark)
            since_restart = f.read()
        check(victim.proc.poll() is None,
              f"{victim.name} exited {victim.proc.returncode} after its restart: {since_restart[-1500:]}")
        # It waited when its first read still saw the old registration alive (nearly always:
        # the restart comes 1 s after the kill; a slow start may find it lapsed already).
        waited = "waiting for it to lapse" in since_restart
        print(f"[kill-restart] {victim.name}, restarted once 1 s after the kill, took over its registration "
              f"{now() - t0:.2f} s after the kill ({'after waiting for it to lapse' if waited else 'at once'})",
              flush=True)
        covered = self.wait_coverage(t0, "kill-restart")
        # The dead session holds the lock until Consul invalidates it: wait for the takeover.
        self.wait_leader(COVER_BOUND)
        self.record("kill-restart", t0, victim, covered)

    def term_during_burst(self):
        old = self.wait_leader()
        for i in range(NODES):
            self.targets.up[i] = not self.targets.up[i]
        t0 = now()
        old.expected_exit = True
        old.signal(signal.SIGTERM)
        code = old.proc.wait(10)
        check(code == 0, f"{old.name} exited {code} after SIGTERM")
        covered = self.wait_coverage(t0, "term-during-burst")
        took = self.wait_states(COVER_BOUND + CHECK_INTERVAL + FLUSH + 2, "the burst across the handover")
        print(f"[term-during-burst] every check in its target's state {now() - t0:.2f} s after the SIGTERM "
              f"(waited {took:.2f} s after coverage)", flush=True)
        self.record("term-during-burst", t0, old, covered)
        old.start()

    def check_logs(self):
        for e in self.esmd:
            leading = False
            for t, _, msg in e.lines():
                check("already held" not in msg, f"{e.name}: {msg}")
                if msg.startswith("Obtained leadership"):
                    leading = True
                elif msg.startswith("Lost leadership") or msg.startswith("Releasing leadership"):
                    leading = False
                elif msg.startswith("Rebalanced external nodes"):
                    check(leading, f"{e.name} wrote an assignment while not leading, at {t}: {msg}")

    def close(self):
        """Stops what was started, also after a failed start."""
        if self.observer:
            self.observer.stopped.set()
            self.observer.join(5)
        codes = {e.name: e.close() for e in self.esmd}
        for p in self.proxies:
            p.close()
        if self.targets:
            self.targets.close()
        if self.cluster:
            self.cluster.close()
        return codes


state = {}

# Meson ends a test that ran past its timeout with SIGTERM: turned into SystemExit, so that the
# clean-up above (esmd and Consul processes, namespaces) runs instead of leaving them behind.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


@case
def chaos_suite():
    """faults one after the other; one leader at a time, every node covered, no flap or change lost"""
    Netns.remove_stale()
    namespaces = []
    try:
        for k in (1, 2, 3):
            namespaces.append(Netns(k))
        c = Chaos(namespaces)
    except BaseException:
        for ns in namespaces:
            ns.close()
        raise
    state["chaos"] = c
    try:
        c.wait_leader(60)
        t0 = now()
        c.wait_coverage(t0 - COVER_BOUND + 60, "start")
        c.wait_states(60, "the first results")
        time.sleep(5)
        c.baseline_rss = {e.name: e.rss_kib() for e in c.esmd}
        faults = [c.consul_leader_kill, c.consul_follower, lambda: c.partition("partition-short", SESSION_TTL / 2),
                  lambda: c.partition("partition-long", 2.5 * SESSION_TTL), c.degraded, c.pause, c.kill_restart,
                  c.term_during_burst]
        flaps = []
        for r in range(ROUNDS):
            for fault in faults:
                fault()
                c.settle(getattr(fault, "__name__", "fault"))
                flaps.append(c.flap())
        print(f"flaps outside fault windows: {len(flaps)}, slowest {max(flaps):.2f} s, bound {FLAP_BOUND:.1f} s")
        check(not c.observer.overlaps, f"two leaders at once: {c.observer.overlaps[:5]}")
        check(not c.observer.crashes, f"esmd ended unexpectedly: {c.observer.crashes}")
        c.check_logs()
        for e in c.esmd:
            base, rss = c.baseline_rss.get(e.name), e.rss_kib()
            if base and rss:
                print(f"{e.name}: resident {base} KiB after warm-up, {rss} KiB at the end")
                check(rss <= base * 1.5 + 16384, f"{e.name}: resident memory grew from {base} to {rss} KiB")
        print(f"observer rounds: {c.observer.rounds}")
        print("timeline (seconds after the fault):")
        print("  fault               old  step-down  new  takeover   first write  covered")
        for row in c.timeline:
            print(f"  {row[0]:19} {row[1]:4} {row[2]:>9}  {row[3]:4} {row[4]:>9}  {row[5]:>9}  {row[6]:>9}")
    finally:
        try:
            codes = c.close()
        finally:
            for ns in namespaces:
                ns.close()
    check(all(code == 0 for code in codes.values()), f"exit codes at the end: {codes}")


try:
    run()
finally:
    if os.environ.get("ESMD_CHAOS_KEEP"):
        print(f"logs kept in {WORK}")
    else:
        shutil.rmtree(WORK, ignore_errors=True)
