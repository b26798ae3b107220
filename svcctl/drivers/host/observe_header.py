# svcctl observe script: runs as root on a node (python3 -I -S -, script on stdin, through the loader of
# svcctl.drivers.hostprograms.cached_program), reads only (but for its own cache, CACHE_DIR), prints one JSON
# document.  svcctl builds it (svcctl.drivers.hostprograms.observe_program) from the host library, this
# header, each driver's observe_<engine>.py fragment and the footer; stdlib only, Python 3.9+.

import contextlib
import json
import os
import stat as _stat

from svcctl.hostlib.run import sh

CACHE_DIR = "/var/cache/svcctl"
"""What observe keeps between runs (answers of dpkg and apt that only change with the files they read): root's,
0700.  Each entry holds the stamps of those files; a stamp that differs, or an entry or directory that is not
root's own, is a miss, and the program is asked again."""
_CACHE_MAX = 4 << 20  # bytes: svcctl's entries are a few kilobytes; more is not one of them
DPKG_DB = "/var/lib/dpkg"


def file_stamps(paths, trees=()):
    """[path, inode, size, mtime_ns, ctime_ns] of each of `paths` (None when missing) and of every entry below
    each of `trees`, sorted: whatever rewrites, replaces, adds or removes one of those files changes it."""
    stamps = []

    def stamp(path):
        try:
            st = os.stat(path)  # a link's target: that is what the program reads
        except OSError:
            return [path, None]
        return [path, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]

    stamps += [stamp(p) for p in paths]
    for tree in trees:
        stamps.append(stamp(tree))
        for parent, dirs, files in os.walk(tree):
            dirs.sort()
            stamps += [stamp(os.path.join(parent, name)) for name in sorted(dirs + files)]
    return stamps


