"""Readiness (`GET /readyz`): whether a load balancer or an orchestrator should send desktops,
wallboards and caller lookups to this node (docs/operations.md, "Health and readiness").

`/healthz` is the liveness check: the process answers, and its AMI links as before. It does not
look at the database: a node cut from PostgreSQL is not helped by a restart, and a liveness
probe that fails restarts it. `/readyz` adds what a node needs to be useful to a desktop:

- **the database**: sessions, users, tickets and calls live there; a node that cannot reach it
  cannot log anyone in or store anything. Read from a probe run in the background
  (`DatabaseProbe`: `SELECT 1` every second, bounded by a timeout), never per request, so a
  flood of probes costs no connection and the answer is as cheap as `/healthz`'s;
- **the AMI links this node should hold**: connected and resynchronised (all of them on one
  node; with `[ha]`, those whose stream it owns: a standby's link is down by design);
- **stopping**: a node draining after SIGTERM says so first, before its listener closes.

The NATS bus is reported (`bus.connected`) but does not make the node unready: NATS down is the
same for every node, and failing all of them would turn "each node serves its own PBX's
desktops" into nothing served at all (docs/scale-out.md, "Failure cases").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)

PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 2.0


class DatabaseProbe:
    """`SELECT 1` through the daemon's own pool every `interval_s`: the pool is what the node
    stores with, so an exhausted pool or a path to PostgreSQL that drops packets shows here as
    it does for the writes. Reachable while the last success is recent enough; a probe stuck
    past its timeout (a connection whose packets go nowhere can hold up even its cancellation)
    therefore still reads as unreachable."""

    def __init__(
        self,
        engine: AsyncEngine,
        interval_s: float = PROBE_INTERVAL_S,
        timeout_s: float = PROBE_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine, self.interval_s, self.timeout_s, self.clock = engine, interval_s, timeout_s, clock
        self.last_ok: float | None = None
        self.error: str | None = None
        self.log = log.bind(probe="database")

    @property
    def max_age_s(self) -> float:
        """A success older than this is no longer evidence: the probe since has failed or hangs."""
        return self.interval_s + self.timeout_s

    async def check(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:  # any failure is the answer: unreachable
            said = f"{type(exc).__name__}: {str(exc)[:200]}" if str(exc) else type(exc).__name__
            if self.error is None:  # once per outage, not every second
                self.log.warning("database unreachable: not ready", error=said)
            self.error = said
            return False
        if self.error is not None:
            self.log.info("database reachable again")
        self.last_ok, self.error = self.clock(), None
        return True

    async def run(self) -> None:
        """Every `interval_s` from now on (the daemon makes the first check itself at start)."""
        while True:
            await asyncio.sleep(self.interval_s)
            await self.check()

    def state(self) -> dict[str, Any]:
        now = self.clock()
        age = None if self.last_ok is None else round(now - self.last_ok, 3)
        reachable = age is not None and age <= self.max_age_s and self.error is None
        error = None if reachable else (self.error or f"no answer within {self.max_age_s:g}s")
        return {"reachable": reachable, "last_ok_s_ago": age, "error": error}


def readiness(
    health: dict[str, Any], database: dict[str, Any], bus: dict[str, Any] | None, stopping: bool
) -> dict[str, Any]:
    """The `/readyz` body from the liveness body (`health`: its links), the database probe's
    state, the bus's (None without `[bus] nats_url`); `ready` unless a reason says otherwise."""
    reasons: list[str] = []
    if stopping:
        reasons.append("stopping")
    if not database["reachable"]:
        reasons.append("database unreachable")
    for link in health.get("links", []):
        if link.get("role") == "standby":
            continue
        if not link["connected"]:
            reasons.append(f"AMI link to {link['server']} down")
        elif not link["synced"]:
            reasons.append(f"AMI link to {link['server']} not resynchronised")
    return {
        "status": "not_ready" if reasons else "ready",
        "reasons": reasons,
        "database": database,
        "links": health.get("links", []),
        "bus": bus,
    }
