# The session helper's entry point (the last part of svcctl-session.py): each engine's create and drop,
# and the verbs.
import json
import sys

from svcctl.drivers.host.session_header import BadRequest, checked_request, fail, forget_session, record_session
from svcctl.drivers.mysql.session import my_create, my_drop
from svcctl.drivers.postgres.session import pg_create, pg_drop
from svcctl.drivers.redis.session import rd_create, rd_drop
from svcctl.hostlib.registry import read_registry

ENGINES = {"postgres": (pg_create, pg_drop), "mysql": (my_create, my_drop), "redis": (rd_create, rd_drop)}


def main():
    verb = sys.argv[1] if len(sys.argv) > 1 else ""
    if verb == "find":
        json.dump(read_registry(), sys.stdout, sort_keys=True)
        return
    if verb not in ("create", "drop"):
        fail(f"unknown verb {verb!r}; use create, drop or find")
    try:
        req = checked_request(json.load(sys.stdin), verb)
    except (BadRequest, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        fail(f"svcctl session helper: {exc}")
    create, drop = ENGINES[req["engine"]]
    if verb == "create":
        record_session(req)
        try:
            create(req)
        except BaseException:
            drop(req)
            forget_session(req)
            raise
    else:
        drop(req)
        forget_session(req)
    print("ok")


if __name__ == "__main__":  # also under `python3 -c SOURCE`; a unit test imports the pure functions
    main()
