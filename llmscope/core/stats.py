"""The statistics behind `bench-cache`: summaries, Student-t confidence intervals, power-law fits, and the words
that say when a spread or a fit is noise. Pure arithmetic on plain numbers; it imports no torch and never prints."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
NOISY_SPREAD = 0.25  # a relative spread (std / mean, or an interval's half width / mean) above this is noise
POOR_FIT_R2 = 0.9  # a power-law fit explaining less of the variance than this does not describe the data

# Student's t, two-sided 95%: the 0.975 quantile for 1..30 degrees of freedom (standard tables)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
_Z975 = 1.959964


@dataclass(frozen=True)
class Stats:
    """Summary of a sample. std is the sample standard deviation (n - 1), None for fewer than two values."""

    n: int
    mean: float
    std: float | None
    min: float
    median: float
    max: float


@dataclass(frozen=True)
class Interval:
    """A 95% confidence interval for a mean (Student's t on the sample): low, high, and half width / mean."""

    low: float
    high: float
    relative_half_width: float
    level: float = CONFIDENCE


@dataclass(frozen=True)
class PowerFit:
    """time ≈ coefficient × length^exponent, fitted by least squares on log time against log length."""

    exponent: float
    coefficient: float
    r_squared: float
    points: int


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("mean of no values")
    return math.fsum(values) / len(values)


def sample_std(values: Sequence[float]) -> float | None:
    """Sample standard deviation (divides by n - 1); None when there are fewer than two values."""
    if len(values) < 2:
        return None
    centre = mean(values)
    return math.sqrt(math.fsum((value - centre) ** 2 for value in values) / (len(values) - 1))


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def summarize(values: Sequence[float | None]) -> Stats | None:
    """Stats of the values that are not None; None when there are none."""
    present = [float(value) for value in values if value is not None]
    if not present:
        return None
    return Stats(n=len(present), mean=mean(present), std=sample_std(present), min=min(present),
                 median=median(present), max=max(present))


def t_quantile_975(degrees: int) -> float:
    """Student's t 0.975 quantile: the table up to 30 degrees of freedom, a Cornish-Fisher expansion beyond."""
    if degrees < 1:
        raise ValueError("t quantile needs at least one degree of freedom")
    if degrees <= len(_T975):
        return _T975[degrees - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * degrees) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * degrees**2)


def mean_interval(stats: Stats) -> Interval | None:
    """The 95% confidence interval of the mean of a sample (None below two values or with a zero mean)."""
    if stats.std is None or stats.n < 2 or stats.mean == 0:
        return None
    half = t_quantile_975(stats.n - 1) * stats.std / math.sqrt(stats.n)
    return Interval(low=stats.mean - half, high=stats.mean + half, relative_half_width=half / abs(stats.mean))


def fit_power_law(lengths: Sequence[float], times: Sequence[float]) -> PowerFit | None:
    """Least-squares line through (log length, log time): its slope is the growth exponent.

    None when fewer than two distinct positive lengths (with positive times) are given.
    """
    points = [(math.log(x), math.log(y)) for x, y in zip(lengths, times) if x > 0 and y > 0]
    if len({x for x, _ in points}) < 2:
        return None
    xs, ys = [x for x, _ in points], [y for _, y in points]
    x_mean, y_mean = mean(xs), mean(ys)
    spread = math.fsum((x - x_mean) ** 2 for x in xs)
    slope = math.fsum((x - x_mean) * (y - y_mean) for x, y in points) / spread
    intercept = y_mean - slope * x_mean
    residual = math.fsum((y - (intercept + slope * x)) ** 2 for x, y in points)
    total = math.fsum((y - y_mean) ** 2 for y in ys)
    return PowerFit(exponent=slope, coefficient=math.exp(intercept),
                    r_squared=1.0 if total == 0 else 1.0 - residual / total, points=len(points))


# ---------------------------------------------------------------------------------------------- noise in words


def spread_note(stats: Stats | None, what: str) -> str | None:
    """Words for a sample whose spread is as large as a quarter of its mean (None when it is not)."""
    if stats is None or stats.std is None or stats.mean <= 0:
        return None
    relative = stats.std / stats.mean
    if relative <= NOISY_SPREAD:
        return None
    return (f"noise: {what} varied by ±{relative:.0%} of its mean from run to run (busy machine?), so the mean "
            "is not a reliable figure")


def interval_note(interval: Interval | None, pairs: int, what: str = "the speed-up") -> str | None:
    """Words for a confidence interval too wide to trust, or missing."""
    if interval is None:
        return f"one pair only: no spread measured, so nothing says whether {what} is noise"
    if interval.relative_half_width <= NOISY_SPREAD:
        return None
    return (f"noise: {what}'s 95% interval spans {interval.low:.2f}–{interval.high:.2f} "
            f"(±{interval.relative_half_width:.0%}) over {pairs} pairs; the machine was busy or the runs too few, "
            "so read it as 'somewhere in that range'")


def fit_note(fit: PowerFit) -> str | None:
    """Words for a power-law fit that does not describe its points (or cannot be tested with two)."""
    if fit.r_squared < POOR_FIT_R2:
        return (f"poor fit (R² {fit.r_squared:.2f}): the times do not follow one power law, most likely noise; "
                "the exponent means little")
    if fit.points < 3:
        return "two points: the line passes through both, so R² says nothing about the fit"
    return None
