"""pass@1 with Wilson confidence intervals and paired (McNemar / sign test) comparisons."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

__all__ = [
    "Z95",
    "wilson_interval",
    "PassRate",
    "pass_rate",
    "PairedComparison",
    "mcnemar_exact",
    "paired_comparison",
    "pass_at_k",
]

Z95 = 1.959963984540054  # two-sided 95% standard-normal quantile


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n`` (``(0, 1)`` when ``n == 0``)."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    lo, hi = center - half, center + half
    # exact ends at the boundaries (avoid -1e-17 and the like)
    if k == 0:
        lo = 0.0
    if k == n:
        hi = 1.0
    return (max(0.0, lo), min(1.0, hi))


@dataclass(frozen=True)
class PassRate:
    n: int
    passed: int
    pass_at_1: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict:
        return asdict(self)


def pass_rate(outcomes: Sequence[bool], z: float = Z95) -> PassRate:
    """pass@1 (one sample per task) with its Wilson interval."""
    n = len(outcomes)
    k = sum(bool(o) for o in outcomes)
    lo, hi = wilson_interval(k, n, z)
    return PassRate(n, k, k / n if n else float("nan"), lo, hi)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al. 2021) from ``n`` samples with ``c`` correct."""
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar test (= sign test on the discordant pairs).

    ``b``: pairs where only the first method passed, ``c``: only the second. Under H0 the
    discordant pairs split Binomial(b + c, 1/2). Returns ``min(1, 2 * P[X <= min(b, c)])``.
    """
    if b < 0 or c < 0:
        raise ValueError("counts must be non-negative")
    n = b + c
    if n == 0:
        return 1.0
    m = min(b, c)
    # exact integer arithmetic; int / int rounds correctly (and underflows to 0.0) for any n,
    # where a float factor would overflow beyond about a thousand discordant pairs
    tail = sum(math.comb(n, i) for i in range(m + 1))
    return min(1.0, 2 * tail / 2**n)


@dataclass(frozen=True)
class PairedComparison:
    method_a: str
    method_b: str
    n: int  # tasks both methods were run on
    both_passed: int
    both_failed: int
    a_only: int  # wins of A: A passed, B failed
    b_only: int  # wins of B
    pass_at_1_a: float
    pass_at_1_b: float
    delta: float  # pass@1(A) - pass@1(B)
    p_value: float  # exact McNemar (two-sided sign test on discordant pairs)

    def to_dict(self) -> dict:
        return asdict(self)


def paired_comparison(
    a: Mapping[str, bool], b: Mapping[str, bool], method_a: str = "a", method_b: str = "b"
) -> PairedComparison:
    """Compare two methods on the tasks both were run on (dicts task_id -> passed)."""
    common = [t for t in a if t in b]
    n = len(common)
    both_p = sum(1 for t in common if a[t] and b[t])
    both_f = sum(1 for t in common if not a[t] and not b[t])
    a_only = sum(1 for t in common if a[t] and not b[t])
    b_only = sum(1 for t in common if b[t] and not a[t])
    pa = (both_p + a_only) / n if n else float("nan")
    pb = (both_p + b_only) / n if n else float("nan")
    return PairedComparison(
        method_a, method_b, n, both_p, both_f, a_only, b_only, pa, pb, pa - pb, mcnemar_exact(a_only, b_only)
    )
