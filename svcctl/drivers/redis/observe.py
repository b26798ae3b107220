# Redis: the package, the stock unit, and each `redis-server@NAME` instance read from its files on disk
# (/etc/redis/redis-NAME.conf and its aclfile), so a stopped instance is observed too, and each running one's
# client connections (established TCP connections to its port).  Reads only.
# Helpers are `_redis_*`: the footer calls every global named observe_*, and snippets share one module.
import os as _redis_os

from svcctl.drivers.host.observe_header import installed_version, tcp_sockets, unit_states
from svcctl.hostlib.backups import LEGACY_AUTH, REDIS_BACKUP_USER, credential_paths
from svcctl.hostlib.verifiers import redis_acl_digest

_REDIS_CONF_DIR = "/etc/redis"  # what redis-server@.service reads: /etc/redis/redis-%i.conf
_REDIS_CONF_PREFIX, _REDIS_CONF_SUFFIX = "redis-", ".conf"
_REDIS_CONF_KEYS = ("port", "bind", "maxmemory", "maxmemory-policy", "maxclients", "aclfile", "dir", "pidfile")
_REDIS_FLAGS = ("on", "off", "nopass", "resetpass", "reset", "skip-sanitize-payload", "sanitize-payload")


_REDIS_SPACE = " \t\r\n"  # shlex's whitespace


def _redis_shlex_split(line):
    """shlex.split(line, comments=False, posix=True), without shlex (its import and its per-character Python
    state machine cost the node more than the rest of Redis's files): the same words, and the same ValueError
    for an unclosed quote or a trailing escape.  Words split at shlex's whitespace only; outside quotes `\\`
    escapes any character, within "..." only `"` and `\\`, within '...' none; a quoted empty word is a word."""
    if line.isascii() and not any(c in line for c in "'\"\\\x0b\x0c\x1c\x1d\x1e\x1f"):
        return line.split()  # nothing to unquote, and no whitespace but shlex's: the words str.split gives
    words, word, quote, quoted, i, n = [], [], "", False, 0, len(line)
    while i < n:
        char = line[i]
        if quote == "'":
            if char == "'":
                quote = ""
            else:
                word.append(char)
        elif quote == '"':
            if char == '"':
                quote = ""
            elif char == "\\" and i + 1 < n and line[i + 1] in '"\\':
                i += 1
                word.append(line[i])
            elif char == "\\" and i + 1 >= n:
                raise ValueError("No escaped character")
            else:
                word.append(char)
        elif char == "\\":
            if i + 1 >= n:
                raise ValueError("No escaped character")
            i += 1
            word.append(line[i])
        elif char in "'\"":
            quote, quoted = char, True
        elif char in _REDIS_SPACE:
            if word or quoted:
                words.append("".join(word))
            word, quoted = [], False
        else:
            word.append(char)
        i += 1
    if quote:
        raise ValueError("No closing quotation")
    if word or quoted:
        words.append("".join(word))
    return words


def _redis_words(line):
    """Split a config or ACL line as redis does (quotes allowed); fall back to whitespace on bad quoting."""
    try:
        return _redis_shlex_split(line)
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
    try:  # what glob.glob("/etc/redis/redis-*.conf") finds, without glob's and fnmatch's imports and regex
        found = _redis_os.listdir(_REDIS_CONF_DIR)
    except OSError:
        found = []
    head, tail = _REDIS_CONF_PREFIX, _REDIS_CONF_SUFFIX
    files = sorted(n for n in found if n.startswith(head) and n.endswith(tail) and len(n) >= len(head) + len(tail))
    return [f"{_REDIS_CONF_DIR}/{n}" for n in files], [n[len(head) : -len(tail)] for n in files]


def _redis_unit_names(names):
    return ["redis-server.service", *(f"redis-server@{n}.service" for n in names)]


def units_redis():
    """The units observe_redis asks about (the footer asks systemd once for every engine)."""
    return _redis_unit_names(_redis_confs()[1]) if installed_version("redis-server") is not None else []


_REDIS_COMM = "redis-server"


def _redis_sockets():
    """The socket inodes every process named redis-server holds (its /proc/<pid>/fd links), found as `ss -p`
    finds a socket's processes (the name from /proc/<pid>/stat), but reading the fds of those processes only."""
    inodes: set[int] = set()
    try:
        pids = [p for p in _redis_os.listdir("/proc") if p.isdigit()]
    except OSError:
        return inodes
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read(512)
        except OSError:
            continue
        start = stat.find(b"(")
        end = stat.find(b")", start + 1)  # ss reads the name as "%*d (%[^)])"
        if start < 0 or end < 0 or stat[start + 1 : end] != _REDIS_COMM.encode():
            continue
        try:
            fds = _redis_os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = _redis_os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link.endswith("]") and link[8:-1].isdigit():
                inodes.add(int(link[8:-1]))
    return inodes


def _redis_address(addr_hex):
    """A /proc/net/tcp(6) local address as `ss -n` prints it: a.b.c.d, or [inet_ntop's IPv6 text] (Redis sets
    IPV6_V6ONLY on every IPv6 socket it listens on, so ss never prints its `*` for one)."""
    raw = bytes.fromhex(addr_hex)
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # /proc prints 32-bit words host-order
    if len(raw) == 4:
        return ".".join(str(b) for b in raw)
    import _socket  # inet_ntop: the libc function ss formats with (::ffff:a.b.c.d and all)

    return "[" + _socket.inet_ntop(_socket.AF_INET6, raw) + "]"


def _redis_listen():
    """Addresses redis-server processes listen on (TCP), as `ss -H -ltnp` lists them (its 4th column of the
    lines naming "redis-server"): the listening sockets of /proc/net/tcp and tcp6 whose inode such a process
    holds.  ss's netlink dump is not needed, and its -p read every process's file descriptors (5-10 ms)."""
    inodes = _redis_sockets()
    found = set()
    if not inodes:
        return []
    for fields in tcp_sockets():
        if len(fields) < 10 or fields[3] != "0A" or not fields[9].isdigit() or int(fields[9]) not in inodes:
            continue  # 0A: LISTEN
        addr_hex, _, port_hex = fields[1].partition(":")
        found.add(f"{_redis_address(addr_hex)}:{int(port_hex, 16)}")
    return sorted(found)


def _redis_clients(ports):
    """Established TCP connections to each of `ports` (a redis instance's clients), from /proc/net/tcp and tcp6:
    the servers themselves need the admin's password, which this script never reads."""
    counts = dict.fromkeys(ports, 0)
    for fields in tcp_sockets():
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
