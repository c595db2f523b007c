"""The daemon end to end: fake AMI server on 127.0.0.1 → link → tracker → bus → SQLite file.

Real capture bytes are pushed through a real socket; results are read back from the database.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cti.app import Daemon
from cti.config import AsteriskServer, DatabaseSettings, Secret, Settings, WebSettings
from cti.db.calls_store import load_calls
from cti.db.engine import create_engine
from fakeami import CAPTURES, FakeAmi, capture_list

pytestmark = pytest.mark.skipif(not CAPTURES.is_dir(), reason="tests/captures/lab is missing")

LIST_ITEMS = {
    "CoreShowChannel",
    "CoreShowChannelsComplete",
    "QueueParams",
    "QueueMember",
    "QueueEntry",
    "QueueStatusComplete",
    "QueueSummary",
    "QueueSummaryComplete",
    "Status",
    "StatusComplete",
    "FullyBooted",
}


def event_bytes(
    name: str, after_event: str | None = None, until: Callable[[bytes], bool] | None = None
) -> bytes:
    """The capture's event frames (no responses, no list items), optionally from after the first
    `after_event` frame, and stopping before the first frame `until` accepts."""
    frames = (CAPTURES / f"{name}.ami").read_bytes().split(b"\r\n\r\n")
    started = after_event is None
    kept = []
    for f in frames:
        if not started:
            started = f.startswith(f"Event: {after_event}\r\n".encode())
            continue
        if until is not None and until(f):
            break
        if not f.startswith(b"Event: "):
            continue
        name_ = f[7 : f.find(b"\r\n")].decode()
        if name_ in LIST_ITEMS:
            continue
        kept.append(f + b"\r\n\r\n")
    return b"".join(kept)


async def until(predicate: Callable[[], Any], within_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not await _value(predicate()):
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def _value(v: Any) -> Any:
    return await v if asyncio.iscoroutine(v) else v


def settings_for(fake: FakeAmi, db: Path) -> Settings:
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
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{db}", flush_interval_s=0.05),
        web=WebSettings(port=0),  # an ephemeral port: tests never collide
    )


async def calls_in(db: Path) -> list[dict[str, Any]]:
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    try:
        return await load_calls(engine)
    finally:
        await engine.dispose()


async def finished(db: Path, n: int) -> bool:
    return len([c for c in await calls_in(db) if c["closed_by"] != "shutdown"]) >= n


async def test_a_call_through_the_socket_is_tracked_and_stored(tmp_path: Path) -> None:
    db = tmp_path / "cti.db"
    async with FakeAmi() as fake:
        fake.lists = {"coreshowchannels": [], "queuestatus": []}
        daemon = Daemon(settings_for(fake, db))
        await daemon.start()
        try:
            await until(lambda: fake.actions("QueueStatus"))
            await fake.push(event_bytes("inbound_answered"))
            await until(lambda: finished(db, 1))
        finally:
            await daemon.shutdown()
    [call] = await calls_in(db)
    assert (call["server"], call["linkedid"], call["outcome"], call["agent"], call["hangup_by"]) == (
        "pbx1",
        "1795389610.8",
        "answered",
        "Agent1",
        "agent",
    )
    assert call["segments"][0]["queue"] == "support"


async def test_drop_mid_call_the_call_is_adopted_on_resync_not_duplicated(tmp_path: Path) -> None:
    """reconnect_part1 over the first connection, cut; part2's lists and events over the second."""
    db = tmp_path / "cti.db"
    async with FakeAmi() as fake:
        fake.lists = {"coreshowchannels": [], "queuestatus": []}
        daemon = Daemon(settings_for(fake, db))
        await daemon.start()
        try:
            await until(lambda: fake.actions("QueueStatus"))
            await fake.push(event_bytes("reconnect_part1"))
            await until(lambda: len(daemon.trackings[0].tracker.calls) == 1)
            fake.lists = {
                "coreshowchannels": list(capture_list("reconnect_part2.ami", "CoreShowChannels")),
                "queuestatus": list(capture_list("reconnect_part2.ami", "QueueStatus")),
            }
            fake.drop()
            await until(lambda: fake.logins == 2 and len(fake.actions("QueueStatus")) == 2)
            await until(lambda: daemon.trackings[0].resyncs == 2)
            assert len(daemon.trackings[0].tracker.calls) == 1  # adopted, still the same call
            await fake.push(event_bytes("reconnect_part2", after_event="QueueStatusComplete"))
            await until(lambda: finished(db, 1))
        finally:
            await daemon.shutdown()
    calls = await calls_in(db)
    assert len(calls) == 1
    call = calls[0]
    assert (call["linkedid"], call["outcome"], call["agent"], call["closed_by"]) == (
        "1795389589.4",
        "answered",
        "Agent4",
        "events",
    )
    assert abs(call["talk_s"] - 12) <= 1 and abs(call["wait_s"] - 3) <= 1
    assert call["ivr_path"][-1]["value"] == "1"


