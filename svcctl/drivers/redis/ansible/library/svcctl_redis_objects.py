#!/usr/bin/python3
# svcctl's Redis instances and bindings on one node, every change of a run in one module run.
#
# Why a module of its own: as tasks, an instance was 5-6 remote processes (directory, template, ACL line,
# reset-failed, start, restart) and a binding 4 (ACL line, is-active, slurp, ACL LOAD), so a first apply of
# ten bound instances took 5.1x as long as one.  This module makes the same files and units, in order, in
# one process; each step is checked before it is done, so a second run changes nothing and check mode
# reports what would change.
#
# Each instance is its own `redis-server@NAME` unit reading /etc/redis/redis-NAME.conf, with its users in
# /etc/redis/users-NAME.acl (`default` = the instance's admin, one line per binding user).  A config change
# restarts that instance only; a change to binding users is loaded with ACL LOAD, without a restart.
# Passwords reach Redis only as SHA-256 verifiers in the ACL file; redis-cli gets the admin password from
# REDISCLI_AUTH in its own environment, never on a command line.
#
# A backup change (kind backup, from redis_backup.yml) is the instance's backup user, `svcctl_backup`: its
# line in the same ACL file (kept by every rewrite above, which touches only its own user's lines), loaded
# with ACL LOAD, and its password as the backup service's systemd credential: encrypted with the host key
# (systemd-creds encrypt --with-key=host, the password on stdin) under /etc/credstore.encrypted on systemd
# >= 250, a root-only plain file under /etc/credstore on 247.  It also removes the admin password file older
# svcctl wrote for the dump (/etc/svcctl/backup/<instance>.auth).  Deleting it undoes all three.
from __future__ import annotations

import os
import pwd
import re
import shutil
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.svcctl_hostlib.backups import CREDENTIAL, LEGACY_AUTH, REDIS_BACKUP_USER, credential_paths
from ansible.module_utils.svcctl_hostlib.redis_acl import acl_rules
from ansible.module_utils.svcctl_hostlib.registry import change_one, hold_changing, record_early
from ansible.module_utils.svcctl_hostlib.run import sh
from ansible.module_utils.svcctl_hostlib.verifiers import redis_acl_digest

DOCUMENTATION = r"""
module: svcctl_redis_objects
short_description: Create, change and delete svcctl's Redis instances and binding users, in order
description:
  - An instance is a data directory, a configuration file and an ACL file (its admin as user C(default)), and
    its enabled and started C(redis-server@NAME) unit; a change to its configuration or admin restarts it.
    Deleting it saves its dataset (SAVE), stops and disables the unit, keeps C(dump.rdb) as a root-only file
    in the root-only dump directory, then removes its files.
  - A binding is one C(user NAME on #<sha256> RULES) line in its instance's ACL file, loaded into the running
    instance with ACL LOAD; deleting it removes the line and drops the user live (ACL DELUSER), which
    disconnects its clients.
  - A backup is the instance's C(svcctl_backup) ACL user and its password as a systemd credential file (returned
    as C(credential_line), the service's LoadCredential line); deleting it removes both. apply.yml records and
    forgets backups itself (change.yml).
  - After a delete succeeds its address is forgotten in the host registry; the create half of a replace is
    recorded there after its delete (apply.yml records every other change before the run).
options:
  changes: {type: list, elements: dict, required: true, description: "apply.yml's changes (instance, binding)"}
  secrets: {type: dict, default: {}, no_log: true, description: "address -> {password, admin_password}"}
  environment: {type: str, required: true}
  dump_dir: {type: str, default: /var/backups/svcctl}
  recorded_late: {type: list, elements: str, default: [], description: "addresses to record just before creating"}
  record_first: {type: list, elements: str, default: [], description: "addresses to record at once, first"}
"""

RETURN = r"""
results: {description: "per change: address, action, changed and what was done", type: list}
credential_line: {description: "a backup's LoadCredentialEncrypted= or LoadCredential= line for its service", type: str}
svcctl_reports: {description: "where each deleted instance was dumped", type: list}
"""

INSTANCE_RE = re.compile(r"[a-z](-?[a-z0-9])+\Z")  # svcctl's instance names: used in paths and unit names
USER_RE = re.compile(r"[a-z0-9_]+\Z")  # svcctl's binding users: used in ACL lines
LOOPBACK = ("127.0.0.1", "-::1")
ENCRYPTED_SINCE = 250  # systemd's LoadCredentialEncrypted= and systemd-creds (Debian 12: 252); 247 has LoadCredential=


