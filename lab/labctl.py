#!/usr/bin/env python3
"""The svcctl lab: real Debian hosts with systemd as PID 1, booted with systemd-nspawn.

lab-1..lab-N run Debian 12 bookworm; `--releases` adds one host per Debian release named, lab-<release>
(lab-bullseye, lab-bookworm, lab-trixie), each from its own cached image.

Each host gets its own network namespace (veth on a private bridge, fixed address, no route out), its
own overlayfs root over a cached read-only image, its own cgroups, its own SSH host key (generated once
per lab) and a `deploy` user with passwordless sudo.  The lab writes an OpenSSH client config, a
known_hosts file and a key pair under LAB_ROOT so `ssh -F /var/lib/svcctl-lab/ssh_config lab-1` works
with strict host key checking.  apt inside the hosts reaches only the machine's own Debian mirror,
through a caching proxy on the bridge (aptproxy.py).

Standard library only: it runs as root before the project's virtualenv exists.

    labctl.py up [--hosts N] [--releases R ...]
                                 bring the lab up (idempotent; leftovers of a killed lab are cleaned first)
    labctl.py down               remove every host, mount, netns, veth, cgroup, route and process
    labctl.py stop HOST          power one host off, keeping its disk (to test unreachable nodes)
    labctl.py start HOST         boot a stopped host again
    labctl.py status             print the hosts, their releases and whether they run
    labctl.py image [--release R]
                                 build (or find in the cache) one release's host image only
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

LAB_ROOT = Path(os.environ.get("SVCCTL_LAB_ROOT", "/var/lib/svcctl-lab"))
CACHE = Path(os.environ.get("SVCCTL_LAB_CACHE", "/var/cache/svcctl-lab"))
HERE = Path(__file__).resolve().parent
BRIDGE = "svclab0"
NET = "10.211.37"  # a /24 nothing else on these machines uses; guarded by an unreachable route
GATEWAY = f"{NET}.1"
PROXY_PORT = 3142
CGROUP_PARENT = "svclab"
SUITE = "bookworm"  # the machine's own release: its apt sources name this suite and its -updates, -security
DEFAULT_RELEASE = "bookworm"  # lab-1..lab-N
# The releases a host can run, with the last octet of its fixed address: lab-<release> sits above lab-N's range.
RELEASES = {"bullseye": 201, "bookworm": 202, "trixie": 203}
MAX_HOSTS = 180  # lab-N is NET.(10+N): lab-180 is .190, below the release hosts
# Suites the machine's mirror does not carry for a release, left out of its sources.list (`apt-get update` in
# the image fails on a suite without a Release file).  None so far: the mirror serves <release>, -updates and
# -security for bullseye and trixie alike (checked with apt-get update in each image and host).
RELEASE_MISSING_SUITES: dict[str, list[str]] = {}
DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")
BASE_PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "openssh-server", "sudo", "python3", "iproute2", "procps",
    "ca-certificates", "gzip", "less",
]  # fmt: skip
ENGINE_PACKAGES = [
    "postgresql", "mariadb-server", "mariadb-client", "redis-server", "redis-tools",
    "python3-psycopg2", "python3-pymysql",
]  # fmt: skip
# Units that cannot work in a container, or that only slow boot; masking keeps `is-system-running` honest.
MASKED_UNITS = [
    "systemd-networkd-wait-online.service", "apt-daily.timer", "apt-daily-upgrade.timer",
    "e2scrub_all.timer", "fstrim.timer", "getty@tty1.service", "console-getty.service",
    "systemd-remount-fs.service", "sys-kernel-config.mount", "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount", "systemd-journald-audit.socket",
]  # fmt: skip
# Units to mask on top of MASKED_UNITS for one release, found by booting it.  None so far: bullseye (systemd 247)
# and trixie (systemd 257, on this machine's hybrid cgroup hierarchy) boot to `running` with MASKED_UNITS.
RELEASE_MASKED_UNITS: dict[str, list[str]] = {}
# Installed but not started at boot: svcctl's apply enables and starts what an instance needs.
ENGINE_UNITS = ["postgresql.service", "mariadb.service", "redis-server.service"]


def log(msg: str) -> None:
    """Progress on stderr, prefixed so it is told apart from test output."""
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def run(*cmd: str, check: bool = True, quiet: bool = False, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with its stderr (or return the result when check=False)."""
    res: subprocess.CompletedProcess[str] = subprocess.run(list(cmd), text=True, capture_output=True, **kw)  # type: ignore[call-overload]
    if check and res.returncode != 0:
        raise SystemExit(f"lab: command failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr.strip()}")
    if not quiet and res.returncode != 0 and not check:
        pass
    return res


