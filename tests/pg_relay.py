"""A TCP relay on 127.0.0.1 in front of PostgreSQL that a test can cut as a network partition
does (an `iptables ... -j DROP`): while cut, nothing is forwarded either way, the connections
stay open (no FIN, no RST: the daemon's reads hang, as over a dead path), and new connections
are accepted but go nowhere. `restore()` resumes forwarding on every connection.

Used by the readiness and ownership tests to cut one `cti serve` process from PostgreSQL while
the test and the other nodes keep their direct path.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType


class PgRelay:
    def __init__(self, upstream_host: str, upstream_port: int, delay_s: float = 0.0) -> None:
        self.upstream = (upstream_host, upstream_port)
        # Each chunk from the client waits this long before it goes on (a slow path: widens the
        # moments between a client's statements, for a test to cut in one of them).
        self.delay_s = delay_s
        self.open = asyncio.Event()
        self.open.set()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> PgRelay:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.open.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def url(self, user: str, database: str) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def cut(self) -> None:
        self.open.clear()

    def restore(self) -> None:
        self.open.set()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self.open.wait()  # a connection made during the cut waits, silent
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)
        for source, sink, delay in ((reader, up_writer, self.delay_s), (up_reader, writer, 0.0)):
            task = asyncio.create_task(self._pump(source, sink, delay))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, delay_s: float) -> None:
        try:
            while True:
                await self.open.wait()
                data = await source.read(65536)
                if not data:
                    break
                if delay_s:
                    await asyncio.sleep(delay_s)
                await self.open.wait()  # read just before the cut: held, as a dropped packet
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                sink.close()