class Failed(Exception):
    """A change cannot be made; the message names why (never a secret)."""


def paths(instance):
    """The files and unit of one instance (its name already checked)."""
    return {
        "conf": f"/etc/redis/redis-{instance}.conf",
        "acl": f"/etc/redis/users-{instance}.acl",
        "data": f"/var/lib/redis/{instance}",
        "unit": f"redis-server@{instance}.service",
    }


def config_text(change):
    """The instance's configuration file, from its desired attributes."""
    name, attrs = change["name"], change["attrs"]
    where = paths(change["names"]["instance"])
    lines = [
        f"# Managed by svcctl: Redis instance {name}. Edits are overwritten at the next apply.",
        f"# Read by redis-server@{name}.service (/etc/redis/redis-%i.conf); users: the aclfile below.",
        f"port {int(attrs['port'])}",
        f"bind {' '.join(attrs.get('bind') or LOOPBACK)}",
        "protected-mode yes",
        f"maxmemory {int(attrs['memory_mb'])}mb",
        f"maxmemory-policy {attrs['eviction']}",
    ]
    if attrs.get("connections") is not None:
        lines.append(f"maxclients {int(attrs['connections'])}")
    lines += [
        f"dir {where['data']}",
        "dbfilename dump.rdb",
        f"pidfile /run/redis-{name}/redis-server.pid",
        'logfile ""',
        f"aclfile {where['acl']}",
        "supervised systemd",
        "daemonize no",
    ]
    return "\n".join(lines) + "\n"


def with_line(text, user, line):
    """The ACL file's text with `user`'s line set to `line` (the last one of that user replaced in place,
    else appended) or, `line` None, with every line of that user removed."""
    lines = text.splitlines()
    mine = [i for i, ln in enumerate(lines) if ln.startswith(f"user {user} ")]
    if line is None:
        lines = [ln for i, ln in enumerate(lines) if i not in mine]
    elif mine:
        lines[mine[-1]] = line
    else:
        lines.append(line)
    return "\n".join(lines) + "\n" if lines else ""


