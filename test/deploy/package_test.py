#!/usr/bin/env python3
"""The systemd unit (deploy/systemd) and the Debian package (deploy/deb) of esmd.

Environment:
  ESMD_SOURCE_ROOT  the repository (required)
  ESMD_STATIC_BIN   the static release binary; unset: deploy/build-static builds it
  ESMD_BIN          a dynamic build of esmd (optional): also validates deploy/config/esmd.hcl
  ESMD_NSPAWN_ROOT  optional: a Debian 12 tree for systemd-nspawn (created there with
                    debootstrap if missing, then reused). When set, one more case boots it
                    (read-only, a tmpfs overlay, its own network namespace), installs the
                    package with dpkg and runs esmd.service under the container's systemd
                    against a Consul dev agent with ACLs (CONSUL_BIN or deploy/dev/get-consul).
                    Needs systemd-container and debootstrap, root, Debian's archive
                    (ESMD_DEBIAN_MIRROR, default http://deb.debian.org/debian).

Needs systemd-analyze and systemd-sysusers (systemd), dpkg-deb (dpkg), lintian, strip
(binutils), /bin/kill (procps; ExecReload names it) and shellcheck (without it that case is
skipped, which the test command counts as a failure). Nothing is
installed on the host and nothing outside a temporary directory is written: the package is
checked with dpkg-deb, lintian and by running the extracted binary, and the maintainer
scripts run with stub commands. Every subprocess has a timeout.

    python3 test/deploy/package_test.py [case ...]
"""
import atexit
import gzip
import hashlib
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import case, check, env_path, run, skip  # noqa: E402

ROOT = os.path.abspath(env_path("ESMD_SOURCE_ROOT"))
UNIT = os.path.join(ROOT, "deploy/systemd/esmd.service")
PING_SOCKET_DROPIN = os.path.join(ROOT, "deploy/systemd/ping-socket.conf")
SYSUSERS = os.path.join(ROOT, "deploy/systemd/esmd.sysusers")
CONFIG = os.path.join(ROOT, "deploy/config/esmd.hcl")
DEB_DIR = os.path.join(ROOT, "deploy/deb")
WORK = tempfile.mkdtemp(prefix="esmd-package-test.")
atexit.register(shutil.rmtree, WORK, True)

# Syscalls esmd made in strace surveys (strace -f of the static and the dynamic build against a
# Consul dev agent: HTTP, TCP, UDP, gRPC checks, node pings with ping_type "udp" (refused) and
# "socket", a hostname node address, every admin endpoint, a statsd sink, a rotating log file,
# SIGHUP, SIGTERM). The unit's SystemCallFilter= must allow each of them.
SYSCALLS_USED = """
accept access arch_prctl bind brk clock_nanosleep clone3 close connect epoll_create1
epoll_ctl epoll_wait eventfd2 execve exit exit_group fcntl futex getdents64 getegid
getgroups getpeername getpid getrandom getsockname getsockopt ioctl listen lseek madvise
mmap mprotect munmap newfstatat openat pipe2 poll pread64 prlimit64 read readlink recvfrom
recvmsg rseq rt_sigaction rt_sigprocmask rt_sigreturn sendmsg sendto set_robust_list
set_tid_address setsockopt shutdown socket sysinfo timerfd_create timerfd_settime uname
write
""".split()


# ---------------------------------------------------------------------------------------------
# helpers

def sh(cmd, timeout=120, env=None, cwd=None, input=None):
    """Runs cmd (a list), returns the CompletedProcess (text, stdout and stderr captured)."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd,
                          input=input)


def show(title, text):
    text = text.rstrip("\n")
    print(f"  {title}:" + ("" if text else " (nothing)"))
    for line in text.splitlines():
        print(f"    {line}")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)


def upstream_version():
    m = re.search(r"project\([^)]*?version:\s*'([^']+)'", read(os.path.join(ROOT, "meson.build")), re.S)
    check(m, "meson.build has no project version")
    return m.group(1)


_static = []


def static_bin():
    """ESMD_STATIC_BIN, or what deploy/build-static prints last (it builds if needed)."""
    if not _static:
        path = os.environ.get("ESMD_STATIC_BIN", "")
        if not path:
            r = sh([os.path.join(ROOT, "deploy/build-static")], timeout=3600, cwd=ROOT)
            check(r.returncode == 0, f"deploy/build-static failed:\n{r.stderr[-3000:]}")
            path = r.stdout.strip().splitlines()[-1]
        check(os.access(path, os.X_OK), f"the static binary {path} is not executable")
        _static.append(os.path.abspath(path))
    return _static[0]


def elf_info(path):
    """(has PT_INTERP, section names) of a 64-bit little-endian ELF file."""
    with open(path, "rb") as f:
        data = f.read()
    check(data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, f"{path} is not a 64-bit LE ELF")
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", data, 0x36)
    interp = any(struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 3 for i in range(phnum))
    names = set()
    if shoff and shnum:
        str_off = struct.unpack_from("<Q", data, shoff + shstrndx * shentsize + 0x18)[0]
        for i in range(shnum):
            name = struct.unpack_from("<I", data, shoff + i * shentsize)[0]
            end = data.index(b"\0", str_off + name)
            names.add(data[str_off + name:end].decode())
    return interp, names


def parse_unit(text):
    """[(section, key, value)] of a unit file or drop-in, in order (continuations joined)."""
    out, section, pending = [], None, ""
    for raw in text.splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if line.endswith("\\") and not line.endswith("\\\\") and not line.lstrip().startswith(("#", ";")):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        check(sep and section, f"not a unit file line: {raw!r}")
        out.append((section, key.strip(), value.strip()))
    return out


class Unit:
    """The settings of a unit file plus drop-ins, with systemd's reset-by-empty-value rule."""

    def __init__(self, *texts):
        self.entries = [e for t in texts for e in parse_unit(t)]

    def values(self, key, section="Service"):
        vals = []
        for s, k, v in self.entries:
            if s == section and k == key:
                vals = [] if v == "" else vals + [v]
        return vals

    def assigned(self, key, section="Service"):
        return any(s == section and k == key for s, k, _ in self.entries)

    def last(self, key, section="Service"):
        vals = [v for s, k, v in self.entries if s == section and k == key]
        return vals[-1] if vals else None

    def words(self, key, section="Service"):
        return [w for v in self.values(key, section) for w in v.split()]


