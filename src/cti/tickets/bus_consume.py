"""Opens and hands over tickets from the tracker's call events.

`CallAnswered` opens the call's ticket for the agent who answered (or hands the call's unresolved
ticket over to them: a blind transfer into another queue is answered there by someone else).
`CallTransferred` hands the ticket over at once when its target is a known user's interface or
device (an attended transfer to a colleague outside any queue). AMI names agents by queue-member
interface; `agent_for_interface` maps those to usernames. An interface nobody owns is logged
once and ignored: no ticket without an agent to own it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from cti.calls.events import CallAnswered, CallTransferred, Event
from cti.tickets.service import TicketService

log = structlog.get_logger(__name__)

# Bounds the memory of interfaces already reported: AMI names are finite in practice, but a
# misconfigured dialplan can mint new Local channels per call.
_REPORTED_LIMIT = 1024

CustomerForCall = Callable[[str, str], Awaitable[int | None]]
# (server, linkedid) -> the one customer the caller's number matched, from memory (the pop's lookup).
IdentifiedCustomer = Callable[[str, str], int | None]


class TicketConsumer:
    kinds: frozenset[type[Event]] = frozenset({CallAnswered, CallTransferred})

    def __init__(
        self,
        service: TicketService,
        agent_for_interface: Callable[[str], str | None],
        customer_for_call: CustomerForCall | None = None,
        identified_customer: IdentifiedCustomer | None = None,
    ) -> None:
        self._service = service
        self._agent_for_interface = agent_for_interface
        self._customer_for_call = customer_for_call
        self._identified_customer = identified_customer
        self._reported: set[str] = set()

    async def on_event(self, event: Event) -> None:
        if isinstance(event, CallAnswered):
            await self._answered(event)
        elif isinstance(event, CallTransferred):
            await self._transferred(event)

    async def _answered(self, event: CallAnswered) -> None:
        username = self._agent_for_interface(event.interface)
        if username is None:
            self._report_unknown(event.interface, event.linkedid)
            return
        customer_id = None
        if self._customer_for_call is not None:
            customer_id = await self._customer_for_call(event.server, event.linkedid)
        identified = (
            self._identified_customer(event.server, event.linkedid) if self._identified_customer else None
        )
        await self._service.open_for_answer(
            event.server, event.linkedid, username, event.queue, customer_id, identified_id=identified
        )

    async def _transferred(self, event: CallTransferred) -> None:
        # A blind transfer names a queue or an extension: the ticket waits for the next answer.
        username = self._agent_for_interface(event.target) if event.target else None
        if username is None:
            log.debug("transfer target is no user; ticket follows the next answer", target=event.target)
            return
        await self._service.hand_over(event.server, event.linkedid, username)

    def _report_unknown(self, interface: str, linkedid: str) -> None:
        if interface in self._reported:
            log.debug("answer by an unknown agent interface ignored", interface=interface, linkedid=linkedid)
            return
        if len(self._reported) >= _REPORTED_LIMIT:
            self._reported.clear()
        self._reported.add(interface)
        log.warning(
            "answer by an agent interface no user owns: no ticket opened",
            interface=interface,
            linkedid=linkedid,
        )