def read_text(path):
    """A file's text, or None when it does not exist."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def port_of(conf_text):
    found = re.search(r"(?m)^port (\d+)\s*$", conf_text or "")
    return found.group(1) if found else None


class Objects:
    """Every step checks, then acts (unless checking), and notes what it did (never a secret)."""

    def __init__(self, module):
        self.module = module
        self.check = module.check_mode
        self.did = []
        self.created = set()  # instances this run creates: in check mode, their files are only planned
        ids = {}
        for who in ("redis", "root"):
            try:
                entry = pwd.getpwnam(who)
                ids[who] = (entry.pw_uid, entry.pw_gid)
            except KeyError:
                if not self.check:
                    raise Failed(f"there is no {who} user on this node: is redis-server installed?") from None
                ids[who] = (-1, -1)
        self.ids = ids

    # --- plumbing -----------------------------------------------------------------------------------------

    def run(self, argv, what, env=None):
        """A command on the node (argv, never a shell); its output, or Failed naming `what`."""
        rc, out, err = sh(argv, env=env, timeout=120)
        if rc != 0:
            raise Failed(f"{what} failed ({rc}): {(err or out).strip()[-400:]}")
        return out.strip()

    def cli(self, port, admin_password, *args):
        """redis-cli on the instance as its admin, the password in its environment only."""
        if not admin_password:
            raise Failed("no admin password was passed for it")
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "REDISCLI_AUTH": admin_password}
        return self.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "--no-auth-warning", *args],
                        f"redis-cli {args[0]}", env)  # fmt: skip

    def unit_state(self, unit):
        """(active, enabled) of a unit, from one `systemctl show`."""
        out = self.run(["systemctl", "show", "-p", "ActiveState", "-p", "UnitFileState", unit], "systemctl show")
        props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        return props.get("ActiveState") == "active", props.get("UnitFileState") == "enabled"

    def systemctl(self, verb, unit):
        self.did.append(f"{verb} {unit}")
        if not self.check:
            self.run(["systemctl", verb, unit], f"systemctl {verb} {unit}")

    def write(self, path, text, owner, mode):
        """Write a file atomically with its owner and mode, if its content, owner or mode differ; True if so."""
        uid, gid = self.ids[owner]
        try:
            st = os.stat(path)
            same_meta = (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (uid, gid, mode)
        except FileNotFoundError:
            same_meta = False
        if same_meta and read_text(path) == text:
            return False
        self.did.append(f"write {path}")
        if self.check:
            return True
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".svcctl.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chown(tmp, uid, gid)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return True

    def directory(self, path, owner, mode):
        uid, gid = self.ids[owner]
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None and (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (uid, gid, mode):
            return
        self.did.append(f"directory {path}")
        if self.check:
            return
        os.makedirs(path, mode=mode, exist_ok=True)
        os.chown(path, uid, gid)
        os.chmod(path, mode)

    # --- instances ------------------------------------------------------------------------------------

    def instance(self, change, secret):
        where = paths(change["names"]["instance"])
        admin = secret.get("admin_password")
        if not admin:
            raise Failed("no admin password was passed for it")
        self.directory(where["data"], "redis", 0o750)
        conf_changed = self.write(where["conf"], config_text(change), "redis", 0o640)
        line = f"user default on #{redis_acl_digest(admin)} {change['acl_rules']}"
        admin_changed = self.write(where["acl"], with_line(read_text(where["acl"]) or "", "default", line), "redis",
                                   0o640)  # fmt: skip
        self.created.add(change["names"]["instance"])
        active, enabled = self.unit_state(where["unit"])
        if not enabled:
            self.systemctl("enable", where["unit"])
        if not active:
            # a start that failed before (its port was taken, say) may have hit systemd's start limit
            if not self.check:
                sh(["systemctl", "reset-failed", where["unit"]])
            self.systemctl("start", where["unit"])
        elif conf_changed or admin_changed:
            self.systemctl("restart", where["unit"])

    def instance_delete(self, change, secret, reports):
        """SAVE, stop and disable, keep dump.rdb, remove the files."""
        where = paths(change["names"]["instance"])
        directory = self.module.params["dump_dir"]
        dump = os.path.join(directory, f"{change['name']}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.rdb")
        self.directory(directory, "root", 0o700)
        active, enabled = self.unit_state(where["unit"])
        if active:
            port = (change.get("old") or {}).get("port") or port_of(read_text(where["conf"]))
            self.did.append("SAVE")
            if not self.check:
                out = self.cli(int(port), secret.get("admin_password"), "SAVE")
                if out != "OK":
                    raise Failed(f"SAVE answered {out[:200]!r}; nothing was removed")
        if active:
            self.systemctl("stop", where["unit"])  # a clean shutdown saves once more
        if enabled:
            self.systemctl("disable", where["unit"])
        rdb = os.path.join(where["data"], "dump.rdb")
        if os.path.exists(rdb):
            self.did.append(f"keep {rdb} as {dump}")
            if not self.check:
                fd = os.open(dump, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out, open(rdb, "rb") as src:
                    shutil.copyfileobj(src, out)
            reports.append(f"{change['address']} dumped to {dump}")
        else:
            reports.append(f"{change['address']} dumped to nothing (it never wrote a data file, so it held no data)")
        for path in (where["conf"], where["acl"]):
            if os.path.exists(path):
                self.did.append(f"remove {path}")
                if not self.check:
                    os.unlink(path)
        if os.path.isdir(where["data"]):
            self.did.append(f"remove {where['data']}")
            if not self.check:
                shutil.rmtree(where["data"])

    # --- bindings -------------------------------------------------------------------------------------

    def binding(self, change, secret):
        user = change["names"]["user"]
        where = paths(change["names"]["instance"])
        password = secret.get("password")
        if not password:
            raise Failed("no password was passed for it")
        text = read_text(where["acl"])
        if text is None:
            if self.check and change["names"]["instance"] in self.created:
                self.did.append(f"user {user} in {where['acl']}")
                return
            raise Failed(f"{where['acl']} does not exist: its instance was not made")
        line = f"user {user} on #{redis_acl_digest(password)} {change['acl_rules']}"
        new = with_line(text, user, line)
        if new == text:
            return
        self.did.append(f"user {user} in {where['acl']}")
        if not self.check:
            self.replace_text(where["acl"], new)
        self.load(where, secret, "ACL LOAD", "ACL", "LOAD")

    def binding_delete(self, change, secret):
        user = change["names"]["user"]
        where = paths(change["names"]["instance"])
        text = read_text(where["acl"])
        if text is not None:
            new = with_line(text, user, None)
            if new != text:
                self.did.append(f"remove user {user} from {where['acl']}")
                if not self.check:
                    self.replace_text(where["acl"], new)
        self.load(where, secret, f"ACL DELUSER {user}", "ACL", "DELUSER", user)

    # --- backups ------------------------------------------------------------------------------------

    def backup(self, change, secret):
        """The backup user's ACL line (loaded live), its credential file, the old admin password file gone; the
        service's credential line."""
        instance = change["names"]["instance"]
        where = paths(instance)
        password = secret.get("password")
        if not password:
            raise Failed("no backup password was passed for it")
        text = read_text(where["acl"])
        if text is None and not (self.check and instance in self.created):
            raise Failed(f"{where['acl']} does not exist: its instance was not made")
        if text is not None:
            rules = " ".join(acl_rules("backup", self.redis_version()))
            new = with_line(
                text, REDIS_BACKUP_USER, f"user {REDIS_BACKUP_USER} on #{redis_acl_digest(password)} {rules}"
            )
            if new != text:
                self.did.append(f"user {REDIS_BACKUP_USER} in {where['acl']}")
                if not self.check:
                    self.replace_text(where["acl"], new)
                self.load(where, secret, "ACL LOAD", "ACL", "LOAD")
        store = credential_paths(instance)
        if self.systemd_version() >= ENCRYPTED_SINCE:
            self.encrypted_credential(store["encrypted"], password)
            self.remove(store["plain"])
            line = f"LoadCredentialEncrypted={CREDENTIAL}:{store['encrypted']}"
        else:
            self.directory(os.path.dirname(store["plain"]), "root", 0o700)
            self.write(store["plain"], password, "root", 0o600)
            line = f"LoadCredential={CREDENTIAL}:{store['plain']}"
        self.remove(LEGACY_AUTH.format(instance))
        return line

    def backup_delete(self, change, secret):
        """Remove the backup user (its line, and live with ACL DELUSER) and every credential file of it."""
        instance = change["names"]["instance"]
        where = paths(instance)
        text = read_text(where["acl"])
        if text is not None:
            new = with_line(text, REDIS_BACKUP_USER, None)
            if new != text:
                self.did.append(f"remove user {REDIS_BACKUP_USER} from {where['acl']}")
                if not self.check:
                    self.replace_text(where["acl"], new)
            if secret.get("admin_password"):
                self.load(where, secret, f"ACL DELUSER {REDIS_BACKUP_USER}", "ACL", "DELUSER", REDIS_BACKUP_USER)
        for path in (*credential_paths(instance).values(), LEGACY_AUTH.format(instance)):
            self.remove(path)

    def encrypted_credential(self, path, password):
        """The password as a credential encrypted with the host key, bound to its name; rewritten only when
        the file is missing or holds another password (each encryption differs, so its bytes say nothing)."""
        if os.path.exists(path):
            env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
            rc, out, _ = sh(["systemd-creds", "decrypt", f"--name={CREDENTIAL}", path, "-"], env=env)
            if rc == 0 and out == password:
                return
        self.did.append(f"write {path} (systemd-creds encrypt --with-key=host)")
        if self.check:
            return
        self.directory(os.path.dirname(path), "root", 0o700)
        tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.svcctl")
        try:
            rc, out, err = sh(["systemd-creds", "encrypt", "--with-key=host", f"--name={CREDENTIAL}", "-", tmp],
                              input=password)  # fmt: skip
            if rc != 0:
                raise Failed(f"systemd-creds encrypt failed ({rc}): {(err or out).strip()[-300:]}")
            os.chown(tmp, 0, 0)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def remove(self, path):
        if os.path.lexists(path):
            self.did.append(f"remove {path}")
            if not self.check:
                os.unlink(path)

    def systemd_version(self):
        """systemd's version on this node (`systemd 252 (252.39-1~deb12u2)`), or Failed."""
        first = (self.run(["systemctl", "--version"], "systemctl --version").splitlines() or [""])[0]
        found = re.match(r"systemd (\d+)\b", first)
        if found is None:
            raise Failed(f"cannot read systemd's version from {first[:80]!r}")
        return int(found.group(1))

    def redis_version(self):
        """redis-server's version (`v=7.0.15`): the backup user's rules are its major's."""
        out = self.run(["redis-server", "--version"], "redis-server --version")
        found = re.search(r"v=([0-9][0-9.]*)", out)
        if found is None:
            raise Failed(f"cannot read redis-server's version from {out[:80]!r}")
        return found.group(1)

    def replace_text(self, path, text):
        """Rewrite an existing file atomically, keeping its owner and mode."""
        st = os.stat(path)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".svcctl.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, st.st_mode & 0o7777)
        os.replace(tmp, path)

    def load(self, where, secret, what, *args):
        """Tell the running instance (if it runs): ACL LOAD after a user's line changed, ACL DELUSER to drop one
        live and disconnect its clients."""
        active, _ = self.unit_state(where["unit"])
        if not active:
            return
        deleting = args[1] == "DELUSER"
        if self.check:
            if not deleting:
                self.did.append(what)
            return
        out = self.cli(port_of(read_text(where["conf"])), secret.get("admin_password"), *args)
        if deleting and out not in ("0", "1"):
            raise Failed(f"{what} answered {out[:200]!r}")
        if not deleting and out != "OK":
            raise Failed(f"{what} answered {out[:200]!r}")
        if not deleting or out == "1":
            self.did.append(what)


