"""A call's outcome, durations and who hung up, derived from what was seen of it when it ends.

Pure functions over a `LiveCall` (calls/live_call.py): the tracker settles every call through
`settle`, whether it followed the call live, restored it after a restart, or rebuilt it from
Asterisk's records (calls/recovery.py), so each figure means the same whatever the path.
"""

from __future__ import annotations

from cti.calls.channels import ORIGINATE_ANSWERED, dial_status_outcome, originate_outcome
from cti.calls.live_call import LiveCall
from cti.calls.records import HangupBy


def settle(call: LiveCall, untimed: bool = False) -> None:
    """Derive the call-level outcome, durations and who hung up from what was seen."""
    record = call.record
    answered = [s for s in record.segments if s.outcome == "answered"]
    if record.segments:
        record.wait_s = record.segments[0].wait_s
    if answered:
        record.ring_s = answered[0].ring_s
    record.outcome = _outcome(call, bool(answered))
    if record.answered_at is not None:
        record.talk_s = round(_talk_time(call), 3)
    if not record.segments:
        _settle_outside_queues(call, untimed)
    record.hangup_by = _hangup_by(call)
    for segment in record.segments:
        segment.wait_s, segment.ring_s, segment.talk_s = (
            _r(segment.wait_s),
            _r(segment.ring_s),
            _r(segment.talk_s),
        )
    record.wait_s, record.ring_s = _r(record.wait_s), _r(record.ring_s)


def _outcome(call: LiveCall, answered: bool) -> str:
    record = call.record
    if call.originated and not call.ivr_seen and record.originate_reason is not None:
        # An outbound call's outcome is what the callee's network said; what the queue did
        # with an answered call (agent or drop) is in its segment.
        if call.origin_device is not None and record.originate_reason == ORIGINATE_ANSWERED:
            # The device (the agent) answered; the callee is the leg it dialled.
            return "outbound_" + dial_status_outcome(call.dial_out_status)
        return "outbound_" + originate_outcome(record.originate_reason)
    if answered:
        return "answered"
    if record.segments:
        last = record.segments[-1].outcome or "unknown"
        return "abandoned" if last == "abandoned" else ("timeout" if last != "unknown" else "unknown")
    if call.originated and not call.ivr_seen:
        return "outbound_unknown"
    return "ivr_only" if call.ivr_seen else "no_queue"


def _settle_outside_queues(call: LiveCall, untimed: bool) -> None:
    """Answered outside any queue (click-to-call, an outbound call put through by Dial):
    answered when the callee answered, talking from then to the first hang-up."""
    record = call.record
    if call.originated and not call.ivr_seen and call.originate_answered_at is not None:
        first = call.originate_answered_at
        record.answered_at = min(record.answered_at or first, first)
    if call.origin_device is not None:
        # Click-to-call: the agent's own device made the call.
        record.agent_interface = record.agent_interface or call.origin_device
    if record.answered_at is not None and not untimed:
        record.talk_s = round(max(0.0, _conversation_end(call) - record.answered_at), 3)


def _conversation_end(call: LiveCall) -> float:
    """The first hang-up after the answer (the last channel goes a little later)."""
    record = call.record
    if (
        call.hangup_signal is not None
        and record.answered_at is not None
        and call.hangup_signal[1] >= record.answered_at
    ):
        return call.hangup_signal[1]
    return record.ended_at or 0.0


def _talk_time(call: LiveCall) -> float:
    """Time the caller spent talking to agents: each answered queue segment, plus the
    conversation that goes on outside any queue after an attended transfer."""
    record = call.record
    end = _conversation_end(call)
    total = 0.0
    for segment in record.segments:
        if segment.outcome != "answered":
            continue
        if segment.talk_s is None and segment.left_at is not None:
            segment.talk_s = round(max(0.0, end - segment.left_at), 3)
        total += segment.talk_s or 0.0
    if call.last_complete is not None and call.last_complete[0] == "transfer" and record.transferred_to:
        total += max(0.0, end - call.last_complete[1])
    return total


def _hangup_by(call: LiveCall) -> HangupBy:
    record = call.record
    if call.pbx_cut:
        return "pbx"
    last_answered = record.segments[-1].outcome == "answered" if record.segments else False
    if call.last_complete is not None and last_answered and not record.transferred_to:
        reason = call.last_complete[0]
        if reason in ("caller", "agent"):
            return reason  # type: ignore[return-value]
    if call.origin_device is not None and not call.ivr_seen and not record.segments:
        return _device_call_hangup_by(call)
    if call.originated and record.answered_at is None and not call.ivr_seen and not record.segments:
        return "caller" if record.originate_reason in (1, 5) else "system"
    if call.hangup_signal is not None:
        return call.hangup_signal[0]
    return "unknown"


def _device_call_hangup_by(call: LiveCall) -> HangupBy:
    """Click-to-call: the call's first channel is the agent's phone and the customer is the
    leg it dialled, the other way round from every other call."""
    record = call.record
    if record.originate_reason != 4:  # the agent's phone did not answer
        return "agent" if record.originate_reason in (1, 5) else "system"
    if record.answered_at is None:  # the customer did not answer
        unanswered: dict[str, HangupBy] = {"BUSY": "caller", "CANCEL": "agent"}
        return unanswered.get(call.dial_out_status or "", "system")
    if call.hangup_signal is None:
        return "unknown"
    swapped: dict[str, HangupBy] = {"caller": "agent", "agent": "caller"}
    return swapped.get(call.hangup_signal[0], call.hangup_signal[0])


def _r(value: float | None) -> float | None:
    """Durations to the millisecond: Asterisk's timestamps are no finer in practice."""
    return None if value is None else round(value, 3)
