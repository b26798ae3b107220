# The node's release and what its package sources offer: /etc/os-release (ID, VERSION_ID, VERSION_CODENAME),
# this python3's version, whether apt has package lists, and each engine package's installed and candidate
# version from ONE `apt-cache policy` call for all engines.  Reads only (apt-cache may refresh apt's own
# binary cache, as any apt-cache run does).  Raw facts only: the controller decides what they mean
# (svcctl.drivers.versions).  Helpers are `_release_*`: the footer calls every global named observe_* and
# files its output under engines["release"].
import os
import re as _release_re
import sys

from svcctl.drivers.host.observe_header import cached, dpkg_stamps, file_stamps
from svcctl.hostlib.run import sh

_RELEASE_FILES = ("/etc/os-release", "/usr/lib/os-release")
_RELEASE_KEYS = ("ID", "VERSION_ID", "VERSION_CODENAME")
_RELEASE_LISTS = "/var/lib/apt/lists"
# Every package by name: PostgreSQL majors 10 to 40 (9.6 and older are long gone from every Debian release
# svcctl supports).  A name apt does not know costs nothing; apt's regex matching ('^postgresql-[0-9]+$')
# would find any major but visits every package name: 60-140 ms against 25-40 ms on the lab's hosts.
_RELEASE_QUERY = ("mariadb-server", "redis-server", *(f"postgresql-{major}" for major in range(10, 41)))
_RELEASE_PACKAGE = r"(postgresql-[0-9]+(?:\.[0-9]+)?|mariadb-server|redis-server):"  # compiled when used:
# apt-cache's answer is parsed only when observe's cache of it misses


def _release_os():
    """ID, VERSION_ID and VERSION_CODENAME from os-release (lowercased keys; None when absent)."""
    found = {}
    for path in _RELEASE_FILES:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            key, sep, value = line.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or key not in _RELEASE_KEYS:
                continue
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            found[key] = value
        break
    return {key.lower(): found.get(key) for key in _RELEASE_KEYS}


def _release_has_lists():
    """Whether apt has downloaded any package list (an image cleaned after build has none until apt update)."""
    try:
        return any("_Packages" in name for name in os.listdir(_RELEASE_LISTS))
    except OSError:
        return False


def _release_parse_policy(text):
    """`apt-cache policy` output (LC_ALL=C) -> {package: {"installed": v or None, "candidate": v or None}}
    for the engine packages; other stanzas (another architecture's, say) are skipped."""
    packages, current = {}, None
    for line in text.splitlines():
        if not line.startswith(" "):
            m = _release_re.fullmatch(_RELEASE_PACKAGE, line.strip())
            current = m.group(1) if m else None
            if current is not None:
                packages[current] = {"installed": None, "candidate": None}
        elif current is not None:
            key, _, value = line.strip().partition(": ")
            if key in ("Installed", "Candidate"):
                packages[current][key.lower()] = None if value.strip() in ("", "(none)") else value.strip()
    return packages


def _release_ask_apt():
    """The engine packages apt knows of, from `apt-cache policy`; None when apt-cache cannot be asked."""
    env = {"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    rc, out, _err = sh(["apt-cache", "policy", *_RELEASE_QUERY], env=env, timeout=30)
    if rc != 0:
        return None
    return _release_parse_policy(out)


def _release_valid(value):
    """Whether a kept answer has the shape `_release_parse_policy` gives."""
    if not isinstance(value, dict):
        return False
    for package, versions in value.items():
        if not isinstance(package, str) or not isinstance(versions, dict) or set(versions) != _RELEASE_FIELDS:
            return False
        if not all(v is None or isinstance(v, str) for v in versions.values()):
            return False
    return True


_RELEASE_FIELDS = {"installed", "candidate"}
# What apt-cache policy's answer depends on: the installed packages (dpkg's status, which an upgrade of apt
# itself changes too), the package lists, and apt's configuration (sources, pins, options).
_RELEASE_APT_FILES = ("/usr/bin/apt-cache",)
_RELEASE_APT_TREES = (_RELEASE_LISTS, "/etc/apt")


def _release_packages():
    """The engine packages apt knows of, or None when apt-cache cannot be asked; kept in observe's cache until
    a file apt reads for it changes (an apt-cache run costs 20-35 ms of CPU, the stamps well under one)."""
    key = [
        "apt-cache policy 1",
        list(_RELEASE_QUERY),
        dpkg_stamps(),
        file_stamps(_RELEASE_APT_FILES, _RELEASE_APT_TREES),
    ]
    return cached("apt-policy.json", key, _release_ask_apt, _release_valid)


def observe_release():
    version = sys.version_info
    return {
        "os": _release_os(),
        "python": f"{version[0]}.{version[1]}.{version[2]}",
        "lists": _release_has_lists(),
        "packages": _release_packages(),
    }
