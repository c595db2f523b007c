"""One AMI client connection: what it has sent, what it is owed, and the faults a test injects."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

# A client that cannot take our events for this long (wall seconds) is dropped, as Asterisk drops
# a manager session whose socket stays full past its write timeout.
WRITE_TIMEOUT_S = 5.0
WRITE_BUFFER_HIGH = 4 << 20


@dataclass
class Faults:
    """Per-connection misbehaviour: silent (no answers, no events, socket kept open), slow reads
    (each chunk the client sends is read after a pause), trickle (our output in small pieces)."""

    silent: bool = False
    read_delay_s: float = 0.0
    trickle_bytes: int = 0
    trickle_pause_s: float = 0.0


class Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        self.reader = reader
        self.writer = writer
        self.number = number
        # Room for a few simulation steps: the PBX keeps producing while the client reads,
        # instead of stopping at every 64 KiB until the client has emptied the socket.
        writer.transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH, low=WRITE_BUFFER_HIGH // 4)
        self.authenticated = False
        self.events = True
        self.closed = False
        self.graceful = False
        self.faults = Faults()
        self.bytes_sent = 0
        # Frames wait here until the end of the current simulation step: one write (one system
        # call) per step instead of one per event.
        self._pending: list[bytes] = []
        self._trickle: asyncio.Queue[bytes] | None = None
        self._trickler: asyncio.Task[None] | None = None

    def is_closed(self) -> bool:
        # A method, not the attribute: it changes under the reader's feet (Logoff, drop).
        return self.closed

    @property
    def peer(self) -> str:
        info = self.writer.get_extra_info("peername")
        return f"{info[0]}:{info[1]}" if info else "?"

    def send(self, data: bytes) -> None:
        if self.closed or self.faults.silent:
            return
        self.bytes_sent += len(data)
        self._pending.append(data)

    def flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if self.closed or self.faults.silent:
            return
        if self._trickle is not None:
            self._trickle.put_nowait(data)
            return
        self.writer.write(data)

    def event(self, frame: bytes) -> None:
        if self.authenticated and self.events:
            self.send(frame)

    async def drain(self) -> None:
        self.flush()
        if self.closed:
            return
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await self.writer.drain()
        except (TimeoutError, ConnectionError):
            self.drop()

    def drop(self) -> None:
        """Cut the connection at once, no Goodbye (a network failure, a crash)."""
        self._pending.clear()
        self.closed = True
        self.writer.transport.abort()

    def close(self) -> None:
        """Close after what is buffered is written (Logoff, a refused login)."""
        self.flush()
        self.closed = True
        self.graceful = True
        self.writer.close()

    def start_trickle(self, chunk: int, pause_s: float) -> None:
        self.faults.trickle_bytes, self.faults.trickle_pause_s = chunk, pause_s
        if self._trickle is None:
            self._trickle = asyncio.Queue()
            self._trickler = asyncio.create_task(self._trickle_out(), name=f"ami-sim-trickle-{self.number}")

    async def _trickle_out(self) -> None:
        assert self._trickle is not None
        while True:
            data = await self._trickle.get()
            step = max(1, self.faults.trickle_bytes)
            for start in range(0, len(data), step):
                if self.closed:
                    return
                self.writer.write(data[start : start + step])
                await self.writer.drain()
                await asyncio.sleep(self.faults.trickle_pause_s)

    async def stop(self) -> None:
        if self._trickler is not None:
            self._trickler.cancel()
            await asyncio.gather(self._trickler, return_exceptions=True)
            self._trickler = None
