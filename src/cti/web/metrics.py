"""Prometheus metrics, served at `GET /metrics` to a scraper holding the scrape token.

Nearly everything is read at scrape time from the counters the daemon already keeps (the links'
reconnects and events, the bus's queues and drops, the hub's connections and slow desktops, the
call writer's totals, the dialer's attempts, the logins, the FastAGI server's sessions): the
collector walks them when Prometheus asks, and nothing is counted twice or on the pop path.

Three latencies have no counter to read, and are recorded as they happen, in `LatencyHistogram`
(a bisect and two additions, no lock: everything runs on the one event loop):

- the screen pop: from the moment the chunk of AMI bytes holding an `AgentCalled` arrived
  (`AmiLink.chunk_at`) to the moment the hub has written the `pop` frame to the agent's socket
  (`PopLatency.sender` wraps the hub's `send`, on the pop's own step);
- a database write of the call writer (`TimedRecordSink` wraps its store);
- a FastAGI caller lookup (`cti.agi.lookup.MeasuredLookup`, the `lookup` route with a stopwatch,
  in the FastAGI worker process: `cti.agi.worker` brings its counters back).

Series and their meaning: docs/operations.md ("Metrics").
"""

from __future__ import annotations

import hmac
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from cti import __version__
from cti.latency import LatencyHistogram
from cti.web.api import operation
from cti.web.errors import error_body

if TYPE_CHECKING:
    from cti.action_relay import ActionRelay
    from cti.agi.worker import AgiWorker, LookupCounts
    from cti.ami.link import AmiLink
    from cti.bus import EventBus
    from cti.bus_jetstream import JetStreamBus
    from cti.calls.live import LiveTracking
    from cti.calls.records import CallRecord
    from cti.db.calls_store import CallWriter, RecordSink
    from cti.dialer.engine import DialerEngine
    from cti.screenpop.service import ScreenPops
    from cti.web.hub import Hub
    from cti.web.server import WebContext

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes
# Seconds. The pop's target is p99 <= 5 ms: fine buckets below it, coarse ones for the tail.
POP_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
DB_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class PopLatency:
    """AMI bytes in → `pop` frame written, per frame (one per desktop user the call rings)."""

    def __init__(self, links: Sequence[AmiLink]) -> None:
        self.links = links
        self.histogram = LatencyHistogram(POP_BUCKETS)

    def sender(self, hub: Hub) -> Callable[[str, dict[str, Any]], None]:
        """The hub's `send`, measured for pops written to a desktop. A pop goes out on the step
        that handles its AMI chunk, so the chunk's arrival is the link's `chunk_at`; frames sent
        outside any chunk (a lookup's `pop.update`, a timer) are not pops and are not measured,
        nor is a pop for a user with no desktop connected (nothing is written), nor the pop of a
        call another node tracks (its AMI bytes reached that node)."""
        links, histogram, send, clients = self.links, self.histogram, hub.send, hub.clients

        def send_measured(username: str, message: dict[str, Any]) -> None:
            send(username, message)
            if message.get("type") == "pop" and username in clients:
                # Its server's link: a pop of another node's call (the bus) is not timed here.
                server = message.get("pop", {}).get("server")
                arrived = max(
                    (link.chunk_at for link in links if link.server.name == server and link.connected),
                    default=0.0,
                )
                if arrived:
                    histogram.observe(time.monotonic() - arrived)

        return send_measured


class TimedRecordSink:
    """The call writer's store, with each write timed (a batch, or one record being isolated)."""

    def __init__(self, sink: RecordSink) -> None:
        self.sink = sink
        self.histogram = LatencyHistogram(DB_BUCKETS)

    @property
    def display_url(self) -> str:
        return self.sink.display_url

    async def save(self, records: Sequence[CallRecord]) -> None:
        started = time.monotonic()
        try:
            await self.sink.save(records)
        finally:
            self.histogram.observe(time.monotonic() - started)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _histogram(name: str, doc: str, histogram: LatencyHistogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=histogram.buckets(), sum_value=histogram.sum)


