# svcctl observe script: runs as root on a node (python3 -, script on stdin), reads only, prints one JSON
# document.  svcctl builds it (svcctl.drivers.hostprograms.observe_program) from the host library, this
# header, each driver's observe_<engine>.py fragment and the footer; stdlib only, Python 3.9+.

from svcctl.hostlib.run import sh

_DPKG: "dict[str, str] | None" = None


def installed_packages():
    """Every installed Debian package -> its version, from one dpkg-query call per run (cached)."""
    global _DPKG
    if _DPKG is None:
        rc, out, _ = sh(["dpkg-query", "-W", "-f=${Package}\t${Status}\t${Version}\n"])
        _DPKG = {}
        for line in out.splitlines() if rc == 0 else []:
            fields = line.split("\t")
            if len(fields) == 3 and fields[1] == "install ok installed":
                _DPKG[fields[0]] = fields[2]
    return _DPKG


def installed_version(package):
    """The installed version of a Debian package, or None."""
    return installed_packages().get(package)


_UNITS: "dict[str, dict[str, bool]]" = {}


def unit_states(units):
    """{unit: {"active": bool, "enabled": bool}} for systemd units; one `systemctl show` for those not yet asked.

    The same answers as `systemctl is-active` / `is-enabled`: ActiveState "active", UnitFileState "enabled".
    The footer asks once for every engine's units (their `units_<engine>()`), so engines find theirs cached.
    """
    missing = [u for u in dict.fromkeys(units) if u not in _UNITS]
    if missing:
        states, current = {}, {}
        _rc, out, _ = sh(["systemctl", "show", "--property=Id,ActiveState,UnitFileState", "--", *missing])
        for line in [*out.splitlines(), ""]:
            if line.strip():
                key, _, value = line.partition("=")
                current[key] = value.strip()
            elif current:
                states[current.get("Id", "")] = {
                    "active": current.get("ActiveState") == "active",
                    "enabled": current.get("UnitFileState") == "enabled",
                }
                current = {}
        for u in missing:
            _UNITS[u] = states.get(u, {"active": False, "enabled": False})
    return {u: _UNITS[u] for u in units}


def unit_state(unit):
    """{"active": bool, "enabled": bool} for a systemd unit."""
    return unit_states([unit])[unit]
