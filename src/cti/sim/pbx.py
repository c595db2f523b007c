"""`SimulatedPbx`: the simulated Asterisk as a library, started in-process on 127.0.0.1.

    async with SimulatedPbx(lab_config(speed=None)) as pbx:       # manual clock
        linkedid = pbx.inbound_call("+33612345678", "Jean Dupont", digits="1", talk_s=6)
        await pbx.advance(20)                                     # 20 simulated seconds
        pbx.truth.calls[linkedid].outcome                         # "answered"

With a `speed`, simulated time follows the wall clock (`speed` simulated seconds per second) and
random traffic flows by itself; `pbx.faults` misbehaves on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from types import TracebackType
from typing import TYPE_CHECKING

import structlog

from cti.ami.message import Message
from cti.sim.clock import WallClock
from cti.sim.config import SimConfig
from cti.sim.engine import Engine
from cti.sim.manager import Hooks, Manager
from cti.sim.originate import OriginateRequest
from cti.sim.server import AmiServer
from cti.sim.session import Session
from cti.sim.traffic import Traffic
from cti.sim.truth import Truth

if TYPE_CHECKING:
    from cti.sim.records import AsteriskTables

log = structlog.get_logger(__name__)

# Timers fired per turn of the event loop before clients get a chance to read and act.
BATCH = 500
SHUTDOWN_NOTICE_S = 1.1  # the captures: `Shutdown` about a second after the last hangups
MALFORMED = {
    "garbage": b"this is not an AMI frame at all\r\n\r\n",
    "no_colon": b"Event: Newstate\r\nthis line has no header name\r\nChannel: Local/x\r\n\r\n",
    "bad_utf8": b"Event: UserEvent\r\nUserEvent: Bad\r\nCallerIDName: Zo\xff\xfe\r\n\r\n",
    "empty_lines": b"\r\n\r\n\r\n\r\n",
    "binary": b"\x00\x01\x02\x03\r\n\r\n",
}


class Faults:
    """Misbehaviour on purpose, for tests of the AMI client."""

    def __init__(self, pbx: SimulatedPbx) -> None:
        self._pbx = pbx

    def _sessions(self) -> list[Session]:
        return [s for s in self._pbx.server.sessions if not s.closed]

    def drop(self) -> None:
        """Cut every connection now (no Goodbye, no FIN handshake courtesy)."""
        for session in self._sessions():
            session.drop()

    def go_silent(self) -> None:
        """Stop answering and sending events; sockets stay open."""
        for session in self._sessions():
            session.faults.silent = True

    def speak_again(self) -> None:
        for session in self._sessions():
            session.faults.silent = False

    def send_malformed(self, kind: str = "garbage") -> None:
        self._pbx.server.write_all(MALFORMED[kind])

    def slow_reads(self, delay_s: float) -> None:
        """Read what each client sends only after `delay_s` (wall seconds): actions answered late."""
        for session in self._sessions():
            session.faults.read_delay_s = delay_s

    def trickle(self, chunk_bytes: int, pause_s: float) -> None:
        """Write to clients in `chunk_bytes` pieces with pauses: frames arrive cut anywhere."""
        for session in self._sessions():
            session.start_trickle(chunk_bytes, pause_s)


class SimulatedPbx:
    def __init__(self, config: SimConfig | None = None, records_url: str | None = None) -> None:
        self.config = config or SimConfig()
        # Also write CEL and queue_log rows to this PostgreSQL database, as the shipped
        # asterisk-conf makes Asterisk do (sim/records.py).
        self.records_url = records_url
        self.records: AsteriskTables | None = None
        self.engine = Engine(self.config, self._broadcast)
        self.manager = Manager(self.engine, Hooks(self._logoff, self.restart))
        self.server = AmiServer(self.config.host, self.config.port, self._action, self._catch_up)
        self.faults = Faults(self)
        self.traffic = Traffic(
            self.engine.sched,
            random.Random(f"traffic-{self.config.seed}"),
            self.config.traffic,
            self.config.outbound_mix,
            self._random_inbound,
            self._random_outbound,
        )
        self._clock = WallClock(self.engine.now, self.config.speed) if self.config.speed else None
        self._driver: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._restarting: asyncio.Task[None] | None = None
        self.events_sent = 0
        self.engine.sched.on_schedule = self._wake.set
        self._traffic_over = asyncio.Event()
        # Set while no channel exists (`idle()` waits for it).
        self._quiet = asyncio.Event()
        self._quiet.set()
        core = self.engine.core
        core.on_create.append(lambda _ch: self._quiet.clear())
        core.on_destroy.append(lambda _ch: None if core.channels else self._quiet.set())

    # ------------------------------------------------------------------ life cycle
    async def __aenter__(self) -> SimulatedPbx:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        if self.records_url:
            from cti.sim.records import AsteriskTables

            self.records = AsteriskTables(self.records_url)
            await self.records.start(self.engine)
        await self.server.start()
        if self._clock is not None:
            self._driver = asyncio.create_task(self._drive(), name="ami-sim-clock")

    async def close(self) -> None:
        for task in (self._restarting, self._driver):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._restarting, self._driver) if t), return_exceptions=True)
        self.traffic.stop()
        await self.server.close()
        if self.records is not None:
            await self.records.close()

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def truth(self) -> Truth:
        return self.engine.truth

    @property
    def now(self) -> float:
        """Simulated time (epoch seconds)."""
        return self.engine.now

    # ------------------------------------------------------------------ time
    def _catch_up(self) -> None:
        """An action arrived: it happens now. When the PBX is idle, simulated time is brought up
        to the wall clock; when it is busy (timers already due), the action takes its turn at the
        PBX's current time rather than waiting for every due timer to run first."""
        if self._clock is None:
            return
        sched = self.engine.sched
        target = self._clock.sim_now()
        due = sched.next_time()
        if due is None or due > target:
            sched.run_until(target)

    async def _drive(self) -> None:
        assert self._clock is not None
        sched = self.engine.sched
        while True:
            fired = sched.run_until(self._clock.sim_now(), limit=BATCH)
            await self.server.drain()
            if fired >= BATCH:
                await asyncio.sleep(0)
                continue
            self._wake.clear()
            due = sched.next_time()
            delay = None if due is None else self._clock.wall_delay(due)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def advance(self, seconds: float) -> None:
        """Manual clock: run `seconds` of simulated time (as fast as it computes)."""
        if self._clock is not None:
            raise RuntimeError("advance() is for a manual clock (speed=None)")
        sched = self.engine.sched
        target = sched.now + max(0.0, seconds)
        while True:
            fired = sched.run_until(target, limit=BATCH)
            await self.server.drain()
            await asyncio.sleep(0)
            if fired < BATCH:
                return

    async def idle(self, timeout_s: float = 3600.0, step_s: float = 1.0) -> None:
        """Run until no call is left (manual clock) or wait for it (real-time clock)."""
        core = self.engine.core
        if self._clock is None:
            waited = 0.0
            while core.channels and waited < timeout_s:
                await self.advance(step_s)
                waited += step_s
            return
        async with asyncio.timeout(timeout_s):
            await self._quiet.wait()

    # ------------------------------------------------------------------ calls
    def inbound_call(
        self,
        caller: str = "+33612345678",
        name: str = "",
        *,
        digits: str = "1",
        stay_s: float = 30.0,
        talk_s: float | None = None,
        queue_timeout_s: int | None = None,
        agi: bool = False,
    ) -> str:
        """A customer calls in; returns the call's Linkedid."""
        self._catch_up()
        return self.engine.inbound_call(caller, name, digits, stay_s, talk_s, queue_timeout_s, agi)

    def outbound_call(self, number: str, **kwargs: object) -> str | None:
        """A dialer call (see `Engine.outbound_call`); returns its Linkedid, None if nothing was dialed."""
        self._catch_up()
        return self.engine.outbound_call(number, **kwargs)  # type: ignore[arg-type]

    def originate(self, request: OriginateRequest) -> str | None:
        self._catch_up()
        leg = self.engine.originate(request)
        return None if leg is None else leg.linkedid

    def start_traffic(self, duration_s: float | None = None) -> None:
        """Random traffic from now, for `duration_s` simulated seconds (None: until closed)."""
        self._catch_up()
        self._traffic_over.clear()
        if duration_s is None:
            self.traffic.start(None)
            return
        end = self.now + duration_s
        self.traffic.start(end)
        self.engine.sched.call_at(end, self._traffic_over.set)

    async def traffic_finished(self) -> None:
        """Wait until the traffic's simulated duration has passed (calls may still be going on)."""
        await self._traffic_over.wait()

    def _random_inbound(
        self, number: str, name: str, digits: str, stay: float, talk: float, timeout: int | None
    ) -> None:
        self.engine.inbound_call(number, name, digits, stay, talk, timeout)

    def _random_outbound(
        self, number: str, outcome: str | None, ring_s: float, talk: float, campaign: str, contact: str
    ) -> None:
        self.engine.outbound_call(
            number, outcome=outcome, ring_s=ring_s, talk_s=talk, campaign=campaign, contact=contact
        )

    # ------------------------------------------------------------------ AMI side
    def _broadcast(self, frame: bytes) -> None:
        self.events_sent += 1
        self.server.broadcast(frame)

    def _action(self, session: Session, action: object) -> None:
        assert isinstance(action, Message)
        self.manager.handle(session, action)

    def _logoff(self, session: Session) -> None:
        session.close()

    def restart(self, down_s: float = 2.0) -> None:
        """`core restart now`: every channel is cut, `Shutdown` is sent, the connections close;
        `down_s` wall seconds later a fresh PBX (counters at zero) accepts connections again."""
        if self._restarting is None or self._restarting.done():
            self._restarting = asyncio.get_running_loop().create_task(
                self._restart(down_s), name="ami-sim-restart"
            )

    async def restarted(self) -> None:
        """Wait until a restart asked for is over (the PBX accepts connections again)."""
        if self._restarting is not None:
            await self._restarting

    async def _restart(self, down_s: float) -> None:
        self.engine.shutdown_channels()
        await self._settle(SHUTDOWN_NOTICE_S)
        self.engine.core.emit("Shutdown", values={"Shutdown": "Cleanly", "Restart": "True"})
        await self.server.drain()
        self.server.accepting = False
        self.faults.drop()
        await asyncio.sleep(down_s)
        self.engine.reboot()
        self.server.accepting = True

    async def _settle(self, sim_seconds: float) -> None:
        if self._clock is None:
            await self.advance(sim_seconds)
        else:
            await asyncio.sleep(sim_seconds / self._clock.speed)
