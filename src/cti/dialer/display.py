"""The dialer's documents (the JSON `--json` prints) as people read them: `key: value` blocks
and aligned tables, durations as "15 min", instants in the machine's zone, rates as percents.
Everything is rendered from the JSON document itself, so the two outputs cannot disagree."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from cti.humanize import block, count, duration, local_zone, percent, plural, table_lines, when

STATUS_ORDER = ("pending", "retry", "callback", "preview", "dialing", "done", "blocked")


def _at(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


def _seconds(text: str | int) -> int:
    """A duration as the JSON writes it ("900s") or as a number of seconds."""
    return int(str(text).rstrip("s"))


def _listed(items: list[str] | None, empty: str) -> str:
    return ", ".join(items) if items else empty


def _retries(policy: Mapping[str, Mapping[str, Any]]) -> str:
    parts = []
    for outcome, rule in policy.items():
        times = "once" if rule["max"] == 1 else f"{rule['max']} times"
        parts.append(
            f"{outcome} after {duration(_seconds(rule['delay']))} ({times})"
            if rule["max"]
            else f"{outcome}: never"
        )
    # Three a line: the policy has eight outcomes.
    return "\n".join(", ".join(parts[i : i + 3]) for i in range(0, len(parts), 3))


def _rules(doc: Mapping[str, Any]) -> str:
    countries = doc["countries"]
    if countries is None:
        called = "any country"
    else:
        called = ", ".join(countries) + ("" if doc["countries_declared"] else " (the rule set's)")
    text = f"{doc['ruleset']}; countries called: {called}; special numbers: "
    text += _listed(doc["allow_numbers"], "none")
    if doc["fallback"] is not None:
        text += f"; countries without a rule set: {doc['fallback']}"
    return text


def _window(doc: Mapping[str, Any], now: datetime) -> str:
    starts, stops = _at(doc["starts_at"]), _at(doc["stops_at"])
    start = "as soon as started" if starts is None else f"from {when(starts, now=now)}"
    stop = "until stopped" if stops is None else f"until {when(stops, now=now)}"
    return f"{start}, {stop}"


def campaign_text(doc: Mapping[str, Any], now: datetime) -> str:
    """A campaign (`create`, `update`)."""
    return block(_campaign_pairs(doc, now))


def _campaign_pairs(doc: Mapping[str, Any], now: datetime) -> list[tuple[str, str]]:
    agents = _listed(doc["agent_group"], "the queue's members")
    amd = "detected" if doc["amd"] else "not detected"
    pairs = [
        ("campaign", f"{doc['name']} (#{doc['id']}), {doc['state']}"),
        ("dialling", f"{doc['dial_mode']}, into queue {doc['queue']}; agents: {agents}"),
        ("caller ID", doc["caller_id"] or "-"),
        ("rules", _rules(doc)),
        ("numbers", f"national numbers read as {doc['region']}"),
        ("principal", doc["principal"] or "- (caps count this campaign's calls only)"),
        ("dials", _window(doc, now)),
        ("attempts", f"at most {doc['max_attempts']} a contact; priority {doc['priority']}"),
        ("retries", _retries(doc["retry_policy"])),
        ("ringing", f"{duration(doc['ring_timeout_s'])}; answering machines {amd}"),
        (
            "pacing",
            f"at most {doc['max_ratio']:g} calls a free agent; drops kept under "
            f"{percent(doc['abandon_limit'])} over {duration(doc['abandon_window_s'])}",
        ),
    ]
    return pairs


def _counted(counts: Mapping[str, int], order: tuple[str, ...] = ()) -> str:
    keys = [k for k in order if k in counts] + sorted(k for k in counts if k not in order)
    return ", ".join(f"{count(counts[k])} {k}" for k in keys) or "none"


def show_text(doc: Mapping[str, Any], now: datetime) -> str:
    """`cti campaign show`: the campaign, its contacts and its figures."""
    contacts: Mapping[str, int] = doc["contacts"]
    stats: Mapping[str, Any] = doc["stats"]
    total = sum(contacts.values())
    window = duration(stats["abandon_window_s"])
    figures = [
        ("contacts", f"{count(total)}" + (f": {_counted(contacts, STATUS_ORDER)}" if total else "")),
        (
            "calls",
            f"{count(stats['attempts'])} placed; {count(stats['connected'])} answered "
            f"(contact rate {percent(stats['contact_rate'])}); "
            f"{count(stats['handled_by_agent'])} taken by an agent",
        ),
        (
            "drops",
            f"{count(stats['abandoned'])} abandoned, {count(stats['late_connects'])} late connects "
            f"(agent after {stats['drop_after_s']:g} s): drop rate {percent(stats['drop_rate'])} over "
            f"{window} (limit {percent(doc['abandon_limit'])}), abandon rate "
            f"{percent(stats['abandon_rate'])}",
        ),
        (
            "results",
            f"{count(stats['argued'])} argued, {count(stats['converted'])} converted "
            f"(conversion {percent(stats['conversion'])} of the calls an agent took)",
        ),
        ("outcomes", _counted(stats["outcomes"])),
        ("dispositions", _counted(stats["dispositions"])),
    ]
    return block(_campaign_pairs(doc, now) + figures)


def list_text(
    docs: Sequence[Mapping[str, Any]], counts: Mapping[str, Mapping[str, int]], now: datetime
) -> str:
    if not docs:
        return "no campaign yet: cti campaign create NAME"
    rows = []
    for doc in docs:
        mine = counts.get(doc["name"], {})
        waiting = sum(mine.get(s, 0) for s in ("pending", "retry", "callback"))
        rows.append(
            [
                doc["name"],
                doc["state"],
                doc["dial_mode"],
                doc["ruleset"],
                doc["queue"],
                count(sum(mine.values())),
                count(waiting),
                _window(doc, now) if doc["starts_at"] or doc["stops_at"] else "-",
            ]
        )
    header = ["name", "state", "mode", "rules", "queue", "contacts", "to call", "dials"]
    return "\n".join(table_lines(header, rows, right=(5, 6)))


def _from(item: Mapping[str, Any], state: str) -> str:
    at = _at(item["next_attempt_at"])
    if at is not None:
        return when(at)
    if item["why_code"].startswith("campaign_") and item["why_code"] != "campaign_ended":
        return "once started"
    return "never"


def why_text(
    items: Sequence[Mapping[str, Any]],
    campaign: Mapping[str, Any],
    now: datetime,
    limit: int,
    code: str | None,
) -> str:
    """`cti campaign why`: a line a contact (status, attempts, reason code, from when) with the
    reason in words under it."""
    state = campaign["state"]
    head = f"campaign {campaign['name']} is {state}"
    if state != "running":
        head += f" (nothing is dialled before: cti campaign start {campaign['name']})"
    lines = [f"{head}; judged at {when(now)}"]
    what = f"with reason {code}" if code else "not being dialled"
    if not items:
        lines.append(f"no contact {what}" if code else "every contact is being dialled, or there are none")
        return "\n".join(lines)
    more = f" (the first {limit}: --limit for more)" if len(items) >= limit else ""
    lines.append(f"{plural(len(items), 'contact')} {what}{more}")
    header = ["contact", "phone", "status", "attempts", "why", "from"]
    rows = [
        [
            str(item["contact"]),
            item["phone"],
            item["status"],
            str(item["attempts"]),
            item["why_code"],
            _from(item, state),
        ]
        for item in items
    ]
    table = table_lines(header, rows, right=(0, 3))
    lines.append(table[0])
    indent = " " * (table[0].index("phone"))  # the reason reads under the contact's number
    for line, item in zip(table[1:], items, strict=True):
        lines.append(line)
        lines.append(indent + item["why_not_dialed"])
    return "\n".join(lines)


def hours_text(doc: Mapping[str, Any], at: datetime, now: datetime) -> str:
    """`cti hours check`: the verdict first, then why."""
    allowed = doc["allowed"]
    nxt = _at(doc["next_allowed_at"])
    if allowed:
        verdict = "may be called"
    elif nxt is None:
        verdict = "may not be called, ever under these rules"
    else:
        verdict = f"may not be called before {when(nxt, now=at)}"  # how long after the instant asked
        zones = doc["timezones"]
        theirs = nxt.astimezone(ZoneInfo(zones[0])) if len(zones) == 1 else None
        if theirs is not None and theirs.utcoffset() != nxt.astimezone(local_zone()).utcoffset():
            verdict += f", {theirs.strftime('%a %H:%M')} there"  # the callee's clock
    there = "; ".join(
        f"{zone} {datetime.fromisoformat(local).strftime('%a %H:%M')}"
        for zone, local in doc["local_time"].items()
    )
    zones = ", ".join(doc["timezones"]) or "unknown"
    ruleset = doc["ruleset"]
    pairs = [
        ("number", f"{doc['number']} ({doc['territory'] or '?'}): {verdict}"),
        (
            "at",
            when(at, now=now if abs((at - now).total_seconds()) < 60 else None)
            + (f"; there: {there}" if there else ""),
        ),
        ("why", f"{doc['rule']}: {doc['reason']}"),
        ("rule set", f"{ruleset['name']}: {ruleset['why']}"),
    ]
    if ruleset["source"]:
        pairs.append(("law", ruleset["source"]))
    pairs.append(("zones", f"{zones} (from {doc['zone_source'] or '-'})"))
    return block(pairs)
