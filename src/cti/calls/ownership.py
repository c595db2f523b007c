"""One owner per AMI stream, in `cti serve` (issue 20, item 1; docs/scale-out.md, "Stream
ownership").

With `[ha] enabled`, several daemons share one PostgreSQL database and each Asterisk server is
tracked by one of them at a time, under its lease (db/leases.py). For each server a
`StreamOwner` loops:

- **standby**: the link is down; every third of the lease period it tries to take the lease
  (free, released, or lapsed);
- **takeover**: the lease is ours with a new token: the tracker drops whatever it knew and takes
  back the calls stored as in progress (`load_open_calls`), the recovery forgets this daemon's
  own past and reads the stored mark, then the link connects: its resync (CoreShowChannels,
  QueueStatus) adopts the calls in progress and the recovery reads the gap from Asterisk's
  CEL and queue_log, as after a restart;
- **owner**: the lease is renewed every third of its period. Lost (the token moved on: another
  daemon took it), or not renewed for two thirds of the period (our database away: the lease
  may lapse before we know), the link is dropped at once (`AmiLink.suspend`: nothing more read
  from it), the recovery's pass and the tracker's calls are dropped without a word (the new
  owner records them) and the loop is a standby again.

At a clean stop the daemon stores what it saw (calls in progress as "shutdown", the mark)
under its token, then releases the lease (`StreamOwners.release`): a standby takes over at
once, not after the lease lapses. Every write made for a server goes through its token
(`StreamOwners.fences`): a daemon frozen past its lease writes nothing when it wakes up.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.ami.link import AmiLink
from cti.calls.live import LiveTracking
from cti.calls.records import CallRecord
from cti.config import ConfigError, HaSettings
from cti.db.leases import StreamFences, StreamLease

log = structlog.get_logger(__name__)

# Renewed (or, standing by, tried) this many times per lease period.
TRIES_PER_PERIOD = 3
# Not renewed for this share of the period: the lease may lapse before we hear of it.
GIVE_UP_SHARE = 2 / 3

LoadOpenCalls = Callable[[], Awaitable[Sequence[CallRecord]]]


def node_name(settings: HaSettings) -> str:
    """This daemon's name in the lease rows: `[ha] node`, else <hostname>-<pid>."""
    return settings.node or f"{socket.gethostname()}-{os.getpid()}"