def _cache_dir_ok(path):
    """Whether the cache directory is a real directory of the user running this (root) that no one else may
    write to."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return _stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def cache_read(name, key):
    """The value stored under `name` for `key`, or None: missing, another key, or not a file of root's own in
    root's own directory (then it is not trusted, and ignored)."""
    if not _cache_dir_ok(CACHE_DIR):
        return None
    try:
        fd = os.open(f"{CACHE_DIR}/{name}", os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not _stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            return None
        if st.st_size > _CACHE_MAX:
            return None
        entry = json.loads(os.read(fd, _CACHE_MAX + 1).decode("utf-8"))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    return entry.get("value")


def cache_write(name, key, value):
    """Store `value` under `name` for `key` (0600, replaced whole); silently nothing when it cannot be written."""
    try:
        if not os.path.isdir(CACHE_DIR) and os.path.isdir(os.path.dirname(CACHE_DIR)):
            os.mkdir(CACHE_DIR, 0o700)
        if not _cache_dir_ok(CACHE_DIR):
            return
        temp = f"{CACHE_DIR}/.{name}.{os.getpid()}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(temp, flags, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"key": key, "value": value}, f, sort_keys=True)
            os.replace(temp, f"{CACHE_DIR}/{name}")
        except BaseException:
            os.unlink(temp)
            raise
    except OSError:
        return


def cached(name, key, compute, valid):
    """compute(), or what it gave last time with the same `key` (file stamps of what it reads) if that passes
    `valid`; a None from compute (the program could not be asked) is not kept."""
    value = cache_read(name, key)
    if value is not None and valid(value):
        return value
    value = compute()
    if value is not None:
        cache_write(name, key, value)
    return value


def _dpkg_valid(value):
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _dpkg_query():
    """package -> version of every installed package, from dpkg-query; None when it fails."""
    rc, out, _ = sh(["dpkg-query", "-W", "-f=${Package}\t${Status}\t${Version}\n"])
    if rc != 0:
        return None
    found = {}
    for line in out.splitlines():
        fields = line.split("\t")
        if len(fields) == 3 and fields[1] == "install ok installed":
            found[fields[0]] = fields[2]
    return found


def dpkg_stamps():
    """The stamps of what dpkg-query reads: the status file, its journal (updates/) and the architectures."""
    return file_stamps([f"{DPKG_DB}/status", f"{DPKG_DB}/arch"], [f"{DPKG_DB}/updates"])


def as_user(name):
    """Popen's keywords to run a program as `name` (uid, gid, its groups) with HOME, SHELL, USER and LOGNAME as
    runuser -u gives them, without runuser's own process and PAM session (5-6 ms of CPU per call)."""
    import pwd

    pw = pwd.getpwnam(name)
    env = dict(os.environ)
    env.update(HOME=pw.pw_dir, SHELL=pw.pw_shell or "/bin/sh", USER=pw.pw_name, LOGNAME=pw.pw_name)
    groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": groups, "env": env}


def converse(argv, first, marker, then, user=None, timeout=30):
    """One client process for two rounds: `first` on its stdin, its output read up to the line `marker` (which
    the client prints when it has answered `first`), then `then(that output)` sent and stdin closed.

    (exit code, output before the marker, output after it, stderr); 127 if the program is missing, 124 on
    timeout. When the client stops before the marker (an error), `then` is not called and the output it gave is
    the first.  Saves a second process, and a second server session, against two `sh` calls.
    """
    import select
    import subprocess
    import time

    deadline = time.monotonic() + timeout
    extra = as_user(user) if user is not None else {}
    try:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0, cwd="/",
            **extra,
        )  # fmt: skip
    except FileNotFoundError as exc:
        return 127, "", "", str(exc)
    pipes = proc.stdin, proc.stdout, proc.stderr
    assert pipes[0] is not None and pipes[1] is not None and pipes[2] is not None  # all three are pipes
    line = ("\n" + marker + "\n").encode()
    out, err, cut = b"\n", b"", -1
    try:
        with contextlib.suppress(BrokenPipeError):  # it stopped at once: its exit code and stderr say why
            pipes[0].write(first.encode())  # a few kilobytes at most: the pipe takes them without a reader
        so = pipes[1].fileno()
        fds = [so, pipes[2].fileno()]
        while cut < 0 and so in fds:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(argv, timeout)
            ready, _, _ = select.select(fds, [], [], left)
            for fd in ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    fds.remove(fd)
                elif fd == so:
                    out += chunk
                    cut = out.find(line)
                else:
                    err += chunk
        before = out[1 : cut + 1] if cut >= 0 else out[1:]
        try:
            second = then(_text(before)) if cut >= 0 else None
        except BaseException:
            proc.kill()
            proc.communicate()
            raise
        rest, tail = proc.communicate((second or "").encode(), timeout=max(deadline - time.monotonic(), 0.001))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return 124, "", "", f"timed out after {timeout:g}s: {argv[0]}"
    after = out[cut + len(line) :] + rest if cut >= 0 else b""
    return proc.returncode, _text(before), _text(after), _text(err + tail)


def _text(data):
    """Bytes as `sh` (subprocess's text mode) gives them: UTF-8, "\\r\\n" and "\\r" read as "\\n"."""
    return data.decode().replace("\r\n", "\n").replace("\r", "\n")


_DPKG: "dict[str, str] | None" = None


def installed_packages():
    """Every installed Debian package -> its version, from dpkg-query (once per run; kept in CACHE_DIR until
    dpkg's status changes)."""
    global _DPKG
    if _DPKG is None:
        _DPKG = cached("dpkg-installed.json", ["dpkg-query 1", dpkg_stamps()], _dpkg_query, _dpkg_valid) or {}
    return _DPKG


def installed_version(package):
    """The installed version of a Debian package, or None."""
    return installed_packages().get(package)


_PROC_NET: "dict[str, list[list[str]]]" = {}


def proc_net_tcp(path):
    """The socket lines of /proc/net/tcp or /proc/net/tcp6, each split into its fields (the header dropped),
    read once per run: MariaDB's listeners and Redis's listeners and clients are all in them, and the kernel
    walks every TCP hash bucket for each read.  Raises what opening the file raises."""
    rows = _PROC_NET.get(path)
    if rows is None:
        with open(path) as f:
            rows = _PROC_NET[path] = [line.split() for line in f.read().splitlines()[1:]]
    return rows


def tcp_sockets():
    """The socket lines of /proc/net/tcp, then of /proc/net/tcp6 (proc_net_tcp); a file that cannot be read
    (no IPv6) is left out."""
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = proc_net_tcp(path)
        except OSError:
            continue
        yield from rows


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
