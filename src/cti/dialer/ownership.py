"""Which daemon paces which campaign (issue 20, item 4; docs/scale-out.md, "Work done once").

Several daemons on one PostgreSQL database must not pace the same campaign: each would count
only the calls it placed and the floor would get twice the calls it can take. So a campaign is
paced by the daemon holding its lease, a row of `resource_leases` named `dialer:campaign:<id>`
(db/leases.py, with a fencing token). The engine asks `claim` at every tick with the campaigns
it could pace: a lease lapsed or released is taken (the engine then adopts the campaign's open
attempts), ours is renewed every third of its period, and one not renewed for two thirds of it
(the database away) is no longer trusted. Calls in flight are counted from the database, every
daemon's, and the pacing decision of a floor (server and queue) is serialised across daemons
by a PostgreSQL advisory lock (`floor_lock`), so two campaigns paced on two daemons for the same
agents never place more calls than there are free agents.

On SQLite (one machine, one daemon) there is nothing to share: no lease, every campaign paced.
"""

from __future__ import annotations

import os
import socket
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.db.leases import Lease

log = structlog.get_logger(__name__)

# Renewed this many times per lease period; not renewed for GIVE_UP_SHARE of it: not trusted.
TRIES_PER_PERIOD = 3
GIVE_UP_SHARE = 2 / 3
# The first key of the two-key advisory lock: the dialer's floors (the second is the floor's).
FLOOR_LOCK_CLASS = 0x0D1A
# Without [ha] lease_s: a daemon killed while pacing hands its campaigns over this much later.
DEFAULT_TTL_S = 3.0


def campaign_leases(engine: AsyncEngine, ha: Any = None) -> CampaignLeases | None:
    """The campaign leases of a daemon on PostgreSQL (None on SQLite: one daemon), named and
    timed by the [ha] settings when there are (`node`, `lease_s`), else <hostname>-<pid>, 3 s."""
    if engine.dialect.name != "postgresql":
        return None
    holder = getattr(ha, "node", "") or f"{socket.gethostname()}-{os.getpid()}"
    return CampaignLeases(engine, holder, float(getattr(ha, "lease_s", DEFAULT_TTL_S)))


def lease_name(campaign_id: int) -> str:
    return f"dialer:campaign:{campaign_id}"


class CampaignLeases:
    """This daemon's leases on the campaigns it paces."""

    def __init__(
        self, engine: AsyncEngine, holder: str, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.engine, self.holder, self.ttl_s = engine, holder, ttl_s
        self.clock = clock
        self.leases: dict[int, Lease] = {}
        self._renewed: dict[int, float] = {}  # campaign id -> when its lease was last taken or renewed
        self._tried: dict[int, float] = {}  # campaign id -> when it was last asked for (not ours)

    def owns(self, campaign_id: int) -> bool:
        lease = self.leases.get(campaign_id)
        if lease is None or not lease.owned:
            return False
        return self.clock() - self._renewed.get(campaign_id, 0.0) < self.ttl_s * GIVE_UP_SHARE

    async def claim(self, campaign_ids: Iterable[int]) -> set[int]:
        """Renew ours among `campaign_ids`, try to take the others; the campaigns taken now (a new
        token: their open attempts are to be adopted). Leases of campaigns not listed any more
        are released."""
        wanted = set(campaign_ids)
        taken: set[int] = set()
        every = self.ttl_s / TRIES_PER_PERIOD
        now = self.clock()
        for campaign_id in sorted(wanted):
            lease = self.leases.get(campaign_id) or self._new(campaign_id)
            try:
                if lease.owned:
                    if now - self._renewed.get(campaign_id, 0.0) >= every and await lease.renew():
                        self._renewed[campaign_id] = now
                elif now - self._tried.get(campaign_id, -every) >= every:
                    self._tried[campaign_id] = now
                    if await lease.acquire():
                        self._renewed[campaign_id] = now
                        taken.add(campaign_id)
            except Exception as exc:  # the database away: the lease runs out on its own
                log.warning("campaign lease not renewed", campaign_id=campaign_id, error=str(exc)[:200])
        for campaign_id in set(self.leases) - wanted:
            await self.release(campaign_id)
        return taken

    def _new(self, campaign_id: int) -> Lease:
        lease = Lease(self.engine, lease_name(campaign_id), self.holder, self.ttl_s)
        self.leases[campaign_id] = lease
        return lease

    async def release(self, campaign_id: int) -> None:
        lease = self.leases.pop(campaign_id, None)
        self._renewed.pop(campaign_id, None)
        self._tried.pop(campaign_id, None)
        if lease is not None and lease.owned:
            try:
                await lease.release()
            except Exception as exc:
                log.warning("campaign lease not released", campaign_id=campaign_id, error=str(exc)[:200])

    async def release_all(self) -> None:
        """A clean stop: another daemon takes the campaigns at once, not after the leases lapse."""
        for campaign_id in list(self.leases):
            await self.release(campaign_id)

    @asynccontextmanager
    async def floor_lock(self, server: str, queue: str) -> AsyncIterator[None]:
        """Held while one pacing decision for this floor is made and its attempts written: the
        next daemon to pace the same agents counts them as in flight."""
        key = zlib.crc32(f"{server}\x00{queue}".encode()) - 2**31  # a signed 32-bit integer
        async with self.engine.begin() as conn:
            # A daemon frozen while it holds the lock (SIGSTOP) loses it, as it loses its leases.
            idle_ms = max(1, int(self.ttl_s * 1000))
            await conn.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = {idle_ms}"))
            await conn.execute(select(func.pg_advisory_xact_lock(FLOOR_LOCK_CLASS, key)))
            yield
