"""What Asterisk writes to PostgreSQL besides AMI: CEL rows (cel_pgsql) and the realtime
queue_log, in the tables of asterisk-conf/postgresql-tables.sql.

Asterisk derives both from the same channel and queue happenings its AMI events come from; so
does the simulator: each row is written from the event the core emits (`Core.on_emit`), with the
channel as it stands then, and each queue_log line where app_queue would write it (the queue
application's own facts tell an abandon from a timeout, as app_queue knows). The rows follow the
real ones of the tier (tests/pbx/test_gap.py): CHAN_START, ANSWER, HANGUP with its `extra`
(`hangupcause`, `hangupsource`: the channel that hung up, or `dialplan/builtin`), CHAN_END,
LINKEDID_END after a call's last channel, BRIDGE_ENTER/EXIT, APP_START/APP_END of UserEvent
with the event's data; ENTERQUEUE, CONNECT, COMPLETECALLER/COMPLETEAGENT, ABANDON,
EXITWITHTIMEOUT, RINGNOANSWER, BLINDTRANSFER/ATTENDEDTRANSFER. Rows are inserted in batches a
few milliseconds behind the events, as cel_pgsql's are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from cti.sim.channels import UP, Channel
from cti.sim.engine import _HANGUP_BY as HANGUP_BY
from cti.sim.engine import Engine
from cti.sim.queues import Member, Queue

DIALPLAN_HANGUP = "dialplan/builtin"
FLUSH_S = 0.02
_CEL = (
    "eventtype, eventtime, userdeftype, cid_name, cid_num, cid_ani, cid_rdnis, cid_dnid, exten, "
    "context, channame, appname, appdata, amaflags, accountcode, peeraccount, uniqueid, linkedid, "
    "userfield, peer, extra"
)
_QUEUE_LOG = "time, callid, queuename, agent, event, data1, data2, data3, data4, data5"


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)  # the columns hold UTC


class AsteriskTables:
    """Writes the simulated PBX's CEL and queue_log rows to PostgreSQL (`cti sim --records-url`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cel: list[tuple[Any, ...]] = []
        self.queue_log: list[tuple[Any, ...]] = []
        self.rows = 0
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._writing = asyncio.Lock()  # one statement at a time on the connection
        self._live: dict[str, set[str]] = {}  # linkedid -> uniqueids of its channels still up
        self._answered: set[str] = set()
        self._source: dict[str, str] = {}  # linkedid -> who started its end (hangupsource)
        self._transfers: dict[str, str] = {}  # caller uniqueid -> BLINDTRANSFER / ATTENDEDTRANSFER
        self._complete_times: dict[str, tuple[int, int]] = {}  # caller uniqueid -> (hold, talk)
        self._now: Callable[[], float] = lambda: 0.0

    async def start(self, engine: Engine) -> None:
        self._conn = await asyncpg.connect(self.url)
        self.attach(engine)
        self._task = asyncio.get_running_loop().create_task(self._flush_loop(), name="sim-records")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            await self.flush()
            await self._conn.close()
            self._conn = None

    def attach(self, engine: Engine) -> None:
        core, app = engine.core, engine.queue_app
        self._now = lambda: core.now
        core.on_emit.append(self._on_event)
        core.on_thread_end.append(self._thread_end)
        app.on_leave.append(self._left_queue)
        app.on_complete.append(self._completed)

    # ------------------------------------------------------------------ writing
    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(FLUSH_S)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        async with self._writing:
            await self._write()

    async def _write(self) -> None:
        cel, self.cel = self.cel, []
        queue_log, self.queue_log = self.queue_log, []
        if cel:
            await self._conn.executemany(f"INSERT INTO cel ({_CEL}) VALUES ({_params(21)})", cel)
        if queue_log:
            await self._conn.executemany(
                f"INSERT INTO queue_log ({_QUEUE_LOG}) VALUES ({_params(10)})", queue_log
            )
        self.rows += len(cel) + len(queue_log)

    def _cel(
        self,
        event: str,
        ch: Channel,
        *,
        app: str | None = None,
        data: str | None = None,
        peer: str = "",
        extra: Mapping[str, object] | None = None,
    ) -> None:
        self.cel.append(
            (
                event,
                _utc(self._now()),
                "",
                ch.caller_name or "",
                ch.caller_num or "",
                ch.caller_num or "",
                "",
                "",
                ch.exten,
                ch.context,
                ch.name,
                ch.application if app is None else app,
                ch.app_data if data is None else data,
                3,
                ch.account_code,
                "",
                ch.uniqueid,
                ch.linkedid,
                "",
                peer,
                json.dumps(extra, separators=(",", ":")) if extra else "",
            )
        )
        self._wake.set()

    def _queue_line(self, callid: str, queue: str, agent: str | None, verb: str, *data: object) -> None:
        fields = [str(d) for d in data] + [""] * (5 - len(data))
        self.queue_log.append((_utc(self._now()), callid, queue, agent or "NONE", verb, *fields[:5]))
        self._wake.set()

    # ------------------------------------------------------------------ from the core's events
    def _on_event(
        self,
        name: str,
        snapshots: Mapping[str, object],
        values: Mapping[str, object],
        extra: Iterable[tuple[str, object]],
    ) -> None:
        handler = _HANDLERS.get(name)
        if handler is not None:
            handler(self, snapshots, {**values, "__extra__": tuple(extra)} if name == "UserEvent" else values)

    def _newchannel(self, s: Mapping[str, object], _v: Mapping[str, object]) -> None:
        ch = _channel(s, "@")
        self._live.setdefault(ch.linkedid, set()).add(ch.uniqueid)
        self._cel("CHAN_START", ch, app="", data="")

    def _newstate(self, s: Mapping[str, object], _v: Mapping[str, object]) -> None:
        ch = _channel(s, "@")
        if ch.state == UP and ch.uniqueid not in self._answered:
            self._answered.add(ch.uniqueid)
            self._cel("ANSWER", ch)

    def _hangup(self, s: Mapping[str, object], v: Mapping[str, object]) -> None:
        ch = _channel(s, "@")
        extra = {"hangupcause": v.get("Cause") or 0, "hangupsource": self._source.get(ch.linkedid, "")}
        self._cel("HANGUP", ch, extra={**extra, "dialstatus": ""})
        self._cel("CHAN_END", ch)
        self._answered.discard(ch.uniqueid)
        live = self._live.get(ch.linkedid, set())
        live.discard(ch.uniqueid)
        if not live:
            self._live.pop(ch.linkedid, None)
            self._source.pop(ch.linkedid, None)
            self._cel("LINKEDID_END", ch)

    def _bridge(self, s: Mapping[str, object], _v: Mapping[str, object], event: str) -> None:
        ch, bridge = _channel(s, "@"), s["#"]
        others = ",".join(c.name for c in getattr(bridge, "channels", ()) if c is not ch)
        extra = {"bridge_id": getattr(bridge, "uniqueid", ""), "bridge_technology": "simple_bridge"}
        self._cel(event, ch, peer=others, extra=extra)

    def _user_event(self, s: Mapping[str, object], v: Mapping[str, object]) -> None:
        ch = _channel(s, "@")
        headers = v.get("__extra__", ())
        assert isinstance(headers, Iterable)
        data = ",".join([str(v.get("UserEvent", "")), *(f"{k}: {value}" for k, value in headers)])
        self._cel("APP_START", ch, app="UserEvent", data=data)
        self._cel("APP_END", ch, app="UserEvent", data=data)

    def _transfer(self, s: Mapping[str, object], v: Mapping[str, object], verb: str) -> None:
        if v.get("Result", "Success") != "Success":
            return
        transferee = s.get("@Transferee")
        transferer = s.get("@Transferer") or s.get("@OrigTransferer")
        if isinstance(transferer, Channel):
            self._cel(verb, transferer)
        if isinstance(transferee, Channel):
            self._transfers[transferee.uniqueid] = verb

    # ------------------------------------------------------------------ queue_log
    def _queue_event(self, name: str, s: Mapping[str, object], v: Mapping[str, object]) -> None:
        caller = _channel(s, "@")
        queue = str(v.get("Queue", ""))
        if name == "QueueCallerJoin":
            self._queue_line(
                caller.uniqueid, queue, None, "ENTERQUEUE", "", caller.caller_num or "", v.get("Position", 1)
            )
        elif name == "AgentConnect":
            dest = s.get("@Dest")
            leg = dest.uniqueid if isinstance(dest, Channel) else ""
            agent = str(v.get("MemberName", ""))
            self._queue_line(
                caller.uniqueid, queue, agent, "CONNECT", v.get("HoldTime", 0), leg, v.get("RingTime", 0)
            )
        elif name == "AgentRingNoAnswer":
            self._queue_line(
                caller.uniqueid, queue, str(v.get("MemberName", "")), "RINGNOANSWER", v.get("RingTime", 0)
            )

    def _completed(self, caller: Channel, queue: Queue, member: Member, reason: str) -> None:
        # app_queue's figures, as AgentComplete carries them (HoldTime, TalkTime: whole seconds).
        hold, talk = self._complete_times.pop(caller.uniqueid, (0, 0))
        if reason == "transfer":
            verb = self._transfers.pop(caller.uniqueid, "BLINDTRANSFER")
            self._queue_line(caller.uniqueid, queue.name, member.name, verb, "", "", hold, talk, 1)
            return
        verb = "COMPLETECALLER" if reason == "caller" else "COMPLETEAGENT"
        self._queue_line(caller.uniqueid, queue.name, member.name, verb, hold, talk, 1)

    def _left_queue(self, caller: Channel, queue: Queue, outcome: str, waited: float) -> None:
        verb = "ABANDON" if outcome == "abandoned" else "EXITWITHTIMEOUT"
        self._queue_line(caller.uniqueid, queue.name, None, verb, 1, 1, int(waited))

    def _complete_event(self, s: Mapping[str, object], v: Mapping[str, object]) -> None:
        caller = _channel(s, "@")
        self._complete_times[caller.uniqueid] = (
            int(str(v.get("HoldTime", 0))),
            int(str(v.get("TalkTime", 0))),
        )

    def _thread_end(self, ch: Channel, voluntary: bool) -> None:
        """A dialplan that ended by itself started the end of its call: a party hanging up (its
        channel's name), or the dialplan (`dialplan/builtin`), as HANGUP's `hangupsource` says."""
        if voluntary and ch.linkedid not in self._source:
            who = HANGUP_BY.get(ch.context, "system")
            self._source[ch.linkedid] = DIALPLAN_HANGUP if who == "system" else ch.name


