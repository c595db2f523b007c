"""The TCP side: accept AMI clients, read their actions, hand events to every logged-in client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from cti.ami.parser import AmiParser
from cti.sim import wire
from cti.sim.session import Session

log = structlog.get_logger(__name__)

READ_CHUNK = 1 << 16

# Runs one action for a session; the server calls it with simulated time brought up to now.
ActionHandler = Callable[[Session, object], None]


class AmiServer:
    def __init__(
        self, host: str, port: int, on_action: ActionHandler, before_action: Callable[[], None]
    ) -> None:
        self.host = host
        self.port = port
        self._on_action = on_action
        self._before_action = before_action
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.sessions: list[Session] = []
        self._numbers = 0
        self.accepting = True

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def close(self) -> None:
        await self.stop_listening()
        for session in list(self.sessions):
            session.drop()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for session in list(self.sessions):
            await session.stop()

    # ------------------------------------------------------------------ fan-out
    def broadcast(self, frame: bytes) -> None:
        for session in self.sessions:
            session.event(frame)

    def flush(self) -> None:
        for session in self.sessions:
            session.flush()

    async def drain(self) -> None:
        """Write what is pending, then wait for slow clients (each bounded by its write timeout)."""
        self.flush()
        busy = [s.drain() for s in self.sessions if not s.closed and _buffered(s) > 0]
        if busy:
            await asyncio.gather(*busy)

    def write_all(self, data: bytes) -> None:
        """Raw bytes to every client (fault injection)."""
        for session in self.sessions:
            if not session.closed:
                session.flush()
                session.writer.write(data)

    # ------------------------------------------------------------------ one client
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._numbers += 1
        session = Session(reader, writer, self._numbers)
        self.sessions.append(session)
        try:
            if self.accepting:
                writer.write(wire.BANNER)
                await self._read(session)
        except (ConnectionError, OSError):
            pass
        finally:
            session.closed = True
            if session.graceful:
                with contextlib.suppress(OSError, TimeoutError):
                    async with asyncio.timeout(1.0):
                        await writer.wait_closed()
            writer.transport.abort()
            self.sessions.remove(session)
            await session.stop()
            self._handlers.discard(task)

    async def _read(self, session: Session) -> None:
        parser = AmiParser(expect_banner=False)
        while not session.closed:
            data = await session.reader.read(READ_CHUNK)
            if not data:
                return
            if session.faults.read_delay_s:
                await asyncio.sleep(session.faults.read_delay_s)
            for action in parser.feed(data):
                if session.is_closed():
                    return
                if session.faults.silent:
                    continue
                self._before_action()
                try:
                    self._on_action(session, action)
                except Exception:
                    # One bad action must not take the PBX down: log it, answer it, carry on.
                    log.exception("sim action failed", action=action.get("Action"))
                    session.send(wire.response("Error", action.get("ActionID"), "Internal error"))
                # Events an action caused reach the other clients now too.
                self.flush()
            with contextlib.suppress(ConnectionError):
                await session.drain()


def _buffered(session: Session) -> int:
    transport = session.writer.transport
    return transport.get_write_buffer_size() if not transport.is_closing() else 0
