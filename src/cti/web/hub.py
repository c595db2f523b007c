"""The WebSocket hub: one bounded outgoing queue and one writer task per connected desktop.

`send` never blocks. A desktop that does not keep up (its queue is full) is disconnected, not
waited for: it reconnects and resumes (its current pop and open tickets are sent again), so one
slow or dead client never delays the others.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import WSCloseCode, web

from cti.web.auth import Principal

log = structlog.get_logger(__name__)


def _dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


@dataclass(eq=False)
class Client:
    principal: Principal
    ws: web.WebSocketResponse
    queue: asyncio.Queue[str]
    writer: asyncio.Task[None] | None = None
    dropped: bool = False
    sent: int = field(default=0)


class Hub:
    def __init__(self, client_queue: int = 256) -> None:
        self.client_queue = client_queue
        self.clients: dict[str, set[Client]] = {}
        self.slow_disconnects = 0
        self.version = 0  # moves whenever a desktop connects or leaves
        self._closing: set[asyncio.Task[bool]] = set()

    def attach(self, principal: Principal, ws: web.WebSocketResponse) -> Client:
        client = Client(principal, ws, asyncio.Queue(self.client_queue))
        client.writer = asyncio.create_task(self._write(client), name=f"ws-writer:{principal.username}")
        self.clients.setdefault(principal.username, set()).add(client)
        self.version += 1
        return client

    async def detach(self, client: Client) -> None:
        peers = self.clients.get(client.principal.username)
        if peers is not None:
            peers.discard(client)
            if not peers:
                del self.clients[client.principal.username]
            self.version += 1
        if client.writer is not None:
            client.writer.cancel()
            await asyncio.gather(client.writer, return_exceptions=True)

    def _put(self, client: Client, text: str) -> None:
        if client.dropped:
            return
        try:
            client.queue.put_nowait(text)
        except asyncio.QueueFull:
            client.dropped = True
            self.slow_disconnects += 1
            log.warning("desktop too slow, disconnecting it", agent=client.principal.username)
            task = asyncio.create_task(client.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow"))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def send(self, username: str, payload: dict[str, Any]) -> None:
        if username in self.clients:
            self.send_text(username, _dumps(payload))

    def send_text(self, username: str, text: str) -> None:
        """`send` for a payload already serialised (the stats push keeps its JSON)."""
        for client in list(self.clients.get(username, ())):
            self._put(client, text)

    def send_to(self, client: Client, payload: dict[str, Any]) -> None:
        self._put(client, _dumps(payload))

    def broadcast(self, payload: dict[str, Any], roles: Iterable[str] = ("supervisor", "admin")) -> None:
        self.broadcast_text(_dumps(payload), roles)

    def broadcast_text(self, text: str, roles: Iterable[str] = ("supervisor", "admin")) -> None:
        wanted = set(roles)
        for clients in list(self.clients.values()):
            for client in list(clients):
                if client.principal.role in wanted:
                    self._put(client, text)

    async def _write(self, client: Client) -> None:
        try:
            while True:
                text = await client.queue.get()
                await client.ws.send_str(text)
                client.sent += 1
        except (ConnectionResetError, RuntimeError):
            pass  # the socket went away; the reader side detaches the client

    async def close(self) -> None:
        for clients in list(self.clients.values()):
            for client in list(clients):
                await client.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
                await self.detach(client)
        await asyncio.gather(*self._closing, return_exceptions=True)
