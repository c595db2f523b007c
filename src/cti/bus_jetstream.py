"""The bus beyond one process: domain events to and from NATS JetStream (docs/scale-out.md,
"The bus"), so that a desktop on any node gets the pops and tickets of every PBX.

Out: `export` is a tap on the local bus. It runs on the AMI reader's path, so it only appends
the event (and the stream's fencing token at that instant) to a bounded local buffer; a task
encodes (cti/event_codec.py) and publishes it, `in_flight` at a time, each acknowledged by
JetStream. NATS away: the buffer holds the events, then drops the oldest (counted, logged once
per outage); publishes that fail are put back in front and retried, their `Nats-Msg-Id` making
a retry of a publish that did land a duplicate JetStream discards. Nothing of it ever blocks
or raises into the reader.

In: `consume(purpose, handler)` is a durable consumer, one per node and purpose
(`<node>-<purpose>`): each event is handled, then acknowledged; after a restart the consumer
resumes after the last acknowledged one (a new consumer starts with what is published from
then on). By default a node skips its own events (it delivered them locally when it published
them). Events whose bytes cannot be read are logged, counted and terminated (never delivered
again); a consumer never stops on one. A consumer handles the stream in order, each event once:
events lost in flight when the connection dropped (or the process was killed) leave a gap before
the next delivery, filled from the stream first (`_fill`); when JetStream delivers them again,
after `ack_wait_s`, they are skipped (`late`).

The stream lost (a NATS server restarted without its JetStream storage, an operator's `nats
stream rm`): publishes find no stream, and the consumers are gone with it. A node sees it from
either side (a publish answered by no stream; its consumers checked every `WATCH_S`), connects
again and makes the stream anew. Sequences start at 1 again there: a node that was further along
in the old stream takes the new one from its first event (else it would skip every event below
its old position as `late`). A consumer deleted on its own is made again from the event after
its position, not from "now".

Fencing: each event of an AMI stream (the tracker's events) carries, in headers, the publishing
node, the Asterisk server and the token of this node's lease on that server's stream
(db/leases.py; `token_for`), 0 when the node holds none. A consumer drops an event whose token
is older than the newest it has seen for that server: a frozen owner that wakes up after a
standby took its stream over is not heard. Events with no token header (no lease in use, or
not an AMI stream's: tickets) are not fenced.

Catch-up (cti/bus_catchup.py): a new durable consumer starts with the events published from
then on, so a node that starts would not know the calls already in progress nor the agents'
states. The consumer made with `catch_up=True` (the daemon's `desk`) therefore waits, at the
first connection, for a snapshot of the floor from a node already caught up (a NATS request
to the queue group `<subject_prefix>_catchup`: any one of them answers), replays it through its
handler, then handles the stream, skipping what the snapshot covered. Every node keeps the
journal such a snapshot is made of, and answers once it is caught up itself. No node to ask
(the first one): it goes on at once; no answer within `2 * timeout_s`: it goes on without.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import structlog

from cti.bus_catchup import (
    Coverage,
    Entry,
    Journal,
    SnapshotError,
    SnapshotHead,
    SnapshotRequest,
    decode_part,
    encode_parts,
    journaled,
    read_entry,
)
from cti.calls import events as ev
from cti.config import BusSettings
from cti.event_codec import EVENT_TYPES, EventDecodeError, decode, encode
from cti.screenpop.campaign import CampaignContact
from cti.slices import Slice, next_turn

log = structlog.get_logger(__name__)

HEADER_NODE = "Cti-Node"
HEADER_SERVER = "Cti-Server"
HEADER_TOKEN = "Cti-Token"
HEADER_MSG_ID = "Nats-Msg-Id"
# The events of an AMI stream, fenced by its lease's token (tickets are not a stream's): the
# tracker's, and the contact the dialling node adds to its DialerConnected.
STREAM_EVENTS: tuple[type[ev.Event], ...] = (
    *(cls for cls in EVENT_TYPES.values() if cls.__module__ == ev.__name__),
    CampaignContact,
)
CATCH_UP_QUEUE = "catchup"
MAX_ACK_PENDING = 20_000
# A gap in a consumer's deliveries (`JetStreamBus._fill`) is filled with at most this many events
# fetched one by one from the stream (the newest before the delivery that showed it): one request
# each, and meanwhile the consumer handles nothing newer; the older ones are skipped, counted.
MAX_FILL = 5_000
RETRY_S = (0.1, 2.0)  # back-off between failed publishes / connection attempts, first and last
# How often a node checks that its durable consumers still exist: one that consumes and never
# publishes would otherwise wait for ever on a stream that was deleted under it.
WATCH_S = 5.0


class StreamLost(Exception):
    """The stream, or a durable consumer of this node, is no longer on the NATS server."""


TokenProvider = Callable[[str], int | None]
_Item = tuple[ev.Event, int | None, int]  # an event, its fencing token, its publishing number
Handler = Callable[[ev.Event], Awaitable[None] | None]
# Events published right after one (`JetStreamBus.companions`): a campaign call's contact.
Companions = Callable[[ev.Event], Iterable[ev.Event]]


def subject_word(text: str) -> str:
    """`text` as one word of a NATS subject (or a consumer name): other characters become '_'."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text) or "_"


