"""`gateway report`: did the campaigns work? Exposed against held-out shoppers, per campaign
and variant, with 95 % intervals, and the funnel of the period.

"Redeemed" means converted: the exposure (see `gateway.offers.attribution`) has an outcome
(a redemption, a verified tap at the counter, or a pickup the backend reported) within its
attribution window. A period counts the exposures that started in it.
"""

from __future__ import annotations

import sqlite3
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from gateway.offers.attribution import arms
from gateway.offers.bandit import Arm
from gateway.offers.rules import PickupDiscountSection
from gateway.offers.stats import newcombe, relative, wilson

ELIGIBLE = (
    "cart_item_in_stock",
    "holdout",
    "quiet_hours",
    "cap_day",
    "cap_day_all_campaigns",
    "cap_day_shopper",
    "cooldown",
    "cap_hour_store",
    "already_offered_today",
    "superseded",
)
FUNNEL = (
    ("window_passers", "passed the window"),
    ("entered", "came in"),
    ("dwelled_at_item_zone", "stopped at a shelf with their item"),
    ("eligible", "could get an offer"),
    ("offered", "got an offer"),
    ("held_out", "held out (control group)"),
    ("redeemed", "came to the counter / redeemed"),
)


def _rate(k: int, n: int) -> dict[str, Any]:
    low, high = wilson(k, n)
    return {"value": k / n if n else None, "ci95": [low, high]}


def campaign_result(
    exposed: int, holdout: int, redeemed_exposed: int, redeemed_holdout: int
) -> dict[str, Any]:
    """The numbers for one campaign from its four counts."""
    out: dict[str, Any] = {
        "exposed": exposed,
        "holdout": holdout,
        "redeemed_exposed": redeemed_exposed,
        "redeemed_holdout": redeemed_holdout,
        "rate_exposed": _rate(redeemed_exposed, exposed),
        "rate_holdout": _rate(redeemed_holdout, holdout),
    }
    uplift: dict[str, Any] = {"absolute": None, "ci95": None, "relative": None}
    uplift.update({"relative_ci95": None, "significant": False})
    if exposed and holdout:
        low, high = newcombe(redeemed_exposed, exposed, redeemed_holdout, holdout)
        rel, rel_ci = relative(redeemed_exposed, exposed, redeemed_holdout, holdout)
        uplift = {
            "absolute": redeemed_exposed / exposed - redeemed_holdout / holdout,
            "ci95": [low, high],
            "relative": rel,
            "relative_ci95": list(rel_ci) if rel_ci else None,
            "significant": low > 0 or high < 0,
        }
    out["uplift"] = uplift
    return out


def build_report(
    conn: sqlite3.Connection,
    campaigns: list[PickupDiscountSection],
    since: float,
    until: float,
    since_day: str,
    until_day: str,
) -> dict[str, Any]:
    """Everything `gateway report` shows for exposures starting in [since, until)."""
    rows = conn.execute(
        "SELECT campaign, grp, variant, count(*), count(outcome_id) FROM exposures "
        "WHERE t >= ? AND t < ? GROUP BY campaign, grp, variant",
        (since, until),
    ).fetchall()
    by_id = {c.campaign: c for c in campaigns}
    Groups = dict[tuple[str, str], tuple[int, int]]
    counts: dict[str, Groups] = {c.campaign: {} for c in campaigns}
    for campaign, grp, variant, n, k in rows:
        counts.setdefault(str(campaign), {})[(str(grp), str(variant))] = (int(n), int(k))
    result: dict[str, Any] = {}
    for campaign, groups in sorted(counts.items()):
        exposed = sum(n for (g, _v), (n, _k) in groups.items() if g == "exposed")
        won = sum(k for (g, _v), (_n, k) in groups.items() if g == "exposed")
        held = sum(n for (g, _v), (n, _k) in groups.items() if g == "holdout")
        held_won = sum(k for (g, _v), (_n, k) in groups.items() if g == "holdout")
        entry = campaign_result(exposed, held, won, held_won)
        rule = by_id.get(campaign)
        entry["holdout_percent"] = rule.holdout_percent if rule else None
        entry["variants"] = _variants(rule, groups, exposed)
        result[campaign] = entry
    return {
        "since": since_day,
        "until": until_day,
        "campaigns": result,
        "funnel": funnel(conn, since, until, since_day, until_day),
    }