class StreamOwner:
    """This daemon's claim on one server's AMI stream (see the module's docstring)."""

    def __init__(
        self, lease: StreamLease, link: AmiLink, tracking: LiveTracking, load_open_calls: LoadOpenCalls
    ) -> None:
        self.lease, self.link, self.tracking = lease, link, tracking
        self.load_open_calls = load_open_calls
        self.interval_s = lease.ttl_s / TRIES_PER_PERIOD
        self.log = log.bind(server=lease.server, node=lease.holder)
        self.takeovers = 0
        self.losses = 0
        self._said_unreachable = False
        self._abandoned: set[asyncio.Task[bool]] = set()  # renewals given up on, still ending

    async def run(self) -> None:
        """Stand by, own, stand by... until the link is closed (the daemon stops)."""
        while not self.link.closed:
            asked = time.monotonic()
            if await self._acquire():
                await self._own(asked)
            else:
                await asyncio.sleep(self.interval_s)

    async def _acquire(self) -> bool:
        try:
            async with asyncio.timeout(self.interval_s * 2):
                taken = await self.lease.acquire()
        except Exception as exc:  # our database away: stay a standby, say it once
            if not self._said_unreachable:
                self.log.warning("stream lease unreadable, standing by", error=_describe(exc))
                self._said_unreachable = True
            return False
        self._said_unreachable = False
        return taken

    async def _own(self, asked: float) -> None:
        self.takeovers += 1
        self.log.info("taking over the stream", lease_token=self.lease.token)
        self.link.read_until = asked + self.lease.ttl_s  # not a byte read once it may lapse
        # Renewed from now on, while the takeover reads the database too.
        hold = asyncio.create_task(self._hold(asked), name=f"stream-lease:{self.lease.server}")
        link_task: asyncio.Task[None] | None = None
        try:
            try:
                await self._take_over()
            except Exception as exc:
                # The database answered the acquire but not the read: let the lease lapse (a
                # standby that can read takes over) rather than track calls it cannot restore.
                self.log.error("takeover failed, standing by", error=_describe(exc))
                hold.cancel()
                await asyncio.gather(hold, return_exceptions=True)
                self.lease.token = None
                await asyncio.sleep(self.lease.ttl_s)
                return
            if not hold.done():
                link_task = asyncio.create_task(self.link.run(), name=f"ami:{self.lease.server}")
            reason = await hold
            # Said as it happens: the link is dropped just below, before anything else is awaited.
            self.log.warning("stream ownership lost: standing by", reason=reason)
        finally:
            if not hold.done():
                hold.cancel()
                await asyncio.gather(hold, return_exceptions=True)
            if link_task is not None:
                if not link_task.done():
                    # Cancelled (the daemon releases its leases) or lost: nothing read from here on.
                    await self.link.suspend("stream ownership ended")
                await asyncio.gather(link_task, return_exceptions=True)
        await self._stand_down(reason)

    async def _take_over(self) -> None:
        """As a restart: nothing kept from an earlier ownership, the calls stored as in progress
        taken back; the link's resync and the recovery pass do the rest once connected."""
        tracker, recovery = self.tracking.tracker, self.tracking.recovery
        tracker.forget_all()
        if recovery is not None:
            await recovery.stand_down()
        self.tracking.lost_at = None
        tracker.restore(await self.load_open_calls())

    async def _hold(self, renewed_from: float) -> str:
        """Renew the lease until it is lost or cannot be renewed in time; returns why.

        The deadline is kept on this daemon's clock, whatever the renewal does: a renewal on a
        path that drops packets neither answers nor lets itself be cancelled promptly (asyncpg's
        cancel request and SQLAlchemy's rollback go down the same dead path), so awaiting it,
        even under `asyncio.timeout`, held the link past the lease's expiry (seen: a node cut
        from PostgreSQL let go of its link a second after the standby could take over). Each
        renewal runs as a task of its own that is waited for, never past the give-up time, and
        abandoned (cancelled, not awaited) when it has not answered within a third of the
        period; a next one may then try on another connection."""
        ttl = self.lease.ttl_s
        give_up_s = ttl * GIVE_UP_SHARE
        renewal: asyncio.Task[bool] | None = None
        attempt_sent = next_try = renewed_from + self.interval_s
        failure = "no answer"
        try:
            while True:
                give_up_at = renewed_from + give_up_s
                if renewal is None:
                    await asyncio.sleep(max(0.0, min(next_try, give_up_at) - time.monotonic()))
                else:
                    wake = min(attempt_sent + self.interval_s, give_up_at)
                    await asyncio.wait({renewal}, timeout=max(0.0, wake - time.monotonic()))
                now = time.monotonic()
                if renewal is not None and renewal.done():
                    task, renewal = renewal, None
                    try:
                        kept = task.result()
                    except Exception as exc:
                        failure = _describe(exc)
                        if now - renewed_from < give_up_s:
                            self.log.warning("stream lease not renewed, retrying", error=failure)
                    else:
                        if not kept:
                            return "another daemon holds the lease"
                        if now - renewed_from < ttl:  # else frozen meanwhile: see below
                            renewed_from = attempt_sent
                            self.link.read_until = attempt_sent + ttl
                    next_try = attempt_sent + self.interval_s
                elif renewal is not None and now >= attempt_sent + self.interval_s:
                    # No answer within its share: let it go (its clean-up may hang on a dead
                    # connection) and try again on another, while there is time.
                    self._abandon(renewal)
                    renewal, failure = None, f"no answer within {self.interval_s:.1f}s"
                    next_try = now
                overdue = self._overdue(now - renewed_from, failure)
                if overdue is not None:
                    self.lease.token = None
                    return overdue
                if renewal is None and now >= next_try:
                    attempt_sent = now
                    renewal = asyncio.create_task(self.lease.renew(), name=f"lease-renew:{self.lease.server}")
        finally:
            if renewal is not None:
                self._abandon(renewal)

    def _overdue(self, since_renewed_s: float, failure: str) -> str | None:
        """Why to let go now, if it is time, from how long ago our last renewal was sent."""
        if since_renewed_s >= self.lease.ttl_s:
            # Frozen (SIGSTOP, a VM paused) past the lease: it has lapsed, whatever the database
            # says next; stop before reading what the link holds.
            return f"not renewed for {since_renewed_s:.1f}s (the daemon was frozen)"
        if since_renewed_s >= self.lease.ttl_s * GIVE_UP_SHARE:
            # The lease may lapse before we hear from the database: let go now, a third of the
            # period before it can, as measured from our last renewal's sending on our clock.
            return f"lease not renewed in time: {failure}"
        return None

    def _abandon(self, renewal: asyncio.Task[bool]) -> None:
        """Cancel a renewal without waiting for it; kept referenced until it is done, its outcome
        read (a renewal that commits after all only extends a lease nobody uses: it lapses)."""
        renewal.cancel()
        self._abandoned.add(renewal)

        def done(task: asyncio.Task[bool]) -> None:
            self._abandoned.discard(task)
            if not task.cancelled():
                task.exception()  # read: no "exception was never retrieved" at exit

        renewal.add_done_callback(done)

    async def _stand_down(self, reason: str) -> None:
        self.losses += 1
        if self.tracking.recovery is not None:
            await self.tracking.recovery.stand_down()
        self.tracking.tracker.forget_all()  # the new owner records these calls

    async def release(self) -> None:
        """A clean stop, after everything seen is stored: a standby may take over at once."""
        if not self.lease.owned:
            return
        try:
            async with asyncio.timeout(self.lease.ttl_s):
                await self.lease.release()
        except Exception as exc:
            self.log.warning(
                "stream lease not released: a standby takes over once it lapses", error=_describe(exc)
            )
            return
        self.log.info("stream lease released")