@dataclass
class DurableConsumer:
    """One durable consumer of this node: its counters and the last stream sequence it handled."""

    purpose: str
    name: str
    handler: Handler
    own: bool
    kinds: tuple[type[ev.Event], ...] | None
    handled: int = 0
    skipped: int = 0
    fenced: int = 0
    undecodable: int = 0
    late: int = 0  # delivered again at or below `last_seq` (handled or filled already): skipped
    filled: int = 0  # missing from the deliveries (lost in flight), fetched from the stream, taken
    gone: int = 0  # missing from the deliveries and no longer in the stream (retention): skipped
    unfilled: int = 0  # missing, beyond MAX_FILL in one gap: skipped
    catch_up: bool = False  # waits for, and replays, a snapshot of the floor at the start
    covered: int = 0  # held by the snapshot already: skipped
    replayed: int = 0  # the snapshot's events handled
    last_seq: int = 0  # 0: no position yet (a new consumer, before its first event)
    floor: int = 0  # the stream sequence it had handled (or started after) when subscribed
    # Made again (it was lost): the stream sequence its new durable consumer starts from.
    start_at: int | None = None
    stored_at: float = 0.0  # when JetStream stored the event being handled (epoch s)
    subscription: Any = field(default=None, repr=False)
    _work: Slice = field(default_factory=Slice, repr=False)


