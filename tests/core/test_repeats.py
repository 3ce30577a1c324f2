"""Verdicts across seeds: the interval of the mean paired gain, worked out by hand."""

from __future__ import annotations

import math

import pytest

from core.repeats import gain_interval, interval_verdict, repeat_seed, repeat_stage


def test_three_seeds_give_the_hand_computed_t_interval() -> None:
    ci = gain_interval([0.02, 0.05, 0.03])
    # mean 0.1 / 3; deviations -1/75, 1/60, -1/300: squares sum to 7/15000, over k - 1 = 2
    assert ci.k == 3
    assert ci.mean == pytest.approx(0.0333333333333)
    assert ci.std == pytest.approx(math.sqrt(7 / 30000)) == pytest.approx(0.0152752523165)
    # t(0.975, 2) has a closed form for 2 degrees of freedom: (2q − 1) / sqrt(2q(1 − q))
    assert ci.t == pytest.approx(0.95 / math.sqrt(2 * 0.975 * 0.025)) == pytest.approx(4.302652729749)
    # half-width 4.302652729749 * 0.0152752523165 / sqrt(3) = 0.037945830336
    assert ci.low == pytest.approx(0.0333333333333 - 0.0379458303360)
    assert ci.high == pytest.approx(0.0333333333333 + 0.0379458303360)
    assert ci.low == pytest.approx(-0.004612497003) and ci.high == pytest.approx(0.071279163669)


def test_two_seeds_use_the_one_degree_of_freedom_quantile() -> None:
    ci = gain_interval([0.10, 0.12])
    # t(0.975, 1) = tan(0.475 pi) = 12.7062...; s = 0.02 / sqrt(2)
    assert ci.t == pytest.approx(math.tan(0.475 * math.pi))
    assert ci.std == pytest.approx(0.02 / math.sqrt(2))
    half = math.tan(0.475 * math.pi) * (0.02 / math.sqrt(2)) / math.sqrt(2)
    assert (ci.low, ci.high) == pytest.approx((0.11 - half, 0.11 + half))
    assert ci.low is not None and ci.low < 0 < ci.high  # two close gains still leave it open


def test_one_seed_has_no_interval() -> None:
    ci = gain_interval([0.04])
    assert (ci.k, ci.mean, ci.std, ci.t, ci.low, ci.high) == (1, 0.04, None, None, None, None)
    with pytest.raises(AssertionError, match="no interval"):
        interval_verdict(ci)
    with pytest.raises(ValueError, match="at least one"):
        gain_interval([])


@pytest.mark.parametrize(
    ("gains", "word"),
    [
        ([0.05, 0.06, 0.07], "distillation helped"),
        ([-0.05, -0.06, -0.07], "distillation hurt"),
        ([0.02, 0.05, 0.03], "distillation made no clear difference at 3 seeds"),
    ],
)
def test_the_verdict_follows_the_interval(gains: list[float], word: str) -> None:
    text = interval_verdict(gain_interval(gains))
    assert text.startswith(word + ":")
    assert f"over {len(gains)} paired seeds" in text and "95% confidence interval [" in text


def test_repeat_zero_keeps_the_stage_names_and_seed_of_a_single_seed_job() -> None:
    from core.seeding import derive_seed

    assert [repeat_stage("student", r) for r in range(3)] == ["student", "student.s1", "student.s2"]
    assert repeat_seed(7, 0) == derive_seed(7, "student", "init")  # what every job has used
    seeds = {repeat_seed(7, r) for r in range(5)}
    assert len(seeds) == 5 and repeat_seed(7, 1) == repeat_seed(7, 1)
