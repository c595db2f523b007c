"""Live statistics units: provisional calls replaced by the final record, the day rolling over,
agent states, throttled pushes; and `cti stats` on a stored day."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cti.calls import events as ev
from cti.calls.records import CallRecord, QueueSegment
from cti.cli import main as cli_main
from cti.db.calls_store import CallStore
from cti.db.engine import create_engine
from cti.db.migrate import upgrade_async
from cti.stats.agents import AgentBoard
from cti.stats.live import LiveStats
from cti.stats.metrics import ThresholdSet
from cti.stats.service import StatsService

PARIS = ZoneInfo("Europe/Paris")
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=PARIS).timestamp()
S = "pbx1"


def _joined(linkedid: str, at: float, queue: str = "support") -> ev.QueueJoined:
    return ev.QueueJoined(S, at, linkedid, queue, 1, 1)


def _member(
    at: float, queue: str = "support", paused: bool = False, reason: str | None = None, **kw: Any
) -> ev.Event:
    values: dict[str, Any] = {"status": 1, "logged_in": True, "in_call": False} | kw
    return ev.AgentStateChanged(
        S,
        at,
        queue,
        "PJSIP/1",
        "A1",
        values["status"],
        paused,
        reason,
        values["logged_in"],
        values["in_call"],
        0,
    )


def test_provisional_counts_then_the_final_record_wins() -> None:
    stats = LiveStats(tz=PARIS, clock=lambda: T0 + 60)
    stats.on_event(ev.CallStarted(S, T0, "1.1", "inbound", None, None))
    stats.on_event(_joined("1.1", T0 + 1))
    snap = stats.snapshot()
    [q] = snap["queues"]
    assert (q["presented"], q["waiting"], q["longest_wait_s"]) == (1, 1, 59.0)
    stats.on_event(ev.CallAnswered(S, T0 + 25, "1.1", "support", "A1", "PJSIP/1", None, 24.0, 2.0))
    [q] = stats.snapshot()["queues"]
    assert (q["answered"], q["answered_within_sl"], q["waiting"], q["asa_s"]) == (1, 0, 0, 24.0)
    # The tracker's record says the wait was 19.5 s (e.g. corrected from queue_log): it wins.
    record = CallRecord(S, "1.1", "inbound", T0, T0 + 40)
    record.segments.append(
        QueueSegment("support", T0 + 1, T0 + 20.5, "answered", "A1", "PJSIP/1", 19.5, 1.0, 15.0, "agent")
    )
    stats.on_event(ev.CallEnded(S, T0 + 40, "1.1", record))
    [q] = stats.snapshot()["queues"]
    assert (q["presented"], q["answered"], q["answered_within_sl"], q["asa_s"], q["dmc_s"]) == (
        1,
        1,
        1,
        19.5,
        15.0,
    )


def test_the_day_rolls_over_at_local_midnight() -> None:
    now = [T0]
    stats = LiveStats(tz=PARIS, clock=lambda: now[0])
    record = CallRecord(
        S,
        "1.1",
        "inbound",
        T0,
        T0 + 5,
        segments=[QueueSegment("support", T0, outcome="abandoned", wait_s=4.0)],
    )
    stats.on_event(ev.CallEnded(S, T0 + 5, "1.1", record))
    assert stats.snapshot()["totals"]["abandoned"] == 1
    now[0] = datetime(2026, 11, 24, 0, 0, 1, tzinfo=PARIS).timestamp()
    snap = stats.snapshot()
    assert (snap["day"], snap["totals"]["abandoned"], snap["totals"]["presented"]) == ("2026-11-24", 0, 0)


def test_agent_states_precedence_and_pause_everywhere() -> None:
    board = AgentBoard(ThresholdSet.build(per_queue={"support": {"wrapup_s": 10}}))
    spans = []
    feed = [
        _member(T0, "support"),
        _member(T0, "sales"),
        _member(T0 + 10, "sales", paused=True, reason="training"),  # partly paused: still available
        ev.AgentRinging(S, T0 + 20, "2.2", "support", "A1", "PJSIP/1", "PJSIP/1-1", None, None),
        _member(T0 + 21, "support", status=2),  # device in use while ringing: still ringing
        ev.CallAnswered(S, T0 + 22, "2.2", "support", "A1", "PJSIP/1", "PJSIP/1-1", 2.0, 2.0),
        ev.AgentCompleted(S, T0 + 52, "2.2", "support", "A1", "PJSIP/1", "agent", 30.0),
        _member(T0 + 53, "support", paused=True, reason="lunch"),  # paused everywhere during wrap-up
    ]
    for event in feed:
        spans.extend(board.feed(event))
    spans.extend(board.close_all(T0 + 100))
    got = [(s.state, s.reason, round(s.started_at - T0), round(s.duration_s)) for s in spans]
    assert got == [
        ("available", None, 0, 20),
        ("ringing", None, 20, 2),
        ("acd", None, 22, 30),
        ("wrapup", None, 52, 10),  # the queue's wrap-up time beats the pause
        ("paused", "lunch", 62, 38),
    ]


def test_spans_are_cut_at_quarter_hours() -> None:
    board = AgentBoard()
    start = datetime(2026, 11, 23, 9, 50, tzinfo=PARIS).timestamp()
    board.feed(_member(start))
    [span] = board.close_all(start + 1800)
    assert [round(p.duration_s) for p in span.cut()] == [600, 900, 300]


@dataclass
class _Principal:
    username: str
    role: str
    interfaces: tuple[str, ...] = ()


@dataclass
class _Client:
    principal: _Principal


@dataclass
class _Hub:
    clients: dict[str, list[_Client]] = field(default_factory=dict)
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    version: int = 0

    def broadcast_text(self, text: str, roles: Iterable[str] = ("supervisor", "admin")) -> None:
        self.sent.append(("*" + ",".join(roles), json.loads(text)))

    def send_text(self, username: str, text: str) -> None:
        self.sent.append((username, json.loads(text)))


async def test_pushes_are_throttled_and_agents_get_their_view(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/cti.db")
    now = [T0]
    hub = _Hub(
        {
            "sam": [_Client(_Principal("sam", "supervisor"))],
            "alice": [_Client(_Principal("alice", "agent", ("PJSIP/1",)))],
        }
    )
    service = StatsService(engine, hub, tz="Europe/Paris", clock=lambda: now[0], heartbeat_s=5.0)
    try:
        assert service.push()  # first one always
        assert not service.push()  # nothing changed
        service.on_event(_joined("3.3", T0))
        assert service.push()
        for _ in range(50):  # a burst of events is one push
            service.on_event(_member(T0))
        assert service.push() and not service.push()
        now[0] += 5.0  # heartbeat: time in state moves on
        assert service.push()
        kinds = [(who, msg["scope"]) for who, msg in hub.sent]
        assert kinds.count(("*supervisor,admin", "all")) == 4
        assert ("alice", "agent") in kinds and all(who != "sam" for who, _ in kinds)
    finally:
        await service.close()
        await engine.dispose()


async def test_cti_stats_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/cti.db"
    engine = create_engine(url)
    try:
        await upgrade_async(engine)
        segs = [
            QueueSegment(
                "support", T0, outcome="answered", wait_s=5.0, talk_s=60.0, interface="PJSIP/1", agent="A1"
            ),
            QueueSegment("support", T0 + 10, outcome="abandoned", wait_s=30.0),
        ]
        await CallStore(engine).save(
            [CallRecord(S, f"9.{i}", "inbound", s.joined_at, segments=[s]) for i, s in enumerate(segs)]
        )
    finally:
        await engine.dispose()
    base = ["stats", "--url", url, "--from", "2026-11-23", "--tz", "Europe/Paris", "--interval", "day"]

    assert await asyncio.to_thread(cli_main, [*base, "--format", "json"]) == 0
    out = capsys.readouterr().out
    # main(argv) leaves logging as the caller set it: the migration's info lines may come first.
    doc = json.loads(out[out.index("{\n") :])
    [support] = doc["totals"]
    assert (support["presented"], support["answered"], support["abandoned"], support["qs"]) == (2, 1, 1, 0.5)
    assert await asyncio.to_thread(cli_main, [*base, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("total,support,2,1,")
    assert await asyncio.to_thread(cli_main, base) == 0
    table = capsys.readouterr().out
    assert "QS" in table and "50.0%" in table and "support" in table
    assert await asyncio.to_thread(cli_main, [*base, "--report", "agents"]) == 0
    assert "A1" in capsys.readouterr().out
    assert await asyncio.to_thread(cli_main, [*base[:-1], "fortnight"]) == 2
    assert "interval" in capsys.readouterr().err


async def test_the_rest_view_is_fresh_after_a_push_nobody_watched(tmp_path: Path) -> None:
    """A push with no supervisor connected takes the agents' "changed" marks without recomputing
    their rows (nobody watches them): `GET /api/stats/live` must not then serve a row it kept
    from before the change."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/cti.db")
    now = [T0]
    service = StatsService(engine, _Hub(), tz="Europe/Paris", clock=lambda: now[0])
    sam = _Principal("sam", "supervisor")
    try:
        service.on_event(_member(T0))
        service.push()  # pushes run every half second, watched or not
        assert json.loads(await service.live_view(sam))["agents"][0]["state"] == "available"
        service.on_event(_member(T0 + 1, paused=True, reason="lunch"))
        service.push()
        [agent] = json.loads(await service.live_view(sam))["agents"]
        assert (agent["state"], agent["reason"]) == ("paused", "lunch")
    finally:
        await service.close()
        await engine.dispose()
