"""Verdicts across seeds (``repeats``): the KD gain over paired seeds, with a confidence interval.

With ``repeats: k`` the baseline and the student are trained k times, each pair from one shared
initialization seed (the teacher once). Each pair gives a gain ``d_r = student_r − baseline_r``
(test top-1); the pairs are independent draws of the recipe's randomness (initialization, batch
order, augmentation) on one data split, so the mean gain's 95% interval is Student's t interval
``mean ± t(0.975, k−1) · s / √k``, ``s`` the sample standard deviation of the gains. With one seed
there is no interval. Torch-free.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

from core.seeding import derive_seed

LEVEL = 0.95


def repeat_stage(stage: str, repeat: int) -> str:
    """The stage of ``stage`` ("baseline" or "student") in repeat ``repeat``: the name itself for
    repeat 0 (what single-seed jobs, and the stage keys of shared baselines, use), ``<stage>.s<r>``
    after it."""
    return stage if repeat == 0 else f"{stage}.s{repeat}"


def repeat_seed(seed: int, repeat: int) -> int:
    """The initialization seed the baseline and the student of ``repeat`` share; repeat 0's is the
    one every job has always used, the others are derived from it and differ."""
    if repeat == 0:
        return derive_seed(seed, "student", "init")
    return derive_seed(seed, "student", "init", "repeat", repeat)


@dataclass(frozen=True)
class GainInterval:
    """The mean of the paired gains; with k ≥ 2 their sample standard deviation, the t quantile
    used and the interval's bounds (None with one seed)."""

    k: int
    mean: float
    std: float | None
    t: float | None
    low: float | None
    high: float | None


def gain_interval(gains: Sequence[float], level: float = LEVEL) -> GainInterval:
    """Student's t interval for the mean of ``gains`` (one per paired seed)."""
    k = len(gains)
    if k == 0:
        raise ValueError("no gains: at least one paired seed is needed")
    mean = statistics.fmean(gains)
    if k == 1:
        return GainInterval(1, mean, None, None, None, None)
    s = statistics.stdev(gains)
    t = float(stats.t.ppf(0.5 + level / 2, k - 1))
    half = t * s / math.sqrt(k)
    return GainInterval(k, mean, s, t, mean - half, mean + half)


def interval_verdict(interval: GainInterval) -> str:
    """The plain-language verdict from the interval (k ≥ 2): helped if its lower bound is above 0,
    hurt if its upper bound is below 0, else no clear difference."""
    assert interval.low is not None and interval.high is not None, "one seed gives no interval"
    if interval.low > 0:
        word = "helped"
    elif interval.high < 0:
        word = "hurt"
    else:
        word = f"made no clear difference at {interval.k} seeds"
    return (
        f"distillation {word}: mean gain {interval.mean:+.4f} over {interval.k} paired seeds, "
        f"95% confidence interval [{interval.low:+.4f}, {interval.high:+.4f}]"
    )
