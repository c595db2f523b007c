"""What an IVR user event says: which menu, and whether the caller entered it, chose, keyed an
invalid digit or said nothing.

Our dialplans write `UserEvent(IVR,Menu: main,Step: enter)`, `Choice: 1`, `Invalid: 7`,
`Timeout: yes` (docs/asterisk.md, "Event contract"). Other sites' IVRs say the same things in
other words: `Step: prompt` with `Try: 1`, `Choice: invalid`, `Choice: timeout`, `Key: 3`,
`Node:` for the menu... Counting their "invalid" as a menu choice named "invalid" would leave the
invalid-input and timeout counters at 0 and invent choices. The vocabulary is a setting
(`[tracker] ivr_*`, docs/asterisk.md); the defaults read ours and the common variants.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

IvrKind = str  # enter / choice / invalid / timeout / step


def _lower(words: Iterable[str]) -> frozenset[str]:
    return frozenset(w.strip().lower() for w in words if w.strip())


@dataclass(frozen=True)
class IvrVocabulary:
    event: str = "IVR"
    menu_headers: tuple[str, ...] = ("Menu", "Node", "IvrMenu")
    choice_headers: tuple[str, ...] = ("Choice", "Key", "Digit", "Selection")
    invalid_headers: tuple[str, ...] = ("Invalid",)
    timeout_headers: tuple[str, ...] = ("Timeout", "NoInput")
    step_headers: tuple[str, ...] = ("Step", "Action")
    try_headers: tuple[str, ...] = ("Try", "Attempt", "Tries")
    # Values (of a choice or a step header) that mean something other than a key chosen.
    invalid_words: frozenset[str] = _lower(("invalid", "i", "bad", "wrong", "unknown", "error"))
    timeout_words: frozenset[str] = _lower(("timeout", "t", "noinput", "no_input", "no-input", "silence"))
    enter_words: frozenset[str] = _lower(("enter", "prompt", "start", "menu", "play"))

    @classmethod
    def from_lists(
        cls,
        event: str = "IVR",
        invalid_words: Iterable[str] | None = None,
        timeout_words: Iterable[str] | None = None,
        enter_words: Iterable[str] | None = None,
    ) -> IvrVocabulary:
        default = cls()
        return cls(
            event=event,
            invalid_words=_lower(invalid_words) if invalid_words is not None else default.invalid_words,
            timeout_words=_lower(timeout_words) if timeout_words is not None else default.timeout_words,
            enter_words=_lower(enter_words) if enter_words is not None else default.enter_words,
        )

    def menu(self, msg: Mapping[str, str]) -> str:
        return next((msg[h] for h in self.menu_headers if h in msg), "")

    def classify(self, msg: Mapping[str, str]) -> tuple[IvrKind, str]:
        """(kind, value) of one IVR event."""
        for header in self.invalid_headers:
            if header in msg:
                return "invalid", msg[header]
        for header in self.timeout_headers:
            if header in msg:
                return "timeout", msg[header] or "yes"
        for header in self.choice_headers:
            if header in msg:
                return self._word(msg[header], "choice")
        for header in self.step_headers:
            if header in msg:
                kind, value = self._word(msg[header], "step")
                if kind == "step" and value.strip().lower() in self.enter_words:
                    # A re-prompt after a miss (Try: 2...) is not a new visit of the menu.
                    return ("enter", "enter") if self._first_try(msg) else ("step", "reprompt")
                return kind, value
        return "step", ""

    def _word(self, value: str, otherwise: IvrKind) -> tuple[IvrKind, str]:
        word = value.strip().lower()
        if word in self.invalid_words:
            return "invalid", ""
        if word in self.timeout_words:
            return "timeout", "yes"
        return otherwise, value

    def _first_try(self, msg: Mapping[str, str]) -> bool:
        for header in self.try_headers:
            if header in msg:
                try:
                    return int(msg[header].strip()) <= 1
                except ValueError:
                    return True
        return True
