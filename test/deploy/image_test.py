"""The static binary and the container image, as an operator gets them.

deploy/build-static gives a binary ldd calls static, which runs in an empty root file
system; deploy/image/build makes an image from scratch under 10 MB, which podman runs as a
non-root user: -version, and with host networking against a real Consul dev agent it leads,
its HEALTHCHECK passes, and as PID 1 it stops on SIGTERM within 5 s with exit 0.

Env: ESMD_SOURCE_ROOT, CONSUL_BIN; ESMD_STATIC_BIN (else deploy/build-static is run). podman
runs with a private storage root and run root and a private containers.conf (runc, lowered
ulimits; its per-boot tmp_dir, volume path, network configuration directory, events log and
temporary image copies all under the test's directory), so the host's images, containers,
networks and settings are not touched. At the end the test removes its containers and images
through that private configuration, checks that nothing under its directory is still mounted
and deletes the directory (never `podman system reset`, which also wipes the host's network
configuration and /run/libpod).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import case, check, env_path, free_ports, run, wait_for  # noqa: E402

ROOT = env_path("ESMD_SOURCE_ROOT")
CONSUL_BIN = env_path("CONSUL_BIN")
WORK = os.path.realpath(tempfile.mkdtemp(prefix="esmd-image-test-"))
STORE = os.path.join(WORK, "storage")
RUNROOT = os.path.join(WORK, "run")
TMP = os.path.join(WORK, "tmp")   # podman's per-boot state (the host's is /run/libpod)
VOLUMES = os.path.join(WORK, "vol")
NETWORKS = os.path.join(WORK, "net")  # the host's: /etc/cni/net.d or /etc/containers/networks
COPIES = os.path.join(WORK, "copies")  # temporary image content (the host's: /var/tmp)
for _d in (TMP, VOLUMES, NETWORKS, COPIES):
    os.makedirs(_d)
CONF = os.path.join(WORK, "containers.conf")
with open(CONF, "w") as f:
    f.write('[containers]\ndefault_ulimits = ["nofile=1024:20000", "nproc=4096:4096"]\n'
            '[engine]\nruntime = "runc"\n'
            f'tmp_dir = "{TMP}"\nvolume_path = "{VOLUMES}"\nimage_copy_tmp_dir = "{COPIES}"\n'
            f'events_logger = "file"\nevents_logfile_path = "{os.path.join(TMP, "events.log")}"\n'
            f'[network]\nnetwork_config_dir = "{NETWORKS}"\n')
ENV = dict(os.environ, CONTAINERS_CONF=CONF, ESMD_PODMAN_ROOT=STORE, ESMD_PODMAN_RUNROOT=RUNROOT,
           TMPDIR=COPIES)
PODMAN = ["podman", "--root", STORE, "--runroot", RUNROOT]
state = {}


def sh(argv, timeout, check_rc=True, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=kw.pop("env", ENV), **kw)
    if check_rc:
        check(p.returncode == 0, f"{' '.join(argv)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def get(url, timeout=2):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return None, str(e)


def static_binary():
    if "bin" not in state:
        b = os.environ.get("ESMD_STATIC_BIN") or sh([os.path.join(ROOT, "deploy/build-static")], 3600,
                                                     cwd=ROOT).stdout.strip().splitlines()[-1]
        state["bin"] = b
    return state["bin"]


@case
def binary_is_static():
    """the release binary is static (ldd has nothing to say) and runs in an empty root file system"""
    b = static_binary()
    p = sh(["ldd", b], 30, check_rc=False)
    check(p.returncode != 0 and "not a dynamic executable" in (p.stdout + p.stderr),
          f"ldd {b}: {p.stdout}{p.stderr}")
    print(f"static binary: {os.path.getsize(b)} bytes")
    empty = os.path.join(WORK, "empty-root")
    os.makedirs(empty)
    shutil.copy(b, os.path.join(empty, "esmd"))
    out = sh(["chroot", empty, "/esmd", "-version"], 30).stdout
    check(out.startswith("esmd v"), f"-version in an empty root printed {out!r}")
    check(os.listdir(empty) == ["esmd"], f"the empty root holds {os.listdir(empty)}")


@case
def image_builds():
    """deploy/image/build makes esmd:<version> and esmd:latest from scratch, under 10 MB, with an OCI archive"""
    p = sh([os.path.join(ROOT, "deploy/image/build")], 3600, cwd=ROOT,
           env=dict(ENV, ESMD_STATIC_BIN=static_binary()))
    ref = p.stdout.strip().splitlines()[-1]
    version = [l for l in open(os.path.join(ROOT, "meson.build")) if l.startswith("  version: ")][0].split("'")[1]
    check(ref == f"localhost/esmd:{version}", f"last line {ref!r}")
    state["ref"] = ref
    info = json.loads(sh(PODMAN + ["image", "inspect", ref], 60).stdout)[0]
    size = info["Size"]
    print(f"image {ref}: {size} bytes ({size / 1e6:.2f} MB)")
    check(size <= 10_000_000, f"image is {size} bytes")
    tags = sh(PODMAN + ["images", "--format", "{{.Repository}}:{{.Tag}}"], 60).stdout.split()
    check("localhost/esmd:latest" in tags and ref in tags, f"tags: {tags}")
    cfg = info["Config"]
    check(cfg.get("User") == "65532:65532", f"User {cfg.get('User')!r}")
    check(cfg.get("Entrypoint") == ["/usr/bin/esmd"], f"Entrypoint {cfg.get('Entrypoint')}")
    check(cfg.get("StopSignal") == "SIGTERM", f"StopSignal {cfg.get('StopSignal')}")
    hc = info.get("Healthcheck") or cfg.get("Healthcheck") or {}
    check(hc.get("Test") == ["CMD", "/usr/bin/esmd", "-healthcheck", "-config-dir=/etc/esmd"], f"Healthcheck {hc}")
    for kind in ("oci", "docker"):
        archive = os.path.join(ROOT, "build/image", f"esmd-{version}.{kind}.tar")
        check(os.path.exists(archive) and os.path.getsize(archive) > 1_000_000, f"{archive} missing or empty")
    # Exactly these files: no shell, nothing else.
    ctr = sh(PODMAN + ["create", ref], 60).stdout.strip()
    try:
        exported = subprocess.run(PODMAN + ["export", ctr], capture_output=True, timeout=120, env=ENV)
        check(exported.returncode == 0, exported.stderr.decode(errors="replace"))
        tar = subprocess.run(["tar", "-t"], input=exported.stdout, capture_output=True, timeout=60)
        files = sorted(n for n in tar.stdout.decode().split() if not n.endswith("/"))
    finally:
        sh(PODMAN + ["rm", "-f", ctr], 60, check_rc=False)
    expected = ["etc/esmd/config.hcl", "etc/group", "etc/nsswitch.conf", "etc/passwd",
                "etc/ssl/certs/ca-certificates.crt", "usr/bin/esmd"]
    # podman adds empty mount points (etc/hosts, etc/resolv.conf, run/...) to a container
    extra = [f for f in files if f not in expected and f not in ("etc/hosts", "etc/hostname", "etc/resolv.conf",
                                                                   "run/.containerenv")]
    check(not extra, f"unexpected files in the image: {extra}")
    check(all(e in files for e in expected), f"files: {files}")


@case
def image_runs_version():
    """podman run esmd:latest -version prints the version"""
    out = sh(PODMAN + ["run", "--rm", "--network", "none", "localhost/esmd:latest", "-version"], 120).stdout
    check(out.startswith("esmd v"), f"printed {out!r}")


def token_secret():
    """A podman secret made from a root-only token file, as deploy/OPERATING.md makes it."""
    if "secret" not in state:
        name = f"esmd-image-test-token-{os.getpid()}"
        token_file = os.path.join(WORK, "consul-token")
        with open(os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write("0b1c2d3e-image-test-token\n")
        sh(PODMAN + ["secret", "create", name, token_file], 60)
        state["secret"] = name
    return state["secret"]


@case
def image_reads_the_token_secret():
    """the token as deploy/OPERATING.md passes it (--secret NAME,uid=65532,mode=0400, CONSUL_HTTP_TOKEN_FILE=/run/secrets/NAME) is read by esmd as uid 65532"""
    secret = token_secret()
    p = sh(PODMAN + ["run", "--rm", "--network", "none", "--secret", f"{secret},uid=65532,mode=0400",
                     "-e", f"CONSUL_HTTP_TOKEN_FILE=/run/secrets/{secret}",
                     "localhost/esmd:latest", "-validate", "-config-dir=/etc/esmd"], 120)
    token = json.loads(p.stdout)["consul"]["token"]
    check(token == "<redacted>", f"the token was not read from the secret: {token!r}")
    # The mount of a 0600 root-owned file, as before, is what uid 65532 cannot read: exit 11.
    p = sh(PODMAN + ["run", "--rm", "--network", "none",
                     "-v", f"{os.path.join(WORK, 'consul-token')}:/run/secrets/consul-token:ro",
                     "-e", "CONSUL_HTTP_TOKEN_FILE=/run/secrets/consul-token",
                     "localhost/esmd:latest", "-validate", "-config-dir=/etc/esmd"], 120, check_rc=False)
    check(p.returncode == 11, f"a root-only 0600 token file bind-mounted: exit {p.returncode}, expected 11")


@case
def image_leads_and_stops():
    """as deploy/OPERATING.md runs it (host network, admin on 127.0.0.1 only, the token as a podman secret for uid 65532) and read-only: leads, HEALTHCHECK passes, non-root, SIGTERM as PID 1 within 5 s"""
    check("ref" in state, "the image was not built")
    http, server, lan, wan, admin = free_ports(5)
    data = os.path.join(WORK, "consul")
    consul_log = open(os.path.join(WORK, "consul.log"), "wb")
    consul = subprocess.Popen(
        [CONSUL_BIN, "agent", "-dev", "-node=image-test", "-bind=127.0.0.1", "-client=127.0.0.1",
         f"-http-port={http}", f"-server-port={server}", f"-serf-lan-port={lan}", f"-serf-wan-port={wan}",
         "-dns-port=-1", "-grpc-port=-1"],
        stdout=consul_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=WORK, start_new_session=True)
    name = f"esmd-image-test-{os.getpid()}"
    secret = token_secret()
    try:
        wait_for("a Consul leader", lambda: get(f"http://127.0.0.1:{http}/v1/status/leader")[1] not in (None, '""', ""), 30)
        conf = os.path.join(WORK, "esmd.d")
        os.makedirs(conf, exist_ok=True)
        with open(os.path.join(conf, "esmd.hcl"), "w") as f:
            f.write(f'client_address = "127.0.0.1:{admin}"\nconsul_kv_path = "esm-image/"\n')
        os.chmod(conf, 0o755)
        os.chmod(os.path.join(conf, "esmd.hcl"), 0o644)
        # The token secret for uid 65532 (the dev agent has no ACLs and ignores it; an
        # unreadable CONSUL_HTTP_TOKEN_FILE would be exit 11). With --read-only, podman 4.3
        # cannot mount a secret at its default target under /run/secrets (runc: "read-only
        # file system"), so it goes elsewhere, as deploy/OPERATING.md says.
        token_path = "/run/esmd/consul-token"
        sh(PODMAN + ["run", "-d", "--name", name, "--network", "host", "--read-only",
                     "-v", f"{conf}:/etc/esmd:ro", "-e", f"CONSUL_HTTP_ADDR=localhost:{http}",
                     "--secret", f"{secret},target={token_path},uid=65532,mode=0400",
                     "-e", f"CONSUL_HTTP_TOKEN_FILE={token_path}",
                     "localhost/esmd:latest"], 120)
        status = wait_for("esmd in the container to lead",
                          lambda: (lambda r: r[0] == 200 and '"leader":true' in r[1] and r[1])(
                              get(f"http://127.0.0.1:{admin}/v1/status")), 60)
        check('"consul-esm:' in status, "status names no instance")
        pid = int(sh(PODMAN + ["inspect", "--format", "{{.State.Pid}}", name], 60).stdout.strip())
        uid = [l for l in open(f"/proc/{pid}/status") if l.startswith("Uid:")][0].split()[1:]
        check(uid == ["65532"] * 4, f"the container's process runs as {uid}")
        st = os.stat(f"/proc/{pid}/root{token_path}")
        check(st.st_uid == 65532 and (st.st_mode & 0o777) == 0o400,
              f"the secret is mounted with uid {st.st_uid}, mode {st.st_mode & 0o777:o}")
        # Only on loopback: the admin server is not on the host's other interfaces.
        listening = [l.split()[1] for l in open("/proc/net/tcp").readlines()[1:]
                     if l.split()[3] == "0A" and int(l.split()[1].split(":")[1], 16) == admin]
        check(listening == ["0100007F:%04X" % admin], f"port {admin} listens on {listening}")
        hc = sh(PODMAN + ["healthcheck", "run", name], 60, check_rc=False)
        check(hc.returncode == 0, f"podman healthcheck run: {hc.returncode} {hc.stdout}{hc.stderr}")
        start = time.monotonic()
        sh(PODMAN + ["kill", "--signal", "TERM", name], 60)
        code = sh(PODMAN + ["wait", name], 30).stdout.strip()
        took = time.monotonic() - start
        logs = sh(PODMAN + ["logs", name], 60).stdout + ""
        print(f"stopped on SIGTERM in {took:.2f} s with exit code {code}")
        check(code == "0", f"exit code {code}\n{logs}")
        check(took <= 5.0, f"took {took:.2f} s to stop\n{logs}")
        check("Shutting down..." in logs, logs)
        services = get(f"http://127.0.0.1:{http}/v1/agent/services")[1]
        check("consul-esm:" not in services, f"still registered: {services}")
    finally:
        sh(PODMAN + ["rm", "-f", "-t", "0", name], 60, check_rc=False)
        consul.send_signal(signal.SIGTERM)
        try:
            consul.wait(15)
        except subprocess.TimeoutExpired:
            consul.kill()
            consul.wait(5)
        consul_log.close()


def mounts_under_work():
    """Mount points at or below WORK (from /proc/self/mountinfo; octal escapes decoded)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point == WORK or point.startswith(WORK + "/"):
                out.append(point)
    return out


