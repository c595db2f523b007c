"""Latencies observed in fixed buckets, for the Prometheus histograms (docs/operations.md)."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence


class LatencyHistogram:
    """Observations in fixed buckets (upper bounds in seconds), rendered at scrape time."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts per upper bound, as Prometheus wants them."""
        out, total = [], 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += count
            out.append(("+Inf" if bound == math.inf else repr(bound), float(total)))
        return out
