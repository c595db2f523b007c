"""AMI actions, answered the way Asterisk 22 answers them (messages and errors from the captures)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from cti.ami.message import Message
from cti.sim import wire
from cti.sim.channels import Channel
from cti.sim.config import AgentSpec
from cti.sim.engine import Engine
from cti.sim.originate import OriginateRequest
from cti.sim.queues import Queue
from cti.sim.session import Session
from cti.sim.transfers import TransferError

Handler = Callable[["Manager", Session, Message, str | None], None]
BUILT = "built by root @ vm on a x86_64 running Linux on 2026-11-22 23:15:48 UTC"


@dataclass
class Hooks:
    """What the server does for the manager: close a session, restart the PBX."""

    logoff: Callable[[Session], None]
    restart: Callable[[], None]


class Manager:
    def __init__(self, engine: Engine, hooks: Hooks) -> None:
        self.engine = engine
        self.hooks = hooks
        self.config = engine.config
        self.logins = 0
        self.failed_logins = 0
        self.actions: dict[str, Handler] = {
            "login": Manager.login,
            "logoff": Manager.logoff,
            "ping": Manager.ping,
            "events": Manager.events,
            "command": Manager.command,
            "coreshowchannels": Manager.core_show_channels,
            "status": Manager.status,
            "queuestatus": Manager.queue_status,
            "queuesummary": Manager.queue_summary,
            "queueadd": Manager.queue_add,
            "queueremove": Manager.queue_remove,
            "queuepause": Manager.queue_pause,
            "originate": Manager.originate,
            "hangup": Manager.hangup,
            "blindtransfer": Manager.blind_transfer,
            "atxfer": Manager.atxfer,
            "playdtmf": Manager.play_dtmf,
        }

    @property
    def now(self) -> float:
        return self.engine.now

    def handle(self, session: Session, action: Message) -> None:
        name = action.get("Action", "").lower()
        action_id = action.get("ActionID")
        if not name:
            session.send(wire.response("Error", action_id, "Missing action in request"))
            return
        if not session.authenticated and name not in ("login", "logoff", "ping"):
            session.send(wire.response("Error", action_id, "Permission denied"))
            return
        handler = self.actions.get(name)
        if handler is None:
            session.send(wire.response("Error", action_id, "Invalid/unknown command"))
            return
        handler(self, session, action, action_id)

    # ------------------------------------------------------------------ session
    def login(self, session: Session, action: Message, action_id: str | None) -> None:
        if action.get("Username") != self.config.username or action.get("Secret") != self.config.secret:
            self.failed_logins += 1
            session.send(wire.response("Error", action_id, "Authentication failed"))
            self.hooks.logoff(session)
            return
        self.logins += 1
        session.authenticated = True
        session.events = action.get("Events", "on").lower() not in ("off", "no", "false")
        session.send(wire.response("Success", action_id, "Authentication accepted"))
        uptime = int(self.now - self.engine.started_at) + self.engine.uptime_offset_s
        booted = wire.event(
            "FullyBooted", None, values={"Uptime": uptime, "LastReload": uptime, "Status": "Fully Booted"}
        )
        session.send(booted)

    def logoff(self, session: Session, action: Message, action_id: str | None) -> None:
        session.send(wire.response("Goodbye", action_id, "Thanks for all the fish."))
        self.hooks.logoff(session)

    def ping(self, session: Session, action: Message, action_id: str | None) -> None:
        session.send(wire.response("Success", action_id, None, Ping="Pong", Timestamp=f"{self.now:.6f}"))

    def events(self, session: Session, action: Message, action_id: str | None) -> None:
        session.events = action.get("EventMask", "on").lower() not in ("off", "no", "false")
        session.send(wire.response("Success", action_id, None, Events="On" if session.events else "Off"))

    def command(self, session: Session, action: Message, action_id: str | None) -> None:
        text = " ".join(action.get("Command", "").split()).lower()
        if text == "core show version":
            session.send(wire.command_output(action_id, [f"Asterisk {self.config.version} {BUILT}"]))
        elif text == "core show uptime":
            up = int(self.now - self.engine.started_at) + self.engine.uptime_offset_s
            session.send(wire.command_output(action_id, [f"System uptime: {up} seconds"]))
        elif text == "core show channels count":
            count = len(self.engine.core.channels)
            session.send(wire.command_output(action_id, [f"{count} active channels"]))
        elif text in ("core restart now", "core restart gracefully"):
            session.send(wire.command_output(action_id, []))
            self.hooks.restart()
        else:
            lines = [f"No such command '{action.get('Command', '')}' (type 'core show help' for help)"]
            session.send(wire.command_output(action_id, lines).replace(b"Success", b"Error", 1))

    # ------------------------------------------------------------------ lists
    def _list(
        self, session: Session, action_id: str | None, message: str, items: list[bytes], done: str
    ) -> None:
        aid = action_id or ""
        session.send(wire.response("Success", action_id, None, EventList="start", Message=message))
        for item in items:
            session.send(item)
        session.send(wire.list_complete(done, aid, len(items), with_items_header=done == "StatusComplete"))

    def core_show_channels(self, session: Session, action: Message, action_id: str | None) -> None:
        aid = action_id or ""
        items = [
            wire.list_item(
                "CoreShowChannel",
                aid,
                {"@": ch},
                {
                    "Application": ch.application,
                    "ApplicationData": ch.app_data,
                    "Duration": _hms(self.now - ch.created_at),
                    "BridgeId": ch.bridge.uniqueid if ch.bridge else "",
                },
            )
            for ch in self._channels()
        ]
        self._list(session, action_id, "Channels will follow", items, "CoreShowChannelsComplete")

    def _channels(self) -> list[Channel]:
        return list(self.engine.core.channels.values())

    def status(self, session: Session, action: Message, action_id: str | None) -> None:
        wanted = action.get("Channel")
        channels = [ch for ch in self._channels() if wanted in (None, "", ch.name)]
        if wanted and not channels:
            session.send(wire.response("Error", action_id, "No such channel"))
            return
        items = [self._status_item(ch, action_id or "") for ch in channels]
        self._list(session, action_id, "Channel status will follow", items, "StatusComplete")

    def _status_item(self, ch: Channel, action_id: str) -> bytes:
        connected = ch.connected_num or "<unknown>", ch.connected_name or "<unknown>"
        values = {
            "Type": ch.name.split("/", 1)[0],
            "DNID": "",
            "EffectiveConnectedLineNum": connected[0],
            "EffectiveConnectedLineName": connected[1],
            "TimeToHangup": 0,
            "BridgeID": ch.bridge.uniqueid if ch.bridge else "",
            "Application": ch.application,
            "Data": ch.app_data,
            "Nativeformats": "(slin)",
            "Readformat": "slin",
            "Readtrans": "",
            "Writeformat": "slin",
            "Writetrans": "",
            "Callgroup": 0,
            "Pickupgroup": 0,
            "Seconds": int(self.now - ch.created_at),
        }
        return wire.list_item("Status", action_id, {"@": ch}, values)

    def queue_status(self, session: Session, action: Message, action_id: str | None) -> None:
        wanted, member_filter = action.get("Queue"), action.get("Member")
        aid = action_id or ""
        items: list[bytes] = []
        for queue in self.engine.queues:
            if wanted and queue.name != wanted:
                continue
            items.append(wire.list_item("QueueParams", aid, values=self._params(queue)))
            for m in queue.members:
                if member_filter and member_filter not in (m.interface, m.name):
                    continue
                values = m.headers()
                values.update(Name=m.name, Location=m.interface)
                items.append(wire.list_item("QueueMember", aid, values=values))
            for position, entry in enumerate(queue.entries, 1):
                items.append(
                    wire.list_item(
                        "QueueEntry",
                        aid,
                        values=self._entry(queue.name, position, entry.channel, entry.joined_at),
                    )
                )
        self._list(session, action_id, "Queue status will follow", items, "QueueStatusComplete")

    def _params(self, queue: Queue) -> dict[str, object]:
        perf, perf2 = queue.servicelevel_perf().split("|")
        s = queue.stats
        return {
            "Queue": queue.name,
            "Max": 0,
            "Strategy": queue.spec.strategy,
            "Calls": len(queue.entries),
            "Holdtime": s.holdtime,
            "TalkTime": s.talktime,
            "Completed": s.completed,
            "Abandoned": s.abandoned,
            "ServiceLevel": queue.spec.servicelevel_s,
            "ServicelevelPerf": perf,
            "ServicelevelPerf2": perf2,
            "Weight": queue.spec.weight,
        }

    def _entry(self, queue: str, position: int, ch: Channel, joined_at: float) -> dict[str, object]:
        return {
            "Queue": queue,
            "Position": position,
            "Channel": ch.name,
            "Uniqueid": ch.uniqueid,
            "CallerIDNum": ch.caller_num or "<unknown>",
            "CallerIDName": ch.caller_name or "<unknown>",
            "ConnectedLineNum": ch.connected_num or "<unknown>",
            "ConnectedLineName": ch.connected_name or "<unknown>",
            "Wait": int(self.now - joined_at),
            "Priority": 0,
        }

    def queue_summary(self, session: Session, action: Message, action_id: str | None) -> None:
        wanted = action.get("Queue")
        aid = action_id or ""
        items = []
        for queue in self.engine.queues:
            if wanted and queue.name != wanted:
                continue
            logged_in = [m for m in queue.members if m.status not in (4, 5)]
            available = [m for m in logged_in if self.engine.queues.available(queue, m)]
            longest = max((int(self.now - e.joined_at) for e in queue.entries), default=0)
            values = {
                "Queue": queue.name,
                "LoggedIn": len(logged_in),
                "Available": len(available),
                "Callers": len(queue.entries),
                "HoldTime": queue.stats.holdtime,
                "TalkTime": queue.stats.talktime,
                "LongestHoldTime": longest,
            }
            items.append(wire.list_item("QueueSummary", aid, values=values))
        self._list(session, action_id, "Queue summary will follow", items, "QueueSummaryComplete")

    # ------------------------------------------------------------------ members
    def queue_add(self, session: Session, action: Message, action_id: str | None) -> None:
        queues = self.engine.queues
        queue = queues.get(action.get("Queue", ""))
        interface = action.get("Interface", "")
        agent = self._agent_for(interface, action.get("StateInterface"))
        if queue is None or agent is None:
            session.send(wire.response("Error", action_id, "Unable to add interface to queue: No such queue"))
            return
        if queue.member(interface) is not None:
            session.send(wire.response("Error", action_id, "Unable to add interface: Already there"))
            return
        paused = _truthy(action.get("Paused"))
        penalty = int(action.get("Penalty") or 0)
        session.send(wire.response("Success", action_id, "Added interface to queue"))
        queues.add(queue, agent, action.get("MemberName", ""), penalty, paused, action.get("Reason", ""))

    def _agent_for(self, interface: str, state_interface: str | None) -> AgentSpec | None:
        """A member interface is an agent's phone: `Local/<exten>@agents[/n]` (or any device,
        which then behaves like a default agent)."""
        match = re.match(r"^Local/([^@]+)@agents(/n)?$", interface)
        exten = match.group(1) if match else None
        agents = self.engine.dialplan.agents
        if exten is not None and exten in agents:
            return agents[exten]
        if not interface:
            return None
        if exten is not None:
            agent = AgentSpec(exten, exten)
        else:
            # Not one of our agents' phones: it keeps its own names and never answers.
            agent = AgentSpec(
                interface, interface, answers=False, device=interface, state_device=state_interface
            )
        agents[agent.exten] = agent
        return agent

    def queue_remove(self, session: Session, action: Message, action_id: str | None) -> None:
        queues = self.engine.queues
        queue = queues.get(action.get("Queue", ""))
        if queue is None:
            session.send(
                wire.response("Error", action_id, "Unable to remove interface from queue: No such queue")
            )
            return
        member = queue.member(action.get("Interface", ""))
        if member is None:
            session.send(wire.response("Error", action_id, "Unable to remove interface: Not there"))
            return
        session.send(wire.response("Success", action_id, "Removed interface from queue"))
        queues.remove(queue, member)

    def queue_pause(self, session: Session, action: Message, action_id: str | None) -> None:
        interface = action.get("Interface", "")
        wanted = action.get("Queue")
        members = [m for m in self.engine.queues.members_of(interface) if not wanted or m.queue == wanted]
        if not members:
            session.send(wire.response("Error", action_id, "Interface not found"))
            return
        paused = _truthy(action.get("Paused"))
        message = "Interface paused successfully" if paused else "Interface unpaused successfully"
        session.send(wire.response("Success", action_id, message))
        for member in members:
            self.engine.queues.pause(member, paused, action.get("Reason", ""))

    # ------------------------------------------------------------------ calls
    def originate(self, session: Session, action: Message, action_id: str | None) -> None:
        request = OriginateRequest(
            channel=action.get("Channel", ""),
            context=action.get("Context", ""),
            exten=action.get("Exten", "s"),
            priority=int(action.get("Priority") or 1),
            caller_id=action.get("CallerID"),
            variables=_variables(action),
            timeout_s=int(action.get("Timeout") or 30000) / 1000.0,
            action_id=action_id,
            is_async=_truthy(action.get("Async")),
        )
        if not request.channel:
            session.send(wire.response("Error", action_id, "Channel not specified"))
            return
        if request.is_async:
            session.send(wire.response("Success", action_id, "Originate successfully queued"))
            self.engine.originate(request)
            return

        def done(success: bool, _reason: int) -> None:
            if success:
                session.send(wire.response("Success", action_id, "Originate successfully queued"))
            else:
                session.send(wire.response("Error", action_id, "Originate failed"))

        self.engine.originate(request, done)

    def _find(self, name: str) -> list[Channel]:
        channels = self._channels()
        if len(name) > 2 and name.startswith("/") and name.endswith("/"):
            pattern = re.compile(name[1:-1])
            return [ch for ch in channels if pattern.search(ch.name)]
        return [ch for ch in channels if ch.name == name]

    def hangup(self, session: Session, action: Message, action_id: str | None) -> None:
        targets = self._find(action.get("Channel", ""))
        if not targets:
            session.send(wire.response("Error", action_id, "No such channel"))
            return
        cause = int(action.get("Cause") or 16)
        session.send(wire.response("Success", action_id, "Channel Hungup"))
        for channel in targets:
            if not self.engine.attended.transferer_hangs_up(channel, cause):
                self.engine.core.request_hangup(channel, cause)

    def blind_transfer(self, session: Session, action: Message, action_id: str | None) -> None:
        found = self._find(action.get("Channel", ""))
        context, exten = action.get("Context", ""), action.get("Exten", "")
        try:
            talk = self.engine.transfers.check_blind(found[0] if found else None, context, exten)
        except TransferError as exc:
            session.send(wire.response("Error", action_id, str(exc)))
            return
        session.send(wire.response("Success", action_id, "Transfer succeeded"))
        self.engine.transfers.blind(talk, context, exten)

    def atxfer(self, session: Session, action: Message, action_id: str | None) -> None:
        found = self._find(action.get("Channel", ""))
        context, exten = action.get("Context", ""), action.get("Exten", "")
        try:
            talk = self.engine.attended.check(found[0] if found else None, context, exten)
        except TransferError as exc:
            session.send(wire.response("Error", action_id, str(exc)))
            return
        session.send(wire.response("Success", action_id, "Atxfer successfully queued"))
        self.engine.attended.start(talk, context, exten)

    def play_dtmf(self, session: Session, action: Message, action_id: str | None) -> None:
        found = self._find(action.get("Channel", ""))
        digit = action.get("Digit", "")[:1]
        if not found:
            session.send(wire.response("Error", action_id, "No such channel"))
            return
        if not digit:
            session.send(wire.response("Error", action_id, "No digit specified"))
            return
        session.send(wire.response("Success", action_id, "DTMF successfully queued"))
        self.engine.attended.play(found[0], digit)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "yes", "1", "on")


def _variables(action: Message) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for line in action.lines("Variable"):
        for part in line.split(","):
            name, sep, value = part.partition("=")
            if sep and name.strip():
                out.append((name.strip(), value))
    return out


def _hms(seconds: float) -> str:
    total = max(0, int(seconds))
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"