def timespan(text):
    """Seconds of a systemd time span ("15s", "5min", "1min 30s", "500ms", "30")."""
    units = {"us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "s": 1, "sec": 1, "second": 1,
             "seconds": 1, "m": 60, "min": 60, "minute": 60, "minutes": 60, "h": 3600, "hr": 3600,
             "hour": 3600, "hours": 3600, "d": 86400, "day": 86400, "days": 86400}
    if text.strip() == "infinity":
        return float("inf")
    total, rest = 0.0, text.replace(" ", "")
    for number, unit in re.findall(r"([0-9.]+)([a-z]*)", rest):
        check(unit in units or unit == "", f"unknown time unit in {text!r}")
        total += float(number) * units.get(unit, 1)
    check(re.fullmatch(r"([0-9.]+[a-z]*)+", rest), f"not a time span: {text!r}")
    return total


_groups = {}


def syscall_group(name):
    """The syscalls of a systemd syscall group (@name, resolved recursively) or one syscall."""
    if not name.startswith("@"):
        return {name}
    if name not in _groups:
        r = sh(["systemd-analyze", "syscall-filter", name], timeout=60)
        check(r.returncode == 0, f"systemd-analyze syscall-filter {name}: {r.stderr}")
        names = set()
        for line in r.stdout.splitlines():
            line = line.strip()
            if not line or line.startswith("#") or line == name:
                continue
            names |= syscall_group(line) if line.startswith("@") else {line}
        _groups[name] = names
    return _groups[name]


def allowed_syscalls(unit):
    """The syscalls SystemCallFilter= lets through (allow-list mode: first line without ~)."""
    allowed = None
    for value in unit.values("SystemCallFilter"):
        deny = value.startswith("~")
        names = set()
        for word in value.lstrip("~").split():
            names |= syscall_group(word)
        if allowed is None:
            check(not deny, "SystemCallFilter= must start with an allow list")
            allowed = names
        elif deny:
            allowed -= names
        else:
            allowed |= names
    return allowed or set()


def unit_copy(name, text, dropins=()):
    """A directory holding esmd.service (text) and esmd.service.d/<drop-ins>; the unit path."""
    d = os.path.join(WORK, name)
    write(os.path.join(d, "esmd.service"), text)
    for fname, dtext in dropins:
        write(os.path.join(d, "esmd.service.d", fname), dtext)
    return os.path.join(d, "esmd.service")


def verifiable(text):
    """The unit text with ExecStart's /usr/bin/esmd replaced by a copy of the static binary
    (systemd-analyze verify requires the binary to exist and be executable)."""
    binary = os.path.join(WORK, "verify-bin", "esmd")
    if not os.path.exists(binary):
        os.makedirs(os.path.dirname(binary), exist_ok=True)
        shutil.copy(static_bin(), binary)
    check("/usr/bin/esmd " in text, "the unit does not run /usr/bin/esmd")
    return text.replace("/usr/bin/esmd ", binary + " ")


def verify(path):
    """(return code, complaint lines) of systemd-analyze verify for a unit file."""
    r = sh(["systemd-analyze", "verify", "--man=no", "--generators=no", path], timeout=120)
    lines = [l for l in (r.stdout + r.stderr).splitlines() if l.strip()]
    return r.returncode, lines


def security(path):
    r = sh(["systemd-analyze", "security", "--offline=yes", "--no-pager", path], timeout=120)
    m = re.search(r"Overall exposure level for esmd\.service: ([0-9.]+) (\S+)", r.stdout)
    check(m, f"no exposure level from systemd-analyze security:\n{r.stdout}\n{r.stderr}")
    return float(m.group(1)), m.group(2), r.stdout


_deb = []


def package():
    """The .deb built by deploy/deb/build from the static binary (built once per run)."""
    if not _deb:
        out = os.path.join(WORK, "deb")
        env = dict(os.environ, SOURCE_DATE_EPOCH="1796083200")
        r = sh([os.path.join(DEB_DIR, "build"), static_bin(), out], timeout=600, env=env, cwd=WORK)
        show("deploy/deb/build stderr", r.stderr)
        check(r.returncode == 0, f"deploy/deb/build failed ({r.returncode})")
        path = r.stdout.strip().splitlines()[-1]
        check(os.path.isfile(path) and os.path.dirname(path) == out,
              f"deploy/deb/build's last line is not the .deb in {out}: {path!r}")
        _deb.append(path)
    return _deb[0]


def arch():
    return sh(["dpkg", "--print-architecture"]).stdout.strip()


def extracted():
    """The package's files (dpkg-deb -x) and its control files (dpkg-deb -e)."""
    root = os.path.join(WORK, "extracted")
    if not os.path.isdir(root):
        for args, d in ((["-x"], root), (["-e"], os.path.join(WORK, "control"))):
            r = sh(["dpkg-deb", *args, package(), d], timeout=120)
            check(r.returncode == 0, f"dpkg-deb {args[0]} failed: {r.stderr}")
    return root, os.path.join(WORK, "control")


def validate(binary, args, env=None):
    """esmd -validate with a clean environment (plus env); (return code, JSON or None, text)."""
    r = sh([binary, "-validate", *args], timeout=30, env={"PATH": "/usr/bin:/bin", **(env or {})})
    try:
        return r.returncode, json.loads(r.stdout), r.stdout + r.stderr
    except ValueError:
        return r.returncode, None, r.stdout + r.stderr


# ---------------------------------------------------------------------------------------------
# 1. systemd-analyze verify

