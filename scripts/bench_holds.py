"""Decision latency with stock holds (issue 20), beside the same decisions without them.

A store of 5,000 consenting shoppers whose saved carts share 50 scarce items (one to three
copies each) walk in one after another. "with holds": the engine as shipped — each offer
sets its unit aside and opens a pickup task, later shoppers meet `held_for_other`, holds
lapse. "without holds": the same run with the stock check as it was before (quantity > 0,
no hold placed), patched in for the comparison. Same machine, same run, same events. Run
by `scripts/bench` (a section of `scripts/bench.py`), or alone: `python scripts/bench_holds.py`.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SHOPPERS = 5000
ITEMS = 50
VALIDITY_S = 600
ARRIVAL_GAP_S = 0.5  # a shopper every half second: holds pile up, and lapse


@contextmanager
def _without_holds() -> Iterator[None]:
    """The pre-issue stock check: any cart item with quantity > 0; no hold, no task."""
    from gateway.offers import holds, pickup

    def cart_stock(conn, identity, cart, profile_id, t):  # type: ignore[no-untyped-def]
        in_stock = []
        for item in cart:
            stock = identity.stock(item.sku)
            if stock is not None and stock.quantity > 0:
                in_stock.append((item, stock))
        return holds.CartStock(in_stock, (), frozenset())

    saved = holds.cart_stock, pickup.on_issued
    holds.cart_stock = cart_stock
    pickup.on_issued = lambda *args, **kw: []
    try:
        yield
    finally:
        holds.cart_stock, pickup.on_issued = saved


def _run(folder: Path, plenty: bool) -> tuple[list[float], Counter[str]]:
    from gateway.identity.store import IdentityStore
    from gateway.model import ZoneEvent, ZoneEventKind
    from gateway.offers.engine import OfferEngine
    from gateway.offers.rules import LimitsSection, PickupDiscountSection
    from gateway.store import db

    conn = db.connect(folder / "gateway.db")
    identity = IdentityStore(conn)
    skus = [f"sku-{i:03d}" for i in range(ITEMS)]
    identity.load_seed(
        {
            "profiles": [
                {
                    "profile_id": f"p{i}",
                    "consent": {"proximity_offers": True},
                    "cart": [
                        {
                            "sku": skus[(i + 7 * k) % ITEMS],
                            "title": "t",
                            "price": 1.0,
                            "added_at": f"2026-11-0{k}",
                        }
                        for k in (1, 2, 3)
                    ],
                }
                for i in range(SHOPPERS)
            ],
            "stock": [
                {
                    "sku": s,
                    "title": s,
                    "quantity": SHOPPERS if plenty else 1 + i % 3,
                    "zone_id": "a",
                }
                for i, s in enumerate(skus)
            ],
        }
    )
    limits = LimitsSection(quiet_hours=[], cooldown_s=0.0, max_per_day=5, max_per_hour_store=10**6)
    engine = OfferEngine(
        conn,
        identity,
        PickupDiscountSection(validity_s=VALIDITY_S, max_per_day=3),
        "Europe/Berlin",
        b"k" * 16,
        limits,
    )
    t0 = 1_795_424_400.0  # a weekday morning, store time
    latencies: list[float] = []
    reasons: Counter[str] = Counter()
    for start in range(0, SHOPPERS, 256):
        with db.transaction(conn):
            for i in range(start, min(start + 256, SHOPPERS)):
                t = t0 + i * ARRIVAL_GAP_S
                event = ZoneEvent(ZoneEventKind.ENTER, f"d{i}", "entrance", t, t, 0.9)
                began = time.perf_counter()
                engine.lapse_holds(t)  # what the pipeline does before each moment
                decisions = engine.evaluate_all(event, f"d{i}", f"p{i}")
                engine.take_events()
                latencies.append((time.perf_counter() - began) * 1000)
                reasons.update(d.reason for d in decisions)
    conn.close()
    return sorted(latencies), reasons


def bench_holds() -> dict[str, float]:
    """Two stores: `plenty` (every shopper is offered: the cost of placing holds and tasks)
    and `scarce` (most shoppers meet a held last copy: the cost of counting holds)."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="gateway-bench-holds-") as tmp:
        runs: dict[str, tuple[list[float], Counter[str]]] = {}
        # each twice, alternating: the second of each counts (warm imports and caches)
        order = [(s, m) for s in ("plenty", "scarce") for m in ("without", "with")] * 2
        for n, (store, mode) in enumerate(order):
            folder = Path(tmp) / f"{n}-{store}-{mode}"
            folder.mkdir()
            if mode == "without":
                with _without_holds():
                    runs[f"{store}_{mode}"] = _run(folder, store == "plenty")
            else:
                runs[f"{store}_{mode}"] = _run(folder, store == "plenty")
    for name, (lat, reasons) in runs.items():
        out[f"{name}_p50_ms"] = statistics.median(lat)
        out[f"{name}_p99_ms"] = lat[int(len(lat) * 0.99)]
        out[f"{name}_issued"] = float(reasons["cart_item_in_stock"])
        out[f"{name}_held_for_other"] = float(reasons["held_for_other"])
    for store in ("plenty", "scarce"):
        out[f"{store}_p99_ratio"] = out[f"{store}_with_p99_ms"] / out[f"{store}_without_p99_ms"]
    out["decisions"] = float(SHOPPERS)
    return out


def rows(r: dict[str, float]) -> list[tuple[str, str, str, str]]:
    """The bench table's rows (scripts/bench.py)."""
    out = []
    for store in ("plenty", "scarce"):
        for mode in ("without", "with"):
            k = f"{store}_{mode}"
            note = f"{r[k + '_issued']:,.0f} offers"
            if r[k + "_held_for_other"]:
                note += f", {r[k + '_held_for_other']:,.0f} held_for_other"
            if mode == "with":
                note += f"; p99 ×{r[store + '_p99_ratio']:.2f} of without (goal ≤ 1.0)"
            out.append(
                (
                    "holds" if (store, mode) == ("plenty", "without") else "",
                    f"{store} stock, {mode} holds p50/p99",
                    f"{r[k + '_p50_ms']:.3f} / {r[k + '_p99_ms']:.3f}",
                    note,
                )
            )
    return out


def main() -> int:
    r = bench_holds()
    print(f"decision latency in ms, {SHOPPERS:,} shoppers, {ITEMS} items (caps off)")
    for _section, what, value, note in rows(r):
        print(f"  {what:<34} {value:>16}   {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
