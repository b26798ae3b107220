# The session helper's Redis part (built into svcctl-session.py after session_header.py): a temporary
# tunnel user as a line in the instance's ACL file (its password's SHA-256), loaded live, and its drop.
import contextlib
import os
import tempfile

from svcctl.drivers.host.session_header import NAME_RE, _matching, fail, ident, run
from svcctl.hostlib.redis_acl import acl_rules
from svcctl.hostlib.run import sh
from svcctl.hostlib.verifiers import redis_acl_digest


def redis_conf(instance):
    """(port, aclfile) of an instance from /etc/redis/redis-<name>.conf."""
    conf = {}
    with open(f"/etc/redis/redis-{_matching(NAME_RE, instance, 'instance')}.conf") as f:
        for line in f:
            words = line.split()
            if len(words) >= 2 and words[0] in ("port", "aclfile"):
                conf[words[0]] = words[1]
    if "aclfile" not in conf:
        fail(f"redis instance {instance} has no aclfile")
    return conf.get("port", "6379"), conf["aclfile"]


def redis_cli(port, admin_password, *args):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "REDISCLI_AUTH": admin_password}
    out = run(["redis-cli", "-h", "127.0.0.1", "-p", port, "--no-auth-warning", *args], env=env).strip()
    if out.startswith(("ERR", "WRONGPASS", "NOAUTH", "NOPERM")):
        fail(f"redis-cli {args[0]} {args[1]}: {out}")
    return out


def acl_rewrite(path, user, line):
    """Replace (or remove, line None) the user's line in the ACL file, atomically, keeping its mode."""
    with open(path) as f:
        lines = [ln for ln in f.read().splitlines() if not ln.startswith(f"user {user} ")]
    if line is not None:
        lines.append(line)
    st = os.stat(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".acl.")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, st.st_mode & 0o7777)
    os.replace(tmp, path)


def acl_line(user, password, role, major=None):
    """The session user's ACL file line: on, its password's SHA-256, the role's rules for this Redis
    (svcctl's own words, `svcctl.hostlib.redis_acl`)."""
    return f"user {ident(user)} on #{redis_acl_digest(password)} {' '.join(acl_rules(role, major))}"


def redis_version():
    """This node's redis-server version (`6.0.16`), or None if it cannot say."""
    rc, out, _ = sh(["redis-server", "--version"])
    words = [w[2:] for w in out.split() if w.startswith("v=")] if rc == 0 else []
    return words[0] if words else None


def rd_create(req):
    port, acl = redis_conf(req["instance"])
    line = acl_line(req["user"], req["password"], req["attrs"]["role"], redis_version())
    acl_rewrite(acl, req["user"], line)
    redis_cli(port, req["admin_password"], "ACL", "LOAD")


def rd_drop(req):
    try:
        port, acl = redis_conf(req["instance"])
    except FileNotFoundError:
        return
    acl_rewrite(acl, req["user"], None)
    if req.get("admin_password"):
        with contextlib.suppress(SystemExit):  # a stopped instance has no live user to drop
            redis_cli(port, req["admin_password"], "ACL", "DELUSER", req["user"])
