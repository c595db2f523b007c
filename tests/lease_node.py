"""A stand-in for a cti daemon that tracks one Asterisk server (tests/test_stream_lease.py): it
takes the server's stream lease when it can, then stores a call every quarter of a lease period
through the real `CallStore`, fenced by its token, and renews. Each step is one JSON line on
stdout; SIGTERM releases the lease and exits.

    python tests/lease_node.py POSTGRES_URL SERVER NODE TTL_S
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from contextlib import suppress
from typing import Any

from cti.calls.records import CallRecord
from cti.db.calls_store import CallStore
from cti.db.engine import create_engine
from cti.db.leases import LeaseLost, StreamFences, StreamLease


def say(step: str, **details: Any) -> None:
    print(json.dumps({"step": step, **details}), flush=True)


async def step(lease: StreamLease, store: CallStore, node: str, n: int) -> int:
    """Take the lease when free; when ours, store one call under our token, then renew."""
    if not lease.owned:
        if await lease.acquire():
            say("acquired", token=lease.token)
        return n
    n, token = n + 1, lease.token
    # The token the write was made under, kept in the row for the test to read back.
    record = CallRecord(lease.server, f"{node}-{n}", "inbound", time.time(), caller_name=f"token {token}")
    try:
        await store.save([record])
        say("wrote", n=n, token=token)
    except LeaseLost as exc:
        say("refused", n=n, token=exc.token, current=exc.current)
    if not await lease.renew():
        say("lost", token=token)
    return n


async def run(url: str, server: str, node: str, ttl_s: float) -> None:
    engine = create_engine(url)
    lease = StreamLease(engine, server, node, ttl_s)
    store = CallStore(engine, fence=StreamFences([lease]))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    say("started")
    n = 0
    while not stop.is_set():
        try:
            n = await step(lease, store, node, n)
        except Exception as exc:  # e.g. the session PostgreSQL ended while we were frozen
            say("failed", n=n, error=type(exc).__name__)
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), ttl_s / 4)
    await lease.release()
    await engine.dispose()
    say("stopped")


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
