"""Self-optimising variants: Thompson sampling with a floor share and a kill switch.

Each variant's conversion rate has a Beta(1 + conversions, 1 + exposures - conversions)
posterior, counted from the attribution table (so it survives restarts and is the same the
report shows). For one offer: with probability `floor × enabled variants` a variant is picked
uniformly (each keeps at least its floor share, so a variant that started unlucky is still
measured); otherwise each variant's rate is drawn from its posterior and the highest wins.
The draw is seeded from the decision id, so a decision is reproducible.

Trust first: the bandit runs only for a decision that already passed consent, segments,
caps, quiet hours, cooldown and the holdout; it chooses how to word and price an offer, never
whether a shopper gets one.
"""

from __future__ import annotations

import hashlib
import random
import statistics
from dataclasses import dataclass

from gateway.offers.rules import PickupDiscountSection, VariantSection

BASE = ""  # the campaign's own percent and message (no variants, or the kill switch)


@dataclass(frozen=True, slots=True)
class Arm:
    exposures: int
    conversions: int

    @property
    def alpha(self) -> float:
        return 1.0 + self.conversions

    @property
    def beta(self) -> float:
        return 1.0 + max(0, self.exposures - self.conversions)

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


def rng_for(seed: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big"))


def choose(names: list[str], arms: dict[str, Arm], floor: float, rng: random.Random) -> str:
    """One variant out of `names` (non-empty); `floor` is the per-variant share in [0, 1]."""
    if len(names) == 1:
        return names[0]
    if rng.random() < floor * len(names):
        return names[rng.randrange(len(names))]
    best, best_draw = names[0], -1.0
    for name in names:
        arm = arms.get(name, Arm(0, 0))
        draw = rng.betavariate(arm.alpha, arm.beta)
        if draw > best_draw:
            best, best_draw = name, draw
    return best


def pick_variant(
    rule: PickupDiscountSection, arms: dict[str, Arm], seed: str
) -> tuple[str, VariantSection | None]:
    """(variant name, its settings) for an offer of `rule`; (BASE, None) without variants."""
    enabled = sorted(n for n, v in rule.variants.items() if v.enabled)
    if not rule.optimise or not enabled:
        return BASE, None
    name = choose(enabled, arms, rule.variant_floor_percent / 100.0, rng_for(seed))
    return name, rule.variants[name]


def simulate_regret(
    rates: list[float], steps: int, floor: float, seed: int
) -> tuple[float, list[int]]:
    """Play `steps` offers against variants of known conversion `rates` (reward seen at
    once): the regret (expected conversions lost against always playing the best fixed
    variant) and how often each variant was played. For `scripts/bench.py`."""
    rng = random.Random(seed)
    names = [str(i) for i in range(len(rates))]
    counts = {n: [0, 0] for n in names}
    plays = [0] * len(rates)
    regret = 0.0
    best = max(rates)
    for _ in range(steps):
        arms = {n: Arm(c[0], c[1]) for n, c in counts.items()}
        i = int(choose(names, arms, floor, rng))
        plays[i] += 1
        regret += best - rates[i]
        counts[names[i]][0] += 1
        counts[names[i]][1] += int(rng.random() < rates[i])
    return regret, plays


# --- the figures scripts/bench prints: three variants of known conversion (5 %, 8 %, 12 %)
# played for 10,000 offers with the default 10 % floor, without a floor, and uniformly (an
# A/B/C test), each averaged over 20 seeds.

BENCH_RATES = [0.05, 0.08, 0.12]
BENCH_STEPS = 10_000
BENCH_SEEDS = 20


def bench_bandit() -> dict[str, float]:
    out: dict[str, float] = {}
    for name, floor in (("floor10", 0.10), ("floor0", 0.0), ("uniform", 1 / len(BENCH_RATES))):
        runs = [
            simulate_regret(BENCH_RATES, BENCH_STEPS, floor, seed) for seed in range(BENCH_SEEDS)
        ]
        out[f"regret_{name}"] = statistics.fmean(r for r, _plays in runs)
        out[f"best_share_{name}"] = statistics.fmean(p[-1] / BENCH_STEPS for _r, p in runs)
    out["best_conversions"] = max(BENCH_RATES) * BENCH_STEPS
    return out


def bandit_rows(b: dict[str, float]) -> list[tuple[str, str, str, str]]:
    return [
        (
            "bandit",
            "regret, 10k offers, floor 10 %",
            f"{b['regret_floor10']:.0f}",
            f"conversions lost vs best fixed ({b['best_conversions']:.0f}); best played "
            f"{100 * b['best_share_floor10']:.0f} %",
        ),
        (
            "",
            "  no floor / uniform A/B/C",
            f"{b['regret_floor0']:.0f} / {b['regret_uniform']:.0f}",
            f"×{b['regret_uniform'] / b['regret_floor10']:.1f} less regret than uniform",
        ),
    ]
