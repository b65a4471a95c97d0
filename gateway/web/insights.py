"""`/insights`: what happens in the shop and whether the campaigns work, as pictures.

Server-rendered SVG, no script and no build step: the funnel of the period, a dwell heat map
drawn on the floor plan (seconds per square metre, summed over everyone), occupancy per zone
and hour, and each campaign's conversion with and without the offer and the uplift, with
their 95 % intervals. Everything comes from aggregates (`gateway.offers.insights`,
`gateway.offers.report`); nothing on the page is about one person. Every text and attribute
is escaped where the element is written.
"""

from __future__ import annotations

import dataclasses
import html
import sqlite3
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from gateway.offers.report import FOREVER, FUNNEL, build_report
from gateway.offers.rules import PickupDiscountSection
from gateway.resources import data_file
from gateway.runtime.gateway import Gateway
from gateway.site.render import Shape, plan_scene, to_svg
from gateway.site.storemap import StoreMap
from gateway.web.access import escape, fill

HEAT = ["#fff7bc", "#fee391", "#fec44f", "#fe9929", "#ec7014", "#cc4c02", "#8c2d04"]
BLUE = "#3182bd"
GREY = "#9e9e9e"


def _attr(value: object) -> str:
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    return html.escape(text, quote=True)


def el(tag: str, text: str | None = None, **attrs: object) -> str:
    inner = " ".join(
        f'{k.rstrip("_").replace("_", "-")}="{_attr(v)}"' for k, v in attrs.items() if v is not None
    )
    if text is None:
        return f"<{tag} {inner}/>"
    return f"<{tag} {inner}>{html.escape(text, quote=True)}</{tag}>"


def svg(width: float, height: float, parts: list[str], label: str) -> str:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:g}" height="{height:g}" '
        f'viewBox="0 0 {width:g} {height:g}" role="img" aria-label="{_attr(label)}" '
        'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="13">'
    )
    return head + "".join(parts) + "</svg>"


@dataclasses.dataclass(frozen=True, slots=True)
class Period:
    days: int
    since: float
    since_day: str
    until_day: str


def period(tz: ZoneInfo, now: float, days: int) -> Period:
    today = datetime.fromtimestamp(now, tz).date()
    first = today - timedelta(days=days - 1)
    start = datetime(first.year, first.month, first.day, tzinfo=tz).timestamp()
    return Period(days, start, first.isoformat(), (today + timedelta(days=1)).isoformat())


# --- the four pictures ------------------------------------------------------------------


def funnel_svg(funnel: dict[str, int]) -> str:
    width, row, left = 720, 34, 250
    top = max(1, max(funnel.values(), default=1))
    parts: list[str] = []
    for i, (key, label) in enumerate(FUNNEL):
        n = funnel.get(key, 0)
        y = 10 + i * row
        w = (width - left - 60) * n / top
        colour = GREY if key == "held_out" else BLUE
        parts.append(el("text", label, x=left - 10, y=y + 18, text_anchor="end"))
        parts.append(el("rect", x=left, y=y, width=max(w, 1.0), height=24, fill=colour))
        parts.append(el("text", str(n), x=left + w + 6, y=y + 18, id_=f"funnel-{key}"))
    return svg(width, 20 + len(FUNNEL) * row, parts, "Funnel")


def heat_svg(store: StoreMap, cells: list[tuple[int, int, float]]) -> str:
    """The floor plan with seconds per m² laid over it (the ground floor's panel)."""
    scene = plan_scene(store)
    p = scene.projection
    scale, margin, top = float(p["scale"]), float(p["margin"]), float(p["top"])
    min_x, max_y = float(p["min_x"]), float(p["max_y"])
    peak = max((s for _x, _y, s in cells), default=0.0)
    shapes = []
    bounds = store.bounds
    for cx, cy, seconds in cells:
        if seconds <= 0 or peak <= 0:
            continue
        if not (bounds[0] - 1 < cx < bounds[2] and bounds[1] - 1 < cy < bounds[3]):
            continue  # a fix beyond the walls (a shopper walking out): not on the plan
        level = min(len(HEAT) - 1, int(len(HEAT) * (seconds / peak) ** 0.5))
        x0 = margin + (cx - min_x) * scale
        y0 = top + margin + (max_y - (cy + 1)) * scale
        shapes.append(
            Shape(
                "rect",
                ((x0, y0), (x0 + scale, y0 + scale)),
                fill=HEAT[level],
                opacity=0.75,
                ident=f"heat-{cx}-{cy}",
            )
        )
    # over the floor and the zones, under beacons, gateways and the later labels
    polygons = [i for i, s in enumerate(scene.shapes) if s.kind == "polygon"]
    at = polygons[-1] + 1 if polygons else len(scene.shapes)
    scene.shapes[at:at] = shapes
    return to_svg(scene)