# --------------------------------------------------------------------------- mirror and image recipe


def apt_sources() -> list[tuple[str, list[str], list[str]]]:
    """The machine's own Debian sources as (uri, suites, components), from deb822 or one-line files."""
    found: list[tuple[str, list[str], list[str]]] = []
    sources_d = Path("/etc/apt/sources.list.d")
    for f in sorted(sources_d.glob("*.sources")):
        for stanza in f.read_text().split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                for uri in fields.get("uris", "").split():
                    found.append((uri, fields.get("suites", "").split(), fields.get("components", "").split()))
    for f in [Path("/etc/apt/sources.list"), *sorted(sources_d.glob("*.list"))]:
        if not f.exists():
            continue
        for line in f.read_text().splitlines():
            m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$", line)
            if m:
                found.append((m.group(1), [m.group(2)], m.group(3).split()))
    debian = [s for s in found if any(x.startswith(SUITE) for x in s[1])]
    if not debian:
        raise SystemExit(f"lab: no Debian {SUITE} source in the machine's apt configuration (/etc/apt)")
    return debian


def main_mirror() -> str:
    """The URI that serves the plain `bookworm` suite: what debootstrap installs from."""
    for uri, suites, _ in apt_sources():
        if SUITE in suites:
            return uri
    raise SystemExit(f"lab: no apt source serves the '{SUITE}' suite; cannot build the host image")


def release_suite(suite: str, release: str) -> str:
    """The machine's suite name mapped to a release: bookworm-updates -> bullseye-updates."""
    return release + suite[len(SUITE) :] if suite.startswith(SUITE) else suite


def sources_list(release: str = DEFAULT_RELEASE) -> str:
    """A release's sources.list: the machine's own Debian sources with the suites renamed, one-line format."""
    lines = []
    for uri, suites, comps in apt_sources():
        for suite in suites:
            mapped = release_suite(suite, release)
            if mapped not in RELEASE_MISSING_SUITES.get(release, []):
                lines.append(f"deb {uri} {mapped} {' '.join(comps)}")
    return "\n".join(lines) + "\n"


def recipe(release: str = DEFAULT_RELEASE) -> dict[str, object]:
    """Everything that decides a release's image; its hash keys the cache (bookworm's is what it always was)."""
    return {
        "suite": release,
        "base": BASE_PACKAGES,
        "engines": ENGINE_PACKAGES,
        "masked": MASKED_UNITS + RELEASE_MASKED_UNITS.get(release, []),
        "disabled": ENGINE_UNITS,
        "sources": sources_list(release),
        "version": 1,  # raise when build_image() changes what it puts in the image
    }


def recipe_key(release: str = DEFAULT_RELEASE) -> str:
    """A short stable hash of the release's recipe."""
    return hashlib.sha256(json.dumps(recipe(release), sort_keys=True).encode()).hexdigest()[:16]