@case
def unit_verifies():
    """systemd-analyze verify accepts the unit (alone and with the ping-socket drop-in) and rejects broken copies"""
    text = read(UNIT)
    dropin = read(PING_SOCKET_DROPIN)
    good = [("unit", unit_copy("verify-unit", verifiable(text))),
            ("unit + ping-socket.conf",
             unit_copy("verify-dropin", verifiable(text), [("ping-socket.conf", dropin)]))]
    for name, path in good:
        rc, lines = verify(path)
        show(f"verify {name} (rc {rc})", "\n".join(lines))
        check(rc == 0 and not lines, f"systemd-analyze verify complains about the {name}")

    # verify only warns (exit 0) about an unknown value or key: the test counts any complaint.
    broken = [
        ("Type=notifyy", text.replace("Type=notify\n", "Type=notifyy\n"), ()),
        ("a misspelled key", text.replace("ProtectSystem=strict", "ProtectSytem=strict"), ()),
        ("a broken drop-in", text, [("ping-socket.conf", dropin.replace("AmbientCapabilities=",
                                                                        "AmbientCapabilitiez="))]),
        ("a missing binary", text.replace("/usr/bin/esmd ", "/nonexistent/esmd "), ()),
    ]
    for i, (name, btext, dropins) in enumerate(broken):
        check(btext != text or dropins, f"the broken copy ({name}) is not different")
        path = unit_copy(f"verify-broken-{i}", verifiable(btext) if "nonexistent" not in btext
                         else btext, dropins)
        rc, lines = verify(path)
        show(f"verify a copy with {name} (rc {rc})", "\n".join(lines))
        check(rc != 0 or lines, f"systemd-analyze verify accepted a unit with {name}")

    # The sysusers.d file: systemd-sysusers parses it into an empty scratch root (dry run).
    scratch = os.path.join(WORK, "sysusers-root")
    os.makedirs(os.path.join(scratch, "etc"))
    r = sh(["systemd-sysusers", f"--root={scratch}", "--dry-run", SYSUSERS], timeout=60)
    show("systemd-sysusers --dry-run", r.stdout + r.stderr)
    check(r.returncode == 0 and "Creating user 'esmd'" in r.stdout + r.stderr,
          "systemd-sysusers does not create the user esmd from deploy/systemd/esmd.sysusers")
    check(os.listdir(os.path.join(scratch, "etc")) == [], "the dry run wrote files")


# ---------------------------------------------------------------------------------------------
# 2. key settings and systemd-analyze security

@case
def unit_settings():
    """the unit's key settings (notify, watchdog, stop timeout, sandbox, no capabilities, token credential) and its exposure level"""
    u = Unit(read(UNIT))
    check(u.last("Type") == "notify", "Type=notify (esmd sends READY=1)")
    check(u.last("NotifyAccess") == "main", "NotifyAccess=main")
    check(u.last("ExecStart") == "/usr/bin/esmd -config-dir=/etc/esmd", f"ExecStart: {u.last('ExecStart')}")
    check(u.last("ExecReload") == "/bin/kill -HUP $MAINPID", "ExecReload sends SIGHUP to esmd")
    wd = timespan(u.last("WatchdogSec") or "0")
    check(0 < wd <= 120, f"WatchdogSec is set (and not absurd): {wd}")
    stop = timespan(u.last("TimeoutStopSec") or "0")
    check(stop > 6.5, f"TimeoutStopSec {stop} s must exceed esmd's 6.5 s hard stop limit")
    check(timespan(u.last("TimeoutStartSec") or "90") >= 60, "TimeoutStartSec leaves time to wait for Consul")
    check(u.last("Restart") == "on-failure" and timespan(u.last("RestartSec") or "0") >= 1,
          "Restart=on-failure with a RestartSec")
    check(u.last("StartLimitBurst", "Unit") and u.last("StartLimitIntervalSec", "Unit"),
          "a start limit ends the loop of a configuration that cannot start")
    check(u.last("LimitNOFILE") == "65536", "LimitNOFILE=65536")
    check(u.last("UMask") == "0077", "UMask=0077")
    check(u.last("User") == "esmd" and u.last("Group") == "esmd", "runs as the system user esmd")
    check(u.last("DynamicUser") in (None, "no"), "a static user, not DynamicUser=")
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts",
                "PrivateUsers", "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                "ProtectControlGroups", "ProtectClock", "ProtectHostname", "RestrictNamespaces",
                "LockPersonality", "MemoryDenyWriteExecute", "RestrictRealtime", "RestrictSUIDSGID",
                "RemoveIPC"):
        check(u.last(key) == "yes", f"{key}=yes")
    check(u.last("ProtectSystem") == "strict", "ProtectSystem=strict")
    check(u.last("ProcSubset") in (None, "all"),
          "no ProcSubset=pid: esmd reads /proc/stat and /proc/sys/net/ipv4/ping_group_range")
    check(u.last("SystemCallArchitectures") == "native", "SystemCallArchitectures=native")
    for key in ("CapabilityBoundingSet", "AmbientCapabilities"):
        check(u.assigned(key) and u.words(key) == [], f"{key}= is empty")
    families = set(u.words("RestrictAddressFamilies"))
    check(families == {"AF_INET", "AF_INET6", "AF_UNIX"}, f"RestrictAddressFamilies: {families}")
    check(u.last("LoadCredential") == "consul-token:/etc/esmd/consul-token",
          "the token file is passed as a credential (root-only file, esmd unprivileged)")
    check(u.last("SetCredential") == "consul-token:\\n",
          "a missing token file falls back to an empty credential (a start would fail otherwise)")
    env = u.words("Environment")
    check("CONSUL_HTTP_TOKEN_FILE=%d/consul-token" in env, f"CONSUL_HTTP_TOKEN_FILE from the credential: {env}")
    check(u.last("EnvironmentFile") == "-/etc/default/esmd", "optional EnvironmentFile=-/etc/default/esmd")
    check(u.last("WantedBy", "Install") == "multi-user.target", "WantedBy=multi-user.target")
    check("network-online.target" in u.words("Wants", "Unit") and
          "network-online.target" in u.words("After", "Unit"), "ordered after network-online.target")

    filters = u.values("SystemCallFilter")
    check(filters[:1] == ["@system-service"] and "~@privileged @resources" in filters,
          f"SystemCallFilter=@system-service and ~@privileged @resources: {filters}")
    allowed = allowed_syscalls(u)
    blocked = sorted(s for s in SYSCALLS_USED if s not in allowed)
    check(not blocked, f"the unit's SystemCallFilter= blocks syscalls esmd makes: {blocked}")
    print(f"  SystemCallFilter= allows {len(allowed)} syscalls, including all {len(SYSCALLS_USED)} esmd was seen to make")

    # The ping-socket drop-in gives exactly CAP_NET_RAW, and turns off PrivateUsers=.
    d = Unit(read(UNIT), read(PING_SOCKET_DROPIN))
    for key in ("CapabilityBoundingSet", "AmbientCapabilities"):
        check(d.words(key) == ["CAP_NET_RAW"], f"with ping-socket.conf, {key}=CAP_NET_RAW: {d.words(key)}")
    check(d.last("PrivateUsers") == "no", "ping-socket.conf sets PrivateUsers=no (CAP_NET_RAW in the host's user namespace)")

    level, verdict, text = security(unit_copy("security-unit", read(UNIT)))
    show("systemd-analyze security --offline=yes (items with an exposure)",
         "\n".join(l for l in text.splitlines() if l.startswith("✗") or "Overall" in l))
    dlevel, dverdict, _ = security(unit_copy("security-dropin", read(UNIT),
                                             [("ping-socket.conf", read(PING_SOCKET_DROPIN))]))
    print(f"  exposure level: {level} {verdict} (with ping-socket.conf: {dlevel} {dverdict})")
    check(level <= 2.0, f"exposure level {level} > 2.0: the sandbox got weaker")
    check(dlevel <= 2.5, f"exposure level with ping-socket.conf {dlevel} > 2.5")


