"""`cti hours ...` and `cti campaign ...`: the command-line side of the dialer (argument parsing
is in cti.cli). Messages are for people; results are JSON or tables on stdout."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import TextIO

from cti.dialer.hours import Callee, decide
from cti.dialer.rulesets import RuleSetError, load_ruleset
from cti.dialer.timezones import NumberError

EXIT_BAD_INPUT = 2


def parse_instant(text: str | None) -> datetime:
    """ISO-8601; a time without a zone is UTC; none at all is now."""
    if text is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--at {text!r} is not an ISO-8601 instant (e.g. 2026-03-02T10:30:00+01:00)"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def run_hours_check(
    number: str,
    *,
    at: str | None,
    rules: str,
    region: str,
    timezone: str | None = None,
    subdivision: str | None = None,
    consent: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Print the decision as JSON; exit 0 allowed, 1 not allowed, 2 bad input."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        instant = parse_instant(at)
        ruleset = load_ruleset(rules)
        callee = Callee(number, timezone, None, subdivision, consent, region.upper())
        decision = decide(callee, instant, ruleset)
    except (NumberError, RuleSetError, ValueError) as exc:
        print(f"cti hours check: {exc}", file=err)
        return EXIT_BAD_INPUT
    json.dump(decision.to_json(), out, ensure_ascii=False, indent=1)
    out.write("\n")
    return 0 if decision.allowed else 1
