"""Recovery after a gap: no call goes unrecorded while the daemon is down or cut off.

After every (re)connect of a server's AMI link, once the resync is done, the daemon reads from
Asterisk's own records in PostgreSQL (CEL and queue_log, calls/cel_source.py) every call whose
last channel went since the daemon last saw that server, and that neither the tracker nor the
database knows: calls that began and ended in the gap, and calls in progress at a `kill -9` that
ended before the restart. Each is rebuilt (calls/gap.py), settled by a tracker as any call
(`closed_by: "cel"`), stored, then published like any ended call (statistics, the dialer's
attempts). Calls the daemon knew are closed by the resync as before, with the queue_log rows of
the gap (`queue_log()`, when no queue_log file is configured).

- **Where the gap starts.** Before a reconnect: the time of the last event seen before the link
  dropped. After a restart: the mark stored in `recovery_marks`, which `keep_marks()` advances
  every few seconds to the last event seen while the call writer has no backlog and no failure.
  Minus `MARGIN_S`, for calls ended just before that were not yet written (late AgentComplete,
  an OriginateResponse's grace, the writer's interval). The first run of a server has no mark:
  nothing before it is the daemon's.
- **Bounded.** At most `max_gap_s` before Asterisk's latest record (a longer outage is logged,
  its beginning left out); read in chunks of `CHUNK` calls, off the event loop, and published
  with a turn of the loop between chunks.
- **Once.** A call is recorded only if neither the tracker nor the `calls` table (unique on
  server and Linkedid) has it, and each chunk is stored before it is published; the mark does
  not move past the gap until the whole gap is stored. A restart in the middle of a recovery
  finds the stored part in the database and recovers the rest.
- **Retried.** A PostgreSQL that does not answer is retried with back-off; the live calls go on
  meanwhile, and the gap stays pending (the mark does not move).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog

from cti.ami.message import Message
from cti.calls import events as ev
from cti.calls.cel_source import CHUNK, AsteriskRecords
from cti.calls.channels import dialed_number
from cti.calls.gap import RebuildRules, RecoveredCall
from cti.calls.queue_log import QueueLogEntry
from cti.calls.records import CallRecord
from cti.calls.tracker import CallTracker
from cti.db.leases import LeaseLost
from cti.db.recovery_store import RecoveryStore

log = structlog.get_logger(__name__)

MARGIN_S = 120.0
MARK_EVERY_S = 5.0
# Until a mark is stored (a first run, or a node that just took the stream over), much sooner:
# a daemon that died before its first mark left the next one nothing to recover from (seen in
# tests/test_scaleout_acceptance.py, an owner that lost its lease 11 s after taking it).
FIRST_MARK_EVERY_S = 0.5
MARK_READ_S = 5.0
RETRY_FIRST_S = 1.0
RETRY_CAP_S = 60.0
PUBLISH_SLICE = 50  # calls published per turn of the event loop
# How long a held call's end may take to show in Asterisk's records (cel_pgsql writes after the
# AMI event; milliseconds normally, more on a loaded PBX or database), and how often to look.
RECORDS_LAG_S = 3.0
RECORDS_RECHECK_S = 0.25

Save = Callable[[Sequence[CallRecord]], Awaitable[None]]


class GapRecovery:
    """The recovery of one Asterisk server (one tracker, one database of Asterisk's records)."""

    def __init__(
        self,
        tracker: CallTracker,
        publish: Callable[[ev.Event], None],
        source: AsteriskRecords,
        store: RecoveryStore,
        save: Save,
        rules: RebuildRules,
        *,
        max_gap_s: float = 86_400.0,
        margin_s: float = MARGIN_S,
        settled: Callable[[], bool] = lambda: True,
        records_lag_s: float = RECORDS_LAG_S,
    ) -> None:
        self.tracker = tracker
        self.publish = publish
        self.source = source
        self.store = store
        self.save = save
        self.rules = rules
        self.max_gap_s = max_gap_s
        self.margin_s = margin_s
        self.settled = settled
        self.records_lag_s = records_lag_s
        self.server = tracker.server
        self.log = log.bind(server=self.server)
        # The last event time when the link dropped (in memory: a reconnect, not a restart).
        self.seen_until: float | None = None
        # The gap still to recover starts here (the mark it was measured from): the stored mark
        # must not move past it until the gap's calls are stored.
        self.floor: float | None = None
        self.recovered = 0
        self.passes = 0
        self.failures = 0
        self._saved_mark: float | None = None
        self._recorded: list[CallRecord] = []  # this pass's calls, for the orphan responses
        # Until the first connect says whether there is a gap (`begin`), a call first met by
        # an event after the login is held: the events flow from the login on, before the
        # stored mark is read; one met at its very end was closed from that instant alone
        # (started at its hangup, no IVR, an abandon taken for a timeout: tests/test_gap_kill.py)
        # and, known to the tracker, never recovered from the records.
        self.tracker.hold_adopted = True
        self._beginning = False  # a (re)connect is reading the stored mark: do not write it
        self._task: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ the link's life
    def link_lost(self) -> None:
        at = self.tracker.last_event_at
        if at > 0:
            self.seen_until = max(self.seen_until or 0.0, at)
        self.tracker.hold_adopted = True  # the next connect has a gap: held from its login on
        self.tracker.gap_began()  # their steps meanwhile are for the records to tell

    async def begin(self) -> float | None:
        """A (re)connect: where the gap starts (None: the first run, no gap to speak of)."""
        mark = self.seen_until
        self._beginning = True
        try:
            if mark is None:
                async with asyncio.timeout(MARK_READ_S):  # the resync waits for it
                    mark = await self.store.mark(self.server)
        except Exception as exc:  # our own database away: the resync must go on
            self.log.warning("recovery mark unreadable", error=_describe(exc))
        finally:
            self._beginning = False
        if mark is not None:
            self.floor = mark if self.floor is None else min(self.floor, mark)
        # Calls adopted from the login on and ended before the pass is done are settled from
        # Asterisk's records, which saw them whole (CallTracker.hold_adopted). No gap (a first
        # run): those held since the login are closed as seen.
        if self.floor is None:
            self._release_held([])
        self.tracker.hold_adopted = self.floor is not None
        return self.floor

    async def queue_log(self, open_since: float | None) -> list[QueueLogEntry]:
        """queue_log rows for the calls the tracker knew (restored or open when the link
        dropped), from the oldest of them, for the resync to close them with."""
        if open_since is None:
            return []
        since = max(open_since, (self.floor or open_since) - self.max_gap_s) - 1.0
        try:
            return await self.source.queue_log_since(since)
        except Exception as exc:
            self.log.warning(
                "queue_log unreadable in PostgreSQL, outcomes of known calls stay unknown",
                url=self.source.display_url,
                error=_describe(exc),
            )
            return []

    def start(self) -> None:
        """After the resync: recover the gap in the background (retried until it succeeds)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"recovery:{self.server}")

    async def close(self) -> None:
        tasks = [t for t in (self._task, self._keeper) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._release_held(self._recorded)  # stopping: recorded as seen rather than not at all

    async def stand_down(self) -> None:
        """This daemon no longer owns the server's stream (calls/ownership.py): the pass in
        progress is dropped, with what it held (the new owner recovers the gap from the stored
        mark), and nothing of this run is kept for a later takeover, which starts from the
        database as a restart does."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.seen_until = self.floor = self._saved_mark = None
        self._recorded = []
        # A later takeover starts as a restart does: held from its login until its `begin`.
        self.tracker.hold_adopted = True

    # ------------------------------------------------------------------ one pass over the gap
    async def _run(self) -> None:
        delay = RETRY_FIRST_S
        while True:
            try:
                await self.recover()
                return
            except asyncio.CancelledError:
                raise
            except LeaseLost as exc:
                # Another daemon owns the stream now (calls/ownership.py): the gap is its own.
                self.log.warning("gap recovery dropped: another daemon owns the stream now", error=str(exc))
                return
            except Exception as exc:
                self.failures += 1
                self._release_held(self._recorded)  # not kept waiting on a database that may stay away
                self.log.warning(
                    "calls of the gap not recovered yet, retrying",
                    url=self.source.display_url,
                    error=_describe(exc),
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_CAP_S)

    async def recover(self) -> int:
        """Record every call of the gap nobody knows; returns how many."""
        floor = self.floor
        if floor is None:
            return 0
        self._recorded = []
        latest = await self._latest_caught_up()
        since = floor - self.margin_s
        if latest is not None and since < latest - self.max_gap_s:
            self.log.warning(
                "outage longer than [recovery] max_gap_s: its first calls are not recovered",
                gap_s=round(latest - since),
                max_gap_s=self.max_gap_s,
            )
            since = latest - self.max_gap_s
        adopted = self.tracker.incomplete()
        candidates = [lid for lid in await self.source.ended_since(since) if not self.tracker.knows(lid)]
        stored = await self.store.recorded(self.server, candidates) if candidates else set()
        missing = [lid for lid in candidates if lid not in stored]
        count = 0
        for start in range(0, len(missing), CHUNK):
            chunk = missing[start : start + CHUNK]
            calls = await self.source.rebuilt(chunk, since - self.max_gap_s, self.rules)
            count += await self._record(calls)
        completed = await self._complete_adopted(adopted, since - self.max_gap_s)
        settled = await self._settle_held(since - self.max_gap_s)
        self.passes += 1
        self.recovered += count
        if self.floor == floor:
            self.floor = None  # the gap is stored: the mark may move on
        self.log.info(
            "gap recovered from Asterisk's CEL and queue_log",
            calls=count,
            ended_since=since,
            candidates=len(candidates),
            already_stored=len(stored),
            adopted_completed=completed,
            adopted_ended=settled,
        )
        return count

    async def _until_recorded(self, read: Callable[[], Awaitable[bool]]) -> bool:
        """Call `read` (a look at Asterisk's records, True once they show what it waits for)
        until it is satisfied, again every RECORDS_RECHECK_S for up to `records_lag_s`:
        cel_pgsql writes a moment after the AMI events (milliseconds normally, more on a loaded
        PBX or database). False when the records did not catch up in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.records_lag_s
        while not await read():
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(RECORDS_RECHECK_S)
        return True

    async def _latest_caught_up(self) -> float | None:
        """Asterisk's latest record, once the records have caught up with the last event seen
        live. A call whose last events went just before the link came back may not show over
        in them yet: read too soon, it was left out of the pass, and its failed Originate's
        response (which names no channel) recorded as an attempt of its own, while a later pass
        recorded the call from CEL: one attempt stored twice (tests/test_ha_takeover.py,
        `originate-sim-originate-23`)."""
        latest = await self.source.latest()
        # Taken after that first read: the events that came in during it count too (the pass
        # then waits for their records as well, and the calls they made are its to complete).
        seen = self.tracker.last_event_at
        again = False

        async def read() -> bool:
            nonlocal latest, again
            if again:
                latest = await self.source.latest()
            again = True
            return latest is not None and latest >= seen

        await self._until_recorded(read)
        return latest

    async def _complete_adopted(self, linkedids: Sequence[str], not_before: float) -> int:
        """The calls in progress when the daemon came back that it cannot tell whole: adopted
        ones get their beginning (before the restart or the cut) from CEL, an Originate followed
        live its answer if its response went during the cut; the rest is followed live.

        A call that began just before the link came back may have no CEL row yet: those are
        read again (`_until_recorded`). Without its beginning, an SVI call adopted after its
        IVR steps would be taken for the Originate its first channel (a Local `;1`) looks like
        (seen in tests/test_ha_takeover.py, a call that began during the handover between two
        nodes)."""
        done = 0
        pending = list(linkedids)

        async def read() -> bool:
            nonlocal done, pending
            found: set[str] = set()
            for start in range(0, len(pending), CHUNK):
                chunk = pending[start : start + CHUNK]
                for call in await self.source.rebuilt(chunk, not_before, self.rules, finished=False):
                    found.add(call.record.linkedid)
                    done += self.tracker.complete_adopted(
                        call.record,
                        originated=call.originated,
                        originate_answered_at=call.originate_answered_at,
                        dialplan_uids=call.dialplan_uids,
                    )
            pending = [lid for lid in pending if lid not in found and self.tracker.follows(lid)]
            return not pending

        if not await self._until_recorded(read):
            self.log.warning(
                "calls in progress not in Asterisk's records, followed as seen", calls=pending[:20]
            )
        return done

    async def _settle_held(self, not_before: float) -> int:
        """The calls the tracker held (adopted ones that ended during the pass, those the resync
        found over: in progress at the last stop or when the link dropped), recorded from
        Asterisk's records: their beginning, their end and queue facts from before the cut are
        there. Returns how many came from the records.

        A call that ended as the pass began may not show over in the records yet: those are
        read again (`_until_recorded`); the rest are closed as seen, with the beginning the
        records do hold (its IVR steps, start, direction, Originate: without it an SVI call was
        stored `no_queue`, or an answered Originate, seen in tests/test_gap_kill.py)."""
        self.tracker.hold_adopted = False
        done = 0

        async def read() -> bool:
            nonlocal done
            pending = self.tracker.held()
            for start in range(0, len(pending), CHUNK):
                chunk = pending[start : start + CHUNK]
                calls = await self.source.rebuilt(chunk, not_before, self.rules)
                for call in calls:
                    _keep_known(call.record, self.tracker.held_record(call.record.linkedid))
                done += await self._record(calls, held=True)
                for call in calls:  # stored: no longer the tracker's to close
                    self.tracker.forget_held(call.record.linkedid)
            return not self.tracker.held()

        if not await self._until_recorded(read):
            pending = self.tracker.held()
            self.log.info("calls closed as seen: their records do not show them over", calls=len(pending))
            await self._complete_adopted(pending, not_before)
        self._release_held(self._recorded)
        return done

    def _release_held(self, recorded: Sequence[CallRecord]) -> None:
        """Close what the tracker still holds as seen; its orphan OriginateResponses are dropped
        when a call recorded from Asterisk's records is theirs, else recorded as attempts."""
        self.tracker.hold_adopted = False
        for linkedid in self.tracker.held():
            for event in self.tracker.settle_held(linkedid):
                self.publish(event)
        grace = self.tracker.originate_grace_s
        for at, msg in self.tracker.orphans():
            if any(_explains(record, at, msg, grace) for record in recorded):
                continue  # that call is recorded, its outcome from its own records
            for event in self.tracker.settle_orphan(at, msg):
                self.publish(event)

    async def _record(self, calls: Sequence[RecoveredCall], held: bool = False) -> int:
        # A tracker of its own settles them: the live one is left alone (its calls are live).
        scratch = CallTracker(
            self.server,
            self.rules.region,
            internal_contexts=self.rules.internal_contexts,
            ivr=self.rules.ivr,
        )
        published: list[ev.Event] = []
        records: list[CallRecord] = []
        for call in calls:
            if not held and self.tracker.knows(call.record.linkedid):
                continue  # seen live meanwhile (it started after the resync)
            events = scratch.close_recovered(
                call.record,
                call.queue_log,
                originated=call.originated,
                originate_answered_at=call.originate_answered_at,
                hangup=call.hangup,
            )
            records.append(call.record)
            published.extend(e for e in events if isinstance(e, ev.CallEnded))
        if not records:
            return 0
        await self.save(records)  # stored before anything else hears of them
        self._recorded.extend(records)
        for n, event in enumerate(published, start=1):
            self.publish(event)
            if n % PUBLISH_SLICE == 0:
                await asyncio.sleep(0)
        return len(records)

    # ------------------------------------------------------------------ the mark
    def keep_marks(self) -> None:
        """Start advancing the stored mark (every MARK_EVERY_S; until one is stored, every
        FIRST_MARK_EVERY_S)."""
        self._keeper = asyncio.get_running_loop().create_task(
            self._keep(), name=f"recovery-mark:{self.server}"
        )

    async def _keep(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(MARK_EVERY_S if self._saved_mark is not None else FIRST_MARK_EVERY_S)
            try:
                await self.save_mark()
            except Exception as exc:
                # Our own database away: the mark stays behind (a restart recovers more, and
                # finds the extra calls stored). Said once at WARNING, then at DEBUG.
                report = self.log.debug if failing else self.log.warning
                report("recovery mark not stored", error=_describe(exc))
                failing = True
            else:
                failing = False

    async def save_mark(self) -> bool:
        """Store the last event time as the mark, unless a gap is still to be recovered or the
        call writer has a backlog (what it holds would be lost by a kill). True when stored."""
        at = self.tracker.last_event_at
        if at <= 0 or self.floor is not None or self._beginning or not self.settled():
            return False
        if self._saved_mark is not None and at <= self._saved_mark:
            return False
        await self.store.save_mark(self.server, at)
        self._saved_mark = at
        return True


def _explains(record: CallRecord, at: float, msg: Message, grace_s: float) -> bool:
    """A failed Originate's response (it names the dial string, no channel) and a recovered call
    are one attempt: the same number, the response within the call's life."""
    number = dialed_number(msg.get("Channel"))
    end = record.ended_at if record.ended_at is not None else at
    return (
        number is not None and record.called == number and record.started_at - grace_s <= at <= end + grace_s
    )


def _keep_known(rebuilt: CallRecord, seen: CallRecord | None) -> None:
    """What the daemon knew of a held call and Asterisk's records do not say: the dialer's
    ActionID (its attempt is matched by it), the campaign, the contact, the number called."""
    if seen is None:
        return
    rebuilt.originate_action_id = rebuilt.originate_action_id or seen.originate_action_id
    rebuilt.campaign = rebuilt.campaign or seen.campaign
    rebuilt.contact = rebuilt.contact or seen.contact
    rebuilt.called = rebuilt.called or seen.called
    rebuilt.caller_name = rebuilt.caller_name or seen.caller_name
    rebuilt.transferred_to = rebuilt.transferred_to or seen.transferred_to


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:300]}"