# ---------------------------------------------------------------------------------------------
# 3. the package: build, contents, lintian

EXPECTED_CONTENTS = {
    # path: (mode, kind) -- every entry is root/root
    "./": ("drwxr-xr-x", "d"),
    "./etc/": ("drwxr-xr-x", "d"),
    "./etc/default/": ("drwxr-xr-x", "d"),
    "./etc/default/esmd": ("-rw-r--r--", "f"),
    "./etc/esmd/": ("drwxr-xr-x", "d"),
    "./etc/esmd/config.hcl": ("-rw-r--r--", "f"),
    "./lib/": ("drwxr-xr-x", "d"),
    "./lib/systemd/": ("drwxr-xr-x", "d"),
    "./lib/systemd/system/": ("drwxr-xr-x", "d"),
    "./lib/systemd/system/esmd.service": ("-rw-r--r--", "f"),
    "./usr/": ("drwxr-xr-x", "d"),
    "./usr/bin/": ("drwxr-xr-x", "d"),
    "./usr/bin/esmd": ("-rwxr-xr-x", "f"),
    "./usr/lib/": ("drwxr-xr-x", "d"),
    "./usr/lib/sysusers.d/": ("drwxr-xr-x", "d"),
    "./usr/lib/sysusers.d/esmd.conf": ("-rw-r--r--", "f"),
    "./usr/share/": ("drwxr-xr-x", "d"),
    "./usr/share/doc/": ("drwxr-xr-x", "d"),
    "./usr/share/doc/esmd/": ("drwxr-xr-x", "d"),
    "./usr/share/doc/esmd/changelog.Debian.gz": ("-rw-r--r--", "f"),
    "./usr/share/doc/esmd/copyright": ("-rw-r--r--", "f"),
    "./usr/share/doc/esmd/examples/": ("drwxr-xr-x", "d"),
    "./usr/share/doc/esmd/examples/50-esmd-ping.conf": ("-rw-r--r--", "f"),
    "./usr/share/doc/esmd/examples/ping-socket.conf": ("-rw-r--r--", "f"),
    "./usr/share/lintian/": ("drwxr-xr-x", "d"),
    "./usr/share/lintian/overrides/": ("drwxr-xr-x", "d"),
    "./usr/share/lintian/overrides/esmd": ("-rw-r--r--", "f"),
    "./usr/share/man/": ("drwxr-xr-x", "d"),
    "./usr/share/man/man1/": ("drwxr-xr-x", "d"),
    "./usr/share/man/man1/esmd.1.gz": ("-rw-r--r--", "f"),
}
SOURCES = {  # packaged file: its source in the repository (byte for byte)
    "etc/esmd/config.hcl": "deploy/config/esmd.hcl",
    "etc/default/esmd": "deploy/systemd/esmd.default",
    "lib/systemd/system/esmd.service": "deploy/systemd/esmd.service",
    "usr/lib/sysusers.d/esmd.conf": "deploy/systemd/esmd.sysusers",
    "usr/share/doc/esmd/copyright": "deploy/deb/copyright",
    "usr/share/doc/esmd/examples/ping-socket.conf": "deploy/systemd/ping-socket.conf",
    "usr/share/doc/esmd/examples/50-esmd-ping.conf": "deploy/systemd/50-esmd-ping.conf",
    "usr/share/lintian/overrides/esmd": "deploy/deb/lintian-overrides",
}


