"""Calls whose hangups never arrive are closed by the daemon's periodic reconcile."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cti.app import Daemon
from cti.db.calls_store import load_calls
from cti.db.engine import create_engine
from fakeami import FakeAmi
from test_daemon import settings_for, until

PBX = Path(__file__).parent / "captures" / "pbx"


def _events_until_answer() -> bytes:
    """The recorded ring-all call's events up to the agent's answer: the rest was lost."""
    frames = (PBX / "ring_all.ami").read_bytes().split(b"\r\n\r\n")
    kept = []
    for frame in frames:
        if frame.startswith(b"Event: "):
            kept.append(frame)
        if frame.startswith(b"Event: AgentConnect"):
            break
    return b"\r\n\r\n".join(kept) + b"\r\n\r\n"


async def test_the_daemon_closes_a_call_asterisk_no_longer_has(tmp_path: Path) -> None:
    async with FakeAmi() as fake:
        fake.lists = {"coreshowchannels": [], "queuestatus": []}
        settings = settings_for(fake, tmp_path / "cti.db")
        settings = dataclasses.replace(
            settings, tracker=dataclasses.replace(settings.tracker, reconcile_s=0.3)
        )
        daemon = Daemon(settings)
        await daemon.start()
        try:
            await until(lambda: fake.actions("QueueStatus"))
            await fake.push(_events_until_answer())
            await until(lambda: any(t.tracker.calls for t in daemon.trackings))
            engine = create_engine(settings.database.url)
            try:

                async def closed() -> list[dict[str, object]]:
                    return [c for c in await load_calls(engine) if c["closed_by"] == "reconcile"]

                # CoreShowChannels lists nothing: the next reconcile closes it.
                await until(closed, within_s=10)
                [call] = await closed()
            finally:
                await engine.dispose()
        finally:
            await daemon.shutdown()
    assert call["caller_raw"] == "0612345678" and call["agent"] == "Agent 1002"
    assert len(fake.actions("CoreShowChannels")) >= 2  # the resync's, then the reconcile's