def chroot(root: Path, script: str) -> None:
    """Run a shell script inside the image being built, with the pseudo file systems it needs."""
    mounts = [("proc", root / "proc", ["-t", "proc"]), ("sysfs", root / "sys", ["-t", "sysfs"])]
    done = []
    try:
        for src, dst, opts in mounts:
            run("mount", *opts, src, str(dst))
            done.append(dst)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
        res = subprocess.run(["chroot", str(root), "/bin/sh", "-ec", script], env=env, text=True,
                             capture_output=True)  # fmt: skip
        if res.returncode != 0:
            raise SystemExit(f"lab: image step failed:\n{script}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    finally:
        for dst in reversed(done):
            run("umount", "-l", str(dst), check=False)


def image_release(image: Path) -> str | None:
    """The release a cached image (or a half-built one) is of; None for a leftover that does not say."""
    with contextlib.suppress(OSError):
        return (image / ".release").read_text().strip()
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return str(json.loads((image / ".complete").read_text())["suite"])
    return None


def image_in_use(image: Path) -> bool:
    """Whether a host's overlay is mounted over the image: removing it would pull the disk from under a host."""
    lower = f"lowerdir={image / 'rootfs'}"
    return any(lower in line for line in Path("/proc/mounts").read_text().splitlines())


def debootstrap_script(release: str) -> list[str]:
    """The script argument debootstrap needs: none when it knows the release, else its `sid` script."""
    if (DEBOOTSTRAP_SCRIPTS / release).exists():
        return []
    if not (DEBOOTSTRAP_SCRIPTS / "sid").exists():
        raise SystemExit(f"lab: debootstrap knows neither {release} nor sid; upgrade the debootstrap package")
    return [str(DEBOOTSTRAP_SCRIPTS / "sid")]


def build_image(release: str = DEFAULT_RELEASE) -> Path:
    """Return the release's cached image for its current recipe, building it with debootstrap when missing."""
    key = recipe_key(release)
    images = CACHE / "images"
    image = images / key
    if (image / ".complete").exists():
        return image / "rootfs"
    images.mkdir(parents=True, exist_ok=True)
    for old in images.iterdir():  # older recipes of this release and half-built leftovers; never one in use
        if old.name != key and image_release(old) in (release, None) and not image_in_use(old):
            log(f"removing stale {release} image {old.name}")
            shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(image, ignore_errors=True)
    rootfs = image / "rootfs"
    rootfs.mkdir(parents=True)
    (image / ".release").write_text(f"{release}\n")
    t0 = time.monotonic()
    mirror = main_mirror()
    log(f"building {release} host image {key} with debootstrap from the machine's apt mirror (minutes)")
    res = subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", release, str(rootfs), mirror,
         *debootstrap_script(release)],
        text=True, capture_output=True,
    )  # fmt: skip
    if res.returncode != 0:
        raise SystemExit(f"lab: debootstrap of {release} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    log(f"debootstrap done in {time.monotonic() - t0:.0f} s; installing the engines")
    (rootfs / "etc/apt/sources.list").write_text(sources_list(release))
    (rootfs / "etc/apt/apt.conf.d/10svcctl-lab").write_text(
        'Acquire::Check-Valid-Until "false";\nAcquire::Languages "none";\n'
        'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
    )
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    chroot(rootfs, f"apt-get update -qq && apt-get install -y -qq {' '.join(ENGINE_PACKAGES)} >/dev/null")
    masked = MASKED_UNITS + RELEASE_MASKED_UNITS.get(release, [])
    chroot(
        rootfs,
        "\n".join(
            [
                f"systemctl mask {' '.join(masked)}",
                f"systemctl disable {' '.join(ENGINE_UNITS)}",
                "useradd --create-home --shell /bin/bash deploy",
                "echo 'deploy ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/deploy && chmod 0440 /etc/sudoers.d/deploy",
                "install -d -m 0700 -o deploy -g deploy /home/deploy/.ssh",
                "rm -f /etc/ssh/ssh_host_*",
                "apt-get clean && rm -rf /var/lib/apt/lists/*",
                ": > /etc/machine-id",
            ]
        ),
    )
    policy.unlink()
    (rootfs / "etc/ssh/sshd_config.d/svcctl-lab.conf").write_text(
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUseDNS no\n"
        "MaxSessions 64\nMaxStartups 64:30:128\nHostKey /etc/ssh/ssh_host_ed25519_key\n"
    )
    (image / ".complete").write_text(json.dumps(recipe(release), indent=2))
    log(f"{release} image {key} ready in {time.monotonic() - t0:.0f} s")
    return rootfs


# --------------------------------------------------------------------------- host resources


def host_names(count: int) -> list[str]:
    """lab-1 .. lab-N."""
    return [f"lab-{i}" for i in range(1, count + 1)]


def release_host(release: str) -> str:
    """The name of the host that runs a release: lab-bullseye."""
    return f"lab-{release}"


def host_release(name: str) -> str:
    """The Debian release a host runs: its name says for lab-<release>, lab-N run the default one."""
    suffix = name.split("-", 1)[1]
    return suffix if suffix in RELEASES else DEFAULT_RELEASE


def host_order(name: str) -> tuple[int, int]:
    """Sort key: lab-1..lab-N by number, then the release hosts oldest release first."""
    suffix = name.split("-", 1)[1]
    return (1, RELEASES[suffix]) if suffix in RELEASES else (0, int(suffix))


def address(name: str) -> str:
    """Fixed address of a host: lab-N is NET.(10+N), lab-<release> the release's own (RELEASES)."""
    suffix = name.split("-", 1)[1]
    return f"{NET}.{RELEASES[suffix] if suffix in RELEASES else 10 + int(suffix)}"


def netns(name: str) -> str:
    return f"svclab-{name}"


def veth(name: str) -> str:
    return f"svl-{name}"[:15]


def hostdir(name: str) -> Path:
    return LAB_ROOT / "hosts" / name


def cgroup_dirs(name: str) -> list[Path]:
    """The host's cgroup in the named systemd hierarchy and in the unified one (DESIGN.md section 4)."""
    base = Path("/sys/fs/cgroup")
    dirs = []
    for hier in ("systemd", "unified"):
        if (base / hier).is_dir():
            dirs.append(base / hier / CGROUP_PARENT / name)
    if not dirs and (base / "cgroup.controllers").exists():
        dirs.append(base / CGROUP_PARENT / name)
    return dirs


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def host_running(name: str) -> bool:
    return read_pid(hostdir(name) / "pid") is not None


def known_hosts_in_lab() -> list[str]:
    """Every host the lab has a directory for, running or not."""
    d = LAB_ROOT / "hosts"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def ensure_bridge() -> None:
    """The lab bridge with the gateway address, and an unreachable route guarding the subnet."""
    if run("ip", "link", "show", BRIDGE, check=False, quiet=True).returncode != 0:
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")
    # While the lab exists no packet for a lab address may leave by the default gateway, even with the
    # bridge down: a higher-metric unreachable route catches what the connected route does not.
    if "unreachable" not in run("ip", "route", "show", f"{NET}.0/24", check=False).stdout:
        run("ip", "route", "add", "unreachable", f"{NET}.0/24", "metric", "4242", check=False)


def ensure_netns(name: str) -> None:
    """The host's network namespace, with a veth into the lab bridge and its fixed address; no default route."""
    ns = netns(name)
    if ns not in run("ip", "netns", "list").stdout.split():
        run("ip", "netns", "add", ns)
    if run("ip", "link", "show", veth(name), check=False).returncode != 0:
        run("ip", "link", "add", veth(name), "type", "veth", "peer", "name", "eth0", "netns", ns)
    run("ip", "link", "set", veth(name), "master", BRIDGE, "up")
    run("ip", "-n", ns, "link", "set", "lo", "up")
    if address(name) not in run("ip", "-n", ns, "addr", "show", "eth0").stdout:
        run("ip", "-n", ns, "addr", "add", f"{address(name)}/24", "dev", "eth0")
    run("ip", "-n", ns, "link", "set", "eth0", "up")


def ensure_lab_key() -> Path:
    """The key pair `deploy` accepts on every host, made once per lab."""
    key = LAB_ROOT / "id_ed25519"
    if not key.exists():
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "svcctl-lab", "-f", str(key))
    return key


