# Redis: the package, the stock unit, and each `redis-server@NAME` instance read from its files on disk
# (/etc/redis/redis-NAME.conf and its aclfile), so a stopped instance is observed too, and each running one's
# client connections (established TCP connections to its port).  Reads only.
# Helpers are `_redis_*`: the footer calls every global named observe_*, and snippets share one module.
import glob as _redis_glob
import os as _redis_os
import shlex as _redis_shlex

from svcctl.drivers.host.observe_header import installed_version, unit_states
from svcctl.hostlib.backups import LEGACY_AUTH, REDIS_BACKUP_USER, credential_paths
from svcctl.hostlib.run import sh
from svcctl.hostlib.verifiers import redis_acl_digest

_REDIS_CONF_GLOB = "/etc/redis/redis-*.conf"  # what redis-server@.service reads: /etc/redis/redis-%i.conf
_REDIS_CONF_KEYS = ("port", "bind", "maxmemory", "maxmemory-policy", "maxclients", "aclfile", "dir", "pidfile")
_REDIS_FLAGS = ("on", "off", "nopass", "resetpass", "reset", "skip-sanitize-payload", "sanitize-payload")


def _redis_words(line):
    """Split a config or ACL line as redis does (quotes allowed); fall back to whitespace on bad quoting."""
    try:
        return _redis_shlex.split(line, comments=False, posix=True)
    except ValueError:
        return line.split()


def _redis_user(words):
    """One `user NAME rule...` line as {name, flags, rules, hashes}; clear-text `>pw` becomes its sha256."""
    user = {"name": words[1], "flags": [], "rules": [], "hashes": []}
    for word in words[2:]:
        low = word.lower()
        if low in _REDIS_FLAGS:
            user["flags"].append(low)
        elif word.startswith("#"):
            user["hashes"].append(word[1:].lower())
        elif word.startswith(">"):
            user["hashes"].append(redis_acl_digest(word[1:]))
        elif word.startswith(("<", "!")):
            continue  # removes a password: nothing to verify
        else:
            user["rules"].append(word)
    if not user["name"].startswith("sv_") and user["name"] != REDIS_BACKUP_USER:
        user["hashes"] = []  # only svcctl's users are checked; other verifiers (the admin's too) stay here
    return user


def _redis_read_lines(path):
    """The non-comment lines of a file, or None if it does not exist."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    except FileNotFoundError:
        return None


def _redis_instance(path):
    """One instance's configuration (selected keys only, never requirepass/masterauth) and ACL users."""
    config, users = {}, []
    for line in _redis_read_lines(path) or []:
        words = _redis_words(line)
        if not words:
            continue
        key = words[0].lower()
        if key == "user" and len(words) >= 2:
            users.append(_redis_user(words))
        elif key in _REDIS_CONF_KEYS:
            config[key] = " ".join(words[1:])
    acl = {"path": config.get("aclfile"), "exists": False}
    if config.get("aclfile"):
        lines = _redis_read_lines(config["aclfile"])
        acl["exists"] = lines is not None
        for line in lines or []:
            words = _redis_words(line)
            if len(words) >= 2 and words[0] == "user":
                users.append(_redis_user(words))
    return {"config": config, "acl": acl, "users": users}


def _redis_backup_files(name):
    """Whether the instance's backup credential file exists, and the admin password file older svcctl wrote."""
    try:
        where = credential_paths(name)
    except ValueError:  # not a name svcctl makes: none of its files
        return {"credential": False, "legacy_auth": False}
    return {"credential": any(_redis_os.path.isfile(p) for p in where.values()),
            "legacy_auth": _redis_os.path.lexists(LEGACY_AUTH.format(name))}  # fmt: skip


def _redis_confs():
    """Instance config files and their names (`/etc/redis/redis-<name>.conf`)."""
    paths = sorted(_redis_glob.glob(_REDIS_CONF_GLOB))
    return paths, [p[len("/etc/redis/redis-") : -len(".conf")] for p in paths]


def _redis_unit_names(names):
    return ["redis-server.service", *(f"redis-server@{n}.service" for n in names)]


def units_redis():
    """The units observe_redis asks about (the footer asks systemd once for every engine)."""
    return _redis_unit_names(_redis_confs()[1]) if installed_version("redis-server") is not None else []


def _redis_listen():
    """Addresses redis-server processes listen on (TCP), from ss."""
    rc, out, _ = sh(["ss", "-H", "-ltnp"])
    if rc != 0:
        return []
    return sorted({ln.split()[3] for ln in out.splitlines() if '"redis-server"' in ln and len(ln.split()) > 3})


def _redis_clients(ports):
    """Established TCP connections to each of `ports` (a redis instance's clients), from /proc/net/tcp and tcp6:
    the servers themselves need the admin's password, which this script never reads."""
    counts = dict.fromkeys(ports, 0)
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != "01":  # 01: ESTABLISHED
                continue
            port = int(fields[1].rsplit(":", 1)[-1], 16)
            if port in counts:
                counts[port] += 1
    return counts


def observe_redis():
    """Package, stock unit, listeners and every template instance with its ACL users (files, not server)."""
    version = installed_version("redis-server")
    if version is None:  # leftover files of a removed package are not instances anyone can run
        return {
            "installed": False,
            "version": None,
            "running": False,
            "default_service": None,
            "listen": [],
            "instances": {},
        }
    paths, names = _redis_confs()
    units = unit_states(_redis_unit_names(names))
    instances = {}
    for name, path in zip(names, paths):  # one name per path (3.9 has no strict=)
        inst = _redis_instance(path)
        inst["unit"] = units[f"redis-server@{name}.service"]
        inst["backup"] = _redis_backup_files(name)
        instances[name] = inst
    ports = {}
    for name, inst in instances.items():
        port = inst["config"].get("port", "6379")
        if inst["unit"]["active"] and port.isascii() and port.isdigit():
            ports[name] = int(port)
    clients = _redis_clients(set(ports.values())) if ports else {}
    for name, port in ports.items():
        instances[name]["clients"] = clients[port]
    running = any(u["active"] for u in units.values())
    return {
        "installed": version is not None,
        "version": version,
        "running": running,
        "default_service": units["redis-server.service"],
        "listen": _redis_listen() if running else [],
        "instances": instances,
    }
