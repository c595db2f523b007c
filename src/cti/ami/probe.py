"""A one-shot AMI login, for `cti config check --connect`: can this server be reached, does it
speak AMI, does it accept our account? Nothing is kept open; events are not asked for."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from cti.ami.actions import format_action, next_action_id
from cti.ami.message import Message
from cti.ami.parser import AmiParser
from cti.config import AsteriskServer


class ProbeError(Exception):
    """The server could not be used; the message says what an admin should look at."""


@dataclass(frozen=True)
class ProbeResult:
    banner: str
    version: str  # from CoreSettings; "" when the account may not read it


async def _answer(reader: asyncio.StreamReader, parser: AmiParser, action_id: str) -> Message:
    while True:
        data = await reader.read(65536)
        if not data:
            raise ProbeError("the server closed the connection")
        if parser.failed:
            raise ProbeError("this port does not speak AMI (its first line is not a banner)")
        messages = parser.feed(data)
        if parser.banner is not None and not parser.banner.startswith("Asterisk Call Manager/"):
            raise ProbeError(f"this port does not speak AMI: it says {parser.banner[:60]!r}")
        for message in messages:
            if message.action_id == action_id:
                return message
        if parser.failed:
            raise ProbeError("this port does not speak AMI (its first line is not a banner)")


async def _ask(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, parser: AmiParser, action: str, **headers: str
) -> Message:
    action_id = next_action_id(action)
    writer.write(format_action(action, headers, action_id))
    await writer.drain()
    return await _answer(reader, parser, action_id)


async def probe(server: AsteriskServer) -> ProbeResult:
    """Log in, read the version, log off, within the server's connect and action timeouts."""
    try:
        async with asyncio.timeout(server.connect_timeout_s):
            reader, writer = await asyncio.open_connection(server.host, server.port)
    except TimeoutError:
        raise ProbeError(
            f"no answer from {server.host}:{server.port} within {server.connect_timeout_s:g} s"
        ) from None
    except OSError as exc:
        raise ProbeError(f"cannot connect to {server.host}:{server.port}: {exc.strerror or exc}") from None
    parser = AmiParser(events=frozenset())
    try:
        async with asyncio.timeout(server.action_timeout_s * 2):
            login = await _ask(
                reader,
                writer,
                parser,
                "Login",
                Username=server.username,
                Secret=server.secret.reveal(),
                Events="off",
            )
            if login.response != "Success":
                reason = login.get("Message", "refused")
                raise ProbeError(f"login as {server.username!r} refused: {reason} (manager.conf, the secret)")
            core = await _ask(reader, writer, parser, "CoreSettings")
            version = core.get("AsteriskVersion", "") if core.response == "Success" else ""
            with contextlib.suppress(ProbeError):  # Asterisk may hang up before its Goodbye
                await _ask(reader, writer, parser, "Logoff")
    except TimeoutError:
        raise ProbeError(
            f"{server.host}:{server.port} accepted the connection but did not answer as AMI"
        ) from None
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        raise ProbeError(f"the connection dropped: {exc}") from None
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    return ProbeResult(banner=parser.banner or "", version=version)
