# Backups: each instance's backup configuration, its timer (OnCalendar line and state) and its newest good
# backup, from the files svcctl wrote (svcctl.hostlib.backups). Reads only.
from svcctl.drivers.host.observe_header import unit_states
from svcctl.hostlib.backups import UNIT_PREFIX, configured, list_backups, read_config, unit_name

_BACKUP_UNIT_DIR = "/etc/systemd/system"


def _backup_on_calendar(instance):
    """The OnCalendar value of the instance's timer file, or None (no file, no such line)."""
    try:
        with open(f"{_BACKUP_UNIT_DIR}/{unit_name(instance, 'timer')}", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    values = [ln.split("=", 1)[1].strip() for ln in lines if ln.strip().startswith("OnCalendar=")]
    return values[0] if len(values) == 1 else None


def units_backups():
    """The timers observe_backups asks about (the footer asks systemd once for every part)."""
    return [unit_name(n, "timer") for n in configured()]


def observe_backups():
    """{"instances": {name: {engine, keep, port, schedule, timer: {active, enabled}, count, latest}}}."""
    names = configured()
    timers = unit_states([unit_name(n, "timer") for n in names])
    out = {}
    for name in names:
        config = read_config(name) or {}
        port = config.get("port")
        good = [b["id"] for b in list_backups(name) if b.get("result") == "ok"]
        out[name] = {
            "engine": config.get("engine"),
            "keep": config.get("keep"),
            "port": int(port) if isinstance(port, str) and port.isdigit() else port,
            "schedule": _backup_on_calendar(name),
            "timer": timers[unit_name(name, "timer")],
            "count": len(good),
            "latest": good[-1] if good else None,
        }
    return {"prefix": UNIT_PREFIX, "instances": out}
