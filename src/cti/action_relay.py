"""Agent actions sent to the PBX from whichever node received them (issue 20, item 5;
docs/scale-out.md, "Actions to the right PBX").

With stream ownership (`[ha]`) only the node that owns a server's stream has a connected AMI
link to it. Every other node decides an action as before (who may do it, which phone, which
channel: web/ and calls/controls.py), then hands the resulting AMI action to the owner over
NATS request/reply (calls/action_wire.py for the messages):

- the owner of a server subscribes to `<[bus] action_prefix>.<server>` (queue group `owners`:
  one delivery per request even while two nodes are subscribed for an instant) while its
  role is `owner`, and drains the subscription once it is not (checked every `SYNC_S`): what
  was already on its way is answered `not-owner`, and asked again of the next owner;
- a request carries an idempotency id: the owner remembers the ids it saw (`RECENT_S`, at most
  `MAX_RECENT`) and answers a repeat with the first answer, never sending the action twice;
- a request is started only within `[bus] timeout_s` of being sent (its `sent_at`, on the
  owner's clock): a request held up (the owner frozen, then thawed) is refused as expired
  rather than done after the asking node has answered 503;
- the asking node waits the AMI action's timeout plus `[bus] timeout_s` in all. No node
  subscribed (the owner dead, the lease not yet taken over) or a node that just lost the
  stream: asked again every `RETRY_S` within that time, so a takeover in between still
  succeeds; past it, `OwnerUnreachable`, which the web layer answers 503 `owner-unreachable`.

Without `[bus] nats_url` or without `[ha]`, `routed(link, None)` is the link itself.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import structlog

from cti.ami.actions import ActionError, ActionTimeout, LinkDown
from cti.ami.link import AmiLink
from cti.ami.message import Message
from cti.bus_jetstream import RETRY_S as CONNECT_RETRY_S
from cti.bus_jetstream import subject_word
from cti.calls.action_wire import FORWARDED_ACTIONS, ActionReply, ActionRequest, WireError, wire_headers
from cti.config import AsteriskServer, BusSettings

log = structlog.get_logger(__name__)

SYNC_S = 0.2  # how often subscriptions follow this node's roles
RETRY_S = 0.25  # between two asks while no node owns the stream
RECENT_S = 600.0  # how long an owner remembers a request id
MAX_RECENT = 10_000
QUEUE_GROUP = "owners"
_ALLOWED = frozenset(a.lower() for a in FORWARDED_ACTIONS)


class OwnerUnreachable(LinkDown):
    """No node that owns the server's stream answered in time (or none owns it)."""

    error_id = "owner-unreachable"


