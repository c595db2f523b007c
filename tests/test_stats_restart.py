"""Live figures survive a daemon restart: the real daemon against a fake AMI server, real
Asterisk 22 traffic (mixed_seed1: answered, abandoned, timed-out, IVR-only and campaign calls;
agent_session: a dynamic member who logs in, pauses and leaves) re-stamped to today, agent
pauses; then a stop (graceful, or `kill -9` of a `cti serve` subprocess) and a new daemon on
the same database. `/api/stats/live` over HTTP must show what the first daemon showed, and
equal `cti stats` for today, on SQLite and PostgreSQL.

The restart's own edges (events arriving while the rebuild reads the database, a call the
writer stores meanwhile, calls still open at the stop, a restart just after local midnight)
are unit tests on `StatsService` with a fake clock.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.app import Daemon
from cti.calls import events as ev
from cti.calls.records import CallRecord, IvrStep, QueueSegment
from cti.cli import main as cli_main
from cti.config import AsteriskServer, DatabaseSettings, Secret, Settings, WebSettings
from cti.db.calls_store import CallStore, load_calls
from cti.db.engine import create_engine
from cti.db.migrate import upgrade_async
from cti.stats.agents import Span
from cti.stats.history import REPORTS, SPANS
from cti.stats.service import StatsService
from cti.stats.store import save_spans
from cti.web.auth import UserStore
from fakeami import CAPTURES, FakeAmi, frame
from test_daemon import event_bytes, until
from test_db import backend, db_url, pg_admin  # noqa: F401 - fixtures

pytestmark = pytest.mark.skipif(not CAPTURES.is_dir(), reason="../shared/ami-captures not present")
PASSWORD = "correct horse battery"
TIMESTAMP = re.compile(rb"Timestamp: ([0-9]+\.[0-9]+)")
# Keys of a queue row that move with the clock, not with the calls.
MOVING = ("waiting", "oldest_joined_at", "longest_wait_s")


# ------------------------------------------------------------------------------------- traffic
def restamped(data: bytes, first_at: float) -> bytes:
    """The frames with every `Timestamp` moved so that the first one is `first_at`."""
    stamps = [float(m) for m in TIMESTAMP.findall(data)]
    shift = first_at - min(stamps)
    return TIMESTAMP.sub(lambda m: b"Timestamp: %.6f" % (float(m.group(1)) + shift), data)


def pause_frame(at: float, queue: str, name: str, interface: str, paused: bool, reason: str = "") -> bytes:
    """A `QueueMemberPause` as Asterisk 22 sends it (agent_session.ami)."""
    return frame(
        Event="QueueMemberPause",
        Privilege="agent,all",
        Timestamp=f"{at:.6f}",
        Queue=queue,
        MemberName=name,
        Interface=interface,
        StateInterface=interface.removesuffix("/n"),
        Membership="static",
        Penalty=0,
        CallsTaken=0,
        LastCall=0,
        LastPause=int(at),
        LoginTime=int(at) - 3600,
        InCall=0,
        Status=1,
        Paused=int(paused),
        PausedReason=reason if paused else "",
        Ringinuse=0,
        Wrapuptime=0,
    )


def day_traffic(end_at: float) -> bytes:
    """About two minutes of a day ending at `end_at`: 40 calls, Agent5's session (login, pauses,
    logout), Agent1 paused then back, Agent3 paused in both their queues until the end."""
    start = end_at - 135
    agent3 = "Local/agent3@agents/n"
    agent1 = "Local/agent1@agents/n"
    return b"".join(
        [
            restamped(event_bytes("mixed_seed1"), start),  # 97 s
            restamped(event_bytes("agent_session"), start + 100),  # 9.5 s
            pause_frame(start + 112, "support", "Agent1", agent1, True, "pause-cafe"),
            pause_frame(start + 120, "support", "Agent1", agent1, False),
            pause_frame(start + 125, "sales", "Agent3", agent3, True, "formation"),
            pause_frame(start + 125.1, "outbound", "Agent3", agent3, True, "formation"),
        ]
    )


def queue_status(live: dict[str, Any]) -> list[dict[str, object]]:
    """What Asterisk's QueueStatus answers for the members a snapshot shows logged in."""
    out: list[dict[str, object]] = []
    for a in live["agents"]:
        if a["state"] == "logged_out":
            continue
        for queue in a["queues"]:
            paused = queue in a["paused_queues"]
            out.append(
                {
                    "Event": "QueueMember",
                    "Queue": queue,
                    "Name": a["agent"],
                    "Location": a["interface"],
                    "StateInterface": a["interface"].removesuffix("/n"),
                    "Membership": "static",
                    "Penalty": 0,
                    "CallsTaken": a["handled"],
                    "LastCall": 0,
                    "LastPause": 0,
                    "LoginTime": 0,
                    "InCall": int(a["state"] == "acd"),
                    "Status": 2 if a["state"] == "acd" else 1,
                    "Paused": int(paused),
                    "PausedReason": (a["reason"] or "") if paused else "",
                    "Wrapuptime": 0,
                }
            )
    return out


