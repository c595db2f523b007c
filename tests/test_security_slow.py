"""Slow clients cannot hold the daemon's connections: a request's headers must arrive within
`header_timeout_s` (slowloris), an idle connection is closed after as long, a body must arrive
within `body_timeout_s`. Raw sockets on 127.0.0.1 against the daemon's own web server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from test_security_routes import World, make_world

HEADER_TIMEOUT_S = 1.0
GIVE_UP_S = HEADER_TIMEOUT_S + 4.0  # a socket still open by then would stay open


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async for w in make_world(tmp_path, header_timeout_s=HEADER_TIMEOUT_S, body_timeout_s=HEADER_TIMEOUT_S):
        yield w


async def _open(world: World) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    url = URL(world.url)
    assert url.host is not None and url.port is not None
    return await asyncio.open_connection(url.host, url.port)


async def _held_for(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trickle: bytes) -> float:
    """Seconds until the server closes the connection, sending `trickle` every 0.25 s meanwhile."""
    began = time.monotonic()
    try:
        while time.monotonic() - began < GIVE_UP_S:
            if trickle:
                writer.write(trickle)
                await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(4096), 0.25)
            except TimeoutError:
                continue
            if not data:
                return time.monotonic() - began
        return float("inf")
    except ConnectionError:
        return time.monotonic() - began
    finally:
        writer.close()


async def test_slowloris_sockets_are_closed_and_the_daemon_keeps_serving(world: World) -> None:
    async def slowloris() -> float:
        reader, writer = await _open(world)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: cti\r\n")
        return await _held_for(reader, writer, b"X-Padding: 1\r\n")

    attack = asyncio.gather(*(slowloris() for _ in range(500)))
    await asyncio.sleep(0.5)
    async with aiohttp.ClientSession() as s, s.get(f"{world.url}/healthz") as r:
        assert r.status == 200  # served while 500 sockets trickle headers
    held = await attack
    assert max(held) < HEADER_TIMEOUT_S + 2.0, sorted(held)[-5:]


async def test_idle_connections_are_closed(world: World) -> None:
    async def silent() -> float:
        reader, writer = await _open(world)
        return await _held_for(reader, writer, b"")

    async def idle_after_a_request() -> float:
        reader, writer = await _open(world)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: cti\r\n\r\n")
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        return await _held_for(reader, writer, b"")

    held = await asyncio.gather(*(silent() for _ in range(50)), *(idle_after_a_request() for _ in range(50)))
    assert max(held) < HEADER_TIMEOUT_S + 2.0, sorted(held)[-5:]


async def test_a_body_that_never_finishes_gets_408_and_the_connection_closes(world: World) -> None:
    reader, writer = await _open(world)
    writer.write(
        b"POST /api/login HTTP/1.1\r\nHost: cti\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{\"username\": "
    )
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), HEADER_TIMEOUT_S + 3)
    assert status.startswith(b"HTTP/1.1 408"), status
    assert await _held_for(reader, writer, b"x") < 4.0  # what is left is read for 2 s at most
