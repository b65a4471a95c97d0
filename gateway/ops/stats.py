"""Interval estimates for conversion rates and their difference (95 % by default).

* a rate k/n: the Wilson score interval (good coverage for small n and rates near 0, where the
  textbook Wald interval p ± z·√(p(1-p)/n) collapses to a point);
* the difference of two independent rates: Newcombe's hybrid score interval (method 10 of
  Newcombe 1998), built from the two Wilson intervals;
* the relative uplift p1/p2 - 1: the Katz log interval of the risk ratio (undefined while a
  group has no outcome yet).
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """Interval for p1 - p2."""
    p1 = k1 / n1 if n1 else 0.0
    p2 = k2 / n2 if n2 else 0.0
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p1 - p2
    return (
        d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
        d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2),
    )


def relative(
    k1: int, n1: int, k2: int, n2: int, z: float = Z95
) -> tuple[float | None, tuple[float, float] | None]:
    """p1/p2 - 1 and its interval; None where a rate is zero."""
    if not (n1 and n2 and k1 and k2):
        return None, None
    ratio = (k1 / n1) / (k2 / n2)
    se = math.sqrt(1 / k1 - 1 / n1 + 1 / k2 - 1 / n2)
    return ratio - 1, (ratio * math.exp(-z * se) - 1, ratio * math.exp(z * se) - 1)
