"""The loop that owns one server's AMI stream (calls/ownership.py), with a scripted lease and a
link that records what is done to it: connect only while owning, drop the link at once when the
lease is lost or cannot be renewed in time, forget the calls, stand by, take over again as a
restart does; release at a clean stop. `[ha] enabled` on SQLite is refused at start.
(tests/test_ha_takeover.py runs the real thing: two `cti serve`, PostgreSQL, a simulated PBX.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from cti.calls.live import LiveTracking
from cti.calls.ownership import StreamOwner
from cti.calls.records import CallRecord
from cti.calls.tracker import CallTracker
from cti.config import AsteriskServer, ConfigError, load_settings
from cti.db.calls_store import CallWriter
from cti.db.leases import LeaseLost

TTL_S = 0.3


class ScriptedLease:
    """acquire/renew answer from their scripts (a value, or an exception to raise)."""

    def __init__(self, acquire: list[object], renew: list[object]) -> None:
        self.server, self.holder, self.ttl_s = "pbx1", "a", TTL_S
        self.token: int | None = None
        self.acquires, self.renews = acquire, renew
        self.released = 0
        self.tokens = 0

    @property
    def owned(self) -> bool:
        return self.token is not None

    @staticmethod
    def _next(script: list[object], default: object) -> object:
        answer = script.pop(0) if script else default
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def acquire(self) -> bool:
        taken = bool(self._next(self.acquires, False))
        if taken:
            self.tokens += 1
            self.token = self.tokens
        return taken

    async def renew(self) -> bool:
        kept = bool(self._next(self.renews, True))
        if not kept:
            self.token = None
        return kept

    async def release(self) -> None:
        self.released += 1
        self.token = None


@dataclass
class RecordingLink:
    server: AsteriskServer = field(default_factory=lambda: AsteriskServer(name="pbx1"))
    closed: bool = False
    runs: int = 0
    suspended: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def running(self) -> bool:
        return self.runs > len(self.suspended)

    async def run(self) -> None:
        self.runs += 1
        self._stop.clear()
        await self._stop.wait()

    async def suspend(self, reason: str) -> None:
        self.suspended.append(reason)
        self._stop.set()


def tracking_with_a_call() -> LiveTracking:
    tracker = CallTracker("pbx1")
    tracker.restore([CallRecord(server="pbx1", linkedid="old.1", direction="inbound", started_at=1.0)])
    return LiveTracking(tracker, lambda _event: None)


async def until(check: object, within_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not check():  # type: ignore[operator]
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def owner(
    lease: ScriptedLease, link: RecordingLink, tracking: LiveTracking, stored: list[str]
) -> StreamOwner:
    async def load() -> list[CallRecord]:
        return [
            CallRecord(server="pbx1", linkedid=lid, direction="inbound", started_at=2.0) for lid in stored
        ]

    return StreamOwner(lease, link, tracking, load)  # type: ignore[arg-type]


async def test_connects_only_while_owning_and_stands_by_when_the_lease_is_lost() -> None:
    lease = ScriptedLease(acquire=[False, False, True, False, True], renew=[True, False])
    link, tracking = RecordingLink(), tracking_with_a_call()
    task = asyncio.create_task(owner(lease, link, tracking, ["stored.1"]).run())
    try:
        await until(lambda: link.runs == 1)
        # Taken over as a restart: what it knew is gone, the calls stored as in progress are back.
        assert set(tracking.tracker.calls) == {"stored.1"}
        assert lease.token == 1
        await until(lambda: link.suspended)  # the second renewal found the token moved on
        assert link.suspended == ["stream ownership ended"]
        await until(lambda: tracking.tracker.calls == {})  # the new owner records them
        await until(lambda: link.runs == 2)  # the lease free again: a second takeover
        assert lease.token == 2 and set(tracking.tracker.calls) == {"stored.1"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_database_that_does_not_answer_drops_the_link_before_the_lease_lapses() -> None:
    lease = ScriptedLease(acquire=[True], renew=[OSError("down"), OSError("down"), OSError("down")])
    link, tracking = RecordingLink(), tracking_with_a_call()
    task = asyncio.create_task(owner(lease, link, tracking, []).run())
    try:
        await until(lambda: link.runs == 1)
        # A failed renewal is tolerated while the lease surely holds; the link is dropped once
        # two thirds of the lease passed without one, before the lease can have lapsed.
        await until(lambda: link.suspended)
        assert lease.token is None and link.runs == 1
        await until(lambda: tracking.tracker.calls == {})
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_clean_stop_releases_the_lease_and_keeps_the_calls_for_the_shutdown() -> None:
    lease = ScriptedLease(acquire=[True], renew=[])
    link, tracking = RecordingLink(), tracking_with_a_call()
    stream = owner(lease, link, tracking, ["stored.1"])
    task = asyncio.create_task(stream.run())
    await until(lambda: link.runs == 1)
    await asyncio.sleep(TTL_S)  # renewed meanwhile
    assert lease.token == 1 and lease.released == 0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # The daemon stores the calls in progress as "shutdown" after this: they are still there.
    assert set(tracking.tracker.calls) == {"stored.1"}
    await stream.release()
    assert lease.released == 1 and lease.token is None


async def test_a_takeover_that_cannot_read_the_database_never_connects() -> None:
    lease = ScriptedLease(acquire=[True], renew=[])
    link, tracking = RecordingLink(), tracking_with_a_call()

    async def unreadable() -> list[CallRecord]:
        raise OSError("database gone")

    task = asyncio.create_task(StreamOwner(lease, link, tracking, unreadable).run())  # type: ignore[arg-type]
    try:
        await until(lambda: lease.acquires == [] and lease.token is None)
        await asyncio.sleep(TTL_S / 2)
        assert link.runs == 0  # it let the lease lapse rather than track calls it cannot restore
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_ha_on_sqlite_is_refused_at_start(tmp_path: Path) -> None:
    from cti.app import Daemon

    path = tmp_path / "cti.toml"
    path.write_text(f'[ha]\nenabled = true\n[database]\nurl = "sqlite+aiosqlite:///{tmp_path}/cti.db"\n')
    settings = load_settings(path, {})

    async def main() -> None:
        daemon = Daemon(settings)
        try:
            await daemon.start()
        finally:
            await daemon.release()

    with pytest.raises(ConfigError, match=r"^ha\.enabled: several daemons need PostgreSQL"):
        asyncio.run(main())
    assert not (tmp_path / "cti.db").exists()  # refused before anything was written


def test_config_check_says_what_several_nodes_need(tmp_path: Path) -> None:
    from cti.config_commands import review

    path = tmp_path / "cti.toml"
    path.write_text(f'[ha]\nenabled = true\n[database]\nurl = "sqlite+aiosqlite:///{tmp_path}/cti.db"\n')
    said = {(f.level, f.setting): f.text for f in review(load_settings(path, {}))}
    assert said[("error", "ha.enabled")].startswith("needs PostgreSQL")
    assert "not recorded" in said[("warning", "asterisk[default].records_url")]
    path.write_text('[ha]\nenabled = true\n[database]\nurl = "postgresql://cti@db/cti"\n')
    assert not [f for f in review(load_settings(path, {})) if f.setting == "ha.enabled"]


# ----------------------------------------------------------------------------- refused writes


class FencedSink:
    """Saves like CallStore, but refuses (LeaseLost) any batch holding a call of `lost`."""

    display_url = "postgresql://test"

    def __init__(self, lost: str) -> None:
        self.lost = lost
        self.saved: list[str] = []
        self.refusals = 0

    async def save(self, records: Sequence[CallRecord]) -> None:
        if any(r.server == self.lost for r in records):
            self.refusals += 1
            raise LeaseLost(self.lost, 1, 2)
        self.saved.extend(r.linkedid for r in records)


def call(server: str, linkedid: str) -> CallRecord:
    return CallRecord(server=server, linkedid=linkedid, direction="inbound", started_at=1.0)


async def test_the_call_writer_drops_what_the_token_refuses_once_and_keeps_the_rest() -> None:
    sink = FencedSink("paris")
    with capture_logs() as logs:
        async with CallWriter(sink, batch_size=10, flush_interval_s=0.01) as writer:
            for n in range(3):
                writer.submit(call("paris", f"p{n}"))
                writer.submit(call("lyon", f"l{n}"))
            await until(lambda: writer.pending == 0)
            writer.submit(call("paris", "p9"))  # a late one, after the loss
            await until(lambda: writer.pending == 0)
    assert sorted(sink.saved) == ["l0", "l1", "l2"]  # the other server's calls are stored
    assert writer.fenced == 4 and writer.failures == 0  # dropped, not retried
    said = [e for e in logs if e["event"].startswith("call records dropped: another daemon")]
    assert len(said) == 1 and said[0]["server"] == "paris"


async def test_the_span_writer_drops_what_the_token_refuses_and_keeps_the_rest(tmp_path: Path) -> None:
    from sqlalchemy import text

    from cti.db.engine import create_engine
    from cti.db.migrate import upgrade_async
    from cti.stats.agents import Span
    from cti.stats.store import SpanWriter

    async def fence(_conn: object, servers: Iterable[str]) -> None:
        if "paris" in set(servers):
            raise LeaseLost("paris", 1, 2)

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/cti.db")
    try:
        await upgrade_async(engine)
        writer = SpanWriter(engine, fence=fence)
        spans = [
            Span(server, "PJSIP/1001", "a", "idle", None, None, 1000.0, 1010.0)
            for server in ("paris", "lyon")
        ]
        writer.submit(spans)
        with capture_logs() as logs:
            assert await writer.flush()
        async with engine.connect() as conn:
            stored = list(await conn.scalars(text("SELECT server FROM agent_state_spans")))
    finally:
        await engine.dispose()
    assert stored == ["lyon"] and writer.pending == 0
    assert [e["server"] for e in logs if e["event"].startswith("agent-state spans dropped")] == ["paris"]