class StreamOwners:
    """The stream owners of one daemon, one per configured server; `fences` guards each write
    made on behalf of a server (calls, recovery marks, agent-state spans)."""

    def __init__(self, engine: AsyncEngine, settings: HaSettings, servers: Sequence[str]) -> None:
        if engine.dialect.name != "postgresql":
            raise ConfigError(
                "ha.enabled: several daemons need PostgreSQL ([database] url = postgresql://...); "
                "SQLite serves one daemon on one machine"
            )
        self.node = node_name(settings)
        self.leases = {name: StreamLease(engine, name, self.node, settings.lease_s) for name in servers}
        self.fences = StreamFences(self.leases.values())
        self.owners: list[StreamOwner] = []
        self._tasks: list[asyncio.Task[None]] = []

    def start(
        self, pairs: Sequence[tuple[AmiLink, LiveTracking]], load_open_calls: Callable[[str], LoadOpenCalls]
    ) -> None:
        """Stand by for every server (its link connects once this daemon owns its stream)."""
        for link, tracking in pairs:
            name = link.server.name
            owner = StreamOwner(self.leases[name], link, tracking, load_open_calls(name))
            self.owners.append(owner)
            self._tasks.append(asyncio.create_task(owner.run(), name=f"stream-owner:{name}"))
        log.info("standing by for the streams", node=self.node, servers=list(self.leases))

    def role(self, server: str) -> str | None:
        lease = self.leases.get(server)
        return None if lease is None else ("owner" if lease.owned else "standby")

    async def release(self) -> None:
        """Stop owning: the loops end (links dropped), then the leases held are released."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for owner in self.owners:
            await owner.release()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:300]}"
