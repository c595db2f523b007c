"""The link to one Asterisk server's Manager Interface: connect, log in, keep alive, reconnect.

Actions wait for their own answer (matched on ActionID, bounded by a timeout); everything else
goes to `on_message` in arrival order. Every task the link starts is referenced and is awaited
or cancelled before the link lets go of it.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from functools import partial
from typing import Any

import structlog

from cti.ami.actions import ActionError, ActionTimeout, LinkDown, format_action, next_action_id
from cti.ami.message import Message
from cti.ami.parser import AmiParser, ParseProblem
from cti.ami.trace import AmiTrace, ConnectionTrace
from cti.config import AsteriskServer

OnMessage = Callable[[Message], object]
OnConnected = Callable[["AmiLink"], Awaitable[None]]
OnDisconnected = Callable[[str], object]

# The first retry comes within half a second; later ones double up to the server's cap.
BACKOFF_BASE_S = 0.5
# Logoff is a courtesy to Asterisk: shutdown must not wait long for it.
LOGOFF_TIMEOUT_S = 1.0
# A failing resync is retried (0.5, 1, 2, 4, 5, 5... s) for up to a minute, then the link reconnects.
RESYNC_FIRST_RETRY_S = 0.5
RESYNC_MAX_RETRY_S = 5.0
RESYNC_GIVE_UP_S = 60.0
CLOSE_TIMEOUT_S = 1.0


def backoff_delay(attempt: int, cap: float, rng: random.Random, base: float = BACKOFF_BASE_S) -> float:
    """Seconds to wait before retry number `attempt` (0-based).

    Full jitter (uniform in [0, min(cap, base·2^attempt)]) keeps many daemons restarted together
    from hammering one Asterisk in lock-step.
    """
    ceiling = min(cap, base * 2.0 ** min(attempt, 62))
    return rng.uniform(0.0, ceiling)


class _Reply:
    """What one action waits for: its Response and, for a list action, the items up to Complete."""

    def __init__(self, action: str, listing: bool) -> None:
        self.action = action
        self.listing = listing
        self.future: asyncio.Future[tuple[Message, list[Message]]] = (
            asyncio.get_running_loop().create_future()
        )
        self.response: Message | None = None
        self.items: list[Message] = []

    def feed(self, message: Message) -> bool:
        """Take one message carrying our ActionID; True once the answer is complete."""
        if self.future.done():
            return True
        if self.response is None and message.response is not None:
            return self._take_response(message)
        if message.is_list_end or (message.event or "").endswith("Complete"):
            self.future.set_result((self.response or message, self.items))
            return True
        self.items.append(message)
        return False

    def _take_response(self, message: Message) -> bool:
        self.response = message
        if message.response == "Error":
            self.future.set_exception(ActionError(self.action, message.get("Message", "")))
            return True
        if self.listing and _list_follows(message):
            return False
        # Not a list after all (or a plain action): nothing else will come for this ActionID.
        self.future.set_result((message, []))
        return True

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


def _list_follows(response: Message) -> bool:
    # Modern Asterisk says "EventList: start"; older ones only say "... will follow".
    return response.is_list_start or "follow" in response.get("Message", "").lower()


def _retrieve(future: asyncio.Future[Any]) -> None:
    # An answer that lost a race with a timeout or a cancellation must not be reported later
    # as "exception was never retrieved".
    if future.done() and not future.cancelled():
        future.exception()


class _Protocol(asyncio.StreamReaderProtocol):
    """Hands each chunk Asterisk sends to the link inside the loop's own read callback.

    Through a StreamReader, a chunk would wait for the reading task's turn on the loop, behind
    every callback already ready: a wait that every screen pop paid. The StreamReader is still
    told of EOF and of a lost connection; it never holds data."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        super().__init__(reader)
        self._on_data: Callable[[bytes], None] | None = None
        self._early: list[bytes] = []

    def deliver_to(self, on_data: Callable[[bytes], None]) -> None:
        self._on_data = on_data
        early, self._early = self._early, []
        for data in early:  # bytes that came before the link took the connection
            on_data(data)

    def data_received(self, data: bytes) -> None:
        if self._on_data is None:
            self._early.append(data)
        else:
            self._on_data(data)


