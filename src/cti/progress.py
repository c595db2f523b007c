"""Progress bars for long imports, on stderr, only when stderr is a terminal.

Piped, redirected, under CI or in tests the bar does nothing at all: no escape sequence reaches a
log. The importers call `update` as often as they like (every few thousand rows); the bar is
redrawn at most `REDRAW_S` apart, so a million-row import pays for a few dozen redraws, not a
million.
"""

from __future__ import annotations

import os
import time
from typing import NoReturn, TextIO

from tqdm import tqdm

REDRAW_S = 0.25


class Bar:
    """One phase of an import (`reading`, `saving`...). `total` in `unit`s (bytes of the file,
    characters, rows), or None while unknown (the bar then counts). `then`: what is being done
    once the bar is full (the import's last step, which it cannot measure). `force` draws it on
    any stream: for the import benchmark, which measures what the bar costs."""

    def __init__(
        self,
        stream: TextIO,
        what: str,
        total: int | None,
        unit: str = "B",
        *,
        then: str = "",
        force: bool = False,
    ) -> None:
        self.active = force or _is_terminal(stream)
        self.then = then
        self._bar: tqdm[NoReturn] | None = None
        self._last = 0.0
        if self.active:
            sized = _has_size(stream)
            self._bar = tqdm(
                total=total,
                desc=what,
                unit=unit,
                unit_scale=unit != "rows",  # 12.3M/48.0M chars; rows are counted in full
                unit_divisor=1024 if unit == "B" else 1000,
                file=stream,
                leave=False,  # the import's summary follows: the finished bar would only repeat it
                # A terminal that gives no size (a serial console, `docker exec -t`, `script`)
                # would get no bar at all from tqdm: 80 columns and 20 lines there.
                dynamic_ncols=sized,
                ncols=None if sized else 80,
                nrows=None if sized else 20,
                mininterval=REDRAW_S,
                # tqdm's own throttle re-reads the clock every `miniters` updates; ours does it
                # once per call, before tqdm is touched at all.
                miniters=1,
            )

    def update(self, done: int, rows: int | None = None, total: int | None = None) -> None:
        """`done`: how far, in the bar's unit, from the start; `rows`: shown beside it;
        `total`: once it is known (a file's characters, once it is decoded)."""
        if self._bar is None:
            return
        now = time.monotonic()
        if total is not None and self._bar.total != total:
            self._bar.total = total
        full = self._bar.total is not None and done >= self._bar.total
        if now - self._last < REDRAW_S and not full:
            return
        self._last = now
        postfix = "" if rows is None else f"{rows:,} rows"
        if full and self.then:
            postfix = f"{postfix}; {self.then}" if postfix else self.then
        if postfix:
            self._bar.set_postfix_str(postfix, refresh=False)
        self._bar.update(done - self._bar.n)
        if full:
            self._bar.refresh()  # tqdm's own throttle would keep the last step from showing

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _has_size(stream: TextIO) -> bool:
    """Does the terminal tell its size (columns and lines)?"""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):  # io.StringIO (the benchmark), a closed stream
        return False
    return size.columns > 0 and size.lines > 0


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or stand-in stream
        return False
