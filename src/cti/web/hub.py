"""The WebSocket hub: frames go to each connected desktop as they are produced.

`send` never blocks. A frame is written at once, on the producer's own step (see `cti.eager`:
through a writer task it would first wait for its turn on the loop, and a screen pop must not);
only while a desktop's socket is full do its frames wait, in a bounded backlog drained by a task.
A desktop that does not keep up (its backlog is full) is disconnected, not waited for: it
reconnects and resumes (its current pop and open tickets are sent again), so one slow or dead
client never delays the others.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import WSCloseCode, web

from cti.eager import start_eagerly
from cti.web.auth import Principal

log = structlog.get_logger(__name__)
# Close code of a desktop whose session ended (logout, revoked, expired) or never authenticated:
# it shows its login form instead of reconnecting.
SESSION_ENDED = 4001


def _dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


@dataclass(eq=False)
class Client:
    principal: Principal
    ws: web.WebSocketResponse
    # Frames produced while a send waits for the socket to drain, in order.
    backlog: deque[str] = field(default_factory=deque)
    # The task finishing that send and then the backlog; None when the socket keeps up.
    flusher: asyncio.Task[None] | None = None
    # While the desktop's snapshot (`state`) is being read, live frames wait here (None when
    # not holding), so that the snapshot, read before them, cannot arrive after them and undo
    # them. Apart from the backlog: frames queued before the hold still go before the snapshot.
    held: list[str] | None = field(default_factory=list)
    dropped: bool = False
    sent: int = 0
    # The session the desktop logged in with: its end (logout, revocation, expiry) closes the socket.
    session_id: str = ""
    expires_at: float = float("inf")


class Hub:
    def __init__(self, client_queue: int = 256) -> None:
        self.client_queue = client_queue
        self.clients: dict[str, set[Client]] = {}
        self.slow_disconnects = 0
        self.version = 0  # moves whenever a desktop connects or leaves
        self._closing: set[asyncio.Task[bool]] = set()

    def attach(
        self,
        principal: Principal,
        ws: web.WebSocketResponse,
        session_id: str = "",
        expires_at: float = float("inf"),
    ) -> Client:
        """Register a desktop; its live frames are held until `start` sends its snapshot."""
        client = Client(principal, ws, session_id=session_id, expires_at=expires_at)
        self.clients.setdefault(principal.username, set()).add(client)
        self.version += 1
        return client

    def hold(self, client: Client) -> None:
        """Hold live frames again while a new snapshot is read (a `resume`)."""
        if client.held is None:
            client.held = []

    def start(self, client: Client, snapshot: dict[str, Any]) -> None:
        """Send the snapshot, then the frames produced while it was being read, in order: a
        frame about something the snapshot already shows is applied twice, harmlessly; none is
        lost or overtaken by older news."""
        held, client.held = client.held or [], None
        self._put(client, _dumps(snapshot))
        for text in held:
            self._put(client, text)

    async def detach(self, client: Client) -> None:
        peers = self.clients.get(client.principal.username)
        if peers is not None:
            peers.discard(client)
            if not peers:
                del self.clients[client.principal.username]
            self.version += 1
        client.dropped = True
        client.backlog.clear()
        client.held = None
        if client.flusher is not None:
            client.flusher.cancel()
            await asyncio.gather(client.flusher, return_exceptions=True)

    def _put(self, client: Client, text: str) -> None:
        if client.dropped:
            return
        waiting = len(client.backlog) + len(client.held or ())
        if client.held is None and client.flusher is None:
            self._send_now(client, text)
        elif waiting < self.client_queue:
            (client.backlog if client.held is None else client.held).append(text)
        else:
            client.dropped = True
            self.slow_disconnects += 1
            log.warning("desktop too slow, disconnecting it", agent=client.principal.username)
            self._close_later(client, WSCloseCode.TRY_AGAIN_LATER, b"too slow")

    def session_ids(self) -> set[str]:
        return {c.session_id for clients in self.clients.values() for c in clients if c.session_id}

    def end_sessions(self, which: Callable[[Client], bool], reason: str) -> int:
        """Close (SESSION_ENDED: log in again) the desktops whose session `which` says has ended."""
        ended = [c for clients in self.clients.values() for c in clients if not c.dropped and which(c)]
        for client in ended:
            client.dropped = True
            log.info("closing a desktop whose session ended", agent=client.principal.username, why=reason)
            self._close_later(client, SESSION_ENDED, reason.encode()[:120])
        return len(ended)

    def _close_later(self, client: Client, code: int, message: bytes) -> None:
        task = asyncio.create_task(client.ws.close(code=code, message=message))
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

    def _send_now(self, client: Client, text: str) -> None:
        try:
            rest = start_eagerly(client.ws.send_str(text))
        except (ConnectionResetError, RuntimeError):
            return  # the socket went away; the reader side detaches the client
        if rest is None:
            client.sent += 1
        else:  # the frame is buffered but the socket is full: later frames wait their turn
            client.flusher = asyncio.create_task(
                self._flush(client, rest), name=f"ws-flush:{client.principal.username}"
            )

    async def _flush(self, client: Client, rest: asyncio.Task[None]) -> None:
        try:
            await rest
            client.sent += 1
            while client.backlog:
                await client.ws.send_str(client.backlog.popleft())
                client.sent += 1
        except (ConnectionResetError, RuntimeError):
            pass  # the socket went away; the reader side detaches the client
        finally:
            client.flusher = None

    async def close(self) -> None:
        for clients in list(self.clients.values()):
            for client in list(clients):
                await client.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
                await self.detach(client)
        await asyncio.gather(*self._closing, return_exceptions=True)