def heat_caption(cells: list[tuple[int, int, float]]) -> str:
    peak = max((s for _x, _y, s in cells), default=0.0)
    if peak <= 0:
        return "no positions in this period"
    return f"darkest square metre: {peak:.0f} s in total; {len(cells)} m² visited"


def occupancy_svg(rows: list[tuple[str, int, float]], zones: list[str], days: int) -> str:
    """Minutes spent per zone and hour of the day (everyone together, a day on average): one
    row per zone, one cell per hour. Sixty minutes is one person there all hour long."""
    hours = sorted({h for _z, h, _s in rows}) or list(range(9, 20))
    first, last = min(hours), max(hours)
    hours = list(range(first, last + 1))
    value = {(z, h): s / 60.0 / max(1, days) for z, h, s in rows}
    peak = max(value.values(), default=0.0)
    left, cell, top = 150, 36, 24
    parts = [
        el("text", f"{h:02d}", x=left + i * cell + cell / 2, y=16, text_anchor="middle")
        for i, h in enumerate(hours)
    ]
    for r, zone in enumerate(zones):
        y = top + r * cell
        parts.append(el("text", zone, x=left - 8, y=y + cell / 2 + 5, text_anchor="end"))
        for i, h in enumerate(hours):
            v = value.get((zone, h), 0.0)
            level = 0 if peak <= 0 else min(len(HEAT) - 1, int(len(HEAT) * v / peak))
            fill = "#f4f4f4" if v <= 0 else HEAT[level]
            x = left + i * cell
            parts.append(
                el(
                    "rect",
                    x=x,
                    y=y,
                    width=cell - 2,
                    height=cell - 2,
                    fill=fill,
                    id_=f"occ-{zone}-{h}",
                )
            )
            if v > 0:
                label = f"{v:.1f}" if v < 10 else f"{v:.0f}"
                parts.append(
                    el(
                        "text",
                        label,
                        x=x + cell / 2 - 1,
                        y=y + cell / 2 + 4,
                        text_anchor="middle",
                        font_size=11,
                    )
                )
    height = top + len(zones) * cell + 8
    return svg(left + len(hours) * cell + 10, height, parts, "Occupancy per zone and hour")


def _bar(
    parts: list[str],
    y: float,
    label: str,
    rate: dict[str, Any],
    scale: float,
    x0: float,
    colour: str,
    ident: str,
) -> None:
    parts.append(el("text", label, x=x0 - 10, y=y + 14, text_anchor="end"))
    value = rate["value"]
    low, high = rate["ci95"]
    if value is None:
        parts.append(el("text", "no shoppers yet", x=x0, y=y + 14, fill=GREY))
        return
    parts.append(
        el("rect", x=x0, y=y, width=max(1.0, value * scale), height=20, fill=colour, id_=ident)
    )
    parts.append(
        el(
            "line",
            x1=x0 + low * scale,
            x2=x0 + high * scale,
            y1=y + 10,
            y2=y + 10,
            stroke="#000",
            stroke_width=1.5,
        )
    )
    for edge in (low, high):
        parts.append(
            el(
                "line",
                x1=x0 + edge * scale,
                x2=x0 + edge * scale,
                y1=y + 4,
                y2=y + 16,
                stroke="#000",
                stroke_width=1.5,
            )
        )
    parts.append(
        el(
            "text",
            f"{100 * value:.1f} % ({100 * low:.1f}–{100 * high:.1f})",
            x=x0 + high * scale + 8,
            y=y + 14,
        )
    )


