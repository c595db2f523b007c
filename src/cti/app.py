"""Composition root: the only module that knows every domain.

links (one per Asterisk server) → trackers → bus → consumers (call writer, …).
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import structlog
from aiohttp import web

from cti import gc_policy
from cti.action_relay import ActionRelay, RoutedLink
from cti.ami import commands
from cti.ami.actions import ActionError, ActionTimeout, LinkDown
from cti.ami.link import AmiLink
from cti.bus import EventBus
from cti.calls import events as ev
from cti.calls.controls import Phone
from cti.calls.ivr import IvrVocabulary
from cti.calls.live import LiveTracking
from cti.calls.ownership import StreamOwners
from cti.calls.pbxs import Pbx, PbxMap
from cti.calls.recovery import MARGIN_S, GapRecovery
from cti.calls.tracker import CallTracker
from cti.config import AsteriskServer, Settings, TrackerSettings, redact_url
from cti.db.calls_store import CallStore, CallWriter, Fence, load_open_calls
from cti.db.engine import create_engine
from cti.db.migrate import upgrade_async
from cti.directory.lookup import CustomerDirectory
from cti.logs import configure_logging
from cti.screenpop.router import PopRouter
from cti.screenpop.service import ScreenPops
from cti.tickets import BreachWatcher, TicketConsumer, TicketError, TicketService
from cti.tickets.events import TicketEvent, TicketSlaBreached, TicketUpdated
from cti.web.auth import LoginLimiter, Principal, TokenSigner, UserStore
from cti.web.health import DatabaseProbe, readiness
from cti.web.hub import Hub
from cti.web.login_limits import SharedLoginLimiter
from cti.web.metrics import DaemonCollector, PopLatency, TimedRecordSink, build_registry
from cti.web.routes import AGENT_ROUTES, CUSTOMER_ROUTES, TICKET_ROUTES
from cti.web.server import WebContext, build_app, runner_options

log = structlog.get_logger(__name__)

TICK_S = 1.0
TICKET_RETRIES = 8  # about two minutes of back-off
SHUTDOWN_GRACE_S = 10.0


@dataclass
class Daemon:
    settings: Settings
    bus: EventBus = field(default_factory=EventBus)
    links: list[AmiLink] = field(default_factory=list)
    trackings: list[LiveTracking] = field(default_factory=list)
    recoveries: list[GapRecovery] = field(default_factory=list)
    owners: StreamOwners | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def _spawn(self, coro: object, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        # phonenumbers loads each country's metadata on first use (a second or more): pay it now,
        # in a thread, rather than on the first call's screen pop.
        await asyncio.to_thread(_warm_phone_metadata)
        db = self.settings.database
        self.engine = create_engine(db.url)
        # Several daemons, one PostgreSQL ([ha]): each server's stream is owned by one of them,
        # and every write for a server goes through its lease's token (calls/ownership.py).
        if self.settings.ha.enabled:  # refused on SQLite before anything is written
            servers = [s.name for s in self.settings.asterisk]
            self.owners = StreamOwners(self.engine, self.settings.ha, servers)
        await upgrade_async(self.engine)
        # /readyz reads the database's reachability from here, never queries it per request.
        self.db_probe = DatabaseProbe(self.engine)
        await self.db_probe.check()  # ready from the first request on, if it is
        self._spawn(self.db_probe.run(), "database-probe")
        self.store = CallStore(self.engine, fence=self._fences)
        self.writes = TimedRecordSink(self.store)  # each write timed, for the metrics
        self.writer = CallWriter.from_settings(self.writes, db)
        self.writer.start()
        self.bus.consume("call-writer", self._write_ended, kinds=frozenset({ev.CallEnded}))
        for server in self.settings.asterisk:
            tracker = CallTracker(
                server.name,
                self.settings.tracker.default_region,
                self.settings.tracker.originate_grace_s,
                internal_contexts=self.settings.tracker.internal_contexts,
                ivr=ivr_vocabulary(self.settings.tracker),
                max_calls=self.settings.tracker.max_live_calls,
            )
            # Calls in progress when we last stopped: the first resync adopts or closes them.
            tracker.restore(await load_open_calls(self.engine, server.name))
            recovery = self._start_recovery(server, tracker)
            tracking = LiveTracking(tracker, self.bus.publish, server.queue_log, recovery=recovery)
            link = AmiLink(
                server,
                tracking.on_message,
                tracking.on_connected,
                tracking.on_disconnected,
                events=tracker.handled_events,
            )
            self.trackings.append(tracking)
            self.links.append(link)
        # Where each agent action and call control goes (calls/pbxs.py): with [ha] and the bus,
        # through the owner of the server's stream when it is another node (action_relay.py).
        self.relay = self._action_relay()
        configured = zip(self.settings.asterisk, self.links, self.trackings, strict=True)
        self.pbxs = PbxMap(
            [Pbx(s.name, RoutedLink(link, self.relay), t.tracker, s.phones) for s, link, t in configured]
        )
        self._spawn(self._tick(), "tracker-tick")
        await self._start_desk()
        await self._start_agi()
        self._start_bus()
        # Only now: every consumer has subscribed, so the first resync's events (queue members,
        # calls in progress) reach statistics and the dialer too, not just the call writer.
        if self.owners is not None:  # each link connects once its server's stream is ours
            pairs = zip(self.links, self.trackings, strict=True)
            self.owners.start(list(pairs), lambda name: partial(load_open_calls, self.engine, name))
        for link, tracking in zip(self.links, self.trackings, strict=True):
            if self.owners is None:
                self._spawn(link.run(), f"ami:{link.server.name}")
            if self.settings.tracker.reconcile_s > 0:
                self._spawn(self._reconcile(link, tracking), f"reconcile:{link.server.name}")
        for recovery in self.recoveries:
            recovery.keep_marks()
        gc_policy.after_startup()
        log.info("cti started", servers=[s.name for s in self.settings.asterisk], database=redact_url(db.url))

    def _action_relay(self) -> ActionRelay | None:
        """[ha] and [bus] nats_url: agent actions for a server another node owns go to that node
        over NATS, and this node answers for the servers it owns (docs/scale-out.md, "Actions
        to the right PBX"). Otherwise None: every action on this node's own link, as before."""
        owners, bus = self.owners, self.settings.bus
        if owners is None or not bus.nats_url:
            return None
        links = {link.server.name: link for link in self.links}
        relay = ActionRelay(bus, bus.node or owners.node, lambda s: owners.role(s) == "owner", links)
        self._spawn(relay.run(), "action-relay")
        return relay

    @property
    def _fences(self) -> Fence | None:
        """Each write made for a server checked against its stream lease ([ha]); None: one daemon."""
        return None if self.owners is None else self.owners.fences

    def _start_recovery(self, server: AsteriskServer, tracker: CallTracker) -> GapRecovery | None:
        """The calls of a gap, read back from Asterisk's CEL and queue_log in PostgreSQL
        (calls/recovery.py), for a server whose `records_url` says where they are."""
        from cti.calls.cel_source import AsteriskRecords
        from cti.calls.gap import RebuildRules
        from cti.db.recovery_store import RecoveryStore

        if not server.records_url:
            return None
        try:
            source = AsteriskRecords(server.records_url, self.settings.recovery.timeout_s)
        except ValueError as exc:
            log.error("no recovery after a gap: records_url", server=server.name, error=str(exc))
            return None
        tracking, db = self.settings.tracker, self.settings.database
        rules = RebuildRules(
            server.name,
            tracking.default_region,
            ivr_vocabulary(tracking),
            frozenset(tracking.internal_contexts),
        )
        recovery = GapRecovery(
            tracker,
            self.bus.publish,
            source,
            RecoveryStore(self.engine, self._fences),
            self.store.save,
            rules,
            max_gap_s=self.settings.recovery.max_gap_s,
            # Calls ended just before the mark may still be on their way to the database.
            margin_s=max(MARGIN_S, 4 * db.flush_interval_s + tracking.originate_grace_s),
            settled=lambda: self.writer.failures == 0 and self.writer.pending < db.batch_size,
        )
        self.recoveries.append(recovery)
        log.info("recovery after a gap on", server=server.name, records=source.display_url)
        return recovery

    async def _start_desk(self) -> None:
        """Screen pops, tickets and the web server (desktop, REST, WebSocket)."""
        web_settings = self.settings.web
        self.users = UserStore(self.engine)
        await self.users.reload()
        self.hub = Hub(web_settings.client_queue)
        stats_routes = self._start_stats()
        dialer_routes = self._start_dialer()
        # A campaign call's pop presents the contact the dialer called (from its memory).
        self.pops = PopRouter(
            self.users.user_for_interface,
            self.settings.tracker.default_region,
            campaign_contact=self.dialer.contact_for_pop,
        )
        # Each pop frame's latency from its AMI bytes, measured after the frame is written.
        self.pop_latency = PopLatency(self.links)
        self.screen_pops = ScreenPops(self.pops, self.pop_latency.sender(self.hub), self._lookup_for_pop())
        self.tickets = TicketService(self.engine, self.settings.tickets, self.bus.publish)
        # Inline: a pop must not wait behind a queue hop (target: p99 ≤ 5 ms from the AMI bytes).
        self.bus.tap("screen-pops", self.screen_pops.on_event)
        # No customer resolver: `open_for_answer` reads the customer chosen on the pop inside
        # its own transaction (reading it first through the directory cost two more queries and
        # a session per answered call, on the screen pops' loop).
        # ...but a caller whose number matched exactly one customer gets that customer's ticket
        # without the agent having to pick (the pop's lookup result, already in memory).
        self.ticket_consumer = TicketConsumer(
            self.tickets,
            self.users.user_for_interface,
            identified_customer=self.pops.identified_customer,
        )
        self.bus.consume("tickets", self._open_tickets, kinds=TicketConsumer.kinds)
        self.bus.consume("ticket-push", self._push_ticket, kinds=frozenset({TicketEvent}))
        self.breaches = BreachWatcher(self.tickets)
        self.breaches.start()
        secret = web_settings.secret.reveal().encode() or secrets.token_bytes(32)
        if not web_settings.secret:
            log.warning("no CTI_WEB_SECRET set: desktops must log in again after a restart")
        self.web_ctx = WebContext(
            users=self.users,
            signer=TokenSigner(secret, web_settings.session_ttl_s),
            limiter=LoginLimiter(
                web_settings.login_attempts_per_minute,
                per_address=web_settings.login_attempts_per_address_per_minute,
            ),
            # On PostgreSQL, possibly several nodes: the limits hold for all of them together.
            shared_limiter=SharedLoginLimiter(
                self.engine,
                web_settings.login_attempts_per_minute,
                per_address=web_settings.login_attempts_per_address_per_minute,
            )
            if self.engine.dialect.name == "postgresql"
            else None,
            hub=self.hub,
            pops=self.pops,
            clock=time.time,
            health=self._health,
            readiness=self._readiness,
            tickets=self.tickets,
            directory=self.directory,
            actions=AmiAgentLink(self.pbxs) if self.links else None,
            settings=web_settings,
            callback_grace_s=self.settings.dialer.personal_grace_s,
        )
        self.web_ctx.resume_extra.append(self._resume_tickets)
        # /metrics: read from the counters above when Prometheus scrapes (docs/operations.md).
        self.metrics = DaemonCollector(
            links=self.links,
            trackings=self.trackings,
            bus=self.bus,
            web=self.web_ctx,
            pops=self.pop_latency,
            screen_pops=self.screen_pops,
            writer=self.writer,
            writes=self.writes,
            dialer=self.dialer,
        )
        self.runner = web.AppRunner(
            build_app(
                self.web_ctx,
                [*TICKET_ROUTES, *CUSTOMER_ROUTES, *AGENT_ROUTES, *stats_routes, *dialer_routes],
                metrics_registry=build_registry(self.metrics),
            ),
            **runner_options(web_settings),
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, web_settings.host, web_settings.port)
        await site.start()
        log.info("web server listening", url=self.web_url)

    def _start_bus(self) -> None:
        """[bus] nats_url: this node's events to NATS JetStream, and every other node's events
        to this node's screen pops, ticket pushes and live statistics, so that a desktop or a
        wallboard on any node sees the calls of every PBX (docs/scale-out.md, "The bus")."""
        from dataclasses import replace

        from cti.bus_jetstream import JetStreamBus
        from cti.screenpop.campaign import contact_companion

        self.jetstream: JetStreamBus | None = None
        settings = self.settings.bus
        if not settings.nats_url:
            return
        ha = getattr(self.settings, "ha", None)
        node = settings.node or (ha.node if ha is not None else "")
        owners = getattr(self, "owners", None)  # [ha]: the token of each stream this node owns
        token_for = None if owners is None else lambda server: _lease_token(owners, server)
        self.jetstream = JetStreamBus(replace(settings, node=node), token_for)
        self.metrics.jetstream = self.jetstream
        self.metrics.relay = self.relay
        self.bus.tap("jetstream", self.jetstream.export)
        for name in ("screen-pops", "ticket-push", "stats", "stats-restart"):
            self.bus.hear_remote(name)
        # Other nodes' events feed the live figures, but their agent-state spans are stored by
        # the node that tracks their server, not here as well.
        store_spans, local = self.stats.live.on_spans, {s.name for s in self.settings.asterisk}

        def own_spans(spans: list[Any]) -> None:
            mine = [
                s for s in spans if s.server in local and (owners is None or owners.role(s.server) == "owner")
            ]
            if mine and store_spans is not None:
                store_spans(mine)

        self.stats.live.on_spans = own_spans
        # What was published while this node was down (the durable consumer resumes there)
        # reaches the pops and ticket pushes, but not the live figures: those calls are in the
        # database, which the statistics restored at start; counted again they would be double.
        started = time.time()
        backlog = ("stats", "stats-restart")

        def deliver(event: ev.Event) -> None:
            self.bus.publish_remote(event, skip=backlog if desk.stored_at < started else ())

        # The desk consumer first replays a running node's snapshot of the floor (the calls in
        # progress, the agents' states: a new consumer reads the stream from "now"), and its
        # events make this node's own journal for the nodes that start later (bus_catchup.py).
        desk = self.jetstream.consume("desk", deliver, catch_up=True)
        # A campaign call's contact is in the dialling node's memory: it goes with the call's
        # DialerConnected to the other nodes' pops (screenpop/campaign.py).
        self.jetstream.companions = contact_companion(self.dialer.contact_for_pop)
        self.jetstream.start()
        stale = asyncio.Event()
        self.users.on_unknown = lambda _interface: stale.set()
        self._spawn(self._reload_users(stale), "users-reload")
        log.info("bus over NATS JetStream", node=self.jetstream.node, stream=settings.stream)

    async def _reload_users(self, stale: asyncio.Event, every_s: float = 30.0, gap_s: float = 5.0) -> None:
        """Several nodes: a user added or changed through another node (its page, `cti users`)
        must be known here too, by the pops and the ticket opener (an interface mapped to
        nobody pops nothing and opens no ticket). Reloaded when an interface nobody owns here
        rings (`stale`, at most every `gap_s`: a reload of 1,000 users costs 10 ms of the
        loop), and every `every_s` for changes; a login on this node reloads at once."""
        failing = False
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(stale.wait(), every_s)
            stale.clear()
            try:
                await self.users.reload()
            except Exception as exc:
                (log.debug if failing else log.warning)("users not reloaded", error=repr(exc)[:300])
                failing = True
            else:
                failing = False
            await asyncio.sleep(gap_s)

    async def _start_agi(self) -> None:
        """The FastAGI caller lookup for the inbound dialplan, when [agi] host is set: served by a
        worker process of its own (cti/agi/worker.py), away from this event loop's work."""
        from cti.agi.worker import AgiWorker

        settings = self.settings.agi
        self.agi: AgiWorker | None = None
        if not settings.host:
            return
        worker = AgiWorker(self.settings)
        await worker.start()
        self.agi = worker
        self.directory.on_change.append(worker.forget)
        self.metrics.agi, self.metrics.lookup = worker, worker.lookup
        addresses = [f"{h}:{p}" for h, p in worker.addresses]
        log.info("FastAGI server listening", addresses=addresses, worker=worker.pid)

    def _start_dialer(self) -> list[web.RouteDef]:
        """The outbound dialer: bus events in, Originates out, each campaign on its server's link
        (the first server's when it names none)."""
        from cti.dialer.engine import KINDS, DialerEngine
        from cti.dialer.ownership import campaign_leases
        from cti.dialer.routes import dialer_routes
        from cti.dialer.settings import dialer_clock

        settings = self.settings.dialer
        link, server = (self.links[0], self.links[0].server.name) if self.links else (None, "")
        links = {lk.server.name: lk for lk in self.links} if len(self.links) > 1 else None
        self.dialer = DialerEngine(self.engine, link, settings, dialer_clock(settings), server, links)
        # Queue members as the trackers know them now (the first resync may predate our consumer).
        self.dialer.members = lambda: [m for t in self.trackings for m in t.tracker.members.values()]
        # PostgreSQL: each campaign paced by one daemon at a time, on a server whose stream it
        # owns ([ha]): docs/scale-out.md, "Work done once".
        self.dialer.leases = campaign_leases(self.engine, getattr(self.settings, "ha", None))
        owners = getattr(self, "owners", None)
        if owners is not None:
            self.dialer.may_dial = lambda name: owners.role(name) == "owner"
        # An adopted attempt whose call no tracker follows any more ended unseen (a gap).
        self.dialer.live_calls = lambda: {lid for t in self.trackings for lid in t.tracker.calls}
        self.bus.consume("dialer", self.dialer.on_event, kinds=KINDS)
        if settings.enabled:
            self.dialer.start()
        return dialer_routes(self.dialer)

    def _start_stats(self) -> list[web.RouteDef]:
        """Statistics: live figures from the bus, agent-state spans to the database, pushes to
        supervisors (and agents' own figures) over the hub; returns the stats routes."""
        from cti.stats.metrics import ThresholdSet
        from cti.stats.service import StatsService
        from cti.web.stats_routes import stats_routes

        tracker = self.settings.tracker
        thresholds = ThresholdSet.build(
            tracker.service_level_s, tracker.short_abandon_s, self.settings.stats.queues
        )
        self.stats = StatsService(self.engine, self.hub, thresholds, fence=self._fences)
        # Before the AMI links start: today's figures are rebuilt from the database while every
        # event is held; the tap notes the calls ended meanwhile before the writer stores them.
        self.bus.tap("stats-restart", self.stats.on_published)
        self.bus.consume("stats", self.stats.on_event, kinds=self.stats.kinds)
        self.stats.start()
        return stats_routes(self.stats)

    @property
    def web_url(self) -> str:
        """Where the desktop is served (the real port when the settings asked for port 0)."""
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def _lookup_for_pop(self) -> Any:
        self.directory = CustomerDirectory.from_settings(self.engine, self.settings.directory)
        return self.directory.lookup_json

    async def _open_tickets(self, event: ev.Event) -> None:
        """Open/hand over tickets; a database that is briefly away is waited for (the consumer's
        queue keeps the events in order meanwhile) rather than losing the agent's ticket."""
        for attempt in range(TICKET_RETRIES + 1):
            try:
                await self.ticket_consumer.on_event(event)
                return
            except TicketError:
                raise
            except Exception as exc:
                if attempt == TICKET_RETRIES:
                    log.error(
                        "ticket not opened: database unavailable", event_kind=event.kind, error=str(exc)
                    )
                    return
                log.warning("ticket store unavailable, retrying", attempt=attempt + 1, error=str(exc))
                await asyncio.sleep(min(30.0, 0.5 * 2**attempt))

    async def _resume_tickets(self, principal: Principal) -> dict[str, Any]:
        from cti.tickets import Actor

        views = await self.tickets.open_for_agent(
            principal.username, Actor(principal.username, principal.role)
        )
        now = time.time()
        return {"tickets": [v.to_json(now) for v in views]}

    def _push_ticket(self, event: ev.Event) -> None:
        if not isinstance(event, TicketEvent):
            return
        message = {"v": 1, "type": "ticket", "ticket": event.ticket, "now": event.at}
        self.hub.send(event.agent, message)
        if isinstance(event, TicketUpdated) and event.previous_agent:
            self.hub.send(
                event.previous_agent, {"v": 1, "type": "ticket.withdraw", "ticket_id": event.ticket_id}
            )
        if isinstance(event, TicketSlaBreached):
            self.hub.broadcast(
                {"v": 1, "type": "ticket.sla_breached", "ticket": event.ticket, "now": event.at}
            )

    def _health(self) -> dict[str, Any]:
        links = [
            {
                "server": link.server.name,
                "connected": link.connected,
                "synced": link.synced,
                "events_received": link.events_received,
                "reconnects": link.reconnects,
            }
            for link in self.links
        ]
        if self.owners is not None:  # a standby's link is down by design
            for item in links:
                item["role"] = self.owners.role(str(item["server"]))
        # Connected is not enough: until its resync succeeds the daemon does not know the PBX.
        ok = all((item["connected"] and item["synced"]) or item.get("role") == "standby" for item in links)
        return {"status": "ok" if ok else "degraded", "links": links, "pending_writes": self.writer.pending}

    def _readiness(self) -> dict[str, Any]:
        """/readyz (web/health.py): the links as /healthz sees them, the database probe's last
        word, the bus; no query made here."""
        js = getattr(self, "jetstream", None)
        bus = None if js is None else {"connected": bool(js.connected), "pending": int(js.pending)}
        return readiness(self._health(), self.db_probe.state(), bus, self._stopping.is_set())

    def _write_ended(self, event: ev.Event) -> None:
        if isinstance(event, ev.CallEnded):
            self.writer.submit(event.record)

    async def _reconcile(self, link: AmiLink, tracking: LiveTracking) -> None:
        """Close, every reconcile_s, the calls whose channels Asterisk no longer has."""
        while True:
            await asyncio.sleep(self.settings.tracker.reconcile_s)
            if not link.synced:
                continue
            try:
                await tracking.reconcile(link)
            except (ActionError, ActionTimeout, LinkDown) as exc:
                log.info("reconcile skipped", server=link.server.name, error=str(exc))
            except Exception:
                log.exception("reconcile failed", server=link.server.name)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            for tracking in self.trackings:
                tracking.tick()

    def stop(self) -> None:
        self._stopping.set()

    async def release(self) -> None:
        """`start` failed half-way (the web port taken, the database refused): let go of what it
        opened, rather than leave tasks and database connections behind a process that exits."""
        try:
            await self.shutdown()
        except Exception as exc:  # parts never started: nothing more to say than the first error
            log.debug("clean-up after a failed start", error=repr(exc))
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if hasattr(self, "engine"):
                await self.engine.dispose()

    async def wait(self) -> None:
        await self._stopping.wait()

    async def _hand_over(self, stored_all: bool) -> None:
        """Everything seen is stored: the next start begins from here; with [ha], a standby
        takes the streams over now rather than when their leases lapse."""
        for recovery in self.recoveries:
            if stored_all:
                with suppress(Exception):
                    await recovery.save_mark()
        if self.owners is not None:
            await self.owners.release()

    async def shutdown(self) -> None:
        """Log off, let consumers take what was published, flush the writer, cancel the rest."""
        log.info("cti stopping")
        agi = getattr(self, "agi", None)
        if agi is not None:
            await agi.close()  # first: calls in the IVR get their lookup or go on without it
        if hasattr(self, "runner"):
            await self.hub.close()
            await self.runner.cleanup()
            await self.breaches.stop()
            await self.dialer.close()
            await self.screen_pops.close()
            await self.directory.close()
        for link in self.links:
            with suppress(Exception):
                await asyncio.wait_for(link.close(), SHUTDOWN_GRACE_S / 2)
        for recovery in self.recoveries:
            await recovery.close()  # a gap half stored is recovered again at the next start
        await self.bus.drain(SHUTDOWN_GRACE_S / 2)
        if hasattr(self, "stats"):
            await self.stats.close()  # after the drain: the last spans are written too
        for tracking in self.trackings:
            # Over, but still waiting for a late event (AgentComplete, OriginateResponse): stored
            # with what is known rather than lost.
            for event in tracking.tracker.flush():
                if isinstance(event, ev.CallEnded):
                    self.writer.submit(event.record)
            # Still going on in Asterisk: kept as "shutdown" so the next start takes them back.
            for record in tracking.tracker.open_calls():
                record.closed_by = "shutdown"
                self.writer.submit(record)
        leftover = await self.writer.close()
        await self._hand_over(stored_all=not leftover)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        jetstream = getattr(self, "jetstream", None)
        if jetstream is not None:
            await jetstream.close()  # what was published reaches the stream first
        await self.bus.close()
        await self.engine.dispose()
        log.info("cti stopped")


async def serve(settings: Settings) -> None:
    daemon = Daemon(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, daemon.stop)
    try:
        await daemon.start()
    except BaseException:
        await daemon.release()
        raise
    try:
        await daemon.wait()
    finally:
        await daemon.shutdown()


def run_daemon(settings: Settings) -> int:
    configure_logging(settings.log.level, settings.log.format, settings.secrets())
    asyncio.run(serve(settings))
    return 0


def _lease_token(owners: Any, server: str) -> int | None:
    """The token of this node's lease on `server`'s stream, None when it holds none."""
    lease = owners.leases.get(server)
    return None if lease is None else lease.token


def ivr_vocabulary(tracker: TrackerSettings) -> IvrVocabulary:
    return IvrVocabulary.from_lists(
        tracker.ivr_event, tracker.ivr_invalid_words, tracker.ivr_timeout_words, tracker.ivr_enter_words
    )


def _warm_phone_metadata() -> None:
    import phonenumbers

    phonenumbers.PhoneMetadata.load_all()


class AgentActionFailed(Exception):
    """An agent's AMI action that Asterisk refused (409) or that could not be sent (503): the
    web layer renders it as an error with this id, not as a 500."""

    def __init__(self, message: str, status: int, error_id: str) -> None:
        super().__init__(message)
        self.status, self.error_id, self.details = status, error_id, {"reason": message}


@contextmanager
def _answered_as(refused_id: str) -> Iterator[None]:
    try:
        yield
    except ActionError as exc:
        raise AgentActionFailed(exc.message, 409, refused_id) from None
    except (LinkDown, ActionTimeout) as exc:  # the relay's OwnerUnreachable says so by its id
        raise AgentActionFailed(str(exc), 503, getattr(exc, "error_id", "ami-unavailable")) from None


class AmiAgentLink:
    """Agent actions, each sent over the AMI link of the server the agent's phone is on
    (calls/pbxs.py: a phone no server knows, or several do, is a 409). What Asterisk refuses
    ("No such channel" for a hang-up with no call) is a 409 with an error id, a link that is
    down a 503."""

    def __init__(self, pbxs: PbxMap[RoutedLink], click_to_call_context: str = "cti-click-to-call") -> None:
        self.pbxs = pbxs
        self.context = click_to_call_context

    def link_for(self, phone: Phone, queue: str | None = None) -> RoutedLink:
        """The link to the server `phone` is on (for a queue login, or that has `queue`)."""
        return self.pbxs.for_phone(phone, queue).link

    def _link(self, action: str, phone: Phone, queue: str | None = None) -> RoutedLink:
        link = self.link_for(phone, queue)
        log.info("agent action", action=action, server=link.server.name, agent=",".join(phone.interfaces))
        return link

    async def queue_add(
        self, queue: str, interface: str, member_name: str, state_interface: str | None
    ) -> None:
        phone = Phone((interface,), (state_interface,) if state_interface else ())
        link = self._link("queue-add", phone, queue)
        with _answered_as("queue-refused"):
            await commands.queue_add(link, queue, interface, member_name, state_interface)

    async def queue_remove(self, queue: str, interface: str) -> None:
        link = self._link("queue-remove", Phone((interface,)), queue)
        with _answered_as("queue-refused"):
            await commands.queue_remove(link, queue, interface)

    async def pause(self, interface: str, paused: bool, reason: str | None) -> None:
        link = self._link("pause", Phone((interface,)))
        with _answered_as("pause-refused"):
            await commands.queue_pause(link, interface, paused, reason)

    async def click_to_call(
        self, device: str, number_e164: str, caller_id: str | None, interfaces: Sequence[str] = ()
    ) -> str:
        # The device alone is rarely known (no call yet): the agent's member interfaces say where.
        link = self._link("click-to-call", Phone(tuple(interfaces), (device,)))
        action_id = f"cti-click-{secrets.token_hex(6)}"
        with _answered_as("call-refused"):
            await commands.originate(
                link,
                device,
                self.context,
                variables={"CTI_DIAL": number_e164},
                caller_id=caller_id,
                action_id=action_id,
            )
        return action_id

    async def hangup(self, device: str, interfaces: Sequence[str] = ()) -> None:
        link = self._link("hangup", Phone(tuple(interfaces), (device,)))
        with _answered_as("no-live-call"):
            await commands.hangup_device(link, device)