@case
def package_builds_with_expected_contents():
    """deploy/deb/build makes esmd_<version>-1_<arch>.deb from the static binary: fields, exact contents, modes, owners, conffiles, md5sums; reproducible"""
    interp, sections = elf_info(static_bin())
    check(not interp, f"{static_bin()} is not static (it has an ELF interpreter)")
    deb = package()
    version = upstream_version() + "-1"
    check(os.path.basename(deb) == f"esmd_{version}_{arch()}.deb", f"package file name: {deb}")

    info = sh(["dpkg-deb", "--info", deb], timeout=60)
    show("dpkg-deb --info", info.stdout)
    check(info.returncode == 0, f"dpkg-deb --info failed: {info.stderr}")
    fields = {}
    for f in ("Package", "Version", "Architecture", "Maintainer", "Section", "Priority", "Depends",
              "Description", "Installed-Size", "Built-Using"):
        r = sh(["dpkg-deb", "--field", deb, f], timeout=60)
        fields[f] = r.stdout.strip()
    check(fields["Package"] == "esmd", "Package: esmd")
    check(fields["Version"] == version, f"Version: {fields['Version']} (meson.build: {upstream_version()})")
    check(fields["Architecture"] == arch(), f"Architecture: {fields['Architecture']}")
    check(re.fullmatch(r"[^<>]+ <[^@<>\s]+@[^@<>\s]+\.[a-z]+>", fields["Maintainer"]), "Maintainer: name <address>")
    check(fields["Section"] == "net" and fields["Priority"] == "optional", "Section net, Priority optional")
    check(fields["Depends"] == "adduser, procps",
          f"Depends: adduser (postinst's fallback) and procps (/bin/kill): {fields['Depends']!r}")
    check(fields["Description"].splitlines()[0].strip() and len(fields["Description"].splitlines()) > 3,
          "a synopsis and a long description")
    check(fields["Installed-Size"].isdigit() and int(fields["Installed-Size"]) > 1000, "Installed-Size")

    contents = sh(["dpkg-deb", "--contents", deb], timeout=60)
    show("dpkg-deb --contents", contents.stdout)
    got = {}
    for line in contents.stdout.splitlines():
        parts = line.split(None, 5)
        check(len(parts) == 6, f"unexpected contents line {line!r}")
        mode, owner, _size, _day, _time, path = parts
        check(owner == "root/root", f"{path} is owned by {owner}, not root/root")
        got[path] = mode
    check(set(got) == set(EXPECTED_CONTENTS),
          f"package contents differ: missing {sorted(set(EXPECTED_CONTENTS) - set(got))}, "
          f"unexpected {sorted(set(got) - set(EXPECTED_CONTENTS))}")
    for path, (mode, _kind) in EXPECTED_CONTENTS.items():
        check(got[path] == mode, f"{path} has mode {got[path]}, expected {mode}")

    root, control = extracted()
    check(sorted(os.listdir(control)) == ["conffiles", "control", "md5sums", "postinst", "postrm", "prerm"],
          f"control files: {sorted(os.listdir(control))}")
    for name in ("postinst", "postrm", "prerm"):
        check(stat.S_IMODE(os.stat(os.path.join(control, name)).st_mode) == 0o755, f"DEBIAN/{name} is 0755")
    check(read(os.path.join(control, "conffiles")).split() == ["/etc/default/esmd", "/etc/esmd/config.hcl"],
          "conffiles: /etc/default/esmd and /etc/esmd/config.hcl")
    md5 = {}
    for line in read(os.path.join(control, "md5sums")).splitlines():
        digest, path = line.split(None, 1)
        md5[path] = digest
    files = {p[2:] for p, (_, kind) in EXPECTED_CONTENTS.items() if kind == "f"}
    check(set(md5) == {p for p in files if not p.startswith("etc/")}, f"md5sums lists: {sorted(md5)}")
    for path, digest in md5.items():
        with open(os.path.join(root, path), "rb") as f:
            check(hashlib.md5(f.read()).hexdigest() == digest, f"md5sums is wrong for {path}")

    for packaged, source in SOURCES.items():
        with open(os.path.join(root, packaged), "rb") as a, open(os.path.join(ROOT, source), "rb") as b:
            check(a.read() == b.read(), f"{packaged} is not {source}")
    interp, sections = elf_info(os.path.join(root, "usr/bin/esmd"))
    check(not interp and ".symtab" not in sections, "the packaged esmd is static and stripped")
    with gzip.open(os.path.join(root, "usr/share/doc/esmd/changelog.Debian.gz"), "rt") as f:
        changelog = f.read()
    check(changelog.startswith(f"esmd ({version}) "), f"changelog.Debian: {changelog.splitlines()[0]}")
    with gzip.open(os.path.join(root, "usr/share/man/man1/esmd.1.gz"), "rt") as f:
        man = f.read()
    check(".TH ESMD 1" in man and "@" not in man.split("\n", 2)[1], "the man page is filled in")

    # Reproducible: the same inputs and SOURCE_DATE_EPOCH give the same bytes.
    out2 = os.path.join(WORK, "deb2")
    r = sh([os.path.join(DEB_DIR, "build"), static_bin(), out2], timeout=600,
           env=dict(os.environ, SOURCE_DATE_EPOCH="1796083200"), cwd=WORK)
    check(r.returncode == 0, f"second build failed: {r.stderr}")
    second = r.stdout.strip().splitlines()[-1]
    with open(deb, "rb") as a, open(second, "rb") as b:
        check(a.read() == b.read(), "two builds from the same inputs differ")
    print(f"  {deb}: {os.path.getsize(deb)} bytes, reproducible")


@case
def lintian_is_clean():
    """lintian reports no error and no warning for the package (full output in the log)"""
    # Everything, overridden tags included (an overridden error makes --show-overrides exit 2,
    # so the exit status is taken from a second run without it).
    r = sh(["lintian", "--display-info", "--pedantic", "--show-overrides", package()], timeout=900)
    show("lintian --display-info --pedantic --show-overrides", r.stdout)
    show("lintian stderr", r.stderr)
    bad = [l for l in r.stdout.splitlines() if l.startswith(("E:", "W:"))]
    strict = sh(["lintian", "--fail-on", "error,warning", package()], timeout=900)
    check(strict.returncode == 0 and not bad,
          f"lintian --fail-on error,warning: exit {strict.returncode}, {len(bad)} error/warning tags")
    overridden = [l for l in r.stdout.splitlines() if l.startswith("O:")]
    print(f"  lintian: no errors or warnings; {len(overridden)} overridden, "
          f"{sum(l.startswith(('I:', 'P:', 'X:')) for l in r.stdout.splitlines())} info/pedantic/experimental")


# ---------------------------------------------------------------------------------------------
# 4. the extracted package runs; the maintainer scripts

@case
def extracted_package_runs():
    """the extracted binary prints its version and validates the packaged configuration the way the unit runs it"""
    root, _ = extracted()
    esmd = os.path.join(root, "usr/bin/esmd")
    r = sh([esmd, "-version"], timeout=30)
    print(f"  esmd -version: {r.stdout.strip()}")
    check(r.returncode == 0 and r.stdout.startswith(f"esmd v{upstream_version()} "), "esmd -version")

    conf = os.path.join(root, "etc/esmd/config.hcl")
    for args in ([f"-config-file={conf}"], [f"-config-dir={os.path.dirname(conf)}"]):
        rc, cfg, text = validate(esmd, args)
        check(rc == 0 and cfg, f"esmd -validate {args[0]} failed ({rc}):\n{text}")
    check(cfg["log_level"] == "INFO" and cfg["consul_service"] == "consul-esm"
          and cfg["client_address"] == "127.0.0.1:8080" and cfg["ping_type"] == "udp"
          and cfg["consul_kv_path"] == "consul-esm/", "packaged defaults")
    check(cfg["http_addr"] == "" and cfg["consul"]["address"] == "127.0.0.1:8500",
          "http_addr is unset (so CONSUL_HTTP_ADDR from /etc/default/esmd applies); the local agent by default")

    # The environment the unit gives: CONSUL_HTTP_ADDR from /etc/default/esmd wins over the
    # default; the credential fallback (one newline) leaves the token as it was; a real token
    # file is used.
    cred = os.path.join(WORK, "credentials")
    write(os.path.join(cred, "empty"), "\n", 0o600)
    write(os.path.join(cred, "token"), "0f9e8d7c-token\n", 0o600)
    dirarg = [f"-config-dir={os.path.dirname(conf)}"]
    rc, cfg, text = validate(esmd, dirarg, {"CONSUL_HTTP_ADDR": "10.1.2.3:8501",
                                            "CONSUL_HTTP_TOKEN_FILE": os.path.join(cred, "empty")})
    check(rc == 0 and cfg["consul"]["address"] == "10.1.2.3:8501" and cfg["consul"]["token"] == "",
          f"CONSUL_HTTP_ADDR applies, the empty credential gives no token:\n{text}")
    rc, cfg, text = validate(esmd, dirarg, {"CONSUL_HTTP_TOKEN_FILE": os.path.join(cred, "empty"),
                                            "CONSUL_HTTP_TOKEN": "abc"})
    check(rc == 0 and cfg["consul"]["token"] == "<redacted>", "the empty credential keeps CONSUL_HTTP_TOKEN")
    rc, cfg, text = validate(esmd, dirarg, {"CONSUL_HTTP_TOKEN_FILE": os.path.join(cred, "token")})
    check(rc == 0 and cfg["consul"]["token"] == "<redacted>", "the token credential is read")
    rc, cfg, text = validate(esmd, dirarg, {"CONSUL_HTTP_TOKEN_FILE": os.path.join(cred, "missing")})
    check(rc == 11, "a token file that cannot be read is a configuration error (exit 11)")

    # /etc/default/esmd: comments and KEY=VALUE only; with every example uncommented esmd
    # still validates (the examples are real variables with sane values).
    env = {}
    for line in read(os.path.join(root, "etc/default/esmd")).splitlines():
        check(line == "" or line.startswith("#"), f"/etc/default/esmd sets something by default: {line!r}")
        m = re.fullmatch(r"#([A-Z_]+)=(.*)", line)
        if m:
            env[m.group(1)] = m.group(2)
    check(env and all(k.startswith("CONSUL_") for k in env), f"examples in /etc/default/esmd: {sorted(env)}")
    rc, cfg, text = validate(esmd, dirarg, env)
    check(rc == 0, f"esmd -validate with /etc/default/esmd's examples uncommented failed:\n{text}")

    dyn = os.environ.get("ESMD_BIN", "")
    if dyn:
        rc, cfg, text = validate(dyn, [f"-config-file={CONFIG}"])
        check(rc == 0, f"ESMD_BIN -validate deploy/config/esmd.hcl failed:\n{text}")
        print(f"  ESMD_BIN ({dyn}) validates deploy/config/esmd.hcl too")


