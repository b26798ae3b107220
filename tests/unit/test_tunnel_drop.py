"""A tunnel's temporary user is dropped even when the connection it used is lost under the drop."""

from __future__ import annotations

from typing import Any

import pytest

from svcctl.ssh import Unreachable
from svcctl.tunnel.command import _drop
from svcctl.tunnel.master import MasterForwarder

PARAMIKO = object()  # a forwarder that is not OpenSSH's master: the drop goes over svcctl's own session


def master_forwarder(master: str) -> MasterForwarder:
    """A MasterForwarder whose running master is `master` (nothing started)."""
    forwarder = MasterForwarder.__new__(MasterForwarder)
    forwarder._master = master  # type: ignore[assignment]
    return forwarder


class Connector:
    """Stands in for SshConnector: `live()` gives the old session, `fresh()` a new one."""

    def __init__(self) -> None:
        self.fresh_calls = 0

    def live(self) -> str:
        return "old"

    def fresh(self) -> str:
        self.fresh_calls += 1
        return f"new{self.fresh_calls}"


class Temp:
    """Stands in for TempUser: the drop fails on the sessions named in `lost`."""

    def __init__(self, lost: set[str]) -> None:
        self.lost = lost
        self.dropped_on: list[str] = []

    def drop(self, session: str) -> None:
        self.dropped_on.append(session)
        if session in self.lost:
            raise Unreachable(f"node n: the SSH connection to n was lost (Channel closed.) on {session}", node="n")


def test_a_drop_on_a_lost_connection_is_made_again_over_a_new_one() -> None:
    temp, connector = Temp(lost={"old"}), Connector()
    _drop(temp, PARAMIKO, connector)  # type: ignore[arg-type]
    assert temp.dropped_on == ["old", "new1"]


def test_a_drop_goes_through_the_openssh_master_and_over_a_new_session_if_its_connection_is_lost() -> None:
    temp, connector = Temp(lost=set()), Connector()
    _drop(temp, master_forwarder("master"), connector)  # type: ignore[arg-type]
    assert temp.dropped_on == ["master"] and connector.fresh_calls == 0
    temp = Temp(lost={"master"})
    _drop(temp, master_forwarder("master"), connector)  # type: ignore[arg-type]
    assert temp.dropped_on == ["master", "new1"]


def test_a_drop_that_works_opens_no_new_connection() -> None:
    temp, connector = Temp(lost=set()), Connector()
    _drop(temp, PARAMIKO, connector)  # type: ignore[arg-type]
    assert temp.dropped_on == ["old"] and connector.fresh_calls == 0


def test_a_second_loss_is_reported_not_hidden() -> None:
    temp: Any = Temp(lost={"old", "new1"})
    with pytest.raises(Unreachable, match="new1"):
        _drop(temp, PARAMIKO, Connector())  # type: ignore[arg-type]
