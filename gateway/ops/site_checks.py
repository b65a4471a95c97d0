"""Doctor's checks of the installation itself: a box whose every part works can still be
useless (the demo's store and map, no source of sightings, zones the map lacks) or unsafe
(secrets every user can read)."""

from __future__ import annotations

from pathlib import Path

from gateway.config.sections import DEMO_STORE, Config, MapSection
from gateway.ops.checks import FAIL, PASS, WARN, Check


def check_site(config: Config) -> list[Check]:
    """What would make an installed box useless while every part of it works: the demo's
    store and map, no source of sightings, zones the config names but the map lacks."""
    out: list[Check] = []
    demo_map = MapSection().path
    if config.gateway.store == DEMO_STORE or config.map.path == demo_map:
        what = "gateway.store" if config.gateway.store == DEMO_STORE else "map.path"
        out.append(
            Check(
                "site",
                FAIL,
                f"{what} is the demo bookstore's: this box would report as the demo shop",
                "set gateway.store to your store's id and map.path to your shop's map "
                "(docs/maps.md)",
            )
        )
    sources = config.sources
    readers = [t for t, point in config.nfc.touchpoints.items() if point.device]
    if not (sources.ble or readers or sources.replay.path or config.mqtt.peer_sightings):
        out.append(
            Check(
                "site",
                FAIL,
                "no source of sightings: no [sources.ble.<adapter>], no NFC reader with a "
                "device, no replay, no peer sightings; the gateway would hear nothing",
                "add [sources.ble.hci0] (see `gateway doctor` bluetooth) and/or a device for "
                "each [nfc.touchpoints.<id>]",
            )
        )
    strangers = _receivers_not_on_the_map(config)
    if strangers:
        out.append(
            Check(
                "site",
                FAIL,
                "receivers not on the map (their sightings would be dropped): "
                + ", ".join(f"{key} = {receiver!r}" for key, receiver in strangers),
                "set receiver to the id of a `gateway` feature of the map (docs/maps.md), "
                "or add that feature where the adapter stands",
            )
        )
    missing = _zones_not_on_the_map(config)
    if missing:
        out.append(
            Check(
                "site",
                FAIL,
                "zones named in the config but not on the map: "
                + ", ".join(f"{key} = {zone!r}" for key, zone in missing),
                "use zone ids from the map (`gateway fences check` lists them) or add the zones",
            )
        )
    held = [c for c in config.offers.all_campaigns() if c.holdout_percent > 50]
    if held:
        out.append(
            Check(
                "site",
                WARN,
                "campaigns hold most eligible shoppers back (holdout_percent > 50): "
                + ", ".join(f"{c.campaign} {c.holdout_percent:g} %" for c in held),
                "a control group of 5-20 % measures the uplift; above 50 is for tests and "
                "short measurement periods (docs/operations.md, campaign results)",
            )
        )
    return out or [Check("site", PASS, f"store {config.gateway.store}, its own map and sources")]


def _receivers_not_on_the_map(config: Config) -> list[tuple[str, str]]:
    """Each BLE adapter's receiver id (its `receiver`, else the gateway id) that the map
    does not place: a typo there silences the adapter's every sighting."""
    from gateway.site.storemap import MapError, load_map

    if not config.sources.ble:
        return []
    try:
        placed = set(load_map(config.resolve(config.map.path)).receivers)
    except (MapError, OSError):
        return []  # the map check reports it
    named = [
        (
            f"sources.ble.{adapter}.receiver"
            if settings.receiver
            else f"sources.ble.{adapter} (no receiver: gateway.id)",
            settings.receiver or config.gateway.id,
        )
        for adapter, settings in config.sources.ble.items()
    ]
    return [(key, receiver) for key, receiver in named if receiver not in placed]


def _zones_not_on_the_map(config: Config) -> list[tuple[str, str]]:
    from gateway.site.storemap import MapError, load_map

    try:
        zones = {zone.id for zone in load_map(config.resolve(config.map.path)).zones}
    except (MapError, OSError):
        return []  # the map check reports it
    named: list[tuple[str, str]] = []
    for campaign in config.offers.all_campaigns():
        where = f"offers campaign {campaign.campaign}"
        named += [(f"{where} enter_zones", z) for z in campaign.enter_zones]
        named += [(f"{where} pass_zones", z) for z in campaign.pass_zones]
    named += [(f"nfc.touchpoints.{t}.zone", p.zone) for t, p in config.nfc.touchpoints.items()]
    return [(key, zone) for key, zone in named if zone not in zones]


def check_secrets(config: Config, config_file: Path) -> list[Check]:
    """Secrets that anyone on the box can read, and a downlink that would refuse everything."""
    out: list[Check] = []
    files = [("the config", config_file)]
    if config.mqtt.key_file:
        files.append(("mqtt.key_file", config.resolve(config.mqtt.key_file, shared=False)))
    for what, path in files:
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if mode & 0o004:
            out.append(
                Check(
                    "secrets",
                    FAIL,
                    f"{what} ({path}) holds secrets and every user can read it "
                    f"(mode {mode & 0o777:o})",
                    f"chmod 640 {path} (group: the service user's), or 600",
                )
            )
    if config.mqtt.enabled and not config.mqtt.downlink_key:
        out.append(
            Check(
                "secrets",
                WARN,
                "mqtt.downlink_key is empty: every document and command will be refused",
                "set the store's downlink key (the backend has it); docs/downlink.md",
            )
        )
    return out or [Check("secrets", PASS, "keys set and readable by the owner and group only")]


def check_solver() -> Check:
    """Whether the install compiled the position solver's inner loop (setup.py builds it
    where there is a C compiler; without it the numpy path gives the same positions, slower)."""
    from gateway.presence import batch

    if batch.KERNEL is not None:
        return Check("solver", PASS, "position solver compiled (presence/_kernel.c)")
    return Check(
        "solver",
        WARN,
        "position solver without its compiled kernel: the same positions, but a busy "
        "store's sightings take up to twice the CPU (docs/decisions.md §28)",
        "sudo apt-get install gcc python3-dev, then install again (scripts/install, or "
        "rm .venv/.installed-* && scripts/setup)",
    )