# A stub command: logs "NAME ARGS" and exits with $STUB_RC_<NAME> (default 0). Only shell
# builtins: PATH holds nothing but stubs.
STUB = """#!/bin/sh
echo "@NAME@ $*" >>"$STUB_LOG"
exit "${STUB_RC_@VAR@:-0}"
"""


_runs = []


def run_script(name, args, tools=None, rcs=None, systemd_running=True):
    """Runs the package's maintainer script `name` with /bin/sh, PATH holding only stubs that
    log their calls (so nothing on the host changes), /run/systemd/system replaced by a scratch
    directory that exists iff systemd_running. Returns the logged calls."""
    _, control = extracted()
    _runs.append(name)
    d = os.path.join(WORK, "scripts", f"{len(_runs)}-{name}")
    bindir, run_dir, log = os.path.join(d, "bin"), os.path.join(d, "run-systemd-system"), os.path.join(d, "log")
    os.makedirs(bindir)
    if systemd_running:
        os.makedirs(run_dir)
    tools = tools if tools is not None else ["systemd-sysusers", "adduser", "getent", "deb-systemd-helper",
                                             "deb-systemd-invoke", "systemctl", "rm", "rmdir"]
    for tool in tools:
        write(os.path.join(bindir, tool),
              STUB.replace("@NAME@", tool).replace("@VAR@", re.sub(r"[^a-zA-Z0-9]", "_", tool)), 0o755)
    text = read(os.path.join(control, name))
    text = text.replace("/run/systemd/system", run_dir).replace("/usr/bin/deb-systemd-helper",
                                                                 os.path.join(bindir, "deb-systemd-helper"))
    script = os.path.join(d, name)
    write(script, text, 0o755)
    env = {"PATH": bindir, "STUB_LOG": log}
    for tool, rc in (rcs or {}).items():
        env["STUB_RC_" + re.sub(r"[^a-zA-Z0-9]", "_", tool)] = str(rc)
    r = sh(["/bin/sh", script, *args], timeout=30, env=env)
    calls = read(log).splitlines() if os.path.exists(log) else []
    show(f"{name} {' '.join(args)} (exit {r.returncode}; stubs: {'systemd running' if systemd_running else 'no systemd'})",
         "\n".join(calls) + (("\n" + r.stderr) if r.stderr else ""))
    check(r.returncode == 0, f"{name} {' '.join(args)} exited {r.returncode}: {r.stderr}")
    return calls


@case
def scripts_pass_shellcheck():
    """shellcheck accepts the maintainer scripts (as sh) and deploy/deb/build (as bash)"""
    if not shutil.which("shellcheck"):
        skip("shellcheck is not installed (Debian package shellcheck)")
    _, control = extracted()
    for shell, paths in (("sh", [os.path.join(control, n) for n in ("postinst", "prerm", "postrm")]),
                         ("bash", [os.path.join(DEB_DIR, "build")])):
        r = sh(["shellcheck", "-s", shell, *paths], timeout=120)
        show(f"shellcheck -s {shell} {' '.join(os.path.basename(p) for p in paths)} (exit {r.returncode})",
             r.stdout)
        check(r.returncode == 0, "shellcheck complains")