def registry(module, verb, change):
    """Record or forget one address in the host registry (not in check mode), in this process."""
    if module.check_mode:
        return
    try:
        change_one(verb, change["address"], change["attrs"], module.params["environment"])
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise Failed(f"could not {verb} it in the host registry: {exc}") from exc


def check_names(change):
    """Names reach paths, unit names and ACL lines: refuse anything but svcctl's own forms."""
    names = change.get("names") or {}
    if change.get("kind") not in ("instance", "binding", "backup") or change.get("action") not in (
        "create",
        "update",
        "delete",
    ):
        raise Failed("not a Redis instance, binding or backup change")
    if INSTANCE_RE.match(str(names.get("instance", ""))) is None:
        raise Failed("unexpected instance name")
    if change["kind"] == "binding" and USER_RE.match(str(names.get("user", ""))) is None:
        raise Failed("unexpected user name")
    if change["kind"] == "instance" and change["action"] != "delete" and change.get("name") != names["instance"]:
        raise Failed("unexpected instance name")


def main():
    module = AnsibleModule(
        argument_spec={
            "changes": {"type": "list", "elements": "dict", "required": True},
            "secrets": {"type": "dict", "default": {}, "no_log": True},
            "environment": {"type": "str", "required": True},
            "dump_dir": {"type": "str", "default": "/var/backups/svcctl"},
            "recorded_late": {"type": "list", "elements": "str", "default": []},
            "record_first": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    hold_changing(module.fail_json)  # for the whole run: the next apply waits until this process ends
    results, reports, credential_line = [], [], None
    record_early(module, module.params["record_first"])  # when no registry task recorded them for this run
    late = set(module.params["recorded_late"])
    secrets = module.params["secrets"]
    change = None
    objects = None
    try:
        objects = Objects(module)
        for change in module.params["changes"]:
            objects.did = []
            check_names(change)
            kind, action = change["kind"], change["action"]
            secret = secrets.get(change["address"], {})
            recorded_here = kind != "backup"  # change.yml records and forgets backups
            if recorded_here and action != "delete" and change["address"] in late:
                registry(module, "record", change)
            if kind == "backup" and action == "delete":
                objects.backup_delete(change, secret)
            elif kind == "backup":
                credential_line = objects.backup(change, secret)
            elif kind == "instance" and action == "delete":
                objects.instance_delete(change, secret, reports)
            elif kind == "instance":
                objects.instance(change, secret)
            elif action == "delete":
                objects.binding_delete(change, secret)
            else:
                objects.binding(change, secret)
            if recorded_here and action == "delete":
                registry(module, "forget", change)
            results.append({"address": change["address"], "action": action, "changed": bool(objects.did),
                            "did": objects.did})  # fmt: skip
    except (Failed, OSError, KeyError, TypeError, ValueError) as exc:  # each named, never a traceback
        did = objects.did if objects is not None else []
        module.fail_json(
            msg=f"could not apply {change['address'] if change else 'the changes'} "
            f"({'; '.join(did) or 'checking it'}): {str(exc).strip()[:400]}",
            results=results,
            done=[r["address"] for r in results],
            svcctl_reports=reports,
        )
    module.exit_json(changed=any(r["changed"] for r in results), results=results, svcctl_reports=reports,
                     credential_line=credential_line)  # fmt: skip


if __name__ == "__main__":
    main()