def _channel(snapshots: Mapping[str, object], key: str) -> Channel:
    channel = snapshots[key]
    assert isinstance(channel, Channel)
    return channel


def _params(count: int) -> str:
    return ", ".join(f"${i}" for i in range(1, count + 1))


_HANDLERS: dict[str, Any] = {
    "Newchannel": AsteriskTables._newchannel,
    "Newstate": AsteriskTables._newstate,
    "Hangup": AsteriskTables._hangup,
    "BridgeEnter": lambda self, s, v: self._bridge(s, v, "BRIDGE_ENTER"),
    "BridgeLeave": lambda self, s, v: self._bridge(s, v, "BRIDGE_EXIT"),
    "UserEvent": AsteriskTables._user_event,
    "BlindTransfer": lambda self, s, v: self._transfer(s, v, "BLINDTRANSFER"),
    "AttendedTransfer": lambda self, s, v: self._transfer(s, v, "ATTENDEDTRANSFER"),
    "QueueCallerJoin": lambda self, s, v: self._queue_event("QueueCallerJoin", s, v),
    "AgentConnect": lambda self, s, v: self._queue_event("AgentConnect", s, v),
    "AgentRingNoAnswer": lambda self, s, v: self._queue_event("AgentRingNoAnswer", s, v),
    "AgentComplete": AsteriskTables._complete_event,
}
