"""A fake Asterisk Manager Interface on 127.0.0.1, for socket-level tests.

It answers Login, Ping, Logoff and canned list actions the way Asterisk 22 does, records every
action it receives, and lets a test push raw bytes (split at chosen offsets), drop a connection
(even in the middle of a list), or go silent while keeping the socket open.

    async with FakeAmi(secret="s3cret") as fake:
        fake.lists["queuestatus"] = [{"Event": "QueueParams", "Queue": "support"}]
        ... AsteriskServer(host="127.0.0.1", port=fake.port, secret=Secret("s3cret")) ...
        await fake.push(frame(Event="Hangup", Uniqueid="1.1"))
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from cti.ami.message import Message
from cti.ami.parser import AmiParser

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
CAPTURES = PROJECT_ROOT / "tests" / "captures" / "lab"
# A pause between split writes so that each part reaches the client in its own read.
SPLIT_PAUSE_S = 0.05
# What Asterisk calls the event that closes each list.
COMPLETE_EVENTS = {
    "coreshowchannels": "CoreShowChannelsComplete",
    "queuestatus": "QueueStatusComplete",
    "queuesummary": "QueueSummaryComplete",
    "status": "StatusComplete",
}


def frame(headers: Mapping[str, object] | None = None, /, **more: object) -> bytes:
    """One AMI message on the wire."""
    lines = [f"{key}: {value}" for key, value in {**(headers or {}), **more}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def capture_list(name: str, action: str) -> list[Message]:
    """The items of the first `action` list in a real capture (the Response and Complete left out)."""
    parser = AmiParser()
    messages = parser.feed((CAPTURES / name).read_bytes())
    prefix = f"{action.lower()}-"
    first = next(m.action_id for m in messages if (m.action_id or "").startswith(prefix))
    return [m for m in messages if m.action_id == first and m.event and not m.is_list_end]


class FakeClient:
    """One connection to the fake server."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.silent = False

    def drop(self) -> None:
        self.writer.transport.abort()


class FakeAmi:
    def __init__(self, username: str = "cti", secret: str = "s3cret") -> None:
        self.username = username
        self.secret = secret
        # action (lower case) → list items; a `bytes` item is written as is (an interleaved event).
        self.lists: dict[str, list[Mapping[str, object] | bytes]] = {}
        # action (lower case) → the Message of a `Response: Error`.
        self.errors: dict[str, str] = {}
        # actions (lower case) never answered, to make the client time out.
        self.ignored: set[str] = set()
        # drop the connection after this many items of the next list.
        self.drop_mid_list: int | None = None
        self.received: list[Message] = []
        self.clients: list[FakeClient] = []
        self.logins = 0
        self.failed_logins = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FakeAmi:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for client in self.clients:
            client.drop()
        await self._server.wait_closed()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def client(self) -> FakeClient:
        """The latest connection."""
        return self.clients[-1]

    def actions(self, name: str) -> list[Message]:
        return [m for m in self.received if m.get("Action", "").lower() == name.lower()]

    async def push(self, data: bytes, *, split_at: Sequence[int] = ()) -> None:
        """Write raw bytes to the latest client, as separate TCP writes cut at `split_at`."""
        bounds = [0, *sorted(split_at), len(data)]
        for i, (start, end) in enumerate(itertools.pairwise(bounds)):
            if i:
                await asyncio.sleep(SPLIT_PAUSE_S)
            self.client.writer.write(data[start:end])
            await self.client.writer.drain()

    def drop(self) -> None:
        self.client.drop()

    def go_silent(self) -> None:
        """The latest client gets no answer any more; its socket stays open."""
        self.client.silent = True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        client = FakeClient(writer)
        self.clients.append(client)
        parser = AmiParser(expect_banner=False)
        try:
            writer.write(BANNER)
            while data := await reader.read(65536):
                for action in parser.feed(data):
                    self.received.append(action)
                    if not client.silent:
                        await self._answer(client, action)
        except ConnectionError:
            pass
        finally:
            client.drop()
            self._handlers.discard(task)

    async def _answer(self, client: FakeClient, action: Message) -> None:
        name = action.get("Action", "").lower()
        action_id = action.get("ActionID", "")
        if name in self.ignored:
            return
        if name in self.errors:
            self._write(client, Response="Error", ActionID=action_id, Message=self.errors[name])
        elif name == "login":
            self._login(client, action)
        elif name == "ping":
            self._write(client, Response="Success", ActionID=action_id, Ping="Pong", Timestamp=time.time())
        elif name == "logoff":
            self._write(client, Response="Goodbye", ActionID=action_id, Message="Thanks for all the fish.")
            client.writer.close()
        elif name in self.lists:
            await self._list(client, name, action_id)
        else:
            self._write(client, Response="Error", ActionID=action_id, Message="Invalid/unknown command")
        await client.writer.drain()

    def _login(self, client: FakeClient, action: Message) -> None:
        action_id = action.get("ActionID", "")
        if action.get("Username") == self.username and action.get("Secret") == self.secret:
            self.logins += 1
            self._write(client, Response="Success", ActionID=action_id, Message="Authentication accepted")
            self._write(client, Event="FullyBooted", Privilege="system,all", Status="Fully Booted")
            return
        self.failed_logins += 1
        self._write(client, Response="Error", ActionID=action_id, Message="Authentication failed")
        client.writer.close()  # as Asterisk does

    async def _list(self, client: FakeClient, name: str, action_id: str) -> None:
        items = self.lists[name]
        self._write(client, Response="Success", ActionID=action_id, EventList="start", Message="will follow")
        for i, item in enumerate(items):
            if self.drop_mid_list is not None and i >= self.drop_mid_list:
                self.drop_mid_list = None
                await client.writer.drain()
                client.drop()
                return
            if isinstance(item, bytes):
                client.writer.write(item)
            else:
                self._write(client, {**item, "ActionID": action_id})
        complete = COMPLETE_EVENTS.get(name, f"{name}Complete")
        count = sum(not isinstance(item, bytes) for item in items)
        self._write(client, Event=complete, ActionID=action_id, EventList="Complete", ListItems=count)

    @staticmethod
    def _write(client: FakeClient, headers: Mapping[str, object] | None = None, /, **more: object) -> None:
        client.writer.write(frame(headers, **more))