def remove_private_store():
    """Removes the test's containers and images through its own podman configuration (the
    host's storage, networks and /run/libpod are never named), unmounts what is left under
    WORK and deletes WORK. Returns (what failed, mount points that could not be removed)."""
    problems = []
    for args in (["rm", "-af", "-t", "0"], ["image", "unmount", "-a"], ["rmi", "-af"]):
        try:
            p = subprocess.run(PODMAN + args, capture_output=True, text=True, timeout=120, env=ENV)
            if p.returncode != 0:
                problems.append(f"podman {' '.join(args)}: exit {p.returncode} {p.stderr.strip()}")
        except (OSError, subprocess.TimeoutExpired) as e:
            problems.append(f"podman {' '.join(args)}: {e}")
    left = mounts_under_work()
    if left:
        problems.append(f"still mounted after podman rm, image unmount and rmi: {left}")
        for point in sorted(left, key=len, reverse=True):  # innermost first
            subprocess.run(["umount", point], capture_output=True, timeout=60)
    shutil.rmtree(WORK, ignore_errors=True)
    return problems, mounts_under_work()


@case
def private_store_is_removed():
    """the test's containers and images are removed through its private configuration, nothing under its directory stays mounted, and the directory is deleted"""
    problems, left = remove_private_store()
    check(not left, f"still mounted under {WORK}: {left}")
    check(not problems, "; ".join(problems))
    check(not os.path.exists(WORK), f"{WORK} is still there")


try:
    run()
finally:
    if os.path.exists(WORK):  # the last case did not run (a selection of cases, an interrupt)
        _, _left = remove_private_store()
        if _left:
            print(f"image_test: still mounted under {WORK}: {_left}", flush=True)
            sys.exit(1)
