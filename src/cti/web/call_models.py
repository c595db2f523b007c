"""Request and response models of the call controls (`web/call_routes.py`)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import StringConstraints

from cti.web.api import RequestModel, ResponseModel

Word = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class TransferTarget(RequestModel):
    """A colleague (username), a queue (name) or a number (any format the directory reads)."""

    MESSAGES: ClassVar[dict[str, str]] = {
        "kind": "'kind' is one of agent, queue, number",
        "value": "'value' must be a non-empty string",
    }
    kind: Literal["agent", "queue", "number"]
    value: Word


class Transfer(RequestModel):
    MESSAGES: ClassVar[dict[str, str]] = {
        "mode": "'mode' is blind or attended",
        "target": "'target' is {kind, value}",
    }
    mode: Literal["blind", "attended"]
    target: TransferTarget


class Dtmf(RequestModel):
    MESSAGES: ClassVar[dict[str, str]] = {"digits": "'digits' are 1 to 32 of 0-9 * # A-D"}
    digits: Annotated[str, StringConstraints(pattern=r"^[0-9*#A-D]{1,32}$")]


class CallControl(ResponseModel):
    """What was done, on which call (its server and Linkedid) and channel."""

    ok: Literal[True]
    action: str
    server: str | None = None  # None only for a link that names no server (tests' fakes)
    linkedid: str
    channel: str
    target: str | None = None


class Colleague(ResponseModel):
    username: str
    display_name: str
    role: Literal["agent", "supervisor", "admin"]


class TransferTargets(ResponseModel):
    colleagues: list[Colleague]
    queues: list[str]


# ------------------------------------------------------------------------ the supervisor's floor
class Spy(RequestModel):
    MESSAGES: ClassVar[dict[str, str]] = {
        "interface": "'interface' is the agent's member interface (PJSIP/1001)",
        "mode": "'mode' is listen, whisper or barge",
    }
    interface: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=128)]
    mode: Literal["listen", "whisper", "barge"]


class ForcePause(RequestModel):
    MESSAGES: ClassVar[dict[str, str]] = {
        "interface": "'interface' is the agent's member interface (PJSIP/1001)",
        "paused": "'paused' must be true or false",
    }
    interface: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=128)]
    paused: bool = True
    reason: Annotated[str, StringConstraints(max_length=40)] | None = None


class Member(RequestModel):
    MESSAGES: ClassVar[dict[str, str]] = {"interface": "'interface' is the agent's member interface"}
    interface: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=128)]


class Spying(ResponseModel):
    ok: Literal[True]
    mode: str
    interface: str
    from_device: str
    action_id: str


class MemberChange(ResponseModel):
    ok: Literal[True]
    interface: str
    paused: bool | None = None
    queues: list[str] | None = None


class AbandonedCall(ResponseModel):
    server: str
    linkedid: str
    number: str | None
    raw: str | None
    queue: str | None
    started_at: str
    wait_s: float | None
    outcome: str
    called_back: bool


class AbandonedList(ResponseModel):
    since: str
    calls: list[AbandonedCall]


class RunningCampaign(ResponseModel):
    name: str
    dial_mode: str
    queue: str


class RunningCampaigns(ResponseModel):
    campaigns: list[RunningCampaign]


class NewCallback(RequestModel):
    MESSAGES: ClassVar[dict[str, str]] = {
        "number": "'number' is the number to call back",
        "at": "'at' is an ISO-8601 instant with its time zone",
    }
    number: Word
    at: Word
    note: Annotated[str, StringConstraints(max_length=500)] = ""
    name: Annotated[str, StringConstraints(max_length=120)] = ""
    for_me: bool = True


class Callback(ResponseModel):
    id: int
    phone: str
    at: str | None
    for_me: bool
    note: str
    name: str
    status: str
    # A callback for me: waiting for me to be free (paused, in a call, logged out) although due,
    # and when it goes to the team if I am still away.
    waiting: bool = False
    team_at: str | None = None


class ScheduledCallback(ResponseModel):
    id: int
    campaign: str
    phone: str
    at: str


class Callbacks(ResponseModel):
    callbacks: list[Callback]


class OutboundToday(ResponseModel):
    qualified: int
    argued: int
    converted: int
    conversion: float | None
