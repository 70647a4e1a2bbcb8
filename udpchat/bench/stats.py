"""Pure helpers that turn samples into the figures the benchmark reports.

Nothing here measures or reads a clock, so the unit tests can check every rule: how a
percentile is interpolated, what a summary holds, how a ratio to the baseline is taken
and when a target counts as met.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypedDict


class Summary(TypedDict):
    """A figure measured once per round: the median with the spread around it."""

    median: float
    min: float
    max: float
    samples: list[float]


def percentile(values: Sequence[float], fraction: float) -> float:
    """The `fraction` (0..1) quantile, interpolated linearly between the closest ranks.

    This is numpy's default ("linear") method, so p50 of an even count is the mean of
    the two middle values. ValueError for no values or a fraction outside 0..1.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within 0..1, not {fraction}")
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    weight = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * weight


def summarize(values: Sequence[float]) -> Summary:
    """Median, min and max of per-round values (ValueError when there are none)."""
    if not values:
        raise ValueError("summary of no values")
    return {
        "median": percentile(values, 0.5),
        "min": min(values),
        "max": max(values),
        "samples": [float(value) for value in values],
    }


def ratio(value: float, baseline: float) -> float:
    """`value / baseline`; ValueError when the baseline is not a positive number.

    Ratios are taken round by round (a model against the baseline of the same round and
    placement) and summarized afterwards, so slow drift of the machine cancels out.
    """
    if not baseline > 0 or not math.isfinite(baseline):
        raise ValueError(f"baseline must be a positive number, not {baseline}")
    return value / baseline


def ratios(values: Sequence[float], baselines: Sequence[float]) -> list[float]:
    """Round-by-round ratios of two equally long series."""
    if len(values) != len(baselines):
        raise ValueError("a ratio needs one baseline per value")
    return [ratio(value, base) for value, base in zip(values, baselines, strict=True)]


def meets(value: float, limit: float, higher_is_better: bool) -> bool:
    """Whether `value` reaches a target of `limit` (at least, or at most)."""
    return value >= limit if higher_is_better else value <= limit


def all_finite(document: object) -> bool:
    """True when every number in a JSON-like tree is finite (no NaN, no infinity)."""
    if isinstance(document, bool) or document is None or isinstance(document, str):
        return True
    if isinstance(document, (int, float)):
        return math.isfinite(document)
    if isinstance(document, dict):
        return all(all_finite(value) for value in document.values())
    if isinstance(document, (list, tuple)):
        return all(all_finite(value) for value in document)
    return False