class DaemonCollector:
    """Reads the daemon's own counters when Prometheus scrapes. Every part is optional: a part
    the daemon does not run (no FastAGI server, no AMI link) has no series."""

    def __init__(
        self,
        *,
        links: Sequence[AmiLink] = (),
        trackings: Sequence[LiveTracking] = (),
        bus: EventBus | None = None,
        web: WebContext | None = None,
        pops: PopLatency | None = None,
        screen_pops: ScreenPops | None = None,
        writer: CallWriter | None = None,
        writes: TimedRecordSink | None = None,
        dialer: DialerEngine | None = None,
        agi: AgiWorker | None = None,
        lookup: LookupCounts | None = None,
    ) -> None:
        self.links, self.trackings, self.bus, self.web = links, trackings, bus, web
        self.pops, self.screen_pops, self.writer, self.writes = pops, screen_pops, writer, writes
        self.dialer, self.agi, self.lookup = dialer, agi, lookup
        self.jetstream: JetStreamBus | None = None  # [bus] nats_url: set by the daemon
        self.relay: ActionRelay | None = None  # [ha] and [bus] nats_url: set by the daemon

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("cti_info", "the running cti", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield from self._ami()
        yield from self._bus()
        yield from self._desktops()
        yield from self._writer()
        yield from self._dialer()
        yield from self._logins()
        yield from self._agi()

    def _ami(self) -> Iterator[Metric]:
        gauge, counter = GaugeMetricFamily, CounterMetricFamily
        per_server: list[tuple[type[GaugeMetricFamily | CounterMetricFamily], str, str, str]] = [
            (gauge, "cti_ami_link_up", "connected", "1 while logged in to the server's AMI"),
            (gauge, "cti_ami_link_synced", "synced", "1 once the resync after the latest login succeeded"),
            (counter, "cti_ami_reconnects", "reconnects", "logins after the first"),
            (
                counter,
                "cti_ami_events",
                "events_received",
                "AMI events handed to the tracker (rate: events/s)",
            ),
            (counter, "cti_ami_malformed", "malformed", "malformed AMI frames skipped"),
            (counter, "cti_ami_callback_errors", "callback_errors", "events whose handling raised"),
            (counter, "cti_ami_resync_failures", "resync_failures", "failed resync attempts"),
            (
                counter,
                "cti_ami_trace_dropped_bytes",
                "trace_dropped_bytes",
                "received bytes left out of the AMI trace (its writer was behind)",
            ),
            (
                counter,
                "cti_ami_trace_errors",
                "trace_errors",
                "connections whose AMI trace stopped on a disk error",
            ),
        ]
        for kind, name, attribute, doc in per_server:
            family = kind(name, doc, labels=["server"])
            for link in self.links:
                family.add_metric([link.server.name], float(getattr(link, attribute)))
            yield family
        live = GaugeMetricFamily("cti_tracker_live_calls", "calls the tracker follows now", labels=["server"])
        evicted = CounterMetricFamily(
            "cti_tracker_evicted", "live calls closed unfinished over max_live_calls", labels=["server"]
        )
        for tracking in self.trackings:
            tracker = tracking.tracker
            live.add_metric([tracker.server], len(tracker.calls))
            evicted.add_metric([tracker.server], tracker.evicted)
        yield live
        yield evicted

    def _bus(self) -> Iterator[Metric]:
        if self.bus is None:
            return
        yield _counter("cti_bus_published", "domain events published on the bus", self.bus.published)
        depth = GaugeMetricFamily("cti_bus_queue_depth", "events waiting for a consumer", labels=["consumer"])
        size = GaugeMetricFamily("cti_bus_queue_capacity", "a consumer's queue bound", labels=["consumer"])
        dropped = CounterMetricFamily(
            "cti_bus_dropped",
            "events dropped (oldest first) for a consumer that fell behind",
            labels=["consumer"],
        )
        for sub in self.bus.subscriptions:
            depth.add_metric([sub.name], sub.queue.qsize())
            size.add_metric([sub.name], sub.queue.maxsize)
            dropped.add_metric([sub.name], sub.dropped)
        yield from (depth, size, dropped)
        yield from self._nats()
        yield from self._relay()

    def _relay(self) -> Iterator[Metric]:
        """Agent actions relayed between nodes (docs/scale-out.md, "Actions to the right PBX")."""
        relay = self.relay
        for name, doc, attribute in (
            (
                "cti_relay_asked",
                "agent actions sent through the node that owns the server's stream",
                "forwarded",
            ),
            ("cti_relay_served", "actions this node sent on its own link for another node", "served"),
            ("cti_relay_repeats", "requests seen again (same id): answered without sending again", "repeats"),
            ("cti_relay_expired", "requests that reached this node too late: not sent", "expired"),
            ("cti_relay_unreachable", "actions answered 503 owner-unreachable", "unreachable"),
        ):
            yield _counter(name, doc, getattr(relay, attribute) if relay is not None else 0)

    def _nats(self) -> Iterator[Metric]:
        """The bus over NATS JetStream ([bus] nats_url); all 0 without it."""
        js = self.jetstream
        consumers = js.consumers if js is not None else []
        remote = self.bus.published_remote if self.bus is not None else 0
        yield _gauge("cti_bus_nats_connected", "1 while connected to NATS", float(bool(js and js.connected)))
        yield _gauge(
            "cti_bus_nats_pending", "events buffered, not yet stored by JetStream", js.pending if js else 0
        )
        for name, doc, value in (
            ("cti_bus_nats_published", "events stored by JetStream", js.published if js else 0),
            (
                "cti_bus_nats_dropped",
                "events dropped from a full buffer (NATS away)",
                js.dropped if js else 0,
            ),
            (
                "cti_bus_nats_publish_failures",
                "publishes that failed (retried)",
                js.publish_failures if js else 0,
            ),
            ("cti_bus_remote_events", "other nodes' events delivered to this node's consumers", remote),
            (
                "cti_bus_nats_fenced",
                "events of a stale stream owner dropped",
                sum(c.fenced for c in consumers),
            ),
            (
                "cti_bus_nats_undecodable",
                "events that could not be read",
                sum(c.undecodable for c in consumers),
            ),
            (
                "cti_bus_nats_late",
                "events delivered again after newer ones were handled (or filled), skipped",
                sum(c.late for c in consumers),
            ),
            (
                "cti_bus_nats_filled",
                "events lost in flight, fetched from the stream to fill a gap in the deliveries",
                sum(c.filled for c in consumers),
            ),
            (
                "cti_bus_nats_gone",
                "events lost in flight and no longer in the stream (retention), skipped",
                sum(c.gone for c in consumers),
            ),
            (
                "cti_bus_nats_unfilled",
                "events lost in flight beyond the bound of one gap's fill, skipped",
                sum(c.unfilled for c in consumers),
            ),
            (
                "cti_bus_nats_streams_lost",
                "times the stream or a consumer was gone from NATS and made again",
                js.streams_lost if js else 0,
            ),
        ):
            yield _counter(name, doc, value)

    def _desktops(self) -> Iterator[Metric]:
        if self.web is not None:
            hub = self.web.hub
            roles: Counter[str] = Counter()
            for clients in hub.clients.values():
                for client in clients:
                    roles[client.principal.role] += 1
            connections = GaugeMetricFamily(
                "cti_websocket_connections", "desktops and wallboards connected", labels=["role"]
            )
            for role in ("agent", "supervisor", "admin"):
                connections.add_metric([role], roles[role])
            yield connections
            yield _counter(
                "cti_websocket_slow_disconnects",
                "desktops disconnected for falling behind",
                hub.slow_disconnects,
            )
        if self.screen_pops is not None:
            yield _counter(
                "cti_screenpop_messages",
                "pop messages sent to desktops (pop, update, withdraw...)",
                self.screen_pops.sent,
            )
        if self.pops is not None:
            yield _histogram(
                "cti_pop_latency_seconds",
                "AMI bytes in to pop frame written, per desktop user",
                self.pops.histogram,
            )

    def _writer(self) -> Iterator[Metric]:
        writer = self.writer
        if writer is None:
            return
        yield _gauge("cti_db_writer_pending", "call records accepted, not yet written", writer.pending)
        yield _counter("cti_db_writer_written", "call records written", writer.written)
        yield _counter(
            "cti_db_writer_failures", "failed writes (database unavailable; retried)", writer.failed_writes
        )
        yield _gauge("cti_db_writer_failing", "consecutive failed writes now (0: healthy)", writer.failures)
        yield _counter(
            "cti_db_writer_rejected", "call records the database refused (set aside)", writer.rejected
        )
        yield _counter(
            "cti_db_writer_dropped", "call records dropped unwritten (backlog full)", writer.dropped
        )
        if self.writes is not None:
            yield _histogram(
                "cti_db_write_seconds", "one write of the call writer (a batch)", self.writes.histogram
            )

    def _dialer(self) -> Iterator[Metric]:
        dialer = self.dialer
        if dialer is None:
            return
        yield _gauge("cti_dialer_open_attempts", "attempts placed and not ended", len(dialer.open))
        attempts = CounterMetricFamily(
            "cti_dialer_attempts", "attempts written (before their Originate)", labels=["campaign"]
        )
        for campaign, count in sorted(dialer.attempts.items()):
            attempts.add_metric([campaign], count)
        yield attempts
        outcomes = CounterMetricFamily(
            "cti_dialer_outcomes", "attempts ended, by outcome", labels=["campaign", "outcome"]
        )
        for (campaign, outcome), count in sorted(dialer.outcomes.items()):
            outcomes.add_metric([campaign, outcome], count)
        yield outcomes
        drop = GaugeMetricFamily(
            "cti_dialer_drop_rate",
            "(abandons + late connects) / put through, over the campaign's window (the pacing's figure)",
            labels=["campaign"],
        )
        dialing = GaugeMetricFamily(
            "cti_dialer_dialing", "1 while the campaign places calls", labels=["campaign"]
        )
        ratio = GaugeMetricFamily(
            "cti_dialer_ratio", "calls per free agent the pacing chose", labels=["campaign"]
        )
        for name, status in sorted(dialer.status.items()):
            if status.drop_rate is not None:
                drop.add_metric([name], status.drop_rate)
            dialing.add_metric([name], status.dialing)
            ratio.add_metric([name], status.ratio)
        yield from (drop, dialing, ratio)

    def _logins(self) -> Iterator[Metric]:
        if self.web is None:
            return
        ctx = self.web
        results = CounterMetricFamily("cti_login_attempts", "logins by result", labels=["result"])
        for result in ("ok", "bad_credentials", "rate_limited", "busy"):
            results.add_metric([result], ctx.login_results[result])
        yield results
        yield _gauge(
            "cti_login_limiter_windows",
            "usernames and addresses with attempts in the last minute",
            len(ctx.limiter),
        )
        limits = GaugeMetricFamily("cti_login_limit_per_minute", "attempts allowed a minute", labels=["per"])
        limiter = ctx.limiter
        per_address = limiter.per_address if limiter.per_address is not None else 10 * limiter.per_minute
        limits.add_metric(["user"], limiter.per_minute)
        limits.add_metric(["address"], per_address)
        yield limits
        yield _gauge("cti_login_checks_pending", "password checks running or waiting", ctx.passwords.pending)
        yield _gauge(
            "cti_login_checks_limit", "password checks at once before login-busy", ctx.passwords.limit
        )

    def _agi(self) -> Iterator[Metric]:
        agi = self.agi
        if agi is None:
            return
        yield _counter("cti_agi_sessions", "FastAGI sessions served", agi.sessions_served)
        yield _gauge("cti_agi_sessions_active", "FastAGI sessions in progress", agi.active)
        problems = CounterMetricFamily(
            "cti_agi_problems",
            "sessions cut off or refused (busy, timeout, protocol, route...)",
            labels=["kind"],
        )
        for kind, count in sorted(agi.problems.counts.items()):
            problems.add_metric([kind.split(":", 1)[0]], count)
        yield problems
        if self.lookup is not None:
            lookups = CounterMetricFamily("cti_agi_lookups", "caller lookups by result", labels=["result"])
            for result in ("hit", "miss", "multiple", "withheld", "error"):
                lookups.add_metric([result], self.lookup.outcomes[result])
            yield lookups
            yield _histogram(
                "cti_agi_lookup_seconds",
                "a lookup session's route, directory and AGI commands",
                self.lookup.histogram,
            )


def build_registry(collector: DaemonCollector) -> CollectorRegistry:
    """Our series, plus the process's (CPU, memory, open files) and the garbage collector's."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


METRICS = web.AppKey("metrics", CollectorRegistry)


def scrape_token_ok(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    given = header[7:].strip() if header.startswith("Bearer ") else ""
    return bool(token) and hmac.compare_digest(given.encode(), token.encode())


@operation(
    "Prometheus metrics, for the scrape token ([web] metrics_token) only",
    public=True,
    media={"text/plain": {"type": "string", "description": "the Prometheus text format 0.0.4"}},
    errors=(401,),
    tag="operations",
    description="Series and their meaning: docs/operations.md. No token configured: 401 to everyone.",
)
async def metrics(request: web.Request) -> web.Response:
    """The Prometheus exposition, for a request bearing the scrape token (`[web] metrics_token`).
    No token configured: every request is refused."""
    from cti.web.server import CTX

    if not scrape_token_ok(request, request.app[CTX].settings.metrics_token.reveal()):
        body = error_body("unauthenticated", "send the scrape token ([web] metrics_token) as a Bearer token")
        return web.json_response(body, status=401, headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    return web.Response(body=generate_latest(request.app[METRICS]), headers={"Content-Type": CONTENT_TYPE})