class JetStreamBus:
    def __init__(self, settings: BusSettings, token_for: TokenProvider | None = None) -> None:
        self.settings = settings
        self.node = settings.node or socket.gethostname()
        self.token_for = token_for
        self.stream = settings.stream
        self.subjects = f"{settings.subject_prefix}.>"
        self._buffer: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._boot = secrets.token_hex(4)  # message ids stay unique across restarts
        self._seq = 0
        self._newest: dict[str, int] = {}  # server -> the newest fencing token seen
        self.consumers: list[DurableConsumer] = []
        # Published right after an event, from this node only (a campaign call's contact).
        self.companions: Companions | None = None
        # The floor as heard, for the snapshots this node answers (cti/bus_catchup.py).
        self.journal = Journal()
        self.origin = f"{self.node}/{self._boot}"
        self._catch_up: DurableConsumer | None = None
        self._caught_up = asyncio.Event()
        self._catching: asyncio.Task[None] | None = None
        self._coverage: Coverage | None = None
        self._responder: Any = None
        self._moved = asyncio.Event()  # the catch-up consumer handled one more
        self.snapshots_sent = 0
        self._flow: _Flow | None = None  # the publishes of the current connection
        self._subscribing: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._nc: Any = None
        self._js: Any = None
        self.connected = False
        # Counters (the metrics and the logs read them).
        self.published = 0
        self.dropped = 0
        self.publish_failures = 0
        self.connect_failures = 0
        self.unencodable = 0
        self.streams_lost = 0  # the stream or a consumer gone from the server: connected again
        self._stream_created: Any = None  # when the stream this node uses was made (its identity)
        self._outage = False
        self._drop_warned = False
        self._closing = False

    # ------------------------------------------------------------------ out
    def export(self, event: ev.Event) -> None:
        """The local bus's tap: keep `event` for publishing. Never blocks, never raises."""
        self._export(event)
        if self.companions is not None:
            try:
                extra = list(self.companions(event))
            except Exception:
                log.exception("bus: companion events failed", event_kind=event.kind)
                return
            for companion in extra:
                self._export(companion)

    def _export(self, event: ev.Event) -> None:
        token = None
        if self.token_for is not None and isinstance(event, STREAM_EVENTS):
            token = self.token_for(event.server) or 0  # 0: published by a node that owns nothing
        if self._catch_up is not None and (token is None or token >= self._newest.get(event.server, -1)):
            # In this node's journal as it leaves (not when from a stale owner: nobody hears it).
            self.journal.record(event, self.origin)
        if len(self._buffer) >= self.settings.buffer:
            self._drop_oldest()
        self._seq += 1
        self._buffer.append((event, token, self._seq))
        self._idle.clear()
        flow = self._flow
        if flow is not None and len(self._buffer) == 1 and flow.ready:
            flow.send_next()  # at once: a loop turn sooner than through the flushing task
        else:
            self._wake.set()

    def _drop_oldest(self) -> None:
        self._buffer.popleft()
        self.dropped += 1
        if not self._drop_warned:
            self._drop_warned = True
            log.warning(
                "bus buffer full (NATS away or too slow): dropping the oldest events",
                buffer=self.settings.buffer,
            )

    @property
    def pending(self) -> int:
        """Events not yet acknowledged by JetStream."""
        return len(self._buffer)

    def start(self) -> None:
        if self._catch_up is None:
            self._caught_up.set()  # nothing waits for a snapshot, and none is answered
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="bus:jetstream")

    async def _run(self) -> None:
        delay = RETRY_S[0]
        while True:
            try:
                await self._connect()
                delay = RETRY_S[0]
                await _first_failure(self._flush_forever(), self._watch_consumers())
            except asyncio.CancelledError:
                raise
            except StreamLost as exc:
                self.streams_lost += 1
                log.warning("bus: JetStream lost the stream or a consumer, making them again", error=str(exc))
                await self._disconnect()
                await asyncio.sleep(delay)
            except Exception as exc:
                self.connect_failures += 1
                self.connected = False
                self._report_outage("bus: NATS unreachable, events buffered", exc)
                await self._disconnect()
                await asyncio.sleep(delay)
                delay = min(RETRY_S[1], delay * 2)

    def _report_outage(self, what: str, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"[:300]
        if not self._outage:
            self._outage = True
            log.warning(what, url=self.settings.nats_url, pending=self.pending, error=error)
        else:
            log.debug(what, pending=self.pending, error=error)

    async def _connect(self) -> None:
        import nats
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig
        from nats.js.errors import BadRequestError

        servers = [u.strip() for u in self.settings.nats_url.split(",") if u.strip()]
        # Bounded: with endless reconnect attempts the client's first connection never gives up,
        # and each failed round is counted and logged here.
        connecting = nats.connect(
            servers,
            name=f"cti:{self.node}",
            connect_timeout=self.settings.timeout_s,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            error_cb=self._on_nats_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        self._nc = await asyncio.wait_for(connecting, 2 * self.settings.timeout_s + 1)
        self._js = self._nc.jetstream(timeout=self.settings.timeout_s)
        config = StreamConfig(
            name=self.stream,
            subjects=[self.subjects],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=self.settings.max_age_s,
            duplicate_window=min(120.0, self.settings.max_age_s),
        )
        try:
            info = await self._js.add_stream(config)
        except BadRequestError:  # there already, with other limits: ours now
            info = await self._js.update_stream(config)
        self._note_stream(info)
        for consumer in self.consumers:
            await self._subscribe(consumer)
        self.connected = True
        if self._outage:
            log.info("bus: NATS reached again", pending=self.pending, dropped=self.dropped)
        self._outage = False
        if self._catch_up is not None:
            if self._catching is None:  # the first connection: catch up, then answer others
                self._catching = asyncio.create_task(self._catch_up_once(), name="bus:catch-up")
            elif self._caught_up.is_set():  # a new connection: answer on it
                await self._answer_snapshots()

    def _note_stream(self, info: Any) -> None:
        """The stream as this connection finds it: a new one if it was made at another time
        than the one this node used, or holds fewer events than a consumer here has handled
        (a stream's sequence never goes back). Then every consumer starts at its beginning."""
        created = getattr(info, "created", None)
        last = (info.state.last_seq or 0) if info.state is not None else 0
        ahead = max((max(c.last_seq, c.floor) for c in self.consumers), default=0)
        known = self._stream_created
        renewed = (known is not None and created is not None and created != known) or last < ahead
        self._stream_created = created
        if not renewed:
            return
        log.warning(
            "bus: the stream is a new one (lost by NATS, or deleted): consumers read it from its start",
            stream=self.stream,
            stream_last_seq=last,
            position=ahead,
        )
        for consumer in self.consumers:
            consumer.last_seq = consumer.floor = 0
            consumer.start_at = 1

    async def _watch_consumers(self) -> None:
        """Every WATCH_S, that this node's durable consumers are still on the server."""
        from nats.js.errors import NotFoundError

        while True:
            await asyncio.sleep(WATCH_S)
            js = self._js
            if js is None or not self.connected:
                continue
            for consumer in self.consumers:
                if consumer.subscription is None:
                    continue
                try:
                    await js.consumer_info(self.stream, consumer.name)
                except NotFoundError as exc:
                    raise StreamLost(f"consumer {consumer.name} of {self.stream}: {exc}") from exc
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # NATS slow or away: the connection's own business
                    log.debug("bus: consumer not checked", consumer=consumer.name, error=repr(exc))

    async def _on_nats_error(self, exc: Exception) -> None:
        log.debug("bus: NATS client error", error=f"{type(exc).__name__}: {exc}"[:300])

    async def _on_disconnected(self) -> None:
        self.connected = False
        if not self._outage and not self._closing:
            self._outage = True
            log.warning("bus: NATS connection lost, events buffered", pending=self.pending)

    async def _on_reconnected(self) -> None:
        self.connected = True
        self._outage = False
        log.info("bus: NATS connection back", pending=self.pending, dropped=self.dropped)
        self._wake.set()

    async def _disconnect(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        self._responder = None
        for consumer in self.consumers:
            consumer.subscription = None
        if nc is not None:
            try:
                await asyncio.wait_for(nc.close(), self.settings.timeout_s)
            except Exception as exc:
                log.debug("bus: NATS close", error=repr(exc))

    async def _flush_forever(self) -> None:
        """Each event is published as soon as it is buffered, up to `in_flight` awaiting their
        acknowledgement at once (their PUBs leave in buffer order). A failed one stops the
        flow: once those in flight are answered, the failed go back in front, in order, and
        are retried after a back-off."""
        delay = RETRY_S[0]
        flow = self._flow = _Flow(self, self.settings.in_flight)
        try:
            while True:
                if flow.failed:
                    flow.paused = True
                    error = await flow.take_back()
                    if _no_stream(error):
                        raise StreamLost(f"{self.stream}: {error}")
                    self._report_outage("bus: publishing to JetStream failed, events buffered", error)
                    await asyncio.sleep(delay)
                    delay = min(RETRY_S[1], delay * 2)
                    flow.paused = False
                elif not self._buffer or len(flow.in_flight) >= flow.limit:
                    if not self._buffer and not flow.in_flight:
                        self._idle.set()
                        delay = RETRY_S[0]
                        self._drop_warned = False
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if self._nc.is_closed:
                    raise ConnectionError("NATS connection closed")
                flow.send_next()
        finally:
            self._flow = None
            await flow.stop()

    def _requeue(self, items: list[_Item]) -> None:
        """Back in front of the buffer, in their order; the bound still holds (the oldest go)."""
        self._buffer.extendleft(sorted(items, key=lambda item: item[2], reverse=True))
        while len(self._buffer) > self.settings.buffer:
            self._drop_oldest()

    async def _publish(self, item: _Item) -> BaseException | None:
        """None once JetStream stored it (or it can never be encoded: dropped, counted);
        the error otherwise (the event is retried)."""
        event, token, seq = item
        try:
            data = encode(event)
        except Exception:
            self.unencodable += 1
            log.exception("bus: event not encodable, not published", event_kind=event.kind)
            return None
        headers = {
            HEADER_MSG_ID: f"{self.node}-{self._boot}-{seq}",
            HEADER_NODE: self.node,
            HEADER_SERVER: event.server,
        }
        if token is not None:
            headers[HEADER_TOKEN] = str(token)
        subject = f"{self.settings.subject_prefix}.{subject_word(event.server)}.{event.kind}"
        try:
            await self._js.publish(subject, data, timeout=self.settings.timeout_s, headers=headers)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return exc
        return None

    # ------------------------------------------------------------------- in
    def consume(
        self,
        purpose: str,
        handler: Handler,
        *,
        own: bool = False,
        kinds: frozenset[type[ev.Event]] | None = None,
        catch_up: bool = False,
    ) -> DurableConsumer:
        """Feed `handler` the events of every node (of other nodes only, unless `own`) from the
        durable consumer `<node>-<purpose>`; call before `start`. `catch_up` (one consumer at
        most, before `start`): it first gets a snapshot of the floor from a running node, and
        its events make the journal this node answers such requests from."""
        name = subject_word(f"{self.node}-{purpose}")
        consumer = DurableConsumer(purpose, name, handler, own, tuple(kinds) if kinds else None)
        if catch_up:
            if self._catch_up is not None or self._task is not None:
                raise ValueError("one catch-up consumer, made before the bus starts")
            consumer.catch_up = True
            self._catch_up = consumer
        self.consumers.append(consumer)
        if self._js is not None:  # connected already: subscribe now (else at the connection)
            task = asyncio.create_task(self._subscribe(consumer), name=f"bus:subscribe:{name}")
            self._subscribing.add(task)
            task.add_done_callback(self._subscribed)
        return consumer

    def _subscribed(self, task: asyncio.Task[None]) -> None:
        self._subscribing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "bus: consumer not subscribed until the next connection", error=repr(task.exception())
            )

    async def _subscribe(self, consumer: DurableConsumer) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        async def deliver(msg: Any) -> None:
            await self._on_message(consumer, msg)

        exists = await self._resume_position(consumer)
        # A new consumer takes what is published from now on; one made again (lost with its
        # stream, or deleted) takes the events after its position, or a new stream whole.
        start = consumer.start_at or (consumer.last_seq + 1 if consumer.last_seq else None)
        if exists:
            start = None
        config = ConsumerConfig(
            durable_name=consumer.name,
            deliver_policy=DeliverPolicy.NEW if start is None else DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.settings.ack_wait_s,
            max_ack_pending=MAX_ACK_PENDING,
            filter_subject=self.subjects,
        )
        consumer.subscription = await self._js.subscribe(
            self.subjects,
            durable=consumer.name,
            stream=self.stream,
            config=config,
            manual_ack=True,
            cb=deliver,
            pending_msgs_limit=MAX_ACK_PENDING * 2,
        )
        consumer.start_at = None
        if consumer.catch_up:
            # Where it stands in the stream even before a first event: what a snapshot it
            # answers covers of the others' events (`_position`).
            try:
                info = await self._js.consumer_info(self.stream, consumer.name)
                done, floor = info.delivered, info.ack_floor
                if done is not None and floor is not None:
                    idle = (done.consumer_seq or 0) == (floor.consumer_seq or 0)
                    consumer.floor = max(consumer.floor, (done.stream_seq if idle else floor.stream_seq) or 0)
            except Exception as exc:
                log.debug("bus: consumer position unknown", consumer=consumer.name, error=repr(exc))

    async def _resume_position(self, consumer: DurableConsumer) -> bool:
        """An existing durable consumer's ack floor as where this one stands, before it is
        subscribed (nothing is delivered to it meanwhile, so the floor cannot move): after a
        restart, a gap between it and the first delivery (events in flight to the process that
        died, delivered again only after `ack_wait_s`) is filled (`_fill`). A new consumer has
        no position until its first event. False when the consumer does not exist (yet)."""
        from nats.js.errors import NotFoundError

        try:
            info = await self._js.consumer_info(self.stream, consumer.name)
        except NotFoundError:
            return False
        except Exception as exc:
            log.debug("bus: consumer position unknown", consumer=consumer.name, error=repr(exc))
            return True  # subscribing will tell; not a reason to start it elsewhere
        acked = (info.ack_floor.stream_seq or 0) if info.ack_floor is not None else 0
        consumer.last_seq = max(consumer.last_seq, acked)
        return True

    async def _on_message(self, consumer: DurableConsumer, msg: Any) -> None:
        if consumer.catch_up and not self._caught_up.is_set():
            await self._caught_up.wait()  # the snapshot first, then the stream after it
        pending = consumer.subscription.pending_msgs if consumer.subscription is not None else 0
        if pending == 0:  # not a backlog: this event starts a new slice of work
            consumer._work.restart()
        try:
            await self._handle(consumer, msg)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not stop the consumer: logged, acknowledged
            log.exception("bus: consumer failed on an event", consumer=consumer.name)
            await _quietly(msg.ack())
        if consumer._work.over():  # a backlog shares the loop with the screen pops
            await next_turn()
            consumer._work.restart()

    async def _handle(self, consumer: DurableConsumer, msg: Any) -> None:
        seq = msg.metadata.sequence.stream
        if seq <= consumer.last_seq:
            # Handled (or filled) already: its acknowledgement was lost, or it was in flight when
            # the connection dropped and JetStream delivered it again after `ack_wait_s`, behind
            # newer ones (`_fill` took it in its turn). A consumer handles the stream in order
            # only: a ringing handled after its call's end would pop a screen for a call that is
            # over.
            consumer.late += 1
            await msg.ack()
            return
        if consumer.last_seq and seq > consumer.last_seq + 1 and not await self._fill(consumer, seq):
            # Not acknowledged: delivered again after `ack_wait_s`; the next delivery, or that
            # one, fills the gap (this event included) then.
            return
        readable = await self._take(
            consumer, seq, msg.headers or {}, msg.data, msg.metadata.timestamp.timestamp()
        )
        await (msg.ack() if readable else msg.term())

    async def _fill(self, consumer: DurableConsumer, upto: int) -> bool:
        """The events between the consumer's position and the delivery `upto`, fetched from the
        stream and taken in order before it. Such a gap is what a dropped connection leaves (or
        a `kill -9`, `_resume_position`): JetStream pushes the newer events at once and delivers
        those that were in flight only after `ack_wait_s`, behind them. The stream's subjects
        are the consumer's filter, so every sequence in between is one of its events; those
        retention removed are skipped (`gone`), as are those beyond MAX_FILL (`unfilled`).
        False: the stream could not be read (the delivery is left unacknowledged)."""
        from nats.js.errors import NotFoundError

        js = self._js
        first = consumer.last_seq + 1
        bound = log.bind(consumer=consumer.name, after=consumer.last_seq, delivered=upto)
        if js is None:
            return False
        started = time.perf_counter()
        filled, gone = consumer.filled, consumer.gone
        try:
            # What retention removed, in one request rather than one per sequence.
            oldest = (await js.stream_info(self.stream)).state.first_seq or 0
            if oldest > first:
                consumer.gone += min(oldest, upto) - first
                first = min(oldest, upto)
                self._past(consumer, first - 1)
            if upto - first > MAX_FILL:
                consumer.unfilled += upto - first - MAX_FILL
                bound.warning(
                    "bus: gap in the deliveries too long to fill: the oldest events skipped",
                    skipped=upto - first - MAX_FILL,
                    max_fill=MAX_FILL,
                )
                first = upto - MAX_FILL
                self._past(consumer, first - 1)
            work = consumer._work
            for seq in range(first, upto):
                try:
                    raw = await js.get_msg(self.stream, seq)
                except NotFoundError:  # removed since (retention, a deletion)
                    consumer.gone += 1
                    self._past(consumer, seq)
                    continue
                stored_at = raw.time.timestamp() if raw.time is not None else time.time()
                await self._take(consumer, seq, raw.headers or {}, raw.data or b"", stored_at)
                consumer.filled += 1
                if work.over():  # a long gap shares the loop with the screen pops
                    await next_turn()
                    work.restart()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            bound.warning(
                "bus: gap in the deliveries not filled yet (the stream cannot be read)",
                filled=consumer.filled - filled,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
            return False
        bound.info(
            "bus: gap in the deliveries filled from the stream",
            filled=consumer.filled - filled,
            gone=consumer.gone - gone,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return True

    def _past(self, consumer: DurableConsumer, seq: int) -> None:
        """The consumer has taken (or skipped) the stream up to `seq`."""
        consumer.last_seq = max(consumer.last_seq, seq)
        if consumer.catch_up:
            self._moved.set()

    async def _take(
        self, consumer: DurableConsumer, seq: int, headers: dict[str, str], data: bytes, stored_at: float
    ) -> bool:
        """One event of the stream, at sequence `seq`, through the consumer's checks and its
        handler; False if its bytes cannot be read (to be terminated, never delivered again)."""
        try:
            event = decode(data)
        except EventDecodeError as exc:
            consumer.undecodable += 1
            level = log.warning if consumer.undecodable == 1 else log.debug
            level("bus: event cannot be read, skipped", consumer=consumer.name, seq=seq, error=str(exc))
            # Past it all the same: a snapshot this node answers counts it as seen (else a
            # starting node would wait for a position this consumer never reaches).
            self._past(consumer, seq)
            return False
        if not self._fresh(headers):
            consumer.fenced += 1
            log.info(
                "bus: event from a stale stream owner dropped",
                server=headers.get(HEADER_SERVER),
                node=headers.get(HEADER_NODE),
                lease_token=headers.get(HEADER_TOKEN),
                newest=self._newest.get(headers.get(HEADER_SERVER, "")),
            )
        elif (not consumer.own and headers.get(HEADER_NODE) == self.node) or (
            consumer.kinds is not None and not isinstance(event, consumer.kinds)
        ):
            consumer.skipped += 1
        elif consumer.catch_up and self._covered(event, headers, seq):
            consumer.covered += 1  # the snapshot this node started from holds it already
        else:
            consumer.stored_at = stored_at
            try:
                result = consumer.handler(event)
                if result is not None:
                    await result
            except Exception:
                log.exception("bus: event handler failed", consumer=consumer.name, event_kind=event.kind)
            consumer.handled += 1
            if consumer.catch_up:
                self.journal.record(event, _origin(headers))
        self._past(consumer, seq)
        return True

    def _covered(self, event: ev.Event, headers: dict[str, str], seq: int) -> bool:
        coverage = self._coverage
        if coverage is None or not journaled(event):
            return False
        boot, number = _publishing(headers)
        return coverage.covers(headers.get(HEADER_NODE), boot, number, seq)

    def _fresh(self, headers: dict[str, str]) -> bool:
        """Not from a stream owner older than the newest seen for its server."""
        raw, server = headers.get(HEADER_TOKEN), headers.get(HEADER_SERVER, "")
        if raw is None:
            return True
        try:
            token = int(raw)
        except ValueError:
            return False
        newest = self._newest.get(server, -1)
        if token < newest:
            return False
        self._newest[server] = token
        return True

    # ------------------------------------------------------------ catch-up
    @property
    def catch_up_subject(self) -> str:
        # Not under `<subject_prefix>.`: the stream must not keep these.
        return f"{self.settings.subject_prefix}_catchup"

    @property
    def caught_up(self) -> bool:
        return self._caught_up.is_set()

    def _position(self) -> int:
        """The stream sequence up to which the catch-up consumer has handled other nodes' events."""
        consumer = self._catch_up
        return 0 if consumer is None else max(consumer.last_seq, consumer.floor)

    async def _catch_up_once(self) -> None:
        """Ask a caught-up node for its snapshot and replay it; the consumer waits meanwhile.
        Whatever happens, the consumer goes on afterwards (without a snapshot: as before)."""
        started = time.perf_counter()
        try:
            head, entries, unreadable = await self._ask_snapshot()
            if head is not None:
                await self._replay(head, entries)
                log.info(
                    "bus: caught up with the floor",
                    source=head.node,
                    events=len(entries),
                    replayed=self._catch_up.replayed if self._catch_up else 0,
                    unreadable=unreadable,
                    position=head.position,
                    ms=round((time.perf_counter() - started) * 1000, 1),
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "bus: not caught up with the floor: calls in progress and agents' states are known "
                "from their next events only",
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
        finally:
            self._caught_up.set()
        try:
            await self._answer_snapshots()
        except Exception as exc:
            log.warning("bus: not answering catch-up requests until the next connection", error=repr(exc))

    async def _ask_snapshot(self) -> tuple[SnapshotHead | None, list[Entry], int]:
        """The snapshot of one caught-up node (None: there is none to ask)."""
        nc, js = self._nc, self._js
        # Everything stored before now reaches us through the snapshot, not the consumer (a new
        # one starts after it): the answering node waits until it has handled that much.
        need = (await js.stream_info(self.stream)).state.last_seq or 0
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * self.settings.timeout_s
        parts: dict[int, list[Entry]] = {}
        head: SnapshotHead | None = None
        unreadable = 0
        work = Slice()
        try:
            request = SnapshotRequest(self.node, self._boot, need)
            await nc.publish(
                self.catch_up_subject, request.to_bytes(), reply=inbox, headers={HEADER_NODE: self.node}
            )
            while head is None or len(parts) < head.parts:
                msg = await sub.next_msg(timeout=max(0.01, deadline - loop.time()))
                if (msg.headers or {}).get("Status") == "503":
                    log.info("bus: no node to catch up from (the first one up)", need=need)
                    return None, [], 0
                await next_turn()
                work.restart()
                part = decode_part(msg.data)  # 32 kB of JSON: well within a slice
                head = part.head or head
                if head is None or not 0 <= part.number < head.parts:
                    raise SnapshotError(f"part {part.number} out of order or of {head and head.parts}")
                entries = parts[part.number] = []
                for item in part.items:  # each event checked field by field: a slice at a time
                    entry = read_entry(item)
                    if entry is None:
                        unreadable += 1
                    else:
                        entries.append(entry)
                    if work.over():
                        await next_turn()
                        work.restart()
        finally:
            await _quietly(sub.unsubscribe())
        if unreadable:
            log.warning(
                "bus: snapshot events that cannot be read, skipped", count=unreadable, source=head.node
            )
        return head, [entry for number in sorted(parts) for entry in parts[number]], unreadable

    async def _replay(self, head: SnapshotHead, entries: list[Entry]) -> None:
        """The snapshot through the catch-up consumer's handler, as if they came from the stream
        (now: they are news to the statistics, not a backlog the database holds)."""
        consumer = self._catch_up
        assert consumer is not None
        for server, token in head.tokens.items():
            self._newest[server] = max(token, self._newest.get(server, -1))
        self._coverage = head.coverage
        work = Slice()
        for origin, event in entries:
            if origin == self.origin:
                continue  # delivered here when this node published it
            consumer.stored_at = time.time()
            try:
                result = consumer.handler(event)
                if result is not None:
                    await result
            except Exception:
                log.exception(
                    "bus: snapshot event handler failed", consumer=consumer.name, event_kind=event.kind
                )
            consumer.replayed += 1
            self.journal.record(event, origin)
            if work.over():
                await next_turn()
                work.restart()

    async def _answer_snapshots(self) -> None:
        if self._nc is None or self._responder is not None:
            return
        self._responder = await self._nc.subscribe(
            self.catch_up_subject, queue=CATCH_UP_QUEUE, cb=self._answer
        )

    async def _answer(self, msg: Any) -> None:
        """A starting node's request: this node's journal, once it has handled everything the
        requester's consumer will not get (bounded: `timeout_s / 2`)."""
        try:
            request = SnapshotRequest.from_bytes(msg.data)
        except SnapshotError as exc:
            log.warning("bus: catch-up request cannot be read, ignored", error=str(exc))
            return
        if not msg.reply or self._nc is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.timeout_s / 2
        while self._position() < request.need and loop.time() < deadline:
            self._moved.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), max(0.0, deadline - loop.time()))
        if self._position() < request.need:
            log.warning(
                "bus: snapshot sent behind the stream",
                to=request.node,
                position=self._position(),
                need=request.need,
            )
        # One step: the journal, our publishing number and our position belong to one instant.
        entries = self.journal.capture()
        head = {
            "node": self.node,
            "boot": self._boot,
            "seq": self._seq,
            "position": self._position(),
            "tokens": dict(self._newest),
        }
        parts: list[bytes] = []
        work = Slice()
        for item in encode_parts(head, entries):
            if item is not None:
                parts.append(item)
            elif work.over():
                await next_turn()
                work.restart()
        nc = self._nc
        if nc is None:
            return
        for part in parts:
            await nc.publish(msg.reply, part)
        await _quietly(nc.flush(self.settings.timeout_s))
        self.snapshots_sent += 1
        log.info(
            "bus: snapshot sent to a starting node",
            to=request.node,
            events=len(entries),
            calls=self.journal.calls,
            members=self.journal.members,
            parts=len(parts),
        )

    # ------------------------------------------------------------ shutdown
    async def flush(self, within_s: float = 5.0) -> bool:
        """Wait (at most `within_s`) until every buffered event is acknowledged by JetStream."""
        try:
            await asyncio.wait_for(self._idle.wait(), within_s)
        except TimeoutError:
            return False
        return True

    async def close(self, within_s: float = 5.0) -> None:
        """Publish what is buffered (bounded), handle and acknowledge what was delivered, close."""
        self._closing = True
        if self.connected and not await self.flush(within_s):
            log.warning("bus: events not published at shutdown", pending=self.pending)
        for consumer in self.consumers:
            sub, consumer.subscription = consumer.subscription, None
            if sub is not None:
                try:
                    await asyncio.wait_for(sub.drain(), within_s)
                except Exception as exc:
                    log.debug("bus: consumer drain", consumer=consumer.name, error=repr(exc))
        for task in (self._task, self._catching):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._catching = None
        if self._nc is not None and not self._nc.is_closed:
            try:
                await asyncio.wait_for(self._nc.drain(), within_s)
            except Exception as exc:
                log.debug("bus: NATS drain", error=repr(exc))
        await self._disconnect()
        self.connected = False


class _Flow:
    """The publishes in flight of one connection (JetStreamBus._flush_forever)."""

    def __init__(self, bus: JetStreamBus, limit: int) -> None:
        self.bus = bus
        self.limit = limit
        self.in_flight: dict[asyncio.Task[None], _Item] = {}
        self.failed: list[tuple[_Item, BaseException]] = []
        self.paused = False  # backing off after a failure

    @property
    def ready(self) -> bool:
        """A publish may start now (no failure being dealt with, a slot free, connected)."""
        return not (self.failed or self.paused) and len(self.in_flight) < self.limit and self.bus.connected

    def send_next(self) -> None:
        item = self.bus._buffer.popleft()
        task = asyncio.create_task(self._publish(item))
        self.in_flight[task] = item
        task.add_done_callback(self._settle)

    async def _publish(self, item: _Item) -> None:
        error = await self.bus._publish(item)
        if error is None:
            self.bus.published += 1
        else:
            self.failed.append((item, error))

    def _settle(self, task: asyncio.Task[None]) -> None:
        self.in_flight.pop(task, None)
        if not self.bus._buffer and not self.in_flight:
            self.bus._idle.set()
        self.bus._wake.set()

    async def take_back(self) -> BaseException:
        """Wait for those in flight, put the failed back in the buffer; the first error."""
        await asyncio.gather(*self.in_flight, return_exceptions=True)
        failed, self.failed = self.failed, []
        self.bus.publish_failures += len(failed)
        self.bus._requeue([item for item, _ in failed])
        return failed[0][1]

    async def stop(self) -> None:
        """The connection is gone: what was in flight or failed is published again later
        (a duplicate of what did land is discarded by JetStream: Nats-Msg-Id)."""
        pending = list(self.in_flight.items())
        for task, _ in pending:
            task.cancel()
        await asyncio.gather(*(task for task, _ in pending), return_exceptions=True)
        lost = [item for task, item in pending if task.cancelled()]
        self.bus._requeue(lost + [item for item, _ in self.failed])
        self.failed.clear()


def _publishing(headers: dict[str, str]) -> tuple[str | None, int | None]:
    """The publishing node's run and number of an event (from `Nats-Msg-Id`: node-boot-n)."""
    parts = headers.get(HEADER_MSG_ID, "").rsplit("-", 2)
    if len(parts) != 3 or parts[0] != headers.get(HEADER_NODE) or not parts[2].isdigit():
        return None, None
    return parts[1], int(parts[2])


def _origin(headers: dict[str, str]) -> str:
    boot, _ = _publishing(headers)
    return f"{headers.get(HEADER_NODE, '')}/{boot or ''}"


async def _quietly(ack: Awaitable[Any]) -> None:
    try:
        await ack
    except Exception as exc:
        log.debug("bus: acknowledgement not sent", error=repr(exc))


def _no_stream(error: BaseException | None) -> bool:
    """A publish no stream answered: the subjects have no stream on the server (any more)."""
    from nats.js.errors import NoStreamResponseError

    return isinstance(error, NoStreamResponseError)


async def _first_failure(*work: Awaitable[None]) -> None:
    """Run `work` side by side until one of them ends (raises, in practice): the others are
    cancelled, and its exception goes on."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()
