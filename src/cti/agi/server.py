"""A small asyncio FastAGI server: `AGI(agi://HOST[:PORT]/SCRIPT,ARGS...)` answered by routes.

Why our own rather than `panoramisk.fast_agi`: docs/asterisk.md, "Why not panoramisk's FastAGI
server"; tests/test_fastagi.py reproduces each fault we avoided.

Every session is bounded: in time (`session_timeout_s`, from the connection to the last reply:
a silent or slow peer is cut off), in line length (`max_line`: a line longer than Asterisk's own
8 KiB buffer is not Asterisk) and in number (`max_sessions` at once: connections beyond are closed
at once, which Asterisk reads as a script that ended, and the call goes on). Commands are sent
one at a time, each waiting for its reply: Asterisk polls the socket, not the stdio buffer it
reads lines from, so a second command sent ahead could sit unread. Every session task is
referenced, its exception retrieved, and cancelled on close; a route that raises is logged and
its connection closed like any other.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from typing import Any, Final

import structlog

from cti.agi.protocol import (
    MAX_ENVIRONMENT_LINES,
    MAX_LINE,
    AgiEnvironment,
    AgiProtocolError,
    AgiReply,
    LineReader,
    ReplyParser,
    parse_environment,
)

log = structlog.get_logger(__name__)

READ_SIZE: Final = 4096
CLOSE_WAIT_S: Final = 1.0
PROBLEM_REPEAT_S: Final = 60.0


class ChannelGone(Exception):
    """Asterisk closed the connection, or the channel hung up (HANGUP, 511): nothing sent now
    would reach the call."""


class AgiSession:
    """One FastAGI connection: the environment Asterisk sent, and `command()` for each step."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_line: int) -> None:
        self._reader = reader
        self._writer = writer
        self._lines = LineReader(max_line)
        self._queued: deque[str] = deque()
        self._replies = ReplyParser()
        self.env = AgiEnvironment()
        self.commands = 0
        self.log: Any = log  # bound to the call once the environment is read

    @property
    def hung_up(self) -> bool:
        return self._replies.hung_up

    async def _line(self) -> str:
        while not self._queued:
            data = await self._reader.read(READ_SIZE)
            if not data:
                raise ChannelGone("Asterisk closed the connection")
            self._queued.extend(self._lines.feed(data))
        return self._queued.popleft()

    async def read_environment(self) -> AgiEnvironment:
        lines: list[str] = []
        while (line := await self._line()) != "":
            lines.append(line)
            if len(lines) > MAX_ENVIRONMENT_LINES:
                raise AgiProtocolError(f"more than {MAX_ENVIRONMENT_LINES} environment lines")
        self.env = parse_environment(lines)
        return self.env

    async def command(self, line: str, *, last: bool = False) -> AgiReply:
        """Send one command and wait for its reply; raises ChannelGone once the channel is gone.

        `last`: no command follows, so our side of the connection ends with it (a half-close):
        Asterisk runs it, replies, then reads the end at once and ends the AGI, rather than
        waiting for us to read the reply and close, a round trip later."""
        if self.hung_up:
            raise ChannelGone("the channel hung up")
        self._writer.write(line.encode("utf-8") + b"\n")
        if last and self._writer.can_write_eof():
            self._writer.write_eof()
        await self._writer.drain()
        reply = None
        while reply is None:
            reply = self._replies.feed(await self._line())
        self.commands += 1
        if self.hung_up or reply.code == 511:
            raise ChannelGone("the channel hung up" if self.hung_up else f"511 {reply.text}")
        return reply


Route = Callable[[AgiSession], Awaitable[None]]


class ProblemLog:
    """A problem that can come with every call is logged at WARNING at most once a minute per
    kind (with how often it happened meanwhile), else at DEBUG."""

    def __init__(self, logger: Any, repeat_s: float = PROBLEM_REPEAT_S) -> None:
        self.log = logger
        self.repeat_s = repeat_s
        self.counts: dict[str, int] = {}
        self._warned: dict[str, tuple[float, int]] = {}

    def report(self, kind: str, message: str, **context: Any) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        now = time.monotonic()
        last = self._warned.get(kind)
        if last is not None and now - last[0] < self.repeat_s:
            self.log.debug(message, problem=kind, **context)
            return
        since = self.counts[kind] - (last[1] if last else 0)
        self._warned[kind] = (now, self.counts[kind])
        self.log.warning(message, problem=kind, occurrences=since, **context)