def access_files(names: list[str]) -> None:
    """The lab's SSH key pair, known_hosts and ssh_config (all hosts the lab has, running or not)."""
    key = ensure_lab_key()
    kh_lines, cfg = [], [f"# written by lab/labctl.py; use with: ssh -F {LAB_ROOT}/ssh_config lab-1\n"]
    for name in names:
        pub = (hostdir(name) / "ssh_host_ed25519_key.pub").read_text().split()
        kh_lines.append(f"{name},{address(name)} {pub[0]} {pub[1]}")
        cfg.append(
            f"Host {name}\n  HostName {address(name)}\n  User deploy\n  IdentityFile {key}\n"
            f"  IdentitiesOnly yes\n  UserKnownHostsFile {LAB_ROOT}/known_hosts\n  StrictHostKeyChecking yes\n"
            f"  ControlMaster auto\n  ControlPath {LAB_ROOT}/cm/%C\n  ControlPersist 60\n"
            f"  ConnectTimeout 5\n  ServerAliveInterval 5\n"
        )
    (LAB_ROOT / "cm").mkdir(mode=0o700, exist_ok=True)
    (LAB_ROOT / "known_hosts").write_text("\n".join(kh_lines) + "\n")
    (LAB_ROOT / "ssh_config").write_text("\n".join(cfg))
    (LAB_ROOT / "hosts.json").write_text(
        json.dumps({n: {"address": address(n), "user": "deploy", "release": host_release(n)} for n in names}, indent=2)
    )