@case
def maintainer_scripts():
    """the maintainer scripts pass sh -n and do what dh_installsystemd would, run with stub commands"""
    _, control = extracted()
    for name in ("postinst", "prerm", "postrm"):
        path = os.path.join(control, name)
        check(read(path).startswith("#!/bin/sh\n") and "set -e" in read(path), f"{name}: #!/bin/sh and set -e")
        for shell in ("/bin/sh", "/bin/dash", "/bin/bash"):
            if os.path.exists(shell):
                r = sh([shell, "-n", path], timeout=30)
                check(r.returncode == 0, f"{shell} -n {name}: {r.stderr}")

    # First installation: the user from sysusers.d, unit enabled, daemon reloaded, not started.
    calls = run_script("postinst", ["configure"])
    check(calls == ["systemd-sysusers esmd.conf",
                    "deb-systemd-helper unmask esmd.service",
                    "deb-systemd-helper --quiet was-enabled esmd.service",
                    "deb-systemd-helper enable esmd.service",
                    "systemctl --system daemon-reload"], f"postinst configure: {calls}")
    # Upgrade: restarted only if it runs (try-restart).
    calls = run_script("postinst", ["configure", "0.0.9-1"])
    check(calls[-1] == "deb-systemd-invoke try-restart esmd.service" and
          not any("start esmd" in c and "try-restart" not in c for c in calls), f"postinst upgrade: {calls}")
    # An administrator disabled it: stays disabled.
    calls = run_script("postinst", ["configure", "0.0.9-1"], rcs={"deb-systemd-helper": 1})
    check("deb-systemd-helper update-state esmd.service" in calls and
          "deb-systemd-helper enable esmd.service" not in calls, f"postinst keeps a disable: {calls}")
    # No systemd-sysusers: adduser, unless the user exists; no systemd running: no systemctl.
    no_sysusers = ["adduser", "getent", "deb-systemd-helper", "deb-systemd-invoke", "systemctl"]
    calls = run_script("postinst", ["configure"], tools=no_sysusers, rcs={"getent": 2}, systemd_running=False)
    check(calls[:2] == ["getent passwd esmd",
                        "adduser --system --group --home /nonexistent --no-create-home "
                        "--gecos esmd, External Service Monitor for Consul --quiet esmd"], f"adduser fallback: {calls}")
    check(not any(c.startswith(("systemctl", "deb-systemd-invoke")) for c in calls), f"no systemd: {calls}")
    calls = run_script("postinst", ["configure"], tools=no_sysusers, rcs={"getent": 0}, systemd_running=False)
    check(calls[0] == "getent passwd esmd" and not any(c.startswith("adduser") for c in calls),
          f"existing user: {calls}")
    # Not-configure invocations of postinst create no user.
    calls = run_script("postinst", ["abort-upgrade", "0.1.0-1"])
    check(not any(c.startswith(("systemd-sysusers", "adduser")) for c in calls), f"abort-upgrade: {calls}")

    calls = run_script("prerm", ["remove"])
    check(calls == ["deb-systemd-invoke stop esmd.service"], f"prerm remove: {calls}")
    calls = run_script("prerm", ["upgrade", "0.1.1-1"])
    check(calls == [], f"prerm upgrade leaves the service to postinst's try-restart: {calls}")

    calls = run_script("postrm", ["remove"])
    check(calls == ["deb-systemd-helper mask esmd.service", "systemctl --system daemon-reload"],
          f"postrm remove: {calls}")
    calls = run_script("postrm", ["purge"])
    check(calls == ["deb-systemd-helper purge esmd.service", "deb-systemd-helper unmask esmd.service",
                    "rm -rf /var/log/esmd", "rmdir /etc/esmd"], f"postrm purge: {calls}")
    calls = run_script("postrm", ["upgrade", "0.1.1-1"])
    check(calls == [], f"postrm upgrade: {calls}")


# ---------------------------------------------------------------------------------------------
# 5. (opt-in) the package under a real systemd: a booted systemd-nspawn container

NSPAWN_ROOT = os.environ.get("ESMD_NSPAWN_ROOT", "")