def _variants(
    rule: PickupDiscountSection | None, groups: dict[tuple[str, str], tuple[int, int]], exposed: int
) -> dict[str, Any]:
    names = {v for (g, v) in groups if g == "exposed"}
    if rule is not None:
        names |= set(rule.variants)
    out: dict[str, Any] = {}
    for name in sorted(names):
        n, k = groups.get(("exposed", name), (0, 0))
        settings = rule.variants.get(name) if rule is not None else None
        out[name or "base"] = {
            "exposed": n,
            "redeemed": k,
            "rate": _rate(k, n),
            "posterior_mean": Arm(n, k).mean,
            "share": n / exposed if exposed else 0.0,
            "percent": (settings.percent or rule.percent)
            if settings and rule
            else (rule.percent if rule else None),
            "enabled": settings.enabled if settings else True,
        }
    return out


def funnel(
    conn: sqlite3.Connection, since: float, until: float, since_day: str, until_day: str
) -> dict[str, int]:
    """Distinct shoppers (devices for the floor stages, profiles after) per stage."""
    marks = dict(
        conn.execute(
            "SELECT stage, count(DISTINCT device) FROM funnel_marks "
            "WHERE store_day >= ? AND store_day < ? GROUP BY stage",
            (since_day, until_day),
        ).fetchall()
    )
    placeholders = ",".join("?" * len(ELIGIBLE))

    def profiles(where: str, *args: Any) -> int:
        return int(
            conn.execute(
                "SELECT count(DISTINCT profile_id) FROM decisions WHERE t >= ? AND t < ? "
                f"AND profile_id IS NOT NULL AND {where}",
                (since, until, *args),
            ).fetchone()[0]
        )

    redeemed = conn.execute(
        "SELECT count(DISTINCT profile_id) FROM outcomes WHERE t >= ? AND t < ? "
        "AND exposure_id IS NOT NULL AND exposure_id != ''",
        (since, until),
    ).fetchone()[0]
    return {
        "window_passers": int(marks.get("window", 0)),
        "entered": int(marks.get("entered", 0)),
        "dwelled_at_item_zone": int(marks.get("dwelled", 0)),
        "eligible": profiles(f"reason IN ({placeholders})", *ELIGIBLE),
        "offered": profiles("issued = 1"),
        "held_out": profiles("reason = 'holdout'"),
        "redeemed": int(redeemed),
    }


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _points(x: float) -> str:
    return f"{100 * x:+.1f}"


def render_text(report: dict[str, Any]) -> str:
    """The report as a store manager reads it."""
    lines = [f"Campaign results {report['since']} to {report['until']}", ""]
    for cid, c in report["campaigns"].items():
        lines.append(f"{cid} (holdout {c['holdout_percent'] or 0:g} %)")
        for label, n, k, rate in (
            ("got the offer", c["exposed"], c["redeemed_exposed"], c["rate_exposed"]),
            ("held out", c["holdout"], c["redeemed_holdout"], c["rate_holdout"]),
        ):
            low, high = rate["ci95"]
            lines.append(
                f"  {label:<14} {n:>6} shoppers, {k:>5} came to the counter: "
                f"{_pct(rate['value'])} (95 %: {_pct(low)} – {_pct(high)})"
            )
        u = c["uplift"]
        if u["absolute"] is None:
            lines.append("  uplift         needs shoppers in both groups")
        else:
            low, high = u["ci95"]
            verdict = (
                "the offer made a difference"
                if u["significant"] and low > 0
                else "not distinguishable from no effect yet"
                if not u["significant"]
                else "fewer came than without the offer"
            )
            rel = "" if u["relative"] is None else f", {_pct(u['relative'])} relative"
            lines.append(
                f"  uplift         {_points(u['absolute'])} points{rel} "
                f"(95 %: {_points(low)} to {_points(high)}): {verdict}"
            )
        for name, v in c["variants"].items():
            if name == "base" and len(c["variants"]) == 1:
                continue
            lines.append(
                f"  variant {name:<10} {v['exposed']:>6} offers ({_pct(v['share'])}), "
                f"{_pct(v['rate']['value'])} converted"
                + ("" if v["enabled"] else " (switched off)")
            )
        lines.append("")
    lines.append("Funnel (distinct shoppers)")
    for key, label in FUNNEL:
        lines.append(f"  {report['funnel'][key]:>6}  {label}")
    return "\n".join(lines)