class _Connection:
    """One TCP connection: its parser, the replies awaited on it, and why it ended."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        events: frozenset[str] | None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = AmiParser(events=events)
        self.replies: dict[str, _Reply] = {}
        self.down: str | None = None
        self.failure: str | None = None  # set when handling received bytes failed
        self.trace: ConnectionTrace | None = None  # [[asterisk]] trace_dir: the raw bytes, kept

    def shut(self, reason: str) -> None:
        """Mark the connection dead and fail every awaited reply now, not at its timeout."""
        if self.down is None:
            self.down = reason
        replies, self.replies = self.replies, {}
        for reply in replies.values():
            reply.fail(LinkDown(f"{reply.action}: AMI link down ({self.down})"))


class AmiLink:
    """The link to one Asterisk server; `run()` keeps it up until `close()`."""

    def __init__(
        self,
        server: AsteriskServer,
        on_message: OnMessage,
        on_connected: OnConnected | None = None,
        on_disconnected: OnDisconnected | None = None,
        *,
        rng: random.Random | None = None,
        events: frozenset[str] | None = None,
    ) -> None:
        """`events`, when given, lets the parser skip other events unparsed; the items of every
        list asked for with `send_list` must then be in it too."""
        self.server = server
        self._on_message = on_message
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._rng = rng if rng is not None else random.Random()
        self._events = events
        self.log = structlog.get_logger(__name__).bind(server=server.name)
        self.connected = False
        # The first resync after the latest login succeeded: cti's view of the PBX is whole.
        self.synced = False
        self.resync_failures = 0
        self.banner: str | None = None
        self.events_received = 0
        self.reconnects = 0
        self.last_event_at: float | None = None
        # When the chunk of bytes being handled arrived (time.monotonic), 0.0 between chunks: what
        # the pop latency metric measures from (a pop goes out while its AgentCalled's chunk is
        # being handled). One clock read per chunk.
        self.chunk_at = 0.0
        self.callback_errors = 0
        self.malformed = 0
        self._logins = 0
        self._conn: _Connection | None = None
        self._closing = False
        self._closed = False
        # Bytes received from this instant on (time.monotonic) are not read: the connection is
        # dropped. Set by the stream's owner (calls/ownership.py) to when its lease may lapse.
        self.read_until = math.inf
        self._runner: asyncio.Task[None] | None = None
        self._callbacks: set[asyncio.Future[object]] = set()
        self._reported: set[str] = set()
        # None unless [[asterisk]] trace_dir is set (ami/trace.py).
        self.trace = AmiTrace.for_server(server, self.log)

    # ----- public API -----

    @property
    def trace_dropped_bytes(self) -> int:
        """Received bytes left out of the trace because its writer was behind."""
        return 0 if self.trace is None else self.trace.counters.dropped_bytes

    @property
    def trace_errors(self) -> int:
        """Connections whose trace stopped on a disk error."""
        return 0 if self.trace is None else self.trace.counters.errors

    @property
    def pending_callbacks(self) -> int:
        """Async on_message callbacks still running."""
        return len(self._callbacks)

    async def run(self) -> None:
        """Connect, log in, and stay connected (reconnecting as needed) until `close()`."""
        if self._closing:
            return
        if self._runner is not None:
            raise RuntimeError(f"AMI link {self.server.name} is already running")
        runner = asyncio.create_task(self._keep_up(), name=f"ami-link:{self.server.name}")
        self._runner = runner
        try:
            await runner
        except asyncio.CancelledError:
            # close() cancels the runner; only a cancellation of run() itself goes on up.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    async def close(self) -> None:
        """Log off (best effort), stop reconnecting, and end every task the link started."""
        self._closing = self._closed = True
        conn = self._conn
        if conn is not None and self.connected:
            with suppress(ActionError, ActionTimeout, LinkDown):
                await self._request(conn, "Logoff", {}, min(LOGOFF_TIMEOUT_S, self.server.action_timeout_s))
        conn = self._conn
        if conn is not None:
            # A session whose transport is gone ends by itself, through its own teardown.
            conn.shut("link closed")
            conn.writer.transport.abort()
        await self._stop_runner(ends_by_itself=conn is not None)
        await self._cancel_callbacks()
        if self.trace is not None:
            await self.trace.wait_closed(CLOSE_TIMEOUT_S)

    async def suspend(self, reason: str) -> None:
        """Drop the connection now, deliver nothing more from it, and let a later `run()` start
        over: this daemon no longer owns the server's stream (calls/ownership.py). No Logoff:
        the bytes already received are not read either."""
        self._closing = True
        conn = self._conn
        if conn is not None:
            # `_received` reads nothing more from it; a reason already given (the lease may
            # have lapsed: `read_until`) is the one the log keeps.
            conn.failure = conn.failure or reason
            conn.shut(conn.failure)
            conn.writer.transport.abort()
        try:
            await self._stop_runner(ends_by_itself=conn is not None)
            await self._cancel_callbacks()
        finally:
            self._runner = None
            self._closing = self._closed  # a close() meanwhile still holds

    @property
    def closed(self) -> bool:
        """`close()` was called: the link will not run again."""
        return self._closed

    async def _stop_runner(self, ends_by_itself: bool) -> None:
        runner = self._runner
        if runner is None or runner.done():
            return
        if not ends_by_itself:
            runner.cancel()  # sleeping between attempts or connecting: nothing to tear down
        _, pending = await asyncio.wait({runner}, timeout=CLOSE_TIMEOUT_S)
        if pending:
            runner.cancel()
            await asyncio.wait({runner})

    async def send(
        self,
        action: str,
        headers: Mapping[str, object] | None = None,
        /,
        *,
        # The caller's override of the server's default; part of the documented API.
        timeout: float | None = None,  # noqa: ASYNC109
        **more: object,
    ) -> Message:
        """Send one action and return its Response.

        Raises ActionError (``Response: Error``), ActionTimeout, or LinkDown. ``timeout`` is ours
        (seconds), not an AMI header: pass Originate's ``Timeout`` capitalised.
        """
        response, _ = await self._ask(action, {**(headers or {}), **more}, timeout, listing=False)
        return response

    async def send_list(
        self,
        action: str,
        headers: Mapping[str, object] | None = None,
        /,
        *,
        # The caller's override of the server's default; part of the documented API.
        timeout: float | None = None,  # noqa: ASYNC109
        **more: object,
    ) -> tuple[Message, list[Message]]:
        """Send a list action; return its Response and the list items (without the Complete event).

        The items are not passed to on_message. The whole list is bounded by the timeout.
        """
        return await self._ask(action, {**(headers or {}), **more}, timeout, listing=True)

    # ----- actions -----

    async def _ask(
        self, action: str, headers: Mapping[str, object], limit: float | None, listing: bool
    ) -> tuple[Message, list[Message]]:
        conn = self._conn
        if conn is None or not self.connected:
            raise LinkDown(f"{action}: AMI link to {self.server.name} is not up")
        seconds = self.server.action_timeout_s if limit is None else limit
        return await self._request(conn, action, headers, seconds, listing)

    async def _request(
        self,
        conn: _Connection,
        action: str,
        headers: Mapping[str, object],
        limit: float,
        listing: bool = False,
    ) -> tuple[Message, list[Message]]:
        if conn.down is not None:
            raise LinkDown(f"{action}: AMI link down ({conn.down})")
        # A caller may choose the ActionID (the dialer matches OriginateResponse events on it).
        action_id = str(headers["ActionID"]) if "ActionID" in headers else next_action_id(action)
        headers = {k: v for k, v in headers.items() if k != "ActionID"}
        reply = _Reply(action, listing)
        conn.replies[action_id] = reply
        try:
            async with asyncio.timeout(limit):
                conn.writer.write(format_action(action, headers, action_id))
                # Back-pressure for this sender only: the reader runs in its own task.
                await conn.writer.drain()
                return await reply.future
        except TimeoutError:
            raise ActionTimeout(f"{action}: no answer within {limit:g}s") from None
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise LinkDown(f"{action}: AMI link down ({exc})") from None
        finally:
            conn.replies.pop(action_id, None)
            _retrieve(reply.future)

    # ----- connection life cycle -----

    async def _keep_up(self) -> None:
        attempt = 0
        while True:
            try:
                if await self._session():
                    attempt = 0
            except Exception:
                # A bug of ours in one session must not end the link for good.
                self.log.exception("AMI session failed")
            if self._closing:
                return
            delay = backoff_delay(attempt, self.server.reconnect_cap_s, self._rng)
            attempt += 1
            self.log.info("AMI reconnecting", delay_s=round(delay, 3), attempt=attempt)
            await asyncio.sleep(delay)

    async def _session(self) -> bool:
        """One connection, from connect to loss. True if the login succeeded."""
        conn = await self._connect()
        if conn is None:
            return False
        self._conn = conn
        tasks = [asyncio.create_task(self._read(conn), name=f"ami-read:{self.server.name}")]
        try:
            if not await self._login(conn):
                return False
            tasks.append(asyncio.create_task(self._keepalive(conn), name=f"ami-ping:{self.server.name}"))
            if self._on_connected is not None:
                resync = self._resync(conn, self._on_connected)
                tasks.append(asyncio.create_task(resync, name=f"ami-resync:{self.server.name}"))
            await asyncio.wait(tasks[:2], return_when=asyncio.FIRST_COMPLETED)
            return True
        finally:
            await self._teardown(conn, tasks)

    async def _connect(self) -> _Connection | None:
        server = self.server
        loop = asyncio.get_running_loop()
        # asyncio.open_connection, with the protocol that feeds the parser directly.
        reader = asyncio.StreamReader()
        protocol = _Protocol(reader)
        try:
            async with asyncio.timeout(server.connect_timeout_s):
                transport, _ = await loop.create_connection(lambda: protocol, server.host, server.port)
        except (OSError, TimeoutError) as exc:
            self.log.warning(
                "AMI connect failed", host=server.host, port=server.port, error=str(exc) or type(exc).__name__
            )
            return None
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        conn = _Connection(reader, writer, self._events)
        if self.trace is not None:
            conn.trace = self.trace.connection()
        protocol.deliver_to(partial(self._received, conn))
        return conn

    async def _login(self, conn: _Connection) -> bool:
        server = self.server
        try:
            await self._request(
                conn,
                "Login",
                {"Username": server.username, "Secret": server.secret.reveal(), "Events": "on"},
                server.action_timeout_s,
            )
        except ActionError as exc:
            # Asterisk closes the connection after a refusal; retry with back-off, never crash.
            self.log.error("AMI login refused", username=server.username, reason=exc.message)
            return False
        except (ActionTimeout, LinkDown) as exc:
            self.log.warning("AMI login failed", username=server.username, error=str(exc))
            return False
        self._logins += 1
        if self._logins > 1:
            self.reconnects += 1
        self.banner = conn.parser.banner
        self.connected = True
        self.log.info("AMI connected", host=server.host, port=server.port, banner=self.banner)
        return True

    def _received(self, conn: _Connection, data: bytes) -> None:
        if conn.failure is not None:
            return
        self.chunk_at = time.monotonic()
        if self.chunk_at >= self.read_until:
            # The lease this link runs under may have lapsed (calls/ownership.py: the daemon
            # was frozen or its loop stalled): another daemon may own these events now.
            self.chunk_at = 0.0
            conn.failure = "stream lease may have lapsed"
            conn.shut(conn.failure)
            conn.writer.transport.abort()
            return
        if conn.trace is not None:
            conn.trace.write(data)  # never blocks: a thread writes the file
        try:
            self._feed(conn, data)
        except Exception:
            self.log.exception("AMI reader failed")
            conn.failure = "reader failed"
            conn.writer.transport.abort()  # ends `_read`, hence the session: it reconnects
        finally:
            self.chunk_at = 0.0

    async def _read(self, conn: _Connection) -> None:
        """Return when the connection ends (the bytes themselves go to `_received`)."""
        reason = "connection closed by Asterisk"
        try:
            await conn.reader.read()  # EOF or the connection's loss: the reader never holds data
        except OSError as exc:
            reason = f"connection lost: {str(exc) or type(exc).__name__}"
        finally:
            # Fail the awaited replies now: a list cut in the middle must not wait for its timeout.
            conn.shut(conn.failure or reason)

    async def _keepalive(self, conn: _Connection) -> None:
        """Return when the peer is dead: a Ping sent one interval after the last answer and
        unanswered one interval later means two intervals without a word from Asterisk."""
        interval = self.server.keepalive_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self._request(conn, "Ping", {}, interval)
            except ActionError:
                continue  # a refusal is still an answer: the peer is alive
            except ActionTimeout:
                conn.shut(f"no answer to Ping for {2 * interval:g}s")
                return
            except LinkDown:
                return

    async def _resync(self, conn: _Connection, on_connected: OnConnected) -> None:
        """Run the resync, retried while it fails: Asterisk accepts AMI logins before its modules
        are loaded, so right after a PBX restart QueueStatus is "Invalid/unknown command" for a
        moment (seen on the real-PBX tier). A resync that still fails after RESYNC_GIVE_UP_S
        drops the connection: the reconnect starts over."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + RESYNC_GIVE_UP_S
        delay = RESYNC_FIRST_RETRY_S
        while True:
            try:
                await on_connected(self)
            except LinkDown as exc:
                self.log.warning("on_connected interrupted, the link dropped", error=str(exc))
                return
            except Exception as exc:
                self.resync_failures += 1
                if loop.time() + delay > give_up_at:
                    self.log.error("resync keeps failing: reconnecting", error=str(exc) or type(exc).__name__)
                    conn.shut("resync failed")
                    conn.writer.transport.abort()
                    return
                self.log.warning(
                    "resync failed, retrying", error=str(exc) or type(exc).__name__, retry_in_s=delay
                )
                self.log.debug("resync failure", exc_info=exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESYNC_MAX_RETRY_S)
                continue
            self.synced = True
            return

    async def _teardown(self, conn: _Connection, tasks: list[asyncio.Task[None]]) -> None:
        # Every state change comes before the first await, so a cancellation while waiting
        # below (close() on a slow teardown) leaves nothing half done.
        was_up = self.connected
        self.connected = False
        self.synced = False
        conn.shut("link closed" if self._closing else "connection ended")
        if conn.trace is not None:
            conn.trace.close()
        # abort, not close: a dead peer would never take the bytes still buffered for it.
        conn.writer.transport.abort()
        for task in tasks:
            task.cancel()
        if self._conn is conn:
            self._conn = None
        if was_up:
            self._announce_down(conn.down or "connection ended")
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, Exception):
                self.log.error("AMI link task failed", exc_info=result)
        with suppress(OSError, TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await conn.writer.wait_closed()

    def _announce_down(self, reason: str) -> None:
        if self._closing:
            self.log.info("AMI link closed", reason=reason)
        else:
            self.log.warning("AMI link down", reason=reason)
        self._call_isolated(self._on_disconnected, reason, "on_disconnected", None)

    # ----- incoming messages -----

    def _feed(self, conn: _Connection, data: bytes) -> None:
        replies, parser = conn.replies, conn.parser
        for message in parser.feed(data):
            action_id = message.get("ActionID")
            if action_id is None or action_id not in replies:
                self._deliver(message)
            elif replies[action_id].feed(message):
                del replies[action_id]
        if parser.problems:
            self._report(parser.take_problems())
        if parser.failed is not None:
            # Not an AMI server (an endless first line): waiting for the login's timeout would
            # only delay the reconnect, which starts over with a fresh parser.
            conn.failure = parser.failed
            conn.writer.transport.abort()

    def _deliver(self, message: Message) -> None:
        self.events_received += 1
        self.last_event_at = time.time()
        self._call_isolated(self._on_message, message, "on_message", message.get("Event"))

    def _call_isolated(
        self, callback: Callable[[Any], object] | None, arg: object, name: str, event: str | None
    ) -> None:
        if callback is None:
            return
        try:
            result = callback(arg)
        except Exception as exc:
            self._callback_failed(name, event, exc)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._callbacks.add(task)
            task.add_done_callback(partial(self._callback_done, name, event))

    def _callback_done(self, name: str, event: str | None, task: asyncio.Future[object]) -> None:
        self._callbacks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._callback_failed(name, event, exc)

    def _callback_failed(self, name: str, event: str | None, exc: BaseException) -> None:
        # One bad event must not cost the others: log, count, carry on. A bug that fails on
        # every event of a kind is shown once with its traceback, then only at debug level.
        self.callback_errors += 1
        key = f"{name}:{event}:{type(exc).__name__}"
        if key in self._reported:
            self.log.debug("callback failed again", callback=name, ami_event=event, error=repr(exc))
            return
        self._reported.add(key)
        self.log.error("callback failed", callback=name, ami_event=event, exc_info=exc)

    def _report(self, problems: list[ParseProblem]) -> None:
        self.malformed += len(problems)
        for problem in problems:
            key = f"parse:{problem.reason}"
            if key in self._reported:
                self.log.debug("malformed AMI data skipped", reason=problem.reason, sample=problem.sample)
                continue
            self._reported.add(key)
            self.log.warning(
                "malformed AMI data skipped (repeats logged at debug)",
                reason=problem.reason,
                sample=problem.sample,
            )

    async def _cancel_callbacks(self) -> None:
        pending = list(self._callbacks)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