def prepare_host(name: str, image: Path, peers: list[str]) -> Path:
    """Mount the host's overlay root and write its identity: hostname, hosts, host key, deploy's key."""
    d = hostdir(name)
    for sub in ("upper", "work", "root"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    root = d / "root"
    if not os.path.ismount(root):
        run("mount", "-t", "overlay", "overlay", "-o",
            f"lowerdir={image},upperdir={d / 'upper'},workdir={d / 'work'}", str(root))  # fmt: skip
    hostkey = d / "ssh_host_ed25519_key"
    if not hostkey.exists():  # once per lab: the key survives stop/start, a new lab makes new ones
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}", "-f", str(hostkey))
    etc = root / "etc"
    (etc / "hostname").write_text(f"{name}\n")
    hosts = ["127.0.0.1 localhost", f"{address(name)} {name}", f"{GATEWAY} lab-gateway"]
    hosts += [f"{address(p)} {p}" for p in peers if p != name]
    (etc / "hosts").write_text("\n".join(hosts) + "\n")
    if not (etc / "machine-id").read_text().strip():
        (etc / "machine-id").write_text(hashlib.md5(os.urandom(16)).hexdigest() + "\n")
    for suffix in ("", ".pub"):
        dst = etc / "ssh" / f"ssh_host_ed25519_key{suffix}"
        shutil.copyfile(str(hostkey) + suffix, dst)
        dst.chmod(0o600 if not suffix else 0o644)
    (etc / "apt/apt.conf.d/90svcctl-lab-proxy").write_text(f'Acquire::http::Proxy "http://{GATEWAY}:{PROXY_PORT}/";\n')
    ak = root / "home/deploy/.ssh/authorized_keys"
    ak.write_text((LAB_ROOT / "id_ed25519.pub").read_text())
    passwd = {ln.split(":")[0]: ln.split(":") for ln in (etc / "passwd").read_text().splitlines()}
    uid, gid = int(passwd["deploy"][2]), int(passwd["deploy"][3])
    os.chown(ak, uid, gid)
    ak.chmod(0o600)
    return root