def campaign_svg(cid: str, c: dict[str, Any]) -> str:
    """Conversion with and without the offer (bars with 95 % whiskers) and the uplift."""
    x0, width = 200, 760
    highs = [c["rate_exposed"]["ci95"][1], c["rate_holdout"]["ci95"][1], 0.05]
    scale = (width - x0 - 170) / max(highs)
    parts = [
        el(
            "text",
            f"{cid}  ·  holdout {c['holdout_percent'] or 0:g} %",
            x=10,
            y=18,
            font_weight="bold",
        )
    ]
    _bar(
        parts,
        30,
        f"got the offer ({c['exposed']})",
        c["rate_exposed"],
        scale,
        x0,
        BLUE,
        f"rate-exposed-{cid}",
    )
    _bar(
        parts,
        58,
        f"held out ({c['holdout']})",
        c["rate_holdout"],
        scale,
        x0,
        GREY,
        f"rate-holdout-{cid}",
    )
    u = c["uplift"]
    y = 100
    parts.append(el("text", "uplift", x=x0 - 10, y=y + 4, text_anchor="end"))
    if u["absolute"] is None:
        parts.append(
            el(
                "text",
                "needs shoppers in both groups",
                x=x0,
                y=y + 4,
                fill=GREY,
                id_=f"uplift-{cid}",
            )
        )
    else:
        low, high = u["ci95"]
        span = max(abs(low), abs(high), 0.01)
        mid, half = x0 + (width - x0 - 170) / 2, (width - x0 - 170) / 2
        parts.append(el("line", x1=mid, x2=mid, y1=y - 10, y2=y + 10, stroke="#666"))
        colour = "#2ca02c" if u["significant"] and low > 0 else "#c00" if u["significant"] else GREY
        parts.append(
            el(
                "line",
                x1=mid + low / span * half,
                x2=mid + high / span * half,
                y1=y,
                y2=y,
                stroke=colour,
                stroke_width=4,
                id_=f"uplift-{cid}",
            )
        )
        parts.append(el("circle", cx=mid + u["absolute"] / span * half, cy=y, r=5, fill=colour))
        parts.append(
            el(
                "text",
                f"{100 * u['absolute']:+.1f} points ({100 * low:+.1f} to {100 * high:+.1f})",
                x=mid + half + 8,
                y=y + 4,
            )
        )
    return svg(width, 120, parts, f"Campaign {cid}")


# --- the page's data --------------------------------------------------------------------


def insights(
    conn: sqlite3.Connection,
    store: StoreMap,
    campaigns: list[PickupDiscountSection],
    tz: ZoneInfo,
    now: float,
    days: int,
) -> dict[str, str]:
    """The SVG pictures of the page, by slot name."""
    p = period(tz, now, days)
    report = build_report(conn, campaigns, p.since, FOREVER, p.since_day, p.until_day)
    cells = [
        (int(x), int(y), float(s))
        for x, y, s in conn.execute(
            "SELECT cx, cy, sum(seconds) FROM heat_cells WHERE store_day >= ? GROUP BY cx, cy",
            (p.since_day,),
        )
    ]
    occupancy = [
        (str(z), int(h), float(s))
        for z, h, s in conn.execute(
            "SELECT zone, hour, sum(seconds) FROM zone_occupancy WHERE store_day >= ? "
            "GROUP BY zone, hour",
            (p.since_day,),
        )
    ]
    zones = [z.id for z in store.zones]
    zones += sorted({z for z, _h, _s in occupancy} - set(zones))
    pictures = "".join(
        f'<figure class="campaign">{campaign_svg(cid, c)}</figure>'
        for cid, c in report["campaigns"].items()
    )
    return {
        "funnel": funnel_svg(report["funnel"]),
        "heat": heat_svg(store, cells),
        "heat_caption": html.escape(heat_caption(cells)),
        "occupancy": occupancy_svg(occupancy, zones, days),
        "campaigns": pictures or "<p>No campaigns.</p>",
        "since": html.escape(p.since_day),
    }


def insights_page(gateway: Gateway, request: web.Request) -> web.Response:
    try:
        days = int(request.query.get("days", "7"))
    except ValueError:
        raise web.HTTPBadRequest(text="days: expected a number of days (1-90)") from None
    if not 1 <= days <= 90:
        raise web.HTTPBadRequest(text="days: expected a number of days (1-90)")
    offers = gateway.offers
    slots = insights(
        gateway.conn, gateway.store_map, offers.campaigns, offers.tz, gateway.clock.wall(), days
    )
    active = {"day": days == 1, "week": days == 7, "month": days == 28}
    body = fill(
        data_file("console/insights.html").read_text(encoding="utf-8"),
        store=escape(gateway.store_map.name),
        gateway=escape(gateway.config.gateway.id),
        **{k: ' class="active"' if on else "" for k, on in active.items()},
        **slots,
    )
    return web.Response(text=body, content_type="text/html", headers={"Cache-Control": "no-store"})