FOREVER = 1e12  # later than any Unix second a shop will see


def period_start(text: str, tz: ZoneInfo, now: float) -> tuple[float, str]:
    """`--since`: a store-local date (YYYY-MM-DD) or a number of days back ('7d'); the
    start as Unix seconds and as a store day. Raises ValueError naming what was expected."""
    text = text.strip()
    if text.endswith("d") and text[:-1].isdigit():
        day = datetime.fromtimestamp(now, tz).date() - timedelta(days=int(text[:-1]) - 1)
    else:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"--since {text!r}: give a store-local date (2026-11-01) or days back (7d)"
            ) from None
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    return start.timestamp(), day.isoformat()


def report_for(
    conn: sqlite3.Connection,
    campaigns: list[PickupDiscountSection],
    tz: ZoneInfo,
    now: float,
    since: str | None = None,
) -> dict[str, Any]:
    """The report from `since` (everything recorded when None) to now."""
    start, start_day = period_start(since, tz, now) if since else (0.0, "0000-01-01")
    today = datetime.fromtimestamp(now, tz).date().isoformat()
    report = build_report(conn, campaigns, start, FOREVER, start_day, "9999-12-31")
    if not since:  # everything recorded: say from when
        first = conn.execute(
            "SELECT min(d) FROM (SELECT min(store_day) AS d FROM exposures "
            "UNION ALL SELECT min(store_day) FROM funnel_marks)"
        ).fetchone()[0]
        report["since"] = str(first or today)
    return report | {"until": today}


# --- the daily aggregate upstream (com.storegate.gateway.campaign_report) -----------------


def daily_reports(
    conn: sqlite3.Connection,
    campaigns: list[PickupDiscountSection],
    tz: ZoneInfo,
    now: float,
    days_back: int = 7,
) -> list[tuple[str, dict[str, Any]]]:
    """(store day, aggregate) for each ended store day of the last `days_back` not reported
    yet, oldest first; marks them reported (inside the caller's transaction). Counts only:
    exposures started that day and their outcomes so far, the funnel, and each variant's
    posterior over everything recorded (Beta(alpha, beta)) so the backend can pool stores."""
    today = datetime.fromtimestamp(now, tz).date()
    sent = {str(r[0]) for r in conn.execute("SELECT store_day FROM report_days")}
    out: list[tuple[str, dict[str, Any]]] = []
    for back in range(days_back, 0, -1):
        day = today - timedelta(days=back)
        name = day.isoformat()
        if name in sent:
            continue
        start = datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()
        end_day = day + timedelta(days=1)
        end = datetime(end_day.year, end_day.month, end_day.day, tzinfo=tz).timestamp()
        report = build_report(conn, campaigns, start, end, name, end_day.isoformat())
        conn.execute("INSERT INTO report_days (store_day, sent_at) VALUES (?, ?)", (name, now))
        if not any(report["funnel"].values()) and not any(
            c["exposed"] + c["holdout"] for c in report["campaigns"].values()
        ):
            continue  # a day without shoppers: nothing to say
        posteriors = {
            cid: {
                (v or "base"): {"alpha": arm.alpha, "beta": arm.beta}
                for v, arm in sorted(arms(conn, cid).items())
            }
            for cid in report["campaigns"]
        }
        out.append((name, report | {"store_day": name, "posteriors": posteriors}))
    return out