def boot_host(name: str, root: Path) -> None:
    """Start systemd-nspawn for the host in its own cgroups and netns; restart it if it asks to reboot."""
    d = hostdir(name)
    for cg in cgroup_dirs(name):
        cg.mkdir(parents=True, exist_ok=True)
    moves = " ".join(f"echo $$ > {cg}/cgroup.procs;" for cg in cgroup_dirs(name))
    nspawn = (
        f"systemd-nspawn --quiet --boot --register=no --keep-unit --resolv-conf=off --timezone=off "
        f"--link-journal=no --console=read-only --machine={name} --hostname={name} "
        f"--network-namespace-path=/run/netns/{netns(name)} --directory={root}"
    )
    # Exit code 133 means the host asked to reboot: boot it again, as a real machine would.
    script = f"{moves} while :; do {nspawn}; rc=$?; [ $rc -eq 133 ] || exit $rc; done"
    with (d / "console.log").open("ab") as out:
        proc = subprocess.Popen(["/bin/sh", "-c", script], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    (d / "pid").write_text(f"{proc.pid}\n")


def wait_ready(names: list[str], timeout: float = 90.0) -> None:
    """Wait until every host's sshd answers and systemd reports the system running."""
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            with contextlib.suppress(OSError), socket.create_connection((address(name), 22), timeout=1):
                break
            if not host_running(name):
                tail = (hostdir(name) / "console.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"lab: {name} stopped while booting; console:\n{tail}")
            if time.monotonic() > deadline:
                raise SystemExit(f"lab: {name} ({address(name)}) did not open port 22 within {timeout:.0f} s")
            time.sleep(0.2)
    for name in names:
        left = max(5.0, deadline - time.monotonic())
        res = run("ssh", "-F", str(LAB_ROOT / "ssh_config"), name, "systemctl is-system-running --wait",
                  check=False, timeout=left)  # fmt: skip
        state = res.stdout.strip()
        if state != "running":
            failed = run("ssh", "-F", str(LAB_ROOT / "ssh_config"), name,
                         "systemctl --failed --no-legend --plain", check=False).stdout  # fmt: skip
            raise SystemExit(f"lab: {name} booted to state '{state}' (want 'running'); failed units:\n{failed}")


# --------------------------------------------------------------------------- apt proxy


def start_proxy() -> None:
    pidfile = LAB_ROOT / "aptproxy.pid"
    if read_pid(pidfile):
        return
    allowed = sorted({uri for uri, _, _ in apt_sources()})
    cache = CACHE / "apt"
    cache.mkdir(parents=True, exist_ok=True)
    with (LAB_ROOT / "aptproxy.log").open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "aptproxy.py"), "--listen", f"{GATEWAY}:{PROXY_PORT}",
             "--cache", str(cache), *[f"--allow={u}" for u in allowed]],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    pidfile.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((GATEWAY, PROXY_PORT), timeout=1):
            return
        time.sleep(0.1)
    raise SystemExit(f"lab: the apt proxy did not start; see {LAB_ROOT / 'aptproxy.log'}")


# --------------------------------------------------------------------------- teardown


def kill_cgroup(name: str) -> None:
    """Kill whatever is left in the host's cgroups, then remove them."""
    for _ in range(50):
        pids: set[int] = set()
        for cg in cgroup_dirs(name):
            with contextlib.suppress(OSError):
                for f in cg.rglob("cgroup.procs"):
                    pids.update(int(p) for p in f.read_text().split())
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    for cg in cgroup_dirs(name):
        if cg.exists():
            for sub in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    sub.rmdir()
            with contextlib.suppress(OSError):
                cg.rmdir()


