"""The dialer engine: picks eligible contacts, originates, follows each attempt to its outcome.

Crash safety rests on one order of operations: an attempt row (with the ActionID the Originate
will carry) is committed, and the contact marked `dialing`, *before* the Originate is sent. A
contact with an open attempt is never picked again, so a restart cannot dial it twice for the
same attempt; every Originate Asterisk ever received has its row, so no attempt is lost. After a
restart, open attempts are matched to the calls the tracker stored (by dialled number and time)
or to late OriginateResponse events (by ActionID); those that stay unexplained are closed as
`lost` (counted against the caps, retried by the policy) once their ring time is long past.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import Counter, OrderedDict
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, false, func, insert, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.ami import commands
from cti.ami.actions import ActionError, ActionTimeout, LinkDown
from cti.calls import events as ev
from cti.calls.channels import campaign_account
from cti.calls.records import CallRecord
from cti.db.engine import session_factory
from cti.db.models import Call, DialerAttempt, DialerCampaign, DialerContact, User
from cti.dialer import store
from cti.dialer.callbacks import CALLBACK_CAMPAIGN
from cti.dialer.campaigns import CampaignSpec
from cti.dialer.dispositions import outcome_counts, plan_after_disposition, plan_after_outcome
from cti.dialer.hours import Decision, History
from cti.dialer.ownership import CampaignLeases
from cti.dialer.pacing import Agents, PacingInput, pace
from cti.dialer.settings import DialerSettings
from cti.dialer.why import for_agent, history_since, hold_values, judge
from cti.values import utc

log = structlog.get_logger(__name__)

ACTION_PREFIX = "cti-dialer-"
# OriginateResponse Reason → attempt outcome (Asterisk's AST_CONTROL_* codes).
REASON_OUTCOME = {0: "failed", 1: "rejected", 2: "failed", 3: "no_answer", 5: "busy", 8: "congestion"}
ANSWERED = 4
SAMPLE = 200  # recent attempts the answer rate is measured on
CONNECTED_TIMEOUT = timedelta(hours=4)  # a connected call with no end seen: closed as lost
CLOSED_MEMORY = 2000
Clock = Callable[[], datetime]
KINDS = frozenset(
    {ev.OriginateResult, ev.DialerConnected, ev.CallAnswered, ev.CallEnded, ev.AgentStateChanged}
)


def _at(epoch: float) -> datetime:
    # An event's instant; one no datetime can hold (1e309 once raised OverflowError here and
    # lost the attempt's outcome) is taken as now.
    return utc(epoch) or datetime.now(UTC)


@dataclass
class OpenAttempt:
    id: int
    action_id: str
    contact_id: int
    campaign_id: int
    campaign: str
    phone: str
    state: str
    created_at: datetime
    agent: str | None = None
    linkedid: str | None = None
    answered_at: datetime | None = None
    connected_at: datetime | None = None
    connected_seen: datetime | None = None  # engine clock: the live 2 s watch
    agent_at: datetime | None = None
    # No agent ever took the call (decided when it ends): the callee was abandoned.
    abandoned: bool = False
    # No agent yet `abandon_after_s` after DialerConnected: a drop for the regulator's figure
    # (live, for pacing; stored rows show it as agent_at - connected_at).
    late: bool = False
    originate_reason: int | None = None
    phone_raw: str | None = None
    fields: dict[str, Any] | None = None  # the contact's CSV columns, for the agent's pop
    # A personal callback: (the agent's member interface, their username, their penalty in the
    # personal queue); None for a call any agent of the campaign's queue may take.
    personal: tuple[str, str, int] | None = None
    # Taken over from another run or daemon (engine clock): its call may have ended unseen.
    adopted_at: datetime | None = None


class AgentBoard:
    """Queue members as the tracker reports them (`AgentStateChanged`)."""

    def __init__(self) -> None:
        # Keyed by server too: two PBXs may each have a queue "outbound" and a PJSIP/1001.
        self.members: dict[tuple[str, str, str], ev.AgentStateChanged] = {}

    def update(self, event: ev.AgentStateChanged) -> None:
        key = (event.server, event.queue, event.interface)
        if event.logged_in:
            self.members[key] = event
        else:
            self.members.pop(key, None)

    def reset(self, members: Iterable[ev.AgentStateChanged]) -> None:
        self.members = {}
        for member in members:
            self.update(member)

    def agents(
        self, queue: str, group: Sequence[str] = (), server: str | None = None, taken: Iterable[str] = ()
    ) -> Agents:
        """The campaign's agents; on `server` only when given (its calls reach no other PBX's).
        `taken`: interfaces known to have just taken a call (their member status may lag)."""
        chosen = [
            m
            for (s, q, i), m in self.members.items()
            if (i in group if group else q == queue) and m.status != 5 and server in (None, s)
        ]
        interfaces = {m.interface for m in chosen}
        available = {m.interface for m in chosen if not m.paused}
        busy = {m.interface for m in chosen if m.in_call or (m.status not in (None, 0, 1))}
        return Agents(len(interfaces), len(available), len(available - busy - set(taken)))

    def away(self, interfaces: Sequence[str], server: str | None, skip_queue: str) -> tuple[str | None, str]:
        """(the interface, "") when one of these member interfaces is logged in to a queue
        (other than `skip_queue`: the personal one, where cti itself adds them), not paused and
        not in a call; else (None, why not)."""
        mine = [
            m
            for (s, q, i), m in self.members.items()
            if i in interfaces and q != skip_queue and server in (None, s) and m.status != 5
        ]
        if not mine:
            return None, "not logged in"
        ready = [m for m in mine if not m.paused]
        if not ready:
            return None, "paused"
        if any(m.in_call or m.status not in (None, 0, 1) for m in mine):
            return None, "in a call"
        return ready[0].interface, ""


@dataclass
class CampaignStatus:
    """What the engine last decided for a campaign: shown by the REST API and `why`."""

    dialing: bool = False
    reason: str = ""
    ratio: float = 0.0
    agents: Agents = field(default_factory=lambda: Agents(0, 0, 0))
    in_flight: int = 0
    at: datetime | None = None
    # (abandons + late connects) / put through over the campaign's window, as the pacing last
    # measured it; None before any callee was put through (read by the metrics, not in to_json).
    drop_rate: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "dialing": self.dialing,
            "reason": self.reason,
            "ratio": round(self.ratio, 3),
            "agents": {
                "logged_in": self.agents.logged_in,
                "available": self.agents.available,
                "free": self.agents.free,
            },
            "in_flight": self.in_flight,
            "at": None if self.at is None else self.at.isoformat(),
        }


class DialerEngine:
    def __init__(
        self,
        db: AsyncEngine,
        link: commands.ActionSender | None,
        settings: DialerSettings | None = None,
        clock: Clock = store.utcnow,
        server: str = "",
        links: Mapping[str, commands.ActionSender] | None = None,
    ) -> None:
        self.db = db
        self.link = link
        # Every configured server's link by name: a campaign with a `server` dials there; the
        # others on `link` (the first server). None or {}: one server, every campaign on it.
        self.links = dict(links or {})
        self._misrouted: set[tuple[str, str]] = set()  # (campaign, server) already logged
        self.settings = settings or DialerSettings()
        self.clock = clock
        self.server = server
        self.board = AgentBoard()
        self.open: dict[str, OpenAttempt] = {}
        self.by_contact: dict[int, OpenAttempt] = {}
        self.by_linkedid: dict[str, OpenAttempt] = {}
        self.closed: OrderedDict[str, int] = OrderedDict()  # action id -> attempt id
        self.status: dict[str, CampaignStatus] = {}
        self.specs: dict[int, CampaignSpec] = {}
        self._lock = asyncio.Lock()
        self._sending: set[asyncio.Task[None]] = set()
        # When each campaign last placed a call (a count of ticks that placed any): campaigns
        # calling for the same agents take turns, the one served longest ago paced first.
        self._served: dict[int, int] = {}
        self._serves = 0
        self._runner: asyncio.Task[None] | None = None
        self.originated = 0
        # Since start, for the metrics: attempts written per campaign, ended ones per outcome.
        self.attempts: Counter[str] = Counter()
        self.outcomes: Counter[tuple[str, str]] = Counter()
        # Where the current queue members come from (the trackers); None: only from the events.
        self.members: Callable[[], Iterable[ev.AgentStateChanged]] | None = None
        # Several daemons on one database (dialer/ownership.py): a campaign is paced by the one
        # holding its lease. None: this daemon paces every campaign (one daemon per database).
        self.leases: CampaignLeases | None = None
        # Whether this daemon may dial on a server now (it owns that server's AMI stream, so its
        # link is up and its tracker sees that floor); None: every configured server.
        self.may_dial: Callable[[str], bool] | None = None
        # The linkedids of the calls the trackers follow now; None: unknown (adopted attempts of
        # answered calls then wait for CONNECTED_TIMEOUT).
        self.live_calls: Callable[[], Container[str]] | None = None

    # ------------------------------------------------------------------------------ life cycle
    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="dialer")

    async def close(self) -> None:
        tasks = [t for t in (self._runner, *self._sending) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.leases is not None:
            await self.leases.release_all()

    async def _run(self) -> None:
        await self.recover()
        while True:
            try:
                await self.tick()
            except Exception:
                # A database hiccup must not stop the dialer for good; the next tick retries.
                log.exception("dialer tick failed")
            await asyncio.sleep(self.settings.tick_s)

    # ------------------------------------------------------------------------------ recovery
    async def recover(self) -> None:
        """Take back the attempts left open by the previous run (crash or restart). With leases,
        only those of the campaigns this daemon takes, as it takes them (`_adopt`, each tick):
        another daemon's attempts are its own to follow."""
        async with self._lock:
            if self.leases is None:
                await self._adopt(None)
            await self._release_orphans()

    async def _adopt(self, campaign_ids: set[int] | None) -> None:
        """The open attempts of these campaigns (None: of all) become ours to follow and close."""
        rows = [r for r in await self._open_rows(campaign_ids) if r._mapping["action_id"] not in self.open]
        adopted = []
        for row in rows:
            attempt = self._remember(row)
            attempt.adopted_at = self.clock()
            adopted.append(attempt)
        for attempt in adopted:
            call = await self._stored_call(attempt)
            if call is not None:
                await self._close_from_call(attempt, call)
        if rows:
            log.info("dialer recovered open attempts", open=len(rows), still_open=len(self.open))

    async def _open_rows(self, campaign_ids: set[int] | None = None) -> list[Any]:
        async with self.db.connect() as conn:
            query = (
                select(DialerAttempt, DialerCampaign.name)
                .join(DialerCampaign, DialerCampaign.id == DialerAttempt.campaign_id)
                .where(DialerAttempt.state.in_(store.OPEN_ATTEMPT))
            )
            if campaign_ids is not None:
                query = query.where(DialerAttempt.campaign_id.in_(sorted(campaign_ids)))
            return list((await conn.execute(query)).all())

    def _remember(self, row: Any) -> OpenAttempt:
        m = row._mapping
        attempt = OpenAttempt(
            id=m["id"],
            action_id=m["action_id"],
            contact_id=m["contact_id"],
            campaign_id=m["campaign_id"],
            campaign=m["name"],
            phone=m["phone_e164"],
            state=m["state"],
            created_at=m["created_at"],
            agent=m["agent"],
            linkedid=m["linkedid"],
            answered_at=m["answered_at"],
            connected_at=m["connected_at"],
            agent_at=m["agent_at"],
            abandoned=m["abandoned"],
            originate_reason=m["originate_reason"],
        )
        self._track(attempt)
        return attempt

    def _track(self, attempt: OpenAttempt) -> None:
        self.open[attempt.action_id] = attempt
        self.by_contact[attempt.contact_id] = attempt
        if attempt.linkedid:
            self.by_linkedid[attempt.linkedid] = attempt

    def _forget(self, attempt: OpenAttempt) -> None:
        self.open.pop(attempt.action_id, None)
        if self.by_contact.get(attempt.contact_id) is attempt:
            del self.by_contact[attempt.contact_id]
        if attempt.linkedid and self.by_linkedid.get(attempt.linkedid) is attempt:
            del self.by_linkedid[attempt.linkedid]
        self.closed[attempt.action_id] = attempt.id
        while len(self.closed) > CLOSED_MEMORY:
            self.closed.popitem(last=False)

    async def _stored_call(self, attempt: OpenAttempt) -> Any:
        """The finished call the tracker stored for this attempt, if any: the dialled number,
        started after the attempt was written (the calls table has no ActionID column)."""
        async with self.db.connect() as conn:
            query = (
                select(Call)
                .where(
                    Call.called.in_([attempt.phone, _national(attempt.phone)]),
                    Call.started_at >= attempt.created_at - timedelta(seconds=5),
                    Call.closed_by != "shutdown",
                )
                .order_by(Call.started_at)
                .limit(1)
            )
            return (await conn.execute(query)).first()

    async def _close_from_call(self, attempt: OpenAttempt, row: Any) -> None:
        call = row._mapping
        if call["answered_at"] is not None or call["agent"] is not None:
            attempt.agent_at = attempt.agent_at or call["answered_at"]
            outcome = "answered"
        elif call["contact"] is not None or attempt.connected_at is not None:
            attempt.abandoned = True
            outcome = "abandoned"
        else:
            outcome = REASON_OUTCOME.get(call["originate_reason"] or 0, "failed")
        await self._close(attempt, outcome, call["ended_at"] or self.clock(), call["hangup_cause"])

    async def _release_orphans(self) -> None:
        """A contact marked dialing without an open attempt cannot happen (both are written in
        one transaction); if a hand-edited database has one, it is put back in line."""
        async with self.db.begin() as conn:
            open_contacts = select(DialerAttempt.contact_id).where(
                DialerAttempt.state.in_(store.OPEN_ATTEMPT)
            )
            await conn.execute(
                update(DialerContact)
                .where(DialerContact.status == "dialing", DialerContact.id.not_in(open_contacts))
                .values(
                    status="retry", why_code="recovered", why_not_dialed="put back in line after a restart"
                )
            )

    # ------------------------------------------------------------------------------ the tick
    async def tick(self) -> None:
        now = self.clock()
        async with self._lock:
            if self.members is not None:
                self.board.reset(self.members())
            await self._expire(now)
            specs = await self._owned(await self._running())
        # Paced in id order, the first campaign of a floor took every free agent at every tick
        # and the others waited for it to run out of contacts (tests/test_dialer_floor_share.py).
        for spec in sorted(specs, key=lambda s: self._served.get(s.id, 0)):
            reserved = await self._dial_campaign(spec, now)
            if reserved:
                self._serves += 1
                self._served[spec.id] = self._serves
            for attempt, variables in reserved:
                task = asyncio.create_task(self._send(spec, attempt, variables), name="dialer-originate")
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)

    async def _running(self) -> list[CampaignSpec]:
        async with session_factory(self.db)() as session:
            rows = (
                await session.scalars(select(DialerCampaign).where(DialerCampaign.state == "running"))
            ).all()
        specs = []
        for row in rows:
            try:
                specs.append(store.spec_of(row))
            except ValueError as exc:
                self.status[row.name] = CampaignStatus(False, f"campaign definition unusable: {exc}")
        self.specs = {s.id: s for s in specs}
        return specs

    async def _owned(self, specs: list[CampaignSpec]) -> list[CampaignSpec]:
        """The running campaigns this daemon paces: all of them without leases; else those whose
        lease it holds (taken now if free: their open attempts adopted), among those it can dial
        (its link to their server up). Leases of the others are released: a campaign paused, or
        whose server's stream another daemon owns now, must not stay blocked here. Attempts of
        such a campaign still open here are followed all the same; if another daemon adopts
        them too, whichever closes one first closes it (`_close` is conditional)."""
        if self.leases is None:
            return specs
        unreachable = {s.id: why for s in specs if (why := self._not_dialable(s))}
        dialable = [s for s in specs if s.id not in unreachable]
        taken = await self.leases.claim({s.id for s in dialable})
        if taken:  # under the engine's lock (tick)
            await self._adopt(taken)
        owned = [s for s in dialable if self.leases.owns(s.id)]
        mine = {s.id for s in owned}
        for spec in specs:
            if spec.id not in mine:
                why = unreachable.get(spec.id, "paced by another daemon")
                self.status[spec.name] = CampaignStatus(False, why, at=self.clock())
        return owned

    def _not_dialable(self, spec: CampaignSpec) -> str:
        """Why this daemon cannot dial the campaign now ("" when it can)."""
        route = self._route(spec)
        if isinstance(route, str):
            return route
        if self.may_dial is not None and not self.may_dial(route[0]):
            return "its server's stream is another daemon's"
        return ""

    async def _dial_campaign(
        self, spec: CampaignSpec, now: datetime
    ) -> list[tuple[OpenAttempt, dict[str, str]]]:
        status = CampaignStatus(at=now)
        self.status[spec.name] = status
        closed = spec.open_at(now)
        if closed is not None:
            status.reason = closed
            return []
        route = self._route(spec)
        if isinstance(route, str):
            status.reason = route
            return []
        personal: list[tuple[OpenAttempt, dict[str, str]]] = []
        if spec.name == CALLBACK_CAMPAIGN:
            async with self._lock:
                personal = await self._reserve_personal(spec, now, route[0] if self.links else None)
        team = await self._dial_team(spec, now, route[0] if self.links else None)
        status.dialing = bool(personal or team)
        return personal + team

    async def _dial_team(
        self, spec: CampaignSpec, now: datetime, server: str | None
    ) -> list[tuple[OpenAttempt, dict[str, str]]]:
        status = self.status[spec.name]
        # The floor first: waiting for another daemon's decision must not hold up our events.
        async with self._floor(spec), self._lock:
            # Every call waiting for these agents, whichever campaign and daemon placed it; the
            # agents who took one already (Asterisk reports their member status a moment later).
            status.in_flight, taken = await self._floor_calls(spec)
            # Only the campaign's own PBX's agents: its calls reach no other PBX's queues.
            status.agents = self.board.agents(spec.queue, spec.agent_group, server, taken)
            attempts, answered, rate = await self._sample(spec, now)
            status.drop_rate = rate
            decision = pace(
                PacingInput(
                    spec.dial_mode,
                    status.agents,
                    status.in_flight,
                    attempts,
                    answered,
                    rate,
                    spec.abandon_limit,
                    spec.max_ratio,
                )
            )
            status.ratio, status.reason = decision.ratio, decision.reason
            wanted = min(decision.calls, self.settings.max_per_tick)
            if wanted <= 0:
                return []
            return await self._reserve(spec, now, wanted)

    def _floor(self, spec: CampaignSpec) -> contextlib.AbstractAsyncContextManager[None]:
        """Serialises the pacing of one floor (server and queue) across daemons (with leases)."""
        if self.leases is None:
            return contextlib.nullcontext()
        return self.leases.floor_lock(spec.server or self.server, spec.queue)

    async def _floor_calls(self, spec: CampaignSpec) -> tuple[int, set[str]]:
        """The open calls of the campaign's floor (its server and queue), from the database so that
        those of the other campaigns and daemons count too: how many wait for an agent, and the
        member interfaces of the agents who took one."""
        a, c = DialerAttempt, DialerCampaign
        server = spec.server or self.server or None
        query = (
            select(a.agent_at.is_(None), a.agent)
            .join(c, c.id == a.campaign_id)
            .where(
                a.state.in_(store.OPEN_ATTEMPT),
                c.queue == spec.queue,
                a.server.is_(None) if server is None else a.server == server,
            )
        )
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        waiting = sum(1 for no_agent, _ in rows if no_agent)
        return waiting, {agent for no_agent, agent in rows if not no_agent and agent}

    @property
    def servers(self) -> list[str]:
        """The servers a campaign may name ([] when the daemon has none)."""
        return list(self.links) or ([self.server] if self.server else [])

    def _route(self, spec: CampaignSpec) -> tuple[str, commands.ActionSender] | str:
        """The server a campaign dials on and its link: its own `server`, else the first
        configured; why not, when there is none (shown as the campaign's status, logged once)."""
        if not spec.server or (spec.server == self.server and not self.links):
            return "no Asterisk link" if self.link is None else (self.server, self.link)
        link = self.links.get(spec.server)
        if link is None:
            known = ", ".join(self.links) or self.server or "none"
            reason = f"server {spec.server!r} is not configured here (known: {known})"
            if (spec.name, spec.server) not in self._misrouted:
                self._misrouted.add((spec.name, spec.server))
                log.error(
                    "campaign on an unknown server", campaign=spec.name, server=spec.server, known=known
                )
            return reason
        return spec.server, link

    async def _sample(self, spec: CampaignSpec, now: datetime) -> tuple[int, int, float | None]:
        """Recent finished attempts and how many a person answered; the drop rate over the
        campaign's window: (abandoned + late connects) ÷ put through to the queue. Finished
        attempts are read from the database, open ones from memory (each counted once)."""
        a = DialerAttempt
        async with self.db.connect() as conn:
            recent = (
                select(a.connected_at)
                .where(a.campaign_id == spec.id, a.state == "ended")
                .order_by(a.id.desc())
                .limit(SAMPLE)
                .subquery()
            )
            attempts, answered = (
                await conn.execute(select(func.count(), func.count(recent.c.connected_at)))
            ).one()
            since = now - spec.abandon_window
            dropped = and_(
                a.state == "ended",
                or_(a.abandoned.is_(True), store.late_connect(self.settings.abandon_after_s)),
            )
            window = select(func.count(a.connected_at), func.count().filter(dropped)).where(
                a.campaign_id == spec.id, a.connected_at >= since
            )
            connected, ended_drops = (await conn.execute(window)).one()
        live = sum(1 for x in self.open.values() if x.campaign_id == spec.id and (x.abandoned or x.late))
        rate = None if connected == 0 else (ended_drops + live) / connected
        return int(attempts), int(answered), rate

    # ------------------------------------------------------------------------------ picking
    async def _reserve(
        self, spec: CampaignSpec, now: datetime, wanted: int
    ) -> list[tuple[OpenAttempt, dict[str, str]]]:
        out: list[tuple[OpenAttempt, dict[str, str]]] = []
        candidates = await self._due(spec, now, wanted * 3 + 5)
        if not candidates:
            self.status[spec.name].reason = "no contact is due now"
            return out
        async with self.db.connect() as conn:
            since = history_since(spec, now)
            history = await store.histories(conn, [c.phone_e164 for c in candidates], spec, since)
        for contact in candidates:
            if len(out) >= wanted:
                break
            decision = judge(spec, contact, now, history.get(contact.phone_e164))
            if decision is None or not decision.allowed:
                await self._hold(contact.id, decision)
                continue
            attempt = await self._write_attempt(spec, contact, now)
            if attempt is not None:
                out.append((attempt, self._variables(spec, attempt)))
        return out

    async def _due(self, spec: CampaignSpec, now: datetime, limit: int, personal: bool = False) -> list[Any]:
        """The contacts due now, callbacks first. In the centre's callback campaign a callback
        booked "for me" is the agent's own (`personal`) until `personal_grace_s` after its time,
        then the team's."""
        c = DialerContact
        mine = and_(
            c.status == "callback",
            c.callback_agent.is_not(None),
            c.next_attempt_at.is_not(None),
            c.next_attempt_at > now - timedelta(seconds=self.settings.personal_grace_s),
        )
        if spec.name != CALLBACK_CAMPAIGN:
            scope: Any = false() if personal else true()
        else:
            scope = mine if personal else ~mine
        async with self.db.connect() as conn:
            query = (
                select(
                    c.id,
                    c.phone_e164,
                    c.phone_raw,
                    c.fields,
                    c.timezone,
                    c.country,
                    c.subdivision,
                    c.consent,
                    c.status,
                    c.attempts,
                    c.callback_agent,
                    c.next_attempt_at,
                    c.why_not_dialed,
                )
                .where(
                    c.campaign_id == spec.id,
                    c.status.in_(store.ELIGIBLE),
                    (c.next_attempt_at.is_(None)) | (c.next_attempt_at <= now),
                    scope,
                )
                .order_by(
                    (c.status != "callback"),
                    c.priority.desc(),
                    c.next_attempt_at.is_not(None),
                    c.next_attempt_at,
                    c.id,
                )
                .limit(limit)
            )
            return [r for r in (await conn.execute(query)).all() if r.id not in self.by_contact]

    async def _reserve_personal(
        self, spec: CampaignSpec, now: datetime, server: str | None
    ) -> list[tuple[OpenAttempt, dict[str, str]]]:
        """Callbacks agents booked for themselves: each dialled only while its agent is free,
        into the personal queue where only that agent can take it. The calling-hours rules
        judge them as any contact; an agent away keeps theirs waiting, and says why."""
        out: list[tuple[OpenAttempt, dict[str, str]]] = []
        candidates = await self._due(spec, now, self.settings.max_per_tick * 3 + 5, personal=True)
        if not candidates:
            return out
        async with self.db.connect() as conn:
            since = history_since(spec, now)
            history = await store.histories(conn, [c.phone_e164 for c in candidates], spec, since)
            names = {c.callback_agent for c in candidates}
            users = {
                u.username: u
                for u in (
                    await conn.execute(
                        select(User.id, User.username, User.interfaces, User.active).where(
                            User.username.in_(names)
                        )
                    )
                ).all()
            }
        taken = {a.personal[0] for a in self.open.values() if a.personal is not None}
        grace = timedelta(seconds=self.settings.personal_grace_s)
        for contact in candidates:
            if len(out) >= self.settings.max_per_tick:
                break
            decision = judge(spec, contact, now, history.get(contact.phone_e164))
            if decision is None or not decision.allowed:
                await self._hold(contact.id, decision)
                continue
            user = users.get(contact.callback_agent)
            interfaces = list(user.interfaces or []) if user is not None and user.active else []
            interface, why = self.board.away(interfaces, server, self.settings.personal_queue)
            if interface in taken:
                interface, why = None, "in a call"
            if interface is None or user is None:
                team_at = contact.next_attempt_at + grace
                await self._wait_for_agent(contact, why, team_at)
                continue
            attempt = await self._write_attempt(spec, contact, now)
            if attempt is None:
                continue
            attempt.personal = (interface, user.username, int(user.id))
            taken.add(interface)
            variables = self._variables(spec, attempt)
            variables.update(self._personal_variables(attempt.personal))
            out.append((attempt, variables))
        return out

    def _personal_variables(self, personal: tuple[str, str, int]) -> dict[str, str]:
        # app_queue offers the call only to members whose penalty lies in [MIN, MAX]: the agent's.
        penalty = str(personal[2])
        return {
            "CTI_QUEUE": self.settings.personal_queue,
            "QUEUE_MIN_PENALTY": penalty,
            "QUEUE_MAX_PENALTY": penalty,
        }

    async def _wait_for_agent(self, contact: Any, why: str, team_at: datetime) -> None:
        text = (
            f"callback for {contact.callback_agent}: waiting for them ({why}); "
            f"offered to the team from {team_at.isoformat(timespec='minutes')}"
        )
        if contact.why_not_dialed == text:  # written by an earlier tick
            return
        async with self.db.begin() as conn:
            await conn.execute(
                update(DialerContact)
                .where(DialerContact.id == contact.id, DialerContact.status == "callback")
                .values(why_code="agent-away", why_not_dialed=text)
            )

    async def _hold(self, contact_id: int, decision: Decision | None) -> None:
        """Not now: store why, and from when it may be dialled (never: blocked)."""
        values = hold_values(decision)
        async with self.db.begin() as conn:
            await conn.execute(update(DialerContact).where(DialerContact.id == contact_id).values(**values))

    async def _write_attempt(self, spec: CampaignSpec, contact: Any, now: datetime) -> OpenAttempt | None:
        action_id = f"{ACTION_PREFIX}{spec.id}-{contact.id}-{secrets.token_hex(6)}"
        async with self.db.begin() as conn:
            marked = await conn.execute(
                update(DialerContact)
                .where(DialerContact.id == contact.id, DialerContact.status.in_(store.ELIGIBLE))
                .values(
                    status="dialing",
                    attempts=DialerContact.attempts + 1,
                    why_code=None,
                    why_not_dialed=None,
                    updated_at=now,
                )
            )
            if marked.rowcount != 1:
                return None
            result = await conn.execute(
                insert(DialerAttempt).values(
                    campaign_id=spec.id,
                    contact_id=contact.id,
                    phone_e164=contact.phone_e164,
                    action_id=action_id,
                    state="reserved",
                    mode=spec.dial_mode,
                    server=(spec.server or self.server) or None,
                    created_at=now,
                )
            )
            attempt_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        attempt = OpenAttempt(
            attempt_id, action_id, contact.id, spec.id, spec.name, contact.phone_e164, "reserved", now
        )
        attempt.phone_raw, attempt.fields = contact.phone_raw, dict(contact.fields or {})
        self._track(attempt)
        self.attempts[spec.name] += 1
        return attempt

    def _variables(self, spec: CampaignSpec, attempt: OpenAttempt) -> dict[str, str]:
        return {
            "CTI_CAMPAIGN": spec.name,
            "CTI_CONTACT": str(attempt.contact_id),
            "CTI_CALLEE": attempt.phone,
            "CTI_QUEUE": spec.queue,
            "CTI_AMD": "1" if spec.amd else "0",
        }

    # ------------------------------------------------------------------------------ sending
    async def _send(self, spec: CampaignSpec, attempt: OpenAttempt, variables: dict[str, str]) -> None:
        route = self._route(spec)
        if isinstance(route, str):  # the configuration cannot change under a running engine
            return
        server, link = route
        if attempt.personal is not None and not await self._join_personal(link, attempt.personal):
            # No personal queue on this PBX: the team's queue rather than a call nobody takes.
            attempt.personal = None
            variables = {**variables, "CTI_QUEUE": spec.queue}
            for name in ("QUEUE_MIN_PENALTY", "QUEUE_MAX_PENALTY"):
                variables.pop(name, None)
        channel = self.settings.dial_string.format(e164=attempt.phone, national=_national(attempt.phone))
        try:
            await link.send(
                "Originate",
                {
                    "Channel": channel,
                    "Context": self.settings.connect_context,
                    "Exten": "s",
                    "Priority": 1,
                    "Async": "true",
                    "Timeout": spec.ring_timeout_s * 1000,
                    "CallerID": spec.caller_id,
                    # Echoed by Asterisk in every event of the call (AccountCode, DestAccountCode):
                    # the tracker files the attempt under its campaign even when nobody answers.
                    "Account": campaign_account(spec.name),
                    "Variable": variables,
                    "ActionID": attempt.action_id,
                },
            )
        except ActionError as exc:
            # Asterisk refused the action: nothing left the PBX.
            log.warning(
                "originate refused",
                campaign=spec.name,
                server=server,
                contact=attempt.contact_id,
                error=str(exc),
            )
            async with self._lock:
                if attempt.action_id in self.open:
                    await self._close(attempt, "failed", self.clock(), None)
            return
        except (ActionTimeout, LinkDown) as exc:
            # Maybe sent, maybe not: left open, to be reconciled from the events or the deadline.
            log.warning(
                "originate unconfirmed",
                campaign=spec.name,
                server=server,
                contact=attempt.contact_id,
                error=str(exc),
            )
            return
        self.originated += 1
        async with self._lock:
            if attempt.state == "reserved":
                attempt.state = "sent"
            async with self.db.begin() as conn:
                await conn.execute(
                    update(DialerAttempt)
                    .where(DialerAttempt.id == attempt.id, DialerAttempt.state == "reserved")
                    .values(state="sent", sent_at=self.clock())
                )

    async def _join_personal(self, link: commands.ActionSender, personal: tuple[str, str, int]) -> bool:
        """The agent is a member of the personal queue with their own penalty (added once;
        Asterisk answers "Already there" afterwards)."""
        interface, username, penalty = personal
        queue = self.settings.personal_queue
        try:
            await commands.queue_add(link, queue, interface, username, None, penalty)
        except ActionError as exc:
            if "already" in str(exc).lower():
                return True
            log.warning("personal callback queue refused", queue=queue, interface=interface, error=str(exc))
            return False
        except (ActionTimeout, LinkDown):
            return False
        return True

    # ------------------------------------------------------------------------------ events
    async def on_event(self, event: ev.Event) -> None:
        async with self._lock:
            if isinstance(event, ev.AgentStateChanged):
                self.board.update(event)
            elif isinstance(event, ev.OriginateResult):
                await self._on_originate(event)
            elif isinstance(event, ev.DialerConnected):
                await self._on_connected(event)
            elif isinstance(event, ev.CallAnswered):
                await self._on_agent(event)
            elif isinstance(event, ev.CallEnded):
                await self._on_ended(event)

    async def _on_originate(self, event: ev.OriginateResult) -> None:
        attempt = self.open.get(event.action_id or "")
        if attempt is None:
            return
        attempt.originate_reason = event.reason
        if event.reason != ANSWERED:
            await self._close(attempt, REASON_OUTCOME.get(event.reason, "failed"), _at(event.at), None)
            return
        attempt.state, attempt.answered_at = "answered", _at(event.at)
        self._link_call(attempt, event.linkedid)
        # The linkedid too: a daemon that adopts the attempt follows its call by it.
        await self._update(
            attempt,
            state="answered",
            answered_at=attempt.answered_at,
            originate_reason=ANSWERED,
            linkedid=event.linkedid or None,
        )

    def _link_call(self, attempt: OpenAttempt, linkedid: str) -> None:
        if attempt.linkedid != linkedid:
            attempt.linkedid = linkedid
            self.by_linkedid[linkedid] = attempt

    async def _on_connected(self, event: ev.DialerConnected) -> None:
        attempt = self._by_ids(event.campaign, event.contact) or self.by_linkedid.get(event.linkedid)
        if attempt is None or attempt.connected_at is not None:
            return
        attempt.state, attempt.connected_at = "connected", _at(event.at)
        attempt.connected_seen = self.clock()
        self._link_call(attempt, event.linkedid)
        await self._update(
            attempt, state="connected", connected_at=attempt.connected_at, linkedid=event.linkedid
        )

    def _by_ids(self, campaign: str | None, contact: str | None) -> OpenAttempt | None:
        if contact is None or not contact.isdigit():
            return None
        attempt = self.by_contact.get(int(contact))
        return attempt if attempt is not None and attempt.campaign == campaign else None

    async def _on_agent(self, event: ev.CallAnswered) -> None:
        attempt = self.by_linkedid.get(event.linkedid)
        if attempt is None or attempt.agent_at is not None:
            return
        # The member interface: what a desktop user's `interfaces` hold (dispositions check it).
        attempt.agent_at, attempt.agent = _at(event.at), event.interface
        waited = (attempt.agent_at - attempt.connected_at).total_seconds() if attempt.connected_at else 0.0
        # An agent after the 2 s is a late connect, not an abandon: the callee talked to someone
        # (no abandon redial lock, the normal outcome), and the drop rate counts it all the same.
        attempt.late = attempt.late or waited > self.settings.abandon_after_s
        await self._update(attempt, agent_at=attempt.agent_at, agent=attempt.agent)

    async def _on_ended(self, event: ev.CallEnded) -> None:
        record = event.record
        attempt = (
            self.open.get(record.originate_action_id or "")
            or self.by_linkedid.get(record.linkedid)
            or self._by_ids(record.campaign, record.contact)
            or self._by_number(record)
        )
        if attempt is None:
            await self._late_cause(record.originate_action_id, record.hangup_cause, record.linkedid)
            return
        self._link_call(attempt, record.linkedid)
        if attempt.agent_at is not None:
            outcome = "answered"
        elif attempt.connected_at is not None:
            attempt.abandoned, outcome = True, "abandoned"
        elif attempt.answered_at is not None:
            outcome = "machine" if self._amd(attempt) else "rejected"
        else:
            outcome = REASON_OUTCOME.get(record.originate_reason or 0, "failed")
        await self._close(attempt, outcome, _at(record.ended_at or event.at), record.hangup_cause)

    def _by_number(self, record: CallRecord) -> OpenAttempt | None:
        """A call adopted after a restart carries no ActionID: the open attempt to the number it
        dialled, placed before the call started."""
        if record.direction != "outbound" or not record.called:
            return None
        started = _at(record.started_at) + timedelta(seconds=5)
        for attempt in self.open.values():
            if record.called in (attempt.phone, _national(attempt.phone)) and attempt.created_at <= started:
                return attempt
        return None

    def _amd(self, attempt: OpenAttempt) -> bool:
        spec = self.specs.get(attempt.campaign_id)
        return spec is not None and spec.amd

    async def _late_cause(self, action_id: str | None, cause: int | None, linkedid: str) -> None:
        """The call of an attempt already closed by its OriginateResponse ended: keep its cause."""
        attempt_id = self.closed.get(action_id or "")
        if attempt_id is None:
            return
        async with self.db.begin() as conn:
            await conn.execute(
                update(DialerAttempt)
                .where(DialerAttempt.id == attempt_id)
                .values(hangup_cause=cause, linkedid=linkedid)
            )

    # ------------------------------------------------------------------------------ watches
    async def _expire(self, now: datetime) -> None:
        """Mark live drops (no agent 2 s after the callee was put through: the pacing slows down
        at once) and close attempts whose answer will never come. Whether the drop is an
        abandon or a late connect is known when the call ends."""
        live = self.live_calls() if self.live_calls is not None else None
        for attempt in list(self.open.values()):
            if live is not None and self._ended_unseen(attempt, now, live):
                log.warning(
                    "adopted dialer attempt closed as lost: its call is over", action_id=attempt.action_id
                )
                await self._close(attempt, "lost", now, None)
                continue
            if (
                attempt.connected_seen is not None
                and attempt.agent_at is None
                and (now - attempt.connected_seen).total_seconds() > self.settings.abandon_after_s
            ):
                attempt.late = True
            if now >= self._deadline(attempt):
                log.warning("dialer attempt closed as lost", action_id=attempt.action_id, state=attempt.state)
                await self._close(attempt, "lost", now, None)

    def _ended_unseen(self, attempt: OpenAttempt, now: datetime, live: Container[str]) -> bool:
        """An adopted attempt whose callee answered, whose call no tracker follows any more
        `reconcile_after_s` after the adoption (time for the resync and the gap recovery to
        report it): it ended while nobody was watching (a daemon killed, its stream not yet
        taken over), and no event will ever close it."""
        if attempt.adopted_at is None or attempt.state not in ("answered", "connected"):
            return False
        waited = (now - attempt.adopted_at).total_seconds()
        return waited > self.settings.reconcile_after_s and (attempt.linkedid or "") not in live

    def _deadline(self, attempt: OpenAttempt) -> datetime:
        if attempt.state in ("answered", "connected"):
            return (attempt.connected_at or attempt.answered_at or attempt.created_at) + CONNECTED_TIMEOUT
        spec = self.specs.get(attempt.campaign_id)
        ring = spec.ring_timeout_s if spec is not None else 60
        return attempt.created_at + timedelta(seconds=ring + self.settings.reconcile_after_s)

    # ------------------------------------------------------------------------------ writing
    async def _update(self, attempt: OpenAttempt, **values: Any) -> None:
        async with self.db.begin() as conn:
            await conn.execute(update(DialerAttempt).where(DialerAttempt.id == attempt.id).values(**values))

    async def _close(self, attempt: OpenAttempt, outcome: str, at: datetime, cause: int | None) -> None:
        """End the attempt and plan the contact's future (retry, done, the agent's disposition)."""
        self._forget(attempt)
        async with self.db.begin() as conn:
            ended = await conn.execute(
                update(DialerAttempt)
                .where(DialerAttempt.id == attempt.id, DialerAttempt.state.in_(store.OPEN_ATTEMPT))
                .values(
                    state="ended",
                    ended_at=at,
                    outcome=outcome,
                    hangup_cause=cause,
                    abandoned=attempt.abandoned,
                    originate_reason=attempt.originate_reason,
                    linkedid=attempt.linkedid,
                    agent=attempt.agent,
                )
            )
            if ended.rowcount != 1:
                # Closed already, by the daemon that took the campaign over: its plan stands.
                log.info("dialer attempt closed elsewhere", action_id=attempt.action_id, outcome=outcome)
                return
            self.outcomes[attempt.campaign, outcome] += 1
            row = (
                await conn.execute(
                    select(
                        DialerAttempt.disposition, DialerAttempt.disposition_by, DialerAttempt.callback_at
                    ).where(DialerAttempt.id == attempt.id)
                )
            ).one()
            attempts, same = await outcome_counts(conn, attempt.contact_id, outcome)
            spec = self.specs.get(attempt.campaign_id) or await self._spec(attempt.campaign)
            now = self.clock()
            if row.disposition is not None:
                plan = plan_after_disposition(
                    row.disposition,
                    agent=row.disposition_by or "",
                    callback_at=row.callback_at,
                    attempts=attempts,
                    same_outcome=same,
                    spec=spec,
                    now=now,
                )
            else:
                plan = plan_after_outcome(outcome, attempts=attempts, same_outcome=same, spec=spec, now=now)
            values = plan.values()
            if attempt.personal is not None and plan.status == "retry":
                # A personal callback not reached (busy, no answer) stays the agent's at its retry.
                values.update(status="callback", callback_agent=attempt.personal[1])
            await conn.execute(
                update(DialerContact)
                .where(DialerContact.id == attempt.contact_id)
                .values(updated_at=now, **values)
            )

    async def _spec(self, name: str) -> CampaignSpec:
        return store.spec_of(await store.get_campaign(self.db, name))

    # ------------------------------------------------------------------------------ preview
    async def preview_next(self, campaign: str, agent: str) -> dict[str, Any] | None:
        """Show an agent the next contact of a preview campaign, reserved for them."""
        spec = await self._spec(campaign)
        now = self.clock()
        async with self._lock:
            for contact in await self._due(spec, now, 20):
                async with self.db.connect() as conn:
                    history = await store.histories(
                        conn, [contact.phone_e164], spec, history_since(spec, now)
                    )
                reserved = for_agent(history.get(contact.phone_e164, History()))
                decision = judge(spec, contact, now, reserved)
                if decision is None or not decision.allowed:
                    await self._hold(contact.id, decision)
                    continue
                async with self.db.begin() as conn:
                    marked = await conn.execute(
                        update(DialerContact)
                        .where(DialerContact.id == contact.id, DialerContact.status.in_(store.ELIGIBLE))
                        .values(
                            status="preview",
                            callback_agent=agent,
                            why_code="preview",
                            why_not_dialed=f"shown to {agent}",
                        )
                    )
                if marked.rowcount == 1:
                    return await self.contact_json(contact.id)
        return None

    async def preview_dial(self, contact_id: int, agent: str, interface: str | None) -> str:
        """Dial the contact an agent was shown; the agent is reserved, so it cannot be abandoned."""
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(DialerContact, DialerCampaign.name)
                    .join(DialerCampaign, DialerCampaign.id == DialerContact.campaign_id)
                    .where(DialerContact.id == contact_id)
                )
            ).first()
        if row is None or row.status != "preview" or row.callback_agent != agent:
            from cti.dialer.campaigns import CampaignError

            raise CampaignError("this contact is not reserved for you", "not-reserved", 409)
        spec = await self._spec(row.name)
        now = self.clock()
        async with self._lock:
            async with self.db.begin() as conn:
                await conn.execute(
                    update(DialerContact).where(DialerContact.id == contact_id).values(status="pending")
                )
            attempt = await self._write_attempt(spec, row, now)
        if attempt is None:
            from cti.dialer.campaigns import CampaignError

            raise CampaignError("the contact could not be reserved", "not-reserved", 409)
        attempt.agent = agent
        await self._update(attempt, agent=agent, mode="preview")
        variables = self._variables(spec, attempt)
        if interface:
            variables["CTI_AGENT"] = interface
        await self._send(spec, attempt, variables)
        return attempt.action_id

    async def preview_skip(self, contact_id: int, agent: str) -> None:
        async with self.db.begin() as conn:
            await conn.execute(
                update(DialerContact)
                .where(
                    DialerContact.id == contact_id,
                    DialerContact.status == "preview",
                    DialerContact.callback_agent == agent,
                )
                .values(
                    status="pending",
                    callback_agent=None,
                    why_code="skipped",
                    why_not_dialed=f"skipped by {agent}",
                )
            )

    async def contact_json(self, contact_id: int) -> dict[str, Any] | None:
        async with session_factory(self.db)() as session:
            contact = await session.get(DialerContact, contact_id)
            if contact is None:
                return None
            return {
                "id": contact.id,
                "campaign_id": contact.campaign_id,
                "phone": contact.phone_e164,
                "phone_raw": contact.phone_raw,
                "fields": contact.fields,
                "status": contact.status,
                "attempts": contact.attempts,
                "why_code": contact.why_code,
                "why_not_dialed": contact.why_not_dialed,
                "next_attempt_at": None
                if contact.next_attempt_at is None
                else contact.next_attempt_at.isoformat(),
                "result": contact.result,
            }

    def contact_for_pop(self, campaign: str | None, contact: str | None) -> dict[str, Any] | None:
        """The contact a campaign call is with, as the agent's pop shows it (from memory: the
        pop must not wait on the database). None when the call is not one of our attempts."""
        if contact is None or not contact.isdigit():
            return None
        attempt = self.by_contact.get(int(contact))
        if attempt is None or attempt.campaign != campaign:
            return None
        return {
            "id": attempt.contact_id,
            "campaign": attempt.campaign,
            "phone": attempt.phone,
            "phone_raw": attempt.phone_raw,
            "fields": dict(attempt.fields or {}),
        }

    def log_action(self, user: str, campaign: str, action: str) -> None:
        log.info("campaign state changed", user=user, campaign=campaign, action=action)

    def health(self) -> dict[str, Any]:
        return {
            "open_attempts": len(self.open),
            "originated": self.originated,
            "campaigns": {name: status.to_json() for name, status in self.status.items()},
        }

    async def wait_sent(self) -> None:
        """Tests: wait for the Originates in flight to be acknowledged."""
        with contextlib.suppress(Exception):
            await asyncio.gather(*list(self._sending), return_exceptions=True)


def _national(e164: str) -> str:
    from cti.directory.numbers import national_digits

    return national_digits(e164)
