#!/usr/bin/python3
"""Record or forget what svcctl manages on this host: /var/lib/svcctl/registry.json (root, 0600).

    svcctl-registry.py record ADDRESS   (JSON record on stdin: {"attrs": {...}, "environment": ...})
    svcctl-registry.py record-many      (JSON on stdin: {"environment": ..., "changes": [{"address", "attrs"}...]};
                                         an engine change may carry "claim": the environment's client networks)
    svcctl-registry.py forget ADDRESS

Writes are atomic (temp file, fsync, rename), so a crash never leaves a half-written registry, and each
read-change-write holds the registry's lock file (as svcctl-session.py does), so a tunnel's session helper
and an apply on the same host never lose each other's records.
"""

import datetime
import fcntl
import json
import os
import sys
import tempfile

PATH = "/var/lib/svcctl/registry.json"
LOCK = "/var/lib/svcctl/.registry.lock"


def load():
    try:
        with open(PATH) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"format": 1, "objects": {}}


def save(doc):
    os.makedirs(os.path.dirname(PATH), mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(PATH), prefix=".registry.")
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, PATH)


def record(doc, address, record, claim=None):
    """Record an object's applied attrs; a shared engine also keeps each environment's client networks
    ("claims"), so every environment's apply keeps the others' networks open."""
    old = doc["objects"].get(address, {})
    if claim is not None or "claims" in old:
        record["claims"] = dict(old.get("claims", {}))
        if claim is not None:
            record["claims"][record["environment"]] = claim
    if any(old.get(k) != record.get(k) for k in ("attrs", "environment", "claims")):
        record["applied_at"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        doc["objects"][address] = record


def main():
    verb, address = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""
    os.makedirs(os.path.dirname(PATH), mode=0o700, exist_ok=True)
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        doc = load()
        before = json.dumps(doc, sort_keys=True)
        if verb == "record":
            record(doc, address, json.load(sys.stdin))
        elif verb == "record-many":  # one write for every object of an apply run, before any is created
            batch = json.load(sys.stdin)
            for change in batch["changes"]:
                record(
                    doc,
                    change["address"],
                    {"attrs": change["attrs"], "environment": batch["environment"]},
                    change.get("claim"),
                )
        elif verb == "forget":
            doc["objects"].pop(address, None)
        else:
            sys.exit(f"unknown verb {verb}")
        changed = json.dumps(doc, sort_keys=True) != before
        if changed:
            save(doc)
    print("changed" if changed else "unchanged")


main()