class FastAgiServer:
    def __init__(
        self,
        routes: Mapping[str, Route],
        *,
        session_timeout_s: float = 2.0,
        max_sessions: int = 500,
        max_line: int = MAX_LINE,
    ) -> None:
        self.routes = dict(routes)
        self.session_timeout_s = session_timeout_s
        self.max_sessions = max_sessions
        self.max_line = max_line
        self.problems = ProblemLog(log)
        self.sessions_served = 0
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self._closing = False

    async def start(self, host: str, port: int) -> None:
        if not host:
            raise ValueError('FastAGI needs an address to listen on ("" would mean every interface)')
        self._server = await asyncio.start_server(self._accept, host, port)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        if self._server is None:
            return []
        return [(s.getsockname()[0], s.getsockname()[1]) for s in self._server.sockets]

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    @property
    def active(self) -> int:
        return len(self._sessions)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:  # accepted just before close(): not a session close() would wait for
            writer.close()
            return
        if len(self._sessions) >= self.max_sessions:
            self.problems.report(
                "busy",
                "FastAGI: too many sessions at once, connection closed",
                max_sessions=self.max_sessions,
            )
            writer.close()  # Asterisk reads the end: AGISTATUS is set and the dialplan goes on
            return
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer), name="fastagi-session")
        self._sessions.add(task)
        task.add_done_callback(self._session_done)

    def _session_done(self, task: asyncio.Task[None]) -> None:
        self._sessions.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:  # _serve handles everything; this would be a bug in it
            log.error("FastAGI session task failed", error=repr(error))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started = time.monotonic()
        session = AgiSession(reader, writer, self.max_line)
        clean = False
        try:
            async with asyncio.timeout(self.session_timeout_s):
                await self._dispatch(session)
            clean = True
        except Exception as exc:
            clean = self._ended_by(session, exc)
        finally:
            await self._close(writer, clean)
            self.sessions_served += 1
            session.log.debug("FastAGI session closed", ms=round((time.monotonic() - started) * 1000, 1))

    def _ended_by(self, session: AgiSession, exc: Exception) -> bool:
        """Say why a session ended early; True when its connection may still be closed politely."""
        call = session.env.uniqueid or None
        if isinstance(exc, ChannelGone):
            session.log.debug("FastAGI session ended by Asterisk", reason=str(exc), commands=session.commands)
            return True
        if isinstance(exc, TimeoutError):
            self.problems.report(
                "timeout",
                "FastAGI session cut off: no end in time",
                call=call,
                timeout_s=self.session_timeout_s,
                commands=session.commands,
            )
        elif isinstance(exc, AgiProtocolError):
            self.problems.report("protocol", "FastAGI peer does not speak AGI", call=call, reason=str(exc))
        elif isinstance(exc, ConnectionError):
            session.log.debug("FastAGI connection lost", error=repr(exc))
        else:
            self.problems.report(
                f"route:{session.env.script}:{type(exc).__name__}",
                "FastAGI route failed",
                call=call,
                script=session.env.script,
                error=repr(exc),
                exc_info=exc,
            )
        return False

    async def _dispatch(self, session: AgiSession) -> None:
        env = await session.read_environment()
        session.log = log.bind(call=env.uniqueid)
        # Also for what the route's collaborators log (the directory), in this task's context only.
        structlog.contextvars.bind_contextvars(call=env.uniqueid)
        route = self.routes.get(env.script)
        if route is None:
            self.problems.report("route", "FastAGI request for an unknown script", script=env.script[:80])
            return
        await route(session)

    async def _close(self, writer: asyncio.StreamWriter, clean: bool) -> None:
        """Close the connection: Asterisk then ends the AGI and the dialplan goes on."""
        if not clean:
            writer.transport.abort()
            return
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), CLOSE_WAIT_S)
        except (TimeoutError, OSError):
            writer.transport.abort()

    async def close(self, grace_s: float = 1.0) -> None:
        """Stop accepting, give sessions in progress `grace_s` to finish, cancel the rest."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        running = set(self._sessions)
        if running:
            _, pending = await asyncio.wait(running, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            with suppress(Exception):
                await self._server.wait_closed()