# ------------------------------------------------------------------------------------- helpers
def settings_for(fake: FakeAmi, url: str) -> Settings:
    server = AsteriskServer(
        name="pbx1",
        host="127.0.0.1",
        port=fake.port,
        username="cti",
        secret=Secret("s3cret"),
        keepalive_s=0.5,
        action_timeout_s=2.0,
        reconnect_cap_s=0.2,
    )
    return Settings(
        asterisk=(server,),
        database=DatabaseSettings(url=url, flush_interval_s=0.05),
        web=WebSettings(port=0),
    )


async def stored(url: str) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        return await load_calls(engine)
    finally:
        await engine.dispose()


async def finished(url: str, n: int) -> bool:
    return len([c for c in await stored(url) if c["closed_by"] != "shutdown"]) >= n


async def live_of(url: str) -> dict[str, Any]:
    """`GET /api/stats/live` as a supervisor, over HTTP."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.post(f"{url}/api/login", json={"username": "sam", "password": PASSWORD}) as r:
            assert r.status == 200, await r.text()
        async with session.get(f"{url}/api/stats/live") as r:
            assert r.status == 200, await r.text()
            body: dict[str, Any] = await r.json()
            return body


def cti_stats(url: str, report: str, live: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> Any:
    """`cti stats --report R --format json` for the live view's day and zone."""
    argv = ["stats", "--url", url, "--report", report, "--from", live["day"], "--tz", live["tz"]]
    capsys.readouterr()
    assert cli_main([*argv, "--interval", "day", "--format", "json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out[out.index("{\n") :])


def day_figures(live: dict[str, Any]) -> dict[str, Any]:
    """What a restart must keep: queues, totals, IVR, outbound, the quarter-hour series."""
    return {
        "day": live["day"],
        "queues": {q["queue"]: {k: v for k, v in q.items() if k not in MOVING} for q in live["queues"]},
        "totals": {k: v for k, v in live["totals"].items() if k not in MOVING},
        "ivr": live["ivr"],
        "outbound": live["outbound"],
        "series": live["series"],
    }


def assert_close(got: Any, expected: Any, path: str = "") -> None:
    """Equal, floats within one unit of the figures' last digit (sums in another order may fall
    on either side of a rounding: 72.105 / 11 s is ASA 6.55 or 6.56)."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), path
        for key, value in expected.items():
            assert_close(got[key], value, f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), path
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_close(g, e, f"{path}[{i}]")
    elif isinstance(expected, float) and isinstance(got, int | float):
        assert got == pytest.approx(expected, abs=0.0101), path
    else:
        assert got == expected, path


def check_agents(before: dict[str, Any], after: dict[str, Any], tolerance_s: float) -> None:
    """Same agents, states and counters; time per state equal within `tolerance_s` (the clock
    moved on between the two snapshots; the daemon was down meanwhile)."""
    rows = {a["interface"]: a for a in after["agents"]}
    assert sorted(rows) == sorted(a["interface"] for a in before["agents"])
    for old in before["agents"]:
        new = rows[old["interface"]]
        for key, value in old.items():
            if key in ("since", "occupancy", "calls_per_hour"):
                continue
            if key.endswith("_s") and value is not None and key not in ("dmc_s",):
                assert new[key] == pytest.approx(value, abs=tolerance_s), (old["interface"], key)
            elif key == "pause_by_reason":
                assert new[key].keys() == value.keys(), old["interface"]
                for reason, seconds in value.items():
                    assert new[key][reason] == pytest.approx(seconds, abs=tolerance_s), reason
            else:
                assert new[key] == (pytest.approx(value) if isinstance(value, float) else value), (
                    old["interface"],
                    key,
                )
        if old["state"] == "logged_out":
            assert new["since"] == pytest.approx(old["since"], abs=0.01)  # when they left
        for ratio in ("occupancy", "calls_per_hour"):
            if old[ratio] is not None:
                assert new[ratio] == pytest.approx(old[ratio], rel=0.05, abs=0.01), (old["interface"], ratio)


QUEUE_KEYS = ("presented", "answered", "answered_within_sl", "abandoned", "short_abandoned", "timed_out")


def check_against_cti_stats(
    url: str, live: dict[str, Any], tolerance_s: float, capsys: pytest.CaptureFixture[str]
) -> None:
    queues = cti_stats(url, "queues", live, capsys)
    by_queue = {q["queue"]: q for q in live["queues"]}
    assert queues["totals"], "nothing stored today"
    for row in queues["totals"]:
        mine = by_queue[row["queue"]]
        for key, value in row.items():
            if key in mine and key not in MOVING:
                assert mine[key] == (
                    pytest.approx(value, abs=0.0101) if isinstance(value, float) else value
                ), (
                    row["queue"],
                    key,
                )
    assert sum(q["presented"] for q in live["queues"]) == sum(q["presented"] for q in queues["totals"])

    ivr = cti_stats(url, "ivr", live, capsys)
    menus = {m["menu"]: m for m in live["ivr"]["menus"]}
    assert {m["menu"]: m for m in ivr["totals"]} == menus
    for key in ("entries", "contained", "hangups", "containment"):
        assert live["ivr"]["totals"][key] == ivr["overall"][key], key

    outbound = cti_stats(url, "outbound", live, capsys)
    rows = {o["campaign"]: o for o in live["outbound"]}
    assert {o["campaign"]: o for o in outbound["totals"]} == rows
    assert {"campaign": None, **outbound["manual"]} == rows[None]

    agents = cti_stats(url, "agents", live, capsys)
    mine_by_interface = {a["interface"]: a for a in live["agents"]}
    for row in agents["totals"]:
        mine = mine_by_interface[row["interface"]]
        assert (mine["agent"], mine["handled"], mine["talk_s"]) == (
            row["agent"],
            row["handled"],
            pytest.approx(row["talk_s"]),
        )
        # The live row also counts the open state since the new daemon's first resync.
        for state in ("logged_in_s", "available_s", "ringing_s", "acd_s", "wrapup_s", "paused_s"):
            assert 0 <= mine[state] - row[state] <= tolerance_s, (row["interface"], state)
        mine_p, theirs_p = mine["pause_by_reason"], row["pause_by_reason"]
        for reason in mine_p.keys() | theirs_p.keys():
            assert 0 <= mine_p.get(reason, 0) - theirs_p.get(reason, 0) <= tolerance_s, reason


# ------------------------------------------------------------------------------ graceful restart
@pytest.fixture
async def url(db_url: str) -> AsyncIterator[str]:  # noqa: F811
    """The test's database with the schema and a supervisor, as a URL the daemon takes."""
    if db_url.startswith("sqlite:///"):
        Path(db_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(db_url)
    try:
        await upgrade_async(engine)
        await UserStore(engine).add("sam", PASSWORD, "supervisor", "Sam")
    finally:
        await engine.dispose()
    yield db_url


# The call of inbound_answered.ami, in conversation (Agent1) when a daemon stops, as Asterisk's
# CoreShowChannels then lists it.
IN_CONVERSATION = [
    {
        "Event": "CoreShowChannel",
        "Channel": name,
        "Uniqueid": uid,
        "Linkedid": "1795389610.8",
        "Application": app,
        "BridgeId": bridge,
        "Duration": "00:00:05",
    }
    for name, uid, app, bridge in (
        ("Local/s@ivr-00000004;1", "1795389610.8", "Wait", ""),
        ("Local/s@ivr-00000004;2", "1795389610.9", "Queue", "b-1"),
        ("Local/agent1@agents-00000005;1", "1795389611.10", "AppDial", "b-1"),
        ("Local/agent1@agents-00000005;2", "1795389611.11", "Wait", ""),
    )
]


def in_conversation(first_at: float, cut: bytes) -> tuple[bytes, bytes]:
    """inbound_answered.ami re-stamped to start at `first_at`, cut before `cut`: the call so far,
    and the rest (to re-stamp when it is pushed)."""
    head, tail = restamped(event_bytes("inbound_answered"), first_at).split(cut, 1)
    return head, cut + tail


async def test_a_restart_keeps_todays_live_figures(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Stopped (SIGTERM's path) with 40 calls over and one in conversation: the new daemon shows
    the same day, the call in conversation counted once (before and after it ends)."""
    async with FakeAmi() as fake:
        fake.lists = {"coreshowchannels": [], "queuestatus": []}
        first = Daemon(settings_for(fake, url))
        await first.start()
        try:
            await until(lambda: fake.actions("QueueStatus"))
            now = time.time()
            talking, rest = in_conversation(now - 8, b"Event: AgentComplete\r\n")
            await fake.push(day_traffic(now - 10) + talking)
            await until(lambda: finished(url, 40), within_s=20)
            await first.bus.drain()
            before = await live_of(first.web_url)
        finally:
            await first.shutdown()
        assert sum(q["presented"] for q in before["queues"]) >= 20, before["queues"]
        assert before["totals"]["abandoned"] and before["ivr"]["totals"]["contained"]
        assert any(o["campaign"] == "c1" and o["attempts"] for o in before["outbound"])
        states = {a["agent"]: (a["state"], a["reason"]) for a in before["agents"]}
        assert states["Agent3"] == ("paused", "formation") and states["Agent5"] == ("logged_out", None)
        assert states["Agent1"] == ("acd", None)
        assert [c["closed_by"] for c in await stored(url)].count("shutdown") == 1

        # Asterisk kept the call and the members as they were; the new daemon asks it.
        fake.lists = {"coreshowchannels": list(IN_CONVERSATION), "queuestatus": list(queue_status(before))}
        second = Daemon(settings_for(fake, url))
        await second.start()
        try:
            await until(lambda: second.trackings[0].resyncs == 1)
            await second.bus.drain()
            after = await live_of(second.web_url)
            assert_close(day_figures(after), day_figures(before))
            tolerance = after["now"] - before["now"] + 0.1
            check_agents(before, after, tolerance)
            # The call in conversation ends now.
            await fake.push(restamped(rest, time.time()))
            await until(lambda: finished(url, 41), within_s=20)
            await second.bus.drain()
            assert await second.stats.spans.flush()
            ended = await live_of(second.web_url)
            assert sum(q["presented"] for q in ended["queues"]) == sum(
                q["presented"] for q in before["queues"]
            )
            assert ended["ivr"]["totals"]["entries"] == before["ivr"]["totals"]["entries"]
            tolerance = ended["now"] - before["now"] + 0.1
            await asyncio.to_thread(check_against_cti_stats, url, ended, tolerance, capsys)
        finally:
            await second.shutdown()


# ------------------------------------------------------------------------------------ kill -9
def config_file(tmp_path: Path, port: int, url: str) -> Path:
    config = tmp_path / "cti.toml"
    config.write_text(
        f'[[asterisk]]\nname = "pbx1"\nhost = "127.0.0.1"\nport = {port}\nusername = "cti"\n'
        "keepalive_s = 0.5\nreconnect_cap_s = 0.2\n"
        f'[database]\nurl = "{url}"\nflush_interval_s = 0.05\n'
        '[log]\nformat = "json"\nlevel = "info"\n[web]\nport = 0\n',
        encoding="utf-8",
    )
    return config


def _append(path: Path) -> IO[bytes]:
    return open(path, "ab")


def web_url_in(log: Path) -> str | None:
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if '"web server listening"' in line:
            return str(json.loads(line)["url"])
    return None


async def test_kill_9_counts_the_calls_stored_before_it_once(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A `cti serve` killed with SIGKILL in the middle of the day (a call in conversation): the
    40 calls it stored are counted once by the next daemon, and the call it never stored is
    counted when it ends, also once."""
    log = tmp_path / "cti.log"
    async with FakeAmi() as fake:
        fake.lists = {"coreshowchannels": [], "queuestatus": []}
        config = config_file(tmp_path, fake.port, url)
        env = {**os.environ, "CTI_AMI_PBX1_SECRET": "s3cret"}
        with _append(log) as handle:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cti.cli", "serve", "--config", str(config), env=env, stderr=handle
            )
        try:
            await until(lambda: fake.actions("QueueStatus"), within_s=30)
            now = time.time()
            head, tail = in_conversation(now - 8, b"Event: AgentComplete\r\n")
            await fake.push(day_traffic(now - 10) + head)
            await until(lambda: finished(url, 40), within_s=20)
            await asyncio.sleep(0.5)  # the stats consumer and the span writer catch up
            web = web_url_in(log)
            assert web is not None
            before = await live_of(web)
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert len(await stored(url)) == 40  # the call in conversation died with the process

        # Asterisk still has the call in conversation; the new daemon adopts it.
        fake.lists = {
            "coreshowchannels": list(IN_CONVERSATION),
            "queuestatus": list(queue_status(before)),
        }
        second = Daemon(settings_for(fake, url))
        await second.start()
        try:
            await until(lambda: second.trackings[0].resyncs == 1)
            await second.bus.drain()
            after = await live_of(second.web_url)
            # Before the kill the first daemon counted the call in conversation provisionally
            # (presented and answered in `support`): the figures are otherwise the same.
            support = next(q for q in before["queues"] if q["queue"] == "support")
            support_after = next(q for q in after["queues"] if q["queue"] == "support")
            assert support_after["presented"] == support["presented"] - 1
            assert (
                sum(q["presented"] for q in after["queues"])
                == sum(q["presented"] for q in before["queues"]) - 1
            )
            assert after["ivr"]["totals"]["entries"] == before["ivr"]["totals"]["entries"] - 1
            assert after["outbound"] == before["outbound"]
            # Time per state: what the killed daemon had stored (its open spans died with it).
            tolerance = after["now"] - before["now"] + 0.1
            await asyncio.to_thread(check_against_cti_stats, url, after, tolerance, capsys)
            await fake.push(restamped(tail, time.time()))
            await until(lambda: finished(url, 41), within_s=20)
            await second.bus.drain()
            assert await second.stats.spans.flush()  # the spans of that call, stored now
            ended = await live_of(second.web_url)
            tolerance = ended["now"] - before["now"] + 0.1
            await asyncio.to_thread(check_against_cti_stats, url, ended, tolerance, capsys)
            assert sum(q["presented"] for q in ended["queues"]) <= sum(
                q["presented"] for q in before["queues"]
            )
        finally:
            await second.shutdown()
    assert "Traceback" not in log.read_text(encoding="utf-8", errors="replace")


# --------------------------------------------------------------------------- the rebuild's edges
PARIS = ZoneInfo("Europe/Paris")
S = "pbx1"


def _paris(*args: int) -> float:
    return datetime(*args, tzinfo=PARIS).timestamp()  # type: ignore[misc]


def _call(linkedid: str, start: float, **kw: Any) -> CallRecord:
    return CallRecord(
        S, linkedid, kw.pop("direction", "inbound"), start, kw.pop("ended_at", start + 90), **kw
    )


def _answered(queue: str, joined: float, wait: float = 4.0, agent: str = "A1") -> QueueSegment:
    return QueueSegment(
        queue,
        joined,
        joined + wait,
        "answered",
        agent,
        f"PJSIP/{agent}",
        wait,
        1.0,
        60.0,
        "caller",
    )


async def _database(where: Path | str, calls: list[CallRecord], spans: list[Span]) -> AsyncEngine:
    """A migrated database (a SQLite file in `where`, or the migrated database at URL `where`)
    holding these calls and spans."""
    engine = create_engine(where if isinstance(where, str) else f"sqlite+aiosqlite:///{where}/cti.db")
    await upgrade_async(engine)
    await CallStore(engine).save(calls)
    await save_spans(engine, spans)
    return engine


async def _reports(service: StatsService) -> dict[str, Any]:
    """`cti stats` for the service's today (its zone), per report."""
    query = service.query(start="today")
    return {kind: (await REPORTS[kind](service.engine, query)).to_json() for kind in REPORTS}


def _queues(floor: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    return {
        q["queue"]: (q["presented"], q["answered"], q["abandoned"]) for q in floor["queues"] if q["presented"]
    }


def _queues_of(report: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    return {q["queue"]: (q["presented"], q["answered"], q["abandoned"]) for q in report["totals"]}


async def test_events_during_the_rebuild_are_held_and_counted_once(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stored: 60 finished calls (three pages of 25, calls starting two by two at the same instant
    across the pages' edges), one call still in conversation at the stop, an agent's spans.
    While the rebuild runs: a call of this daemon ends and the writer has already stored it (the
    rebuild must leave the row to the event), the open call ends, an agent logs in. Afterwards:
    each call counted once, the figures equal `cti stats` for today; SQLite and PostgreSQL."""
    monkeypatch.setattr("cti.stats.restore.PAGE_CALLS", 25)
    now = _paris(2026, 11, 23, 10, 0)
    finished = [
        _call(f"1.{i}", now - 3600 + 30 * (i // 2), segments=[_answered("support", now - 3590 + 30 * i)])
        for i in range(60)
    ]
    open_call = _call("2.1", now - 100, segments=[_answered("sales", now - 95)], ended_at=None)
    open_call.closed_by = "shutdown"
    open_call.segments[0].talk_s = open_call.segments[0].completed_by = None
    spans = [Span(S, "PJSIP/A1", "A1", "available", None, None, now - 3600, now - 200)]
    engine = await _database(url, [*finished, open_call], spans)
    # Ended by the new daemon just after its start, and already stored by its writer.
    fresh = _call(
        "3.1", now - 30, segments=[QueueSegment("support", now - 25, now - 5, "abandoned", wait_s=20.0)]
    )
    fresh.ended_at = now - 5
    await CallStore(engine).save([fresh])
    service = StatsService(engine, None, tz="Europe/Paris", clock=lambda: now)
    try:
        service.start()
        assert not service.ready
        ended = ev.CallEnded(S, now - 5, "3.1", fresh)
        service.on_published(ended)  # the bus tap, inline in publish
        service.on_event(ev.CallStarted(S, now - 30, "3.1", "inbound", None, None))
        service.on_event(ev.QueueJoined(S, now - 25, "3.1", "support", 1, 1))
        service.on_event(ended)
        final = _call("2.1", now - 100, segments=[_answered("sales", now - 95)], ended_at=now - 2)
        service.on_event(ev.AgentCompleted(S, now - 2, "2.1", "sales", "A1", "PJSIP/A1", "caller", 60.0))
        service.on_event(ev.CallEnded(S, now - 2, "2.1", final))
        service.on_event(
            ev.AgentStateChanged(S, now - 1, "support", "PJSIP/A1", "A1", 1, False, None, True, False, 0)
        )
        assert service.live.board.agents == {}  # held
        assert await service.wait_ready()
        assert service.restored is not None
        # Both calls that ended meanwhile are left to their events (the open one too: its final
        # record replaces whatever the row said).
        done = service.restored
        assert (done.calls, done.open_calls, done.left_to_events) == (60, 0, 2)
        await CallStore(engine).save([final])  # what the writer does with the final record
        floor = service.live.snapshot(now)
        reports = await _reports(service)
        assert (
            _queues(floor)
            == _queues_of(reports["queues"])
            == {
                "support": (61, 60, 1),
                "sales": (1, 1, 0),
            }
        )
        [agent] = floor["agents"]
        # Stored 3,400 s; available again since the open call's AgentComplete (now - 2).
        assert (agent["state"], agent["handled"], agent["available_s"]) == ("available", 61, 3400 + 2)
        events_after = service.live.version
        service.on_event(ev.CallStarted(S, now, "4.1", "inbound", None, None))  # direct now
        assert service.live.version == events_after + 1
    finally:
        await service.close()
        await engine.dispose()


async def test_a_stop_during_the_rebuild_keeps_the_events_held(tmp_path: Path) -> None:
    now = _paris(2026, 11, 23, 10, 0)
    engine = await _database(tmp_path, [], [])
    service = StatsService(engine, None, tz="Europe/Paris", clock=lambda: now)
    service.start()
    service.on_event(
        ev.AgentStateChanged(S, now - 60, "support", "PJSIP/A1", "A1", 1, False, None, True, False, 0)
    )
    assert not service.ready and service.live.board.agents == {}  # held
    await service.close()  # before the rebuild could finish: the agent's minute is stored
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(SPANS.select())).all()
        assert [(r.interface, r.state, r.duration_s) for r in rows] == [("PJSIP/A1", "available", 60.0)]
    finally:
        await engine.dispose()


async def test_a_restart_just_after_midnight_rebuilds_the_new_local_day(tmp_path: Path) -> None:
    """00:20 in Paris is 23:20 UTC the day before: today is the Paris day. A call that joined
    its queue after midnight counts today, its IVR steps (by the call's start) yesterday; a call
    open across midnight is open again and counted once when it ends; spans count from midnight."""
    now = _paris(2026, 11, 24, 0, 20)
    midnight = _paris(2026, 11, 24, 0, 0)
    ivr = [IvrStep(midnight - 55, "main", "enter", "enter"), IvrStep(midnight - 50, "main", "choice", "1")]
    calls = [
        _call("1.1", midnight - 600, segments=[_answered("support", midnight - 590)], ivr_path=list(ivr)),
        _call("1.2", midnight - 60, ivr_path=list(ivr), segments=[_answered("support", midnight + 10)]),
        _call(
            "1.3",
            midnight + 600,
            segments=[QueueSegment("sales", midnight + 605, outcome="abandoned", wait_s=9.0)],
        ),
    ]
    across = _call(
        "2.1",
        midnight - 120,
        segments=[_answered("support", midnight - 110), QueueSegment("sales", midnight + 300)],
        ended_at=None,
        ivr_path=list(ivr),
    )
    across.closed_by = "shutdown"
    spans = [
        Span(S, "PJSIP/A1", "A1", "available", None, None, midnight - 1200, midnight + 900),
        Span(S, "PJSIP/A1", "A1", "paused", "pause", None, midnight + 900, midnight + 1140),
    ]
    engine = await _database(tmp_path, [*calls, across], spans)
    service = StatsService(engine, None, tz="Europe/Paris", clock=lambda: now)
    try:
        service.start()
        assert await service.wait_ready()
        floor = service.live.snapshot(now)
        reports = await _reports(service)
        assert floor["day"] == "2026-11-24"
        # The open call's sales segment is counted provisionally, as the stored row is by SQL.
        assert _queues(floor) == _queues_of(reports["queues"]) == {"support": (1, 1, 0), "sales": (2, 0, 1)}
        assert floor["ivr"]["totals"]["entries"] == 0 == reports["ivr"]["overall"]["entries"]
        [agent] = floor["agents"]
        assert (agent["state"], agent["since"], agent["available_s"], agent["paused_s"]) == (
            "logged_out",
            midnight + 1140,
            900.0,
            240.0,
        )
        assert agent["pause_by_reason"] == {"pause": 240.0}
        # The call open across midnight ends: its final record replaces the provisional one.
        final = _call(
            "2.1",
            midnight - 120,
            segments=[_answered("support", midnight - 110), _answered("sales", midnight + 300, agent="A2")],
            ended_at=now,
            ivr_path=list(ivr),
        )
        service.on_event(ev.CallEnded(S, now, "2.1", final))
        assert _queues(service.live.snapshot(now)) == {"support": (1, 1, 0), "sales": (2, 1, 1)}
    finally:
        await service.close()
        await engine.dispose()


def test_a_call_waiting_in_its_queue_at_the_restart_is_presented_once() -> None:
    from cti.ami.message import Message
    from cti.calls.tracker import CallTracker
    from cti.stats.live import LiveStats

    now = _paris(2026, 11, 23, 10, 0)
    stored_row = _call(
        "5.1", now - 30, segments=[QueueSegment("support", now - 25, position=1)], ended_at=None
    )
    stored_row.closed_by = "shutdown"
    tracker = CallTracker(S, "FR", 10)
    tracker.restore([_call("5.1", now - 30, segments=[QueueSegment("support", now - 25, position=1)])])
    live = LiveStats(tz=PARIS, clock=lambda: now)
    live.restore_call(stored_row, live.day_of(now), True, now)
    channel = Message(
        Event="CoreShowChannel",
        Channel="PJSIP/trunk-1",
        Uniqueid="5.1",
        Linkedid="5.1",
        Application="Queue",
        BridgeId="",
        Duration="00:00:30",
    )
    entry = Message(
        Event="QueueEntry", Queue="support", Position="1", Channel="PJSIP/trunk-1", Uniqueid="5.1", Wait="25"
    )
    for event in tracker.resync([channel], [entry], now):
        live.on_event(event)
    assert [q["presented"] for q in live.snapshot(now)["queues"]] == [1]
    assert len(tracker.calls["5.1"].record.segments) == 1
