"""Device states and the `DeviceStateChange` events Asterisk derives from them.

Two kinds, as in Asterisk:
- Local channel devices (`Local/agent1@agents`) are not cachable: every state change of either
  half of a pair, and every hangup, publishes the device's state again, even when unchanged (the
  captures show INUSE twice when a pair answers, NOT_INUSE twice when it ends).
- Queue devices (`Queue:support`, `Queue:support_avail`, `Queue:support_pause_<interface>`) are
  cachable: an event only when the state differs from the cached one. What the cache held before
  the simulation started is an initial condition (`initial` below).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from cti.sim.channels import Channel

NOT_INUSE, INUSE, INVALID = "NOT_INUSE", "INUSE", "INVALID"
# Queue member `Status` numbers (ast_device_state).
STATUS_CODE = {"UNKNOWN": 0, NOT_INUSE: 1, INUSE: 2, "BUSY": 3, INVALID: 4, "UNAVAILABLE": 5, "RINGING": 6}

Emit = Callable[[str, str], None]


class DeviceStates:
    def __init__(self, emit: Emit, initial: dict[str, str] | None = None) -> None:
        self._emit = emit
        self._cache: dict[str, str] = dict(initial or {})
        self._pairs: dict[str, list[Channel]] = {}
        self.invalid: set[str] = set()
        # Called with (device, state) after a Local device's state was published (queue members).
        self.on_change: Callable[[str, str], None] | None = None

    def track(self, channel: Channel) -> None:
        if channel.device is not None:
            self._pairs.setdefault(channel.device, []).append(channel)

    def local_state(self, device: str) -> str:
        if device in self.invalid:
            return INVALID
        # chan_local: the device is in use while any pair for it exists whole, whatever its
        # state (mixed_seed1: Agent2 is INUSE when one of its two ringing pairs ends).
        for channel in self._pairs.get(device, ()):
            peer = channel.peer
            if not channel.gone and peer is not None and not peer.gone:
                return INUSE
        return NOT_INUSE

    def channel_changed(self, channel: Channel) -> None:
        """A Local half changed state or hung up: publish its device's state."""
        device = channel.device
        if device is None:
            return
        if channel.gone:
            pairs = self._pairs.get(device, [])
            if channel in pairs:
                pairs.remove(channel)
        state = self.local_state(device)
        self._emit(device, state)
        if self.on_change is not None:
            self.on_change(device, state)

    def set_cached(self, device: str, state: str) -> None:
        if self._cache.get(device) == state:
            return
        self._cache[device] = state
        self._emit(device, state)

    def prime(self, device: str, state: str) -> None:
        """What the cache holds at boot, unless an initial condition says otherwise (no event)."""
        self._cache.setdefault(device, state)

    def cached(self, device: str) -> str | None:
        return self._cache.get(device)

    def devices(self) -> Iterable[str]:
        return self._pairs.keys()
