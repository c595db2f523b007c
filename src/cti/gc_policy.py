"""Garbage-collector settings for a daemon whose event loop must answer within milliseconds.

CPython's cycle collector stops the whole process while it runs, and a pass over the oldest
generation walks every container object still alive: about 0.8 µs per object on the 2-core
machine the screen-pop target is measured on. Once started, the daemon holds some 120,000 such
objects that live as long as it does (phonenumbers' metadata for every country, SQLAlchemy's
mappers, the holiday tables, the modules themselves), so each full pass held the screen pops for
about 100 ms — several times a minute under load.

`after_startup` moves everything alive at the end of start-up to the permanent generation
(`gc.freeze`), which the collector never scans again, and makes full passes rarer: they are
needed only for cycles that survived two younger passes, which the daemon's per-call objects
seldom do (they are freed by reference counting when the call ends).
"""

from __future__ import annotations

import gc

import structlog

log = structlog.get_logger(__name__)

# Young generation as CPython's default; the middle one 10x less often than the young one, as
# by default; the oldest 10x less often than by default (every 100 middle passes, and only when
# enough new long-lived objects accumulated since the last one — CPython's own rule).
THRESHOLDS = (700, 10, 100)


_done = False


def after_startup() -> bool:
    """Once per process (a daemon starts once; a test process starts many, and freezing again
    would keep the cycles of every finished daemon forever). True when it acted."""
    global _done
    if _done:
        return False
    _done = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    log.debug(
        "start-up objects frozen for the collector", frozen=gc.get_freeze_count(), thresholds=THRESHOLDS
    )
    return True
