#!/usr/bin/python3
# svcctl's block in pg_hba.conf: its own lines between `# BEGIN svcctl` and `# END svcctl`, every other line
# of the file exactly as it was (svcctl.hostlib.marked).  A file svcctl wrote whole before it had markers
# becomes the block alone.  The new file replaces the old one atomically, with its owner and mode.
from __future__ import annotations

import os
import re
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.svcctl_hostlib.marked import MarkerError, with_block
from ansible.module_utils.svcctl_hostlib.registry import hold_changing

DOCUMENTATION = r"""
module: svcctl_pg_hba
short_description: Keep svcctl's block of rules in pg_hba.conf, and nothing else of the file
options:
  path: {type: path, required: true}
  lines: {type: list, elements: str, required: true, description: "svcctl's rules, one per element, as they should read"}
"""

LEGACY_HEADER = "# Managed by svcctl ("  # what svcctl's whole-file template began with
# A rule as svcctl writes it: words one space apart, of the characters its rules use, nothing else.
RULE = re.compile(r"(?:local|host)(?: [A-Za-z0-9_.:/+=-]+){3,4}\Z")


def main():
    module = AnsibleModule(
        argument_spec={"path": {"type": "path", "required": True},
                       "lines": {"type": "list", "elements": "str", "required": True}},
        supports_check_mode=True,
    )  # fmt: skip
    hold_changing(module.fail_json)  # for the whole run: the next apply waits until this process ends
    path, lines = module.params["path"], module.params["lines"]
    bad = [line for line in lines if not RULE.match(line)]
    if bad:
        module.fail_json(msg=f"refusing pg_hba.conf rule {bad[0]!r}: not a rule as svcctl writes them")
    try:
        with open(path) as f:
            old = f.read()
    except OSError as exc:
        module.fail_json(msg=f"cannot read {path}: {exc}")
    try:
        new = with_block(old, lines, LEGACY_HEADER)
    except MarkerError as exc:
        module.fail_json(msg=f"{path}: {exc}; svcctl cannot tell its lines from yours there, so it changed nothing. "
                         "Fix the svcctl markers by hand (one `# BEGIN svcctl` and one `# END svcctl`), then apply again.")  # fmt: skip
    changed = new != old
    diff = {"before": old, "after": new, "before_header": path, "after_header": path}
    if changed and not module.check_mode:
        st = os.stat(path)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".pg_hba.")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(new)
            os.chown(tmp, st.st_uid, st.st_gid)
            os.chmod(tmp, st.st_mode & 0o7777)
            os.replace(tmp, path)
        except OSError as exc:
            os.unlink(tmp)
            module.fail_json(msg=f"cannot write {path}: {exc}")
    module.exit_json(changed=changed, diff=diff)


if __name__ == "__main__":
    main()