def nspawn_root():
    root = os.path.abspath(NSPAWN_ROOT)
    if not os.path.exists(os.path.join(root, "lib/systemd/systemd")):
        mirror = os.environ.get("ESMD_DEBIAN_MIRROR", "http://deb.debian.org/debian")
        print(f"  debootstrap bookworm into {root} (once; {mirror})", flush=True)
        partial = root + ".partial"
        shutil.rmtree(partial, True)
        r = sh(["debootstrap", "--variant=minbase", "--include=systemd,systemd-sysv,dbus,procps,adduser",
                "bookworm", partial, mirror], timeout=1800)
        check(r.returncode == 0, f"debootstrap failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        with open(os.path.join(partial, "etc/hosts"), "w") as f:
            f.write("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
        shutil.rmtree(root, True)
        os.rename(partial, root)
    return root


class Container:
    """A booted systemd-nspawn container on a tmpfs overlay of a read-only tree."""

    def __init__(self, root, binds):
        self.log = open(os.path.join(WORK, "nspawn.log"), "w")
        name = f"esmd-test-{os.getpid()}"
        args = ["systemd-nspawn", "-D", root, "--volatile=overlay", "--boot", "--register=no",
                "--keep-unit", "--private-network", f"--machine={name}", "--console=pipe"]
        args += [f"--bind-ro={src}:{dst}" for src, dst in binds]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = None
        for _ in range(300):
            check(self.proc.poll() is None, f"systemd-nspawn exited {self.proc.returncode}:\n"
                  + read(self.log.name))
            kids = sh(["pgrep", "-P", str(self.proc.pid), "-x", "systemd"], timeout=10).stdout.split()
            if kids:
                self.pid = kids[0]
                state = self.run(["systemctl", "is-system-running"], timeout=10).stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.2)
        raise AssertionError("the container's systemd did not come up within 60 s")

    def run(self, cmd, timeout=60, netns_only=False):
        ns = ["-n"] if netns_only else ["-m", "-u", "-i", "-n", "-p", "-C"]
        return sh(["nsenter", "-t", self.pid, *ns, "--", *cmd], timeout=timeout)

    def ok(self, cmd, timeout=60):
        r = self.run(cmd, timeout)
        check(r.returncode == 0, f"in the container: {' '.join(cmd)}: exit {r.returncode}\n{r.stdout}{r.stderr}")
        return r.stdout

    def http(self, url, token=None):
        """GET url from inside the container's network namespace (the host's python3)."""
        code = ("import sys, urllib.request\n"
                "r = urllib.request.Request(sys.argv[1], headers={'X-Consul-Token': sys.argv[2]} if sys.argv[2] else {})\n"
                "try:\n    print(urllib.request.urlopen(r, timeout=5).read().decode())\n"
                "except Exception as e:\n    print('ERROR', e)\n")
        return self.run([sys.executable, "-c", code, url, token or ""], timeout=20, netns_only=True).stdout

    def put(self, url, body, token):
        code = ("import sys, urllib.request\n"
                "r = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), method='PUT', "
                "headers={'X-Consul-Token': sys.argv[3]})\n"
                "print(urllib.request.urlopen(r, timeout=5).read().decode())\n")
        r = self.run([sys.executable, "-c", code, url, json.dumps(body), token], timeout=20, netns_only=True)
        check(r.returncode == 0, f"PUT {url}: {r.stderr}")

    def close(self):
        if self.proc.poll() is None:
            if self.pid:
                self.run(["systemctl", "poweroff", "--no-block"], timeout=20)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def wait_for(what, fn, timeout):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        check(time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.5)


if NSPAWN_ROOT:
    @case
    def package_runs_under_systemd():
        """in a booted Debian 12 container: dpkg installs the package (enabled, not started), esmd.service starts as notify with the token credential, pings, reloads, stops, and purge cleans up"""
        root = nspawn_root()
        consul = os.environ.get("CONSUL_BIN", "")
        if not consul:
            r = sh([os.path.join(ROOT, "deploy/dev/get-consul")], timeout=300)
            check(r.returncode == 0, f"deploy/dev/get-consul: {r.stderr}")
            consul = r.stdout.strip().splitlines()[-1]
        deb = package()
        token = "7c1e2f3a-esmd-test-root-token"
        c = Container(root, [(os.path.dirname(deb), "/mnt/deb"), (os.path.realpath(consul), "/usr/local/bin/consul")])
        try:
            acl = ('acl { enabled = true default_policy = "deny" tokens { master = "%s" agent = "%s" } }'
                   % (token, token))
            c.ok(["systemd-run", "--unit=consul-dev", "/usr/local/bin/consul", "agent", "-dev", "-node=c1",
                  "-bind=127.0.0.1", "-client=127.0.0.1", "-dns-port=-1", "-grpc-port=-1", "-hcl", acl])
            wait_for("a Consul leader", lambda: '"127.0.0.1:' in c.http("http://127.0.0.1:8500/v1/status/leader"), 60)

            out = c.run(["dpkg", "-i", "/mnt/deb/" + os.path.basename(deb)], timeout=120)
            show("dpkg -i", out.stdout + out.stderr)
            check(out.returncode == 0, "dpkg -i failed")
            check(c.run(["systemctl", "is-enabled", "esmd"]).stdout.strip() == "enabled", "enabled on install")
            check(c.run(["systemctl", "is-active", "esmd"]).stdout.strip() == "inactive", "not started on install")
            check(c.ok(["id", "-gn", "esmd"]).strip() == "esmd", "the user and group esmd exist")

            # The token, root-only; pings allowed for esmd's group in the container's network
            # namespace only; a drop-in makes a filtered syscall kill esmd instead of EPERM.
            c.ok(["sh", "-c", f"umask 077 && echo {token} >/etc/esmd/consul-token"])
            gid = c.ok(["sh", "-c", "getent group esmd | cut -d: -f3"]).strip()
            c.ok(["sysctl", "-q", "-w", f"net.ipv4.ping_group_range={gid} {gid}"])
            c.ok(["sh", "-c", "mkdir -p /etc/systemd/system/esmd.service.d && printf '[Service]\\n"
                  "SystemCallErrorNumber=\\n' >/etc/systemd/system/esmd.service.d/zz-test.conf && "
                  "systemctl daemon-reload"])
            c.put("http://127.0.0.1:8500/v1/catalog/register", {
                "Node": "ext-1", "Address": "127.0.0.2",
                "NodeMeta": {"external-node": "true", "external-probe": "true"},
                "Service": {"ID": "admin", "Service": "admin", "Port": 8080},
                "Checks": [{"CheckID": "admin-http", "Name": "admin", "ServiceID": "admin", "Status": "critical",
                            "Definition": {"HTTP": "http://localhost:8080/healthz", "Interval": "2s",
                                           "Timeout": "1s"}}]}, token)

            r = c.run(["systemctl", "start", "esmd"], timeout=90)
            props = c.ok(["systemctl", "show", "esmd", "-p", "ActiveState", "-p", "StatusText", "-p", "MainPID"])
            show("systemctl start esmd; systemctl show", props)
            check(r.returncode == 0 and "ActiveState=active" in props and "Registered" in props,
                  f"esmd.service did not start (READY=1):\n{r.stderr}")
            pid = re.search(r"MainPID=(\d+)", props).group(1)
            status = c.ok(["cat", f"/proc/{pid}/status"])
            fields = dict(l.split(":", 1) for l in status.splitlines() if ":" in l)
            check(fields["Uid"].split()[0] == c.ok(["id", "-u", "esmd"]).strip(), "esmd runs as the user esmd")
            check(fields["CapEff"].strip() == "0000000000000000" and fields["CapBnd"].strip() == "0000000000000000",
                  "no capabilities")
            check(fields["NoNewPrivs"].strip() == "1" and fields["Seccomp"].strip() == "2", "no_new_privs, seccomp")

            def node_checks():
                text = c.http("http://127.0.0.1:8500/v1/health/node/ext-1", token)
                try:
                    got = {x["CheckID"]: x["Status"] for x in json.loads(text)}
                except ValueError:
                    return None
                return got if got.get("admin-http") == got.get("externalNodeHealth") == "passing" else None
            got = wait_for("the HTTP check and the ping of ext-1 to pass", node_checks, 60)
            print(f"  checks of ext-1: {got}")
            check(c.http("http://127.0.0.1:8080/readyz").startswith("ready"), "/readyz answers ready")
            r = c.run(["/usr/bin/esmd", "-healthcheck", "-config-dir=/etc/esmd"], timeout=30)
            check(r.returncode == 0, f"esmd -healthcheck -config-dir=/etc/esmd: exit {r.returncode} {r.stderr}")

            # A local file sorting after config.hcl, as the packaged file's comment says.
            c.ok(["sh", "-c", "echo 'log_level = \"DEBUG\"' >/etc/esmd/local.hcl"])
            c.ok(["systemctl", "reload", "esmd"], timeout=60)
            journal = c.ok(["journalctl", "-u", "esmd", "--no-pager", "-o", "cat"])
            check("Reloaded configuration: applied=log_level" in journal, "the reload applied log_level")

            t0 = time.monotonic()
            c.ok(["systemctl", "stop", "esmd"], timeout=60)
            took = time.monotonic() - t0
            props = c.ok(["systemctl", "show", "esmd", "-p", "Result", "-p", "ExecMainStatus", "-p", "NRestarts"])
            journal = c.ok(["journalctl", "-u", "esmd", "--no-pager", "-o", "cat"])
            show("journal of esmd.service", "\n".join(journal.splitlines()[-40:]))
            print(f"  systemctl stop took {took:.2f} s; {' '.join(props.split())}")
            check(took < 6.5 and "Result=success" in props and "ExecMainStatus=0" in props
                  and "NRestarts=0" in props, "a clean stop within 6.5 s, no restarts (no watchdog kill, no SIGSYS)")

            r = c.run(["dpkg", "--purge", "esmd"], timeout=120)
            check(r.returncode == 0, f"dpkg --purge: {r.stderr}")
            left = c.run(["sh", "-c", "ls -A /etc/esmd; ls -d /var/log/esmd /etc/default/esmd /usr/bin/esmd 2>/dev/null"]).stdout.split()
            check(left == ["consul-token", "local.hcl"],
                  f"after purge only the administrator's token and local.hcl are left: {left}")
        finally:
            c.close()


if __name__ == "__main__":
    run()
