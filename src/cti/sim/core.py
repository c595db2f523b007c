"""The simulated PBX core: channels, Local pairs, bridges, hangups, and the events they produce.

Every operation here is one thing Asterisk does to a channel, and emits what Asterisk emits for it
(`Newchannel`, `Newexten`, `VarSet`, `Newstate`, `HangupRequest`, `Hangup`, ...) with the channel's
snapshot at that moment. Dialplan programs (`dialplan.py`), the Queue application (`queueapp.py`)
and the Originate action (`originate.py`) are written in terms of these operations.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from cti.sim import wire
from cti.sim.channels import CAUSE_TEXT, DOWN, RING, UP, Bridge, Channel, Ids
from cti.sim.clock import Scheduler
from cti.sim.devstate import DeviceStates
from cti.sim.threads import Program, Thread

Sink = Callable[[bytes], None]
EmitListener = Callable[[str, Mapping[str, object], Mapping[str, object], Iterable[tuple[str, object]]], None]
PRESENTATION_ALLOWED = "0 (Presentation Allowed, Not Screened)"
PRESENTATION_UNAVAILABLE = "67 (Number Unavailable)"


@dataclass
class Counters:
    events: int = 0
    by_name: dict[str, int] = field(default_factory=dict)


class Core:
    """Channels and the events they produce. `sink` receives every event frame."""

    def __init__(
        self,
        scheduler: Scheduler,
        rng: random.Random,
        sink: Sink,
        initial_device_states: Mapping[str, str] | None = None,
        first_uniqueid: int = 0,
        first_local: int = 0,
    ) -> None:
        self.sched = scheduler
        self.rng = rng
        self.sink = sink
        self.ids = Ids(rng, first_uniqueid, first_local)
        self.channels: dict[str, Channel] = {}
        self.devices = DeviceStates(self._device_event, dict(initial_device_states or {}))
        self.counters = Counters()
        # The ground-truth log listens: channels created and destroyed, dialplans that ended by
        # themselves (True) or because they were asked to hang up (False).
        self.on_create: list[Callable[[Channel], None]] = []
        self.on_destroy: list[Callable[[Channel], None]] = []
        self.on_thread_end: list[Callable[[Channel, bool], None]] = []
        # Every event as it is emitted, with its channels and bridges as they stand then: what
        # Asterisk also writes to its CEL and queue_log tables (sim/records.py).
        self.on_emit: list[EmitListener] = []

    def reset(self) -> None:
        """After a restart: identifiers from zero, device states forgotten."""
        self.ids = Ids(self.rng)
        on_change = self.devices.on_change
        self.devices = DeviceStates(self._device_event)
        self.devices.on_change = on_change

    # ------------------------------------------------------------------ emission
    @property
    def now(self) -> float:
        return self.sched.now

    def emit(
        self,
        name: str,
        snapshots: Mapping[str, wire.Snapshot] | None = None,
        values: Mapping[str, object] | None = None,
        *,
        variant: str | None = None,
        extra: Iterable[tuple[str, object]] = (),
        action_id: str | None = None,
    ) -> None:
        if self.on_emit:
            extra = tuple(extra)  # read twice: the frame, then the listeners
        frame = wire.event(
            name,
            self.sched.stamp(),
            snapshots,
            values,
            variant=variant,
            extra=extra,
            action_id=action_id,
        )
        self.counters.events += 1
        self.counters.by_name[name] = self.counters.by_name.get(name, 0) + 1
        self.sink(frame)
        for listener in self.on_emit:
            listener(name, snapshots or {}, values or {}, extra)

    def _device_event(self, device: str, state: str) -> None:
        self.emit("DeviceStateChange", values={"Device": device, "State": state})

    # ------------------------------------------------------------------ channels
    def new_channel(
        self,
        name: str,
        context: str,
        exten: str,
        *,
        state: int = DOWN,
        linkedid: str | None = None,
        device: str | None = None,
        caller: tuple[str | None, str | None] = (None, None),
        connected: tuple[str | None, str | None] = (None, None),
    ) -> Channel:
        uid = self.ids.uniqueid(self.now)
        channel = Channel(
            name=name,
            uniqueid=uid,
            linkedid=linkedid or uid,
            context=context,
            exten=exten,
            created_at=self.now,
            state=state,
            device=device,
        )
        channel.caller_num, channel.caller_name = caller
        channel.connected_num, channel.connected_name = connected
        self.channels[uid] = channel
        self.devices.track(channel)
        for listener in self.on_create:
            listener(channel)
        self.emit("Newchannel", {"@": channel})
        return channel

    def local_pair(
        self,
        exten: str,
        context: str,
        *,
        linkedid: str | None = None,
        caller: tuple[str | None, str | None] = (None, None),
    ) -> tuple[Channel, Channel]:
        """`Local/<exten>@<context>-<seq>;1` and `;2`: `;1` is dialed, `;2` runs the dialplan."""
        base = f"Local/{exten}@{context}-{self.ids.local_seq()}"
        device = f"Local/{exten}@{context}"
        one = self.new_channel(
            base + ";1", context, exten, state=DOWN, linkedid=linkedid, device=device, caller=caller
        )
        two = self.new_channel(
            base + ";2", context, exten, state=RING, linkedid=one.linkedid, device=device, caller=caller
        )
        one.peer, two.peer = two, one
        return one, two

    def local_bridge(self, one: Channel, two: Channel, optimization: bool) -> None:
        self.emit(
            "LocalBridge",
            {"@LocalOne": one, "@LocalTwo": two},
            {
                "Context": two.context,
                "Exten": two.exten,
                "LocalOptimization": "Yes" if optimization else "No",
            },
        )

    def newexten(
        self,
        channel: Channel,
        application: str,
        data: str = "",
        *,
        context: str | None = None,
        exten: str | None = None,
        priority: int | None = None,
    ) -> None:
        if context is not None:
            channel.context = context
        if exten is not None:
            channel.exten = exten
        if priority is not None:
            channel.priority = priority
        channel.application, channel.app_data = application, data
        channel.touch()
        self.emit(
            "Newexten",
            {"@": channel},
            {"Extension": channel.exten, "Application": application, "AppData": data},
        )

    def set_var(self, channel: Channel, name: str, value: object) -> None:
        text = "" if value is None else str(value)
        channel.variables[name] = text
        self.emit("VarSet", {"@": channel}, {"Variable": name, "Value": text})

    def set_state(self, channel: Channel, state: int) -> None:
        channel.state = state
        channel.touch()
        self.emit("Newstate", {"@": channel})
        self.devices.channel_changed(channel)

    def set_caller(self, channel: Channel, number: str | None, name: str | None) -> None:
        channel.caller_num, channel.caller_name = number, name
        channel.touch()
        anonymous = (number or "").lower() == "anonymous"
        presentation = PRESENTATION_UNAVAILABLE if anonymous else PRESENTATION_ALLOWED
        self.emit("NewCallerid", {"@": channel}, {"CID-CallingPres": presentation})

    def set_connected(self, channel: Channel, number: str | None, name: str | None) -> None:
        channel.connected_num, channel.connected_name = number, name
        channel.touch()
        self.emit("NewConnectedLine", {"@": channel})

    def user_event(self, channel: Channel, name: str, headers: Iterable[tuple[str, object]]) -> None:
        self.emit("UserEvent", {"@": channel}, {"UserEvent": name}, extra=headers)

    def dtmf(self, channel: Channel, digit: str, direction: str, end: bool, duration_ms: int = 0) -> None:
        if end:
            values = {"Digit": digit, "DurationMs": duration_ms, "Direction": direction}
            self.emit("DTMFEnd", {"@": channel}, values)
        else:
            self.emit("DTMFBegin", {"@": channel}, {"Digit": digit, "Direction": direction})

    # ------------------------------------------------------------------ threads
    def run(self, channel: Channel, program: Program) -> None:
        """Start the channel's dialplan thread."""
        thread = Thread(self.sched, program, lambda: self.thread_ended(channel))
        channel.thread = thread
        thread.start()

    def thread_ended(self, channel: Channel) -> None:
        """A channel's dialplan is over: it hangs up, and so does the other half of its Local pair."""
        if channel.gone:
            return
        for listener in self.on_thread_end:
            listener(channel, not channel.hangup_requested)
        self.emit("SoftHangupRequest", {"@": channel}, {"Cause": 16})
        if not channel.hangup_cause and not channel.hangup_requested:
            channel.hangup_cause = 16
        channel.hangup_requested = True
        peer = channel.peer
        if peer is not None and peer.alive:
            first_half = channel.name.endswith(";1")
            if first_half and peer.soft_hangup:
                # The `;2` is being torn down already (a PBX shutdown): the `;1` asks nothing of it
                # and goes when it is gone (pbx_restart_part1).
                peer.follower = channel
                return
            if not first_half or not peer.hangup_requested:
                self.request_hangup(peer, channel.hangup_cause)
        self.destroy(channel)

    # ------------------------------------------------------------------ hangups
    def request_hangup(
        self, channel: Channel, cause: int, *, soft: bool = False, defer: bool = False
    ) -> None:
        """Ask a channel to hang up; whoever runs it (its thread, its owner) reacts.

        A soft hangup (AMI Hangup, PBX shutdown) does not set the channel's hangup cause. With
        `defer`, a channel's owner hears of it after the threads asked before it have reacted.
        """
        if channel.gone:
            return
        self.emit("SoftHangupRequest" if soft else "HangupRequest", {"@": channel}, {"Cause": cause})
        if cause and not soft and not channel.hangup_cause:
            channel.hangup_cause = cause
        channel.hangup_requested = True
        channel.soft_hangup = channel.soft_hangup or soft
        if channel.thread is not None and not channel.thread.done:
            channel.thread.interrupt()
            return
        owner = channel.owner
        if owner is None:
            return
        if defer:
            self.sched.call_later(0.0, lambda: owner(channel))
        else:
            owner(channel)

    def hangup_leg(self, channel: Channel, cause: int) -> None:
        """Hang up a channel that runs no dialplan (a dialed leg): its peer is asked first."""
        if channel.gone:
            return
        channel.hangup_cause = cause
        channel.hangup_requested = True
        peer = channel.peer
        if peer is not None and peer.alive and not peer.hangup_requested:
            self.request_hangup(peer, cause)
        self.destroy(channel)

    def destroy(self, channel: Channel) -> None:
        if channel.gone:
            return
        cause = channel.hangup_cause
        self.emit("Hangup", {"@": channel}, {"Cause": cause, "Cause-txt": CAUSE_TEXT.get(cause, "Unknown")})
        channel.gone = True
        self.channels.pop(channel.uniqueid, None)
        self.devices.channel_changed(channel)
        for listener in self.on_destroy:
            listener(channel)
        if channel.late_callerid:
            self.emit("NewCallerid", {"@": channel}, {"CID-CallingPres": PRESENTATION_ALLOWED})
        follower, channel.follower = channel.follower, None
        if follower is not None:
            self.destroy(follower)

    # ------------------------------------------------------------------ answer
    def answer(self, channel: Channel) -> None:
        """A channel answers; the other half of a Local pair goes up with it."""
        if channel.state != UP:
            self.set_state(channel, UP)
        peer = channel.peer
        if peer is not None and peer.alive and peer.state != UP:
            self.set_state(peer, UP)
            hook, peer.on_answer = peer.on_answer, None
            if hook is not None:
                hook(peer)

    def indicate(self, channel: Channel, control: str) -> None:
        """A channel signals progress (busy, congestion) to whoever dialed its Local pair."""
        peer = channel.peer
        if peer is not None and peer.alive and peer.on_control is not None:
            peer.on_control(control)

    # ------------------------------------------------------------------ bridges
    def bridge_create(self) -> Bridge:
        bridge = Bridge(self.ids.bridge_id())
        self.emit("BridgeCreate", {"#": bridge})
        return bridge

    def bridge_enter(self, bridge: Bridge, channel: Channel) -> None:
        bridge.channels.append(channel)
        channel.bridge = bridge
        self.emit("BridgeEnter", {"#": bridge, "@": channel})

    def bridge_leave(self, channel: Channel) -> None:
        bridge = channel.bridge
        if bridge is None:
            return
        if channel in bridge.channels:
            bridge.channels.remove(channel)
        channel.bridge = None
        self.emit("BridgeLeave", {"#": bridge, "@": channel})

    def bridge_destroy(self, bridge: Bridge) -> None:
        self.emit("BridgeDestroy", {"#": bridge})

    def set_bridge_peers(self, first: Channel, second: Channel) -> None:
        self.set_var(first, "BRIDGEPEER", second.name)
        self.set_var(second, "BRIDGEPEER", first.name)
