"""Statistics done right: synthetic populations of known effect.

10,000 shoppers per population, 20 % held out, 10 % come to the counter anyway; with the offer
5 points more (or no more). Over 20,000 populations (seeds 0..19,999, numpy's generator) the
report's 95 % interval for the uplift must contain the true uplift in at least 95 % of them,
and a zero effect must be called significant in at most 5 %. 20,000 keeps the Monte-Carlo
error (±0.15 points) well below the margin, so the verdict does not hang on the seeds.
One population also goes the whole way: keyed holdout groups, exposures and outcomes in
SQLite, attribution, `build_report`.
"""

from __future__ import annotations

import random
import sqlite3

import numpy as np

from gateway.offers import attribution
from gateway.offers.bandit import Arm, choose, pick_variant, simulate_regret
from gateway.offers.holdout import in_holdout
from gateway.offers.report import build_report, campaign_result
from gateway.offers.rules import PickupDiscountSection, VariantSection
from gateway.offers.stats import newcombe, wilson, wilson_plain
from gateway.store.db import transaction

SHOPPERS, HOLDOUT, BASE = 10_000, 0.2, 0.10
SEEDS = 20_000


def _populations(uplift: float) -> tuple[float, float]:
    """(share of populations whose interval covers `uplift`, share called significant)."""
    covered = significant = 0
    for seed in range(SEEDS):
        rng = np.random.default_rng(seed)
        held = int(rng.binomial(SHOPPERS, HOLDOUT))
        exposed = SHOPPERS - held
        won = int(rng.binomial(exposed, BASE + uplift))
        held_won = int(rng.binomial(held, BASE))
        result = campaign_result(exposed, held, won, held_won)["uplift"]
        low, high = result["ci95"]
        covered += low <= uplift <= high
        significant += result["significant"]
    return covered / SEEDS, significant / SEEDS


def test_a_true_uplift_of_5_points_is_within_the_interval_in_95_percent() -> None:
    covered, significant = _populations(0.05)
    assert covered >= 0.95, covered
    assert significant >= 0.99  # and it is found: 5 points on 10,000 shoppers is plenty


def test_a_zero_effect_is_called_significant_at_most_5_percent() -> None:
    covered, significant = _populations(0.0)
    assert significant <= 0.05, significant
    assert covered >= 0.95


def test_interval_formulas_against_published_values() -> None:
    # Newcombe (1998), Table II: 81/263 → Wilson 0.2553–0.3662, with CC 0.2535–0.3682
    low, high = wilson_plain(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    low, high = wilson(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2535, 0.3682)
    # Newcombe (1998) Table II, 56/70 - 48/80: method 10 0.0524–0.3339, method 11 0.0428–0.3422
    low, high = newcombe(56, 70, 48, 80, corrected=False)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)
    low, high = newcombe(56, 70, 48, 80)
    assert (round(low, 4), round(high, 4)) == (0.0428, 0.3422)
    assert wilson(0, 0) == (0.0, 1.0) and wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0


def test_one_population_through_the_store(conn: sqlite3.Connection) -> None:
    """Keyed groups, exposures, outcomes and attribution in SQLite, then the report: it counts
    exactly what the simulation did (outcomes after the window and repeats not at all)."""
    key, rng = b"s" * 16, random.Random(7)
    rule = PickupDiscountSection(holdout_percent=20)
    t0 = 1_900_000_000.0
    truth = {("exposed", False): 0, ("exposed", True): 0}
    truth |= {("holdout", False): 0, ("holdout", True): 0}
    with transaction(conn):
        for i in range(SHOPPERS):
            profile = f"p-{i}"
            group = "holdout" if in_holdout(key, rule.campaign, profile, 20) else "exposed"
            t = t0 + i
            attribution.open_exposure(
                conn, f"dc-{i}", rule.campaign, profile, group, "", "sku", t, 7, "2030-03-17"
            )
            came = rng.random() < BASE + (0.05 if group == "exposed" else 0.0)
            truth[(group, came)] += 1
            if came:
                attribution.record_outcome(conn, "pickup", f"{i}", profile, t + 3 * 86400, "sku")
                attribution.record_outcome(conn, "pickup", f"{i}", profile, t + 3 * 86400, "sku")
            if rng.random() < 0.05:  # back after the window: recorded, not attributed
                attribution.record_outcome(conn, "pickup", f"late{i}", profile, t + 9 * 86400)
    report = build_report(conn, [rule], t0, t0 + 1e6, "2030-03-17", "2030-03-18")
    c = report["campaigns"]["pickup-discount"]
    expected = campaign_result(
        truth[("exposed", False)] + truth[("exposed", True)],
        truth[("holdout", False)] + truth[("holdout", True)],
        truth[("exposed", True)],
        truth[("holdout", True)],
    )
    assert {k: c[k] for k in expected} == expected
    assert 0.18 < c["holdout"] / SHOPPERS < 0.22  # the keyed hash splits as configured
    assert c["uplift"]["significant"] and c["uplift"]["ci95"][0] > 0


def test_thompson_sampling_learns_the_best_variant_and_keeps_the_floor() -> None:
    regret, plays = simulate_regret([0.05, 0.08, 0.12], 5000, 0.10, seed=1)
    uniform, _ = simulate_regret([0.05, 0.08, 0.12], 5000, 1 / 3, seed=1)
    assert regret < 0.5 * uniform
    assert plays[2] == max(plays)
    assert min(plays) >= 0.05 * 5000  # the floor: each keeps (about) its 10 / 3 % share
    no_floor, plays0 = simulate_regret([0.05, 0.08, 0.12], 5000, 0.0, seed=1)
    assert no_floor < regret and min(plays0) < min(plays)


def test_variants_respect_the_kill_switch_and_are_reproducible() -> None:
    variants = {"ten": VariantSection(percent=10), "twenty": VariantSection(percent=20)}
    rule = PickupDiscountSection(variants=variants)
    arms = {"ten": Arm(100, 1), "twenty": Arm(100, 30)}
    picks = [pick_variant(rule, arms, f"dc-{i}")[0] for i in range(400)]
    assert picks.count("twenty") > 300 and picks.count("ten") >= 10  # floor 10 %
    assert picks == [pick_variant(rule, arms, f"dc-{i}")[0] for i in range(400)]
    off = PickupDiscountSection(variants=variants, optimise=False)
    assert pick_variant(off, arms, "dc-1") == ("", None)
    killed = PickupDiscountSection(variants={**variants, "twenty": VariantSection(enabled=False)})
    assert {pick_variant(killed, arms, f"dc-{i}")[0] for i in range(50)} == {"ten"}
    assert choose(["a"], {}, 0.1, random.Random(1)) == "a"
