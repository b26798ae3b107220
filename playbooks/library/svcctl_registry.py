#!/usr/bin/python3
# The host registry's first write of an apply run, in one remote process: every object this run creates or
# changes is recorded before any of it is touched (svcctl.hostlib.registry, the one implementation), and the
# registry helper (svcctl-registry.py, which change.yml and the operator use) is installed or brought up to
# date on the way. These were three tasks (a directory, a copy, a command): three remote processes per apply.
from __future__ import annotations

import hashlib
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.svcctl_hostlib.registry import changing_registry, hold_changing, read_registry, record

DOCUMENTATION = r"""
module: svcctl_registry
short_description: Record an apply run's objects in the host registry, and install the registry helper
options:
  environment: {type: str, required: true}
  changes: {type: list, elements: dict, default: [], description: "{address, attrs, claim?} to record, in order"}
  helper: {type: str, required: true, description: "the registry helper's text, as svcctl built it"}
  helper_path: {type: path, required: true}
"""


def _sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def install_helper(path, text, check):
    """Write the helper (root, 0755) if its text differs; True if it did (or would, in check mode)."""
    try:
        with open(path, encoding="utf-8") as f:
            if _sha256(f.read()) == _sha256(text) and (os.stat(path).st_mode & 0o7777) == 0o755:
                return False
    except OSError:
        pass
    if check:
        return True
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".svcctl-registry.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except OSError:
        os.unlink(tmp)
        raise
    return True


def would_record(environment, changes):
    """Whether recording `changes` would change the registry (check mode: read it, write nothing)."""
    doc = read_registry()
    return any(record(doc, c["address"], c["attrs"], environment, c.get("claim")) for c in changes)


def main():
    module = AnsibleModule(
        argument_spec={"environment": {"type": "str", "required": True},
                       "changes": {"type": "list", "elements": "dict", "default": []},
                       "helper": {"type": "str", "required": True},
                       "helper_path": {"type": "path", "required": True}},
        supports_check_mode=True,
    )  # fmt: skip
    hold_changing(module.fail_json)  # for the whole run: the next apply waits until this process ends
    p = module.params
    for c in p["changes"]:
        if not isinstance(c.get("address"), str) or not isinstance(c.get("attrs"), dict):
            module.fail_json(msg=f"not a change svcctl records: {sorted(c)}")
    try:
        installed = install_helper(p["helper_path"], p["helper"], module.check_mode)
        if module.check_mode:
            recorded = would_record(p["environment"], p["changes"])
        else:
            recorded = False
            with changing_registry() as doc:
                for c in p["changes"]:
                    recorded |= record(doc, c["address"], c["attrs"], p["environment"], c.get("claim"))
    except OSError as exc:
        module.fail_json(msg=f"cannot write the host registry or its helper: {exc}")
    module.exit_json(changed=installed or recorded, recorded=recorded, helper_installed=installed)


if __name__ == "__main__":
    main()