async def test_daemon_restart_mid_call_resumes_the_same_call(tmp_path: Path) -> None:
    db = tmp_path / "cti.db"
    stop_at = b"Event: AgentConnect\r\n"
    async with FakeAmi() as fake:
        fake.lists = {"coreshowchannels": [], "queuestatus": []}
        first = Daemon(settings_for(fake, db))
        await first.start()
        try:
            await until(lambda: fake.actions("QueueStatus"))
            await fake.push(event_bytes("inbound_answered", until=lambda f: f.startswith(stop_at)))
            await until(lambda: len(first.trackings[0].tracker.calls) == 1)
        finally:
            await first.shutdown()
        [kept] = await calls_in(db)
        assert kept["closed_by"] == "shutdown" and kept["ended_at"] is None

        # Asterisk still has the call's four channels when the daemon comes back.
        channels = [
            {
                "Event": "CoreShowChannel",
                "Channel": name,
                "Uniqueid": uid,
                "Linkedid": "1795389610.8",
                "Application": app,
                "BridgeId": "",
                "Duration": "00:00:03",
            }
            for name, uid, app in (
                ("Local/s@ivr-00000004;1", "1795389610.8", "Wait"),
                ("Local/s@ivr-00000004;2", "1795389610.9", "Queue"),
                ("Local/agent1@agents-00000005;1", "1795389611.10", "AppDial"),
                ("Local/agent1@agents-00000005;2", "1795389611.11", "Wait"),
            )
        ]
        fake.lists = {"coreshowchannels": channels, "queuestatus": []}
        second = Daemon(settings_for(fake, db))
        await second.start()
        try:
            await until(lambda: second.trackings[0].resyncs == 1)
            assert len(second.trackings[0].tracker.calls) == 1
            rest = event_bytes("inbound_answered").split(stop_at, 1)[1]
            await fake.push(stop_at + rest)
            await until(lambda: finished(db, 1))
        finally:
            await second.shutdown()
    [call] = await calls_in(db)
    assert (call["outcome"], call["agent"], call["closed_by"]) == ("answered", "Agent1", "events")
    assert [step["value"] for step in call["ivr_path"]] == ["enter", "1"]  # seen before the restart


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_cti_serve_stops_gracefully_on_sigterm_and_never_logs_the_secret(tmp_path: Path) -> None:
    db = tmp_path / "cti.db"
    config = tmp_path / "cti.toml"
    async with FakeAmi(secret="Sup3r-S3cret") as fake:
        fake.lists = {"coreshowchannels": [], "queuestatus": []}
        config.write_text(
            f'[[asterisk]]\nname = "pbx1"\nhost = "127.0.0.1"\nport = {fake.port}\nkeepalive_s = 0.5\n'
            f'[database]\nurl = "sqlite+aiosqlite:///{db}"\nflush_interval_s = 0.05\n'
            '[log]\nformat = "json"\n[web]\nport = 0\n'
        )
        env = {**os.environ, "CTI_AMI_PBX1_SECRET": "Sup3r-S3cret"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cti.cli",
            "serve",
            "--config",
            str(config),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await until(lambda: fake.actions("QueueStatus"), within_s=20)
            await fake.push(event_bytes("inbound_answered"))
            await until(lambda: finished(db, 1))
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    log = err.decode()
    assert "Sup3r-S3cret" not in log
    assert '"cti stopped"' in log
    assert fake.actions("Logoff"), "no Logoff sent on shutdown"