def power_off(name: str, grace: float = 20.0) -> None:
    """Ask the host's systemd to power off (nspawn forwards SIGTERM as poweroff), then force it."""
    d = hostdir(name)
    pid = read_pid(d / "pid")
    if pid:
        # The wrapper shell is the session leader; nspawn is its child.  SIGTERM to nspawn = clean poweroff.
        children = run("pgrep", "-P", str(pid), check=False).stdout.split()
        for child in children or [str(pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(child), signal.SIGTERM)
        deadline = time.monotonic() + grace
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
    kill_cgroup(name)
    (d / "pid").unlink(missing_ok=True)


def close_control_connections() -> None:
    cm = LAB_ROOT / "cm"
    if cm.is_dir():
        for sock in cm.iterdir():
            run("ssh", "-o", f"ControlPath={sock}", "-O", "exit", "lab", check=False)
            sock.unlink(missing_ok=True)


def unmount(path: Path) -> None:
    for _ in range(20):
        if not os.path.ismount(path):
            return
        if run("umount", str(path), check=False).returncode == 0:
            return
        time.sleep(0.25)
    run("umount", "-l", str(path), check=False)


def remove_host(name: str) -> None:
    """Everything one host made, in the safe order: processes, mount, netns, veth, files."""
    power_off(name)
    unmount(hostdir(name) / "root")
    if netns(name) in run("ip", "netns", "list", check=False).stdout.split():
        run("ip", "netns", "delete", netns(name), check=False)
    deadline = time.monotonic() + 10
    while run("ip", "link", "show", veth(name), check=False).returncode == 0:
        if time.monotonic() > deadline:
            run("ip", "link", "delete", veth(name), check=False)
            break
        time.sleep(0.1)
    shutil.rmtree(hostdir(name), ignore_errors=True)


def down() -> None:
    """Tear down the whole lab; safe to run on a half-built or already removed lab."""
    close_control_connections()
    names = known_hosts_in_lab()
    # Stray hosts from an older layout or a killed run: any netns/veth/cgroup with our prefix.
    names += [ns[len("svclab-"):] for ns in run("ip", "netns", "list", check=False).stdout.split()
              if ns.startswith("svclab-") and ns[len("svclab-"):] not in names]  # fmt: skip
    for name in names:
        power_off(name)
    for name in names:
        remove_host(name)
    pid = read_pid(LAB_ROOT / "aptproxy.pid")
    if pid:
        os.kill(pid, signal.SIGTERM)
    for cg_root in (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
        with contextlib.suppress(OSError):
            (cg_root / CGROUP_PARENT).rmdir()
    if run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
        run("ip", "link", "delete", BRIDGE, check=False)
    run("ip", "route", "del", "unreachable", f"{NET}.0/24", check=False)
    shutil.rmtree(LAB_ROOT, ignore_errors=True)
    log("lab removed")


# --------------------------------------------------------------------------- commands


@contextlib.contextmanager
def lab_lock() -> Iterator[None]:
    """One `up`, `start`, `image` or `down` at a time: test sessions share the lab, and an image being built
    must not be removed or built again by a second labctl."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "lock").open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("waiting for another labctl (building an image or booting hosts)")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def start(names: list[str], all_names: list[str]) -> None:
    """Boot the named hosts, each from its release's image (built first when missing)."""
    images = {release: build_image(release) for release in sorted({host_release(n) for n in names})}
    ensure_bridge()
    start_proxy()
    ensure_lab_key()
    for name in names:
        hostdir(name).mkdir(parents=True, exist_ok=True)
    for name in names:
        prepare_host(name, images[host_release(name)], all_names)
    access_files(all_names)
    for name in names:
        ensure_netns(name)
        boot_host(name, hostdir(name) / "root")
    wait_ready(names)


def up(count: int, releases: list[str]) -> None:
    """Bring up lab-1..lab-N and lab-<release> for each release named, keeping hosts that run; clean up a dead
    lab's leftovers first."""
    if os.geteuid() != 0:
        raise SystemExit("lab: must run as root (it creates network namespaces, mounts and cgroups)")
    if not 1 <= count <= MAX_HOSTS:
        raise SystemExit(f"lab: --hosts {count}: the lab has room for 1 to {MAX_HOSTS} numbered hosts")
    unknown = [r for r in releases if r not in RELEASES]
    if unknown:
        raise SystemExit(f"lab: unknown release {', '.join(unknown)}; the lab knows {', '.join(RELEASES)}")
    t0 = time.monotonic()
    existing = known_hosts_in_lab()
    running = [n for n in existing if host_running(n)]
    if existing and not running:
        log("found the leftovers of a lab whose hosts are gone; removing them first")
        down()
        existing = []
    wanted = host_names(count) + [release_host(r) for r in sorted(set(releases), key=RELEASES.__getitem__)]
    for release in sorted({host_release(n) for n in wanted}):
        build_image(release)
    LAB_ROOT.mkdir(parents=True, exist_ok=True)
    LAB_ROOT.chmod(0o755)
    all_names = sorted(set(existing) | set(wanted), key=host_order)
    to_start = [n for n in wanted if not host_running(n)]
    if to_start:
        for n in to_start:  # a host whose process died: clear its leftovers but keep its disk
            if (hostdir(n) / "pid").exists():
                power_off(n)
        log(f"starting {', '.join(to_start)}")
        start(to_start, all_names)
    else:
        access_files(all_names)
    log(f"lab up: {', '.join(wanted)} in {time.monotonic() - t0:.1f} s; ssh -F {LAB_ROOT}/ssh_config lab-1")


def stop_host(name: str) -> None:
    power_off(name)
    log(f"{name} stopped (disk kept; `labctl.py start {name}` boots it again)")


def start_host(name: str) -> None:
    if host_running(name):
        return
    if not hostdir(name).is_dir():
        raise SystemExit(f"lab: no host {name} in the lab")
    start([name], sorted(known_hosts_in_lab(), key=host_order))


def leftovers() -> list[str]:
    """Anything the lab made that still exists: after `down` this must be empty."""
    found = [f"netns {ns}" for ns in run("ip", "netns", "list", check=False).stdout.split() if ns.startswith("svclab-")]
    links = run("ip", "-o", "link", "show", check=False).stdout
    found += [f"link {m}" for m in re.findall(r"^\d+: ((?:svl-|svclab)[^:@]*)", links, re.MULTILINE)]
    found += [f"route {line}" for line in run("ip", "route", "show", f"{NET}.0/24", check=False).stdout.splitlines()]
    found += [f"mount {line.split()[1]}" for line in Path("/proc/mounts").read_text().splitlines()
              if line.split()[1].startswith(str(LAB_ROOT))]  # fmt: skip
    procs = run("pgrep", "-a", "-f", f"systemd-nspawn .*--machine=lab-|{HERE / 'aptproxy.py'}", check=False).stdout
    found += [f"process {line}" for line in procs.splitlines()]
    for name in cgroup_dirs("x"):
        if name.parent.exists():
            found.append(f"cgroup {name.parent}")
    if LAB_ROOT.exists():
        found.append(f"directory {LAB_ROOT}")
    return found


def verify_clean() -> int:
    """Exit 1 listing whatever the lab left behind (CI runs this after `down`)."""
    left = leftovers()
    for item in left:
        print(f"lab: left behind: {item}", file=sys.stderr)
    if not left:
        log("nothing left behind: no netns, veth, bridge, route, mount, cgroup, process or state directory")
    return 1 if left else 0


def status() -> int:
    names = known_hosts_in_lab()
    if not names:
        print("lab: down")
        return 1
    for name in sorted(names, key=host_order):
        print(f"{name}\t{address(name)}\t{host_release(name)}\t{'running' if host_running(name) else 'stopped'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up")
    u.add_argument("--hosts", type=int, default=int(os.environ.get("LAB_HOSTS", "2")), help="lab-1..lab-N")
    u.add_argument("--releases", nargs="*", default=[], metavar="RELEASE", choices=list(RELEASES),
                   help="also boot lab-<release> for each (bullseye, bookworm, trixie)")  # fmt: skip
    sub.add_parser("down")
    sub.add_parser("status")
    sub.add_parser("image").add_argument("--release", default=DEFAULT_RELEASE, choices=list(RELEASES))
    sub.add_parser("verify-clean")
    for verb in ("stop", "start"):
        sub.add_parser(verb).add_argument("host")
    a = p.parse_args(argv)
    if a.cmd == "status":
        return status()
    if a.cmd == "verify-clean":
        return verify_clean()
    if a.cmd == "stop":
        stop_host(a.host)
        return 0
    with lab_lock():
        if a.cmd == "up":
            up(a.hosts, a.releases)
        elif a.cmd == "down":
            down()
        elif a.cmd == "image":
            print(build_image(a.release))
        elif a.cmd == "start":
            start_host(a.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
