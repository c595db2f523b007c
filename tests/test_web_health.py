"""Readiness's rules (web/health.py), without processes: which states make a node not ready, and
the database probe's answer going stale when the probe itself hangs (tests/test_readiness.py
runs the whole of it against a real cti serve cut from PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cti.db.engine import create_engine
from cti.web.health import DatabaseProbe, readiness

UP = {"reachable": True, "last_ok_s_ago": 0.1, "error": None}
DOWN = {"reachable": False, "last_ok_s_ago": 9.0, "error": "TimeoutError"}


def link(server: str, connected: bool, synced: bool, role: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"server": server, "connected": connected, "synced": synced}
    if role is not None:
        item["role"] = role
    return item


def test_what_makes_a_node_not_ready() -> None:
    healthy = {"links": [link("pbx1", True, True)]}
    assert readiness(healthy, UP, None, stopping=False)["status"] == "ready"
    assert readiness(healthy, DOWN, None, stopping=False)["reasons"] == ["database unreachable"]
    assert readiness(healthy, UP, None, stopping=True)["reasons"] == ["stopping"]
    down = {"links": [link("pbx1", False, False), link("pbx2", True, False)]}
    assert readiness(down, UP, None, stopping=False)["reasons"] == [
        "AMI link to pbx1 down",
        "AMI link to pbx2 not resynchronised",
    ]
    # A standby's link is down by design; NATS away is reported, not a reason.
    standby = {"links": [link("pbx1", False, False, "standby")]}
    body = readiness(standby, UP, {"connected": False, "pending": 12}, stopping=False)
    assert (body["status"], body["bus"]) == ("ready", {"connected": False, "pending": 12})


async def test_a_probe_that_stops_answering_goes_stale(tmp_path: Path) -> None:
    now = [100.0]
    engine = create_engine(f"sqlite:///{tmp_path}/cti.db")
    try:
        probe = DatabaseProbe(engine, interval_s=1.0, timeout_s=2.0, clock=lambda: now[0])
        assert probe.state()["reachable"] is False  # never checked yet
        assert await probe.check() is True
        assert probe.state() == {"reachable": True, "last_ok_s_ago": 0.0, "error": None}
        now[0] += 3.0  # within interval + timeout: still evidence
        assert probe.state()["reachable"] is True
        now[0] += 0.5  # the next probes hang: no failure recorded, but the success is too old
        assert probe.state() == {"reachable": False, "last_ok_s_ago": 3.5, "error": "no answer within 3s"}
    finally:
        await engine.dispose()