class ActionRelay:
    """This node's side of the relay: asks the owners, and answers as an owner."""

    def __init__(
        self,
        settings: BusSettings,
        node: str,
        is_owner: Callable[[str], bool],
        links: Mapping[str, AmiLink],
    ) -> None:
        self.settings, self.node, self.is_owner, self.links = settings, node, is_owner, dict(links)
        self._nc: Any = None
        self._subscriptions: dict[str, Any] = {}
        self._recent: OrderedDict[str, tuple[float, asyncio.Task[ActionReply]]] = OrderedDict()
        self._work: set[asyncio.Task[None]] = set()
        self._outage = False
        # Counters (logs, tests).
        self.forwarded = 0  # asked of another node
        self.served = 0  # sent on this node's link for another node
        self.repeats = 0  # a request id seen again: answered from memory
        self.expired = 0
        self.unreachable = 0

    def subject(self, server: str) -> str:
        return f"{self.settings.action_prefix}.{subject_word(server)}"

    # ------------------------------------------------------------------ life cycle
    async def run(self) -> None:
        """Connect (and keep trying), then follow this node's roles until cancelled."""
        delay = CONNECT_RETRY_S[0]
        try:
            while self._nc is None:
                try:
                    await self._connect()
                except Exception as exc:
                    self._say_outage(exc)
                    await asyncio.sleep(delay)
                    delay = min(CONNECT_RETRY_S[1], delay * 2)
            failing = False
            while True:
                try:
                    await self._follow_roles()
                except Exception as exc:  # NATS refused a (un)subscription: tried again next turn
                    (log.debug if failing else log.warning)(
                        "action relay: subscriptions not updated", error=f"{type(exc).__name__}: {exc}"[:300]
                    )
                    failing = True
                else:
                    failing = False
                await asyncio.sleep(SYNC_S)
        finally:
            await self._close()

    async def _connect(self) -> None:
        import nats

        servers = [u.strip() for u in self.settings.nats_url.split(",") if u.strip()]
        connecting = nats.connect(
            servers,
            name=f"cti:{self.node}:actions",
            connect_timeout=self.settings.timeout_s,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            error_cb=self._on_nats_error,
        )
        self._nc = await asyncio.wait_for(connecting, 2 * self.settings.timeout_s + 1)
        if self._outage:
            log.info("action relay: NATS reached again")
        self._outage = False

    def _say_outage(self, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"[:300]
        (log.debug if self._outage else log.warning)("action relay: NATS unreachable", error=error)
        self._outage = True

    async def _on_nats_error(self, exc: Exception) -> None:
        log.debug("action relay: NATS client error", error=f"{type(exc).__name__}: {exc}"[:300])

    async def _follow_roles(self) -> None:
        """Subscribed for exactly the servers this node owns the stream of."""
        for server in self.links:
            owned, sub = self.is_owner(server), self._subscriptions.get(server)
            if owned and sub is None:
                self._subscriptions[server] = await self._nc.subscribe(
                    self.subject(server), queue=QUEUE_GROUP, cb=self._on_request
                )
                log.info("action relay: serving the server's actions", server=server)
            elif not owned and sub is not None:
                del self._subscriptions[server]
                # Drained, not just unsubscribed: a request the server sent before it heard of
                # it is still answered (not-owner: asked again elsewhere), never lost to a 503.
                await asyncio.wait_for(sub.drain(), 2 * self.settings.timeout_s + 1)
                log.info("action relay: no longer serving the server's actions", server=server)

    async def _close(self) -> None:
        nc, self._nc = self._nc, None
        sending = [task for _, task in self._recent.values() if not task.done()]
        for task in [*self._work, *sending]:
            task.cancel()
        await asyncio.gather(*self._work, *sending, return_exceptions=True)
        if nc is not None:
            try:
                await asyncio.wait_for(nc.close(), self.settings.timeout_s)
            except Exception as exc:
                log.debug("action relay: NATS close", error=repr(exc))

    # ------------------------------------------------------------------ asking
    async def forward(
        self,
        server: AsteriskServer,
        action: str,
        headers: Mapping[str, object],
        listing: bool,
        timeout_s: float,
    ) -> tuple[Message, list[Message]]:
        """The owner's answer to `action` on `server` (as `AmiLink.send_list` gives it)."""
        from nats.errors import NoRespondersError

        request = ActionRequest(
            id=f"{self.node}-{secrets.token_hex(8)}",
            server=server.name,
            action=action,
            headers=wire_headers(headers),
            listing=listing,
            timeout_s=timeout_s,
            sent_at=time.time(),
            origin=self.node,
        )
        self.forwarded += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s + self.settings.timeout_s
        why = "no node owns the server's stream"
        while (remaining := deadline - loop.time()) > 0:
            nc = self._nc
            if nc is None or not nc.is_connected:
                why = "NATS unreachable"
                await asyncio.sleep(min(RETRY_S, remaining))
                continue
            # Asked again only when the last ask was certainly not handled: its start window
            # (sent_at) begins now, its id stays.
            attempt = replace(request, sent_at=time.time())
            try:
                msg = await nc.request(self.subject(server.name), attempt.encode(), timeout=remaining)
            except NoRespondersError:
                why = "no node owns the server's stream"
            except TimeoutError:
                why = f"the owner did not answer within {timeout_s + self.settings.timeout_s:g}s"
                break
            except Exception as exc:  # the connection went while asking: not delivered
                why = f"NATS: {type(exc).__name__}"
            else:
                reply = _decoded(msg.data, request.id)
                if reply.outcome != "not-owner":
                    return _result(action, reply)
                why = "the node asked no longer owns the server's stream"
            await asyncio.sleep(min(RETRY_S, max(0.0, deadline - loop.time())))
        self.unreachable += 1
        log.warning("agent action not sent: owner unreachable", server=server.name, action=action, reason=why)
        raise OwnerUnreachable(f"{action}: {server.name}: {why}")

    # ------------------------------------------------------------------ answering
    async def _on_request(self, msg: Any) -> None:
        # Each in a task of its own: a transfer's keyed digits must not hold the next request.
        task = asyncio.create_task(self._answer(msg), name="action-relay:answer")
        self._work.add(task)
        task.add_done_callback(self._work.discard)

    async def _answer(self, msg: Any) -> None:
        try:
            request = ActionRequest.decode(msg.data)
        except WireError as exc:
            log.warning("action relay: unreadable request", error=str(exc)[:300])
            reply = ActionReply("", "not-allowed", str(exc))
        else:
            try:
                reply = await self.execute(request)
            except Exception as exc:  # a bug, not Asterisk's answer: said, and a 503 there
                log.exception("action relay: action failed", action=request.action)
                reply = ActionReply(request.id, "link-down", f"{type(exc).__name__} on {self.node}")
        try:
            await msg.respond(reply.encode())
        except Exception as exc:  # the asking node gone, NATS away: it times out
            log.info("action relay: reply not sent", error=f"{type(exc).__name__}: {exc}"[:300])

    async def execute(self, request: ActionRequest) -> ActionReply:
        """Send `request`'s action on this node's link, once per id."""
        self._forget_old()
        seen = self._recent.get(request.id)
        if seen is not None:
            self.repeats += 1
            return await asyncio.shield(seen[1])
        link = self.links.get(request.server)
        if link is None or not self.is_owner(request.server):
            return ActionReply(request.id, "not-owner", f"{self.node} does not own {request.server!r}")
        if request.action.lower() not in _ALLOWED:
            return ActionReply(request.id, "not-allowed", f"{request.action!r} is not relayed")
        task = asyncio.create_task(self._send(link, request), name="action-relay:send")
        self._recent[request.id] = (time.monotonic(), task)
        return await asyncio.shield(task)

    async def _send(self, link: AmiLink, request: ActionRequest) -> ActionReply:
        late_s = time.time() - request.sent_at
        if late_s > self.settings.timeout_s:
            self.expired += 1
            log.warning(
                "action relay: request too old, not sent", action=request.action, late_s=round(late_s, 3)
            )
            return ActionReply(request.id, "expired", f"reached {self.node} {late_s:.1f}s after it was sent")
        self.served += 1
        timeout = min(max(request.timeout_s, 0.1), 600.0)
        try:
            if request.listing:
                response, items = await link.send_list(request.action, request.headers, timeout=timeout)
            else:
                response, items = await link.send(request.action, request.headers, timeout=timeout), []
        except ActionError as exc:
            return ActionReply(request.id, "refused", exc.message)
        except ActionTimeout as exc:
            return ActionReply(request.id, "timeout", str(exc))
        except LinkDown as exc:
            return ActionReply(request.id, "link-down", str(exc))
        log.info("action relayed", server=request.server, action=request.action, origin=request.origin)
        return ActionReply(request.id, "ok", "", dict(response), [dict(item) for item in items])

    def _forget_old(self) -> None:
        oldest = time.monotonic() - RECENT_S
        while self._recent:
            first_id, (at, task) = next(iter(self._recent.items()))
            if (at >= oldest and len(self._recent) <= MAX_RECENT) or not task.done():
                break
            del self._recent[first_id]


def _decoded(data: bytes, request_id: str) -> ActionReply:
    try:
        reply = ActionReply.decode(data)
    except WireError as exc:
        raise OwnerUnreachable(f"the owner's answer is unreadable: {exc}") from None
    if reply.id != request_id:
        raise OwnerUnreachable(f"the owner answered another request ({reply.id!r})")
    return reply


def _result(action: str, reply: ActionReply) -> tuple[Message, list[Message]]:
    """The owner's reply as the link would have given it (or raised)."""
    if reply.outcome == "ok":
        return Message(reply.response), [Message(item) for item in reply.items]
    if reply.outcome in ("refused", "not-allowed"):
        raise ActionError(action, reply.message)
    if reply.outcome == "timeout":
        raise ActionTimeout(reply.message)
    if reply.outcome == "link-down":
        raise LinkDown(reply.message)
    raise OwnerUnreachable(f"{action}: {reply.message}")


class RoutedLink:
    """One server's link as agent actions see it: this node's own when it owns the server's
    stream (or when there is no relay), else the owner's, through the relay."""

    def __init__(self, link: AmiLink, relay: ActionRelay | None) -> None:
        self.link, self.relay = link, relay
        self.server = link.server

    def _local(self) -> bool:
        return self.relay is None or self.relay.is_owner(self.server.name)

    async def send(
        self,
        action: str,
        headers: Mapping[str, object] | None = None,
        /,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - as AmiLink.send
        **more: object,
    ) -> Message:
        if self._local() or self.relay is None:
            return await self.link.send(action, headers, timeout=timeout, **more)
        seconds = self.server.action_timeout_s if timeout is None else timeout
        response, _ = await self.relay.forward(
            self.server, action, {**(headers or {}), **more}, False, seconds
        )
        return response

    async def send_list(
        self,
        action: str,
        headers: Mapping[str, object] | None = None,
        /,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - as AmiLink.send_list
        **more: object,
    ) -> tuple[Message, list[Message]]:
        if self._local() or self.relay is None:
            return await self.link.send_list(action, headers, timeout=timeout, **more)
        seconds = self.server.action_timeout_s if timeout is None else timeout
        return await self.relay.forward(self.server, action, {**(headers or {}), **more}, True, seconds)
