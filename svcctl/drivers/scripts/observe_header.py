# svcctl observe script: runs as root on a node (python3 -, script on stdin), reads only, prints one JSON
# document.  svcctl assembles it from this header, each driver's observe_<engine>.py snippet, and a
# footer; stdlib only, since the node has nothing but Debian's python3.
import json
import os
import subprocess
import sys

REGISTRY_PATH = "/var/lib/svcctl/registry.json"


def sh(argv, input=None, user=None, timeout=30, env=None):
    """Run argv (never through a shell); returns (rc, stdout, stderr).  user= runs it as that user."""
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    try:
        p = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, env=env, cwd="/")
    except FileNotFoundError as exc:
        return 127, "", str(exc)
    except subprocess.TimeoutExpired:
        return 124, "", f"timed out after {timeout}s: {argv[0]}"
    return p.returncode, p.stdout, p.stderr


def installed_version(package):
    """The installed version of a Debian package, or None."""
    rc, out, _ = sh(["dpkg-query", "-W", "-f=${Status}\t${Version}", package])
    if rc != 0 or not out.startswith("install ok installed"):
        return None
    return out.split("\t", 1)[1]


def unit_state(unit):
    """{"active": bool, "enabled": bool} for a systemd unit."""
    active = sh(["systemctl", "is-active", unit])[1].strip() == "active"
    enabled = sh(["systemctl", "is-enabled", unit])[1].strip() == "enabled"
    return {"active": active, "enabled": enabled}


def read_registry():
    """What svcctl recorded on this host at its applies (address -> record)."""
    try:
        with open(REGISTRY_PATH) as f:
            return json.load(f).get("objects", {})
    except FileNotFoundError:
        return {}
