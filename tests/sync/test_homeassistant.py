"""Home Assistant MQTT discovery and the retained store state, against a real Mosquitto.

A subscriber plays Home Assistant: it reads every retained discovery config, checks it against
what HA's MQTT schemas require and accept, and renders each value template (Jinja2, as HA
does) against the retained state it points at."""

from __future__ import annotations

import asyncio
import json
import re
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any

import aiomqtt
import jinja2
import pytest

from gateway.clock import ManualClock, PinnedClock
from gateway.config.sections import Config, parse_config
from gateway.model import BeaconHealth
from gateway.resources import data_file
from gateway.runtime.gateway import Gateway
from gateway.runtime.loop import run_gateway
from gateway.runtime.sources import replay_rebase, replay_source
from gateway.sync.homeassistant import StatePublisher, StoreState, ZoneState, object_id
from gateway.sync.topics import Topics
from tests.support.broker import Broker

# homeassistant/components/mqtt/discovery.py: <prefix>/<component>/[<node_id>/]<object_id>/config
DISCOVERY_TOPIC = re.compile(
    r"^homeassistant/(?P<component>\w+)/(?:(?P<node>[a-zA-Z0-9_-]+)/)?(?P<object>[a-zA-Z0-9_-]+)/config$"
)
# The options HA's MQTT sensor and binary_sensor schemas accept (unknown keys are refused).
COMMON = {
    "availability", "availability_mode", "availability_template", "availability_topic",
    "device", "device_class", "enabled_by_default", "encoding", "entity_category",
    "entity_picture", "expire_after", "force_update", "icon", "json_attributes_template",
    "json_attributes_topic", "name", "default_entity_id", "origin", "payload_available",
    "payload_not_available", "platform", "qos", "state_topic", "unique_id", "value_template",
}  # fmt: skip
ACCEPTED = {
    "sensor": COMMON | {"unit_of_measurement", "state_class", "suggested_display_precision",
                        "last_reset_value_template", "options"},
    "binary_sensor": COMMON | {"payload_on", "payload_off", "off_delay"},
}  # fmt: skip
DEVICE_CLASSES = {"sensor": {"battery", "timestamp"}, "binary_sensor": {"connectivity"}}
DEVICE_KEYS = {
    "identifiers", "connections", "name", "manufacturer", "model", "model_id", "sw_version",
    "hw_version", "serial_number", "suggested_area", "configuration_url", "via_device",
}  # fmt: skip


def check_config(component: str, config: dict[str, Any]) -> list[str]:
    """What Home Assistant would refuse or mis-read in one discovery config."""
    problems = []
    if component not in ACCEPTED:
        return [f"component {component} not expected"]
    if unknown := set(config) - ACCEPTED[component]:
        problems.append(f"unknown keys {sorted(unknown)}")
    if not isinstance(config.get("state_topic"), str):
        problems.append("state_topic is required")
    if not config.get("unique_id"):
        problems.append("unique_id (needed for the device registry)")
    device = config.get("device", {})
    if not device.get("identifiers") and not device.get("connections"):
        problems.append("device needs identifiers or connections")
    if unknown := set(device) - DEVICE_KEYS:
        problems.append(f"unknown device keys {sorted(unknown)}")
    for entry in config.get("availability", []):
        if not isinstance(entry.get("topic"), str):
            problems.append("availability entries need a topic")
    if "device_class" in config and config["device_class"] not in DEVICE_CLASSES[component]:
        problems.append(f"device_class {config['device_class']}")
    if config.get("device_class") == "battery" and config.get("unit_of_measurement") != "%":
        problems.append("battery needs unit %")
    if config.get("device_class") == "timestamp" and (
        "unit_of_measurement" in config or "state_class" in config
    ):
        problems.append("a timestamp has no unit or state class")
    if config.get("state_class") not in (None, "measurement", "total", "total_increasing"):
        problems.append(f"state_class {config['state_class']}")
    if config.get("entity_category") not in (None, "diagnostic", "config"):
        problems.append(f"entity_category {config['entity_category']}")
    return problems


def render(template: str, payload: bytes) -> str:
    """A value template as Home Assistant renders it: `value` and `value_json`."""
    text = payload.decode()
    return (
        jinja2.Environment().from_string(template).render(value=text, value_json=json.loads(text))
    )


def check_value(component: str, config: dict[str, Any], state: str) -> str | None:
    """Is a rendered state one HA takes for this entity? ("None" means unknown in HA MQTT.)"""
    if component == "binary_sensor":
        ok = state in (config["payload_on"], config["payload_off"])
    elif state == "None":
        ok = True
    elif config.get("device_class") == "timestamp":
        ok = bool(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", state))
    else:
        ok = bool(re.fullmatch(r"-?\d+(\.\d+)?", state))
    return None if ok else f"{config['unique_id']}: {state!r}"


async def retained(port: int, *filters: str, quiet_s: float = 0.5) -> dict[str, bytes]:
    """Every retained message under the filters, as a newly started Home Assistant gets them."""
    got: dict[str, bytes] = {}
    async with aiomqtt.Client("127.0.0.1", port) as client:
        for f in filters:
            await client.subscribe(f, qos=1)

        async def collect() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                if message.retain:  # not the live events that flow meanwhile
                    got[str(message.topic)] = message.payload

        task = asyncio.create_task(collect())
        count = -1
        while count != len(got):
            count = len(got)
            await asyncio.sleep(quiet_s)
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
    return got


def check_home_assistant_view(
    messages: dict[str, bytes],
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Every config valid, every state topic carrying a value its template renders. Returns
    the configs by topic and the rendered states by unique_id."""
    configs: dict[str, dict[str, Any]] = {}
    states: dict[str, str] = {}
    problems: list[str] = []
    for topic, payload in messages.items():
        found = DISCOVERY_TOPIC.match(topic)
        if not found:
            continue
        config = json.loads(payload)
        component = found["component"]
        problems += [f"{topic}: {p}" for p in check_config(component, config)]
        configs[topic] = config
        state = messages.get(config["state_topic"])
        if not state:
            problems.append(f"{topic}: nothing retained on {config['state_topic']}")
            continue
        value = render(config["value_template"], state)
        if (problem := check_value(component, config, value)) is not None:
            problems.append(problem)
        states[config["unique_id"]] = value
        for entry in config.get("availability", []):
            status = messages.get(entry["topic"])
            assert status is not None, f"no retained availability on {entry['topic']}"
            seen = render(entry["value_template"], status)
            assert seen in (entry["payload_available"], entry["payload_not_available"])
    assert not problems, problems
    unique = [c["unique_id"] for c in configs.values()]
    assert len(unique) == len(set(unique)), "unique_id repeated"
    return configs, states


async def test_home_assistant_sees_the_gateway_zones_and_beacons(
    tmp_path: Path, clock: PinnedClock
) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    config = parse_config(
        f"[gateway]\nstate_dir = '{tmp_path / 'state'}'\n[sinks]\nstdout = false\n"
        f"[mqtt]\nenabled = true\nhost = '127.0.0.1'\nport = {broker.port}\nbackoff_max_s = 0.3\n"
        "ha_discovery = true\n",
        "gw.toml",
        tmp_path,
    )
    gateway = Gateway(config, quiet_sink=True, clock=clock)
    gateway.identity.load_seed(json.loads(data_file("demo-profiles.json").read_text()))
    gateway.refresh()
    topics = Topics("storegate/v1", "demo-bookstore", "gw-demo-1")
    offers_topic = f"{topics.base}/state/offers"
    peak: dict[str, int] = {}  # the most people each zone's retained state showed

    async def watch_zones() -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.subscribe(f"{topics.base}/state/zones/+", qos=1)
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                body = json.loads(message.payload)
                peak[body["zone"]] = max(peak.get(body["zone"], 0), body["occupancy"])

    watcher = asyncio.create_task(watch_zones())
    try:
        stop = asyncio.Event()
        # At 20× real time (10 s): states go out at most once a second, so a replay as fast
        # as possible would be over before the first round.
        trace = data_file("demo-trace.jsonl")
        source = replay_source(gateway, trace, 20.0, replay_rebase(gateway))
        run = asyncio.create_task(run_gateway(gateway, [source, lambda _i: stop.wait()], stop))

        async def offers_state() -> dict[str, Any]:
            got = await retained(broker.port, offers_topic, quiet_s=0.2)
            return json.loads(got[offers_topic]) if got.get(offers_topic) else {}

        # The demo: Alice gets one offer and redeems it at the counter.
        for _ in range(100):
            state = await offers_state()
            if state.get("issued") == 1 and state.get("redeemed") == 1:
                break
        assert state == {"day": "2031-06-17", "issued": 1, "redeemed": 1}
        while_running = await retained(broker.port, "homeassistant/#", f"{topics.base}/#")
        stop.set()
        with suppress(asyncio.CancelledError):
            await run
        after = await retained(broker.port, "homeassistant/#", f"{topics.base}/#")
    finally:
        watcher.cancel()
        with suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await watcher
        broker.stop()
    ids = {z.id for z in gateway.store_map.zones}
    anchors = sorted(a.id for a in gateway.store_map.anchors)
    gateway.close()

    configs, states = check_home_assistant_view(while_running)
    node = "demo-bookstore_gw-demo-1"
    assert {c["unique_id"] for c in configs.values()} == {
        f"{node}_connectivity",
        f"{node}_offers_issued_today",
        f"{node}_offers_redeemed_today",
        *(f"{node}_zone_{z}_occupancy" for z in ids),
        *(f"{node}_beacon_{b}_{what}" for b in anchors for what in ("battery", "last_seen")),
    }
    assert len({json.dumps(c["device"], sort_keys=True) for c in configs.values()}) == 1
    assert states[f"{node}_connectivity"] == "online"
    assert states[f"{node}_offers_issued_today"] == "1"
    # The three shoppers walked through: the occupancy went up and was published on change.
    assert set(peak) == ids and max(peak.values()) >= 1
    assert all(
        re.fullmatch(r"\d{4}-.*Z", states[f"{node}_beacon_{b}_last_seen"]) for b in anchors
    ), "every fixed beacon of the demo trace was heard"
    for entity in configs.values():
        if entity["unique_id"] != f"{node}_connectivity":
            assert entity["availability"][0]["topic"] == topics.status
    # Never per shopper: no device pseudonym, profile or MAC address in any retained topic.
    text = b" ".join([t.encode() for t in while_running] + list(while_running.values()))
    assert b"dev-" not in text and b"alice" not in text.lower() and b"C0:FF" not in text
    # After a clean stop: the same entities, the connectivity sensor off, the others unavailable.
    configs_after, states_after = check_home_assistant_view(after)
    assert configs_after == configs
    assert states_after[f"{node}_connectivity"] == "offline"


def _state(zones: list[str], beacons: list[str]) -> StoreState:
    return StoreState(
        zones=[ZoneState(z, z.title(), n) for n, z in enumerate(zones)],
        beacons=[BeaconHealth(100.0, b, "ok", 90.0, 1.0, 2900, 80.0, 21.0) for b in beacons],
        day="2031-06-17",
        offers_issued=2,
        offers_redeemed=1,
    )


def _same(state: StoreState) -> StoreState:
    return state


def _publisher(tmp_path: Path, clock: ManualClock, **mqtt: Any) -> StatePublisher:
    config = Config()
    section = type(config.mqtt)(**{"ha_discovery": True, **mqtt})
    return StatePublisher(section, Topics("storegate/v1", "s", "g"), clock, tmp_path / "mem.json")


def test_changes_only_at_most_once_a_second_and_all_again_after_a_reconnect(
    tmp_path: Path,
) -> None:
    clock = ManualClock(0.0)
    publisher = _publisher(tmp_path, clock)
    first = publisher.publications(lambda: _state(["a", "b"], ["bcn"]), session=1)
    # 2 zones + 1 beacon + offers states; configs: connectivity, 2 zones, 2 per beacon, 2 offers
    assert len(first) == 4 + 7 and all(p.retain and p.qos == 1 for p in first)
    clock.advance(0.5)
    assert publisher.publications(lambda: _state(["b", "a"], ["bcn"]), session=1) == []
    clock.advance(0.6)
    assert publisher.publications(lambda: _state(["a", "b"], ["bcn"]), session=1) == []
    changed = StoreState(
        zones=[ZoneState("a", "A", 5), ZoneState("b", "B", 1)],
        beacons=_state([], ["bcn"]).beacons,
        day="2031-06-17",
        offers_issued=2,
        offers_redeemed=1,
    )
    clock.advance(1.0)
    again = publisher.publications(lambda: changed, session=1)
    assert [p.topic for p in again] == ["storegate/v1/s/g/state/zones/a"]
    assert json.loads(again[0].payload) == {"zone": "a", "name": "A", "occupancy": 5}
    clock.advance(0.1)  # a reconnect: everything at once, whatever the time
    assert len(publisher.publications(lambda: changed, session=2)) == 11


def test_a_zone_removed_from_the_map_is_removed_from_home_assistant(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    publisher = _publisher(tmp_path, clock)
    publisher.publications(lambda: _state(["a", "b"], ["bcn"]), session=1)
    clock.advance(1.0)
    removed = publisher.publications(lambda: _state(["a"], ["bcn"]), session=1)
    assert sorted((p.topic, p.payload) for p in removed) == [
        ("homeassistant/sensor/s_g/zone_b_occupancy/config", b""),
        ("storegate/v1/s/g/state/zones/b", b""),
    ]
    # Removed while the gateway was down: the next start remembers what it had announced.
    later = _publisher(tmp_path, ManualClock(0.0))
    gone = [p for p in later.publications(lambda: _state([], []), session=1) if not p.payload]
    assert {p.topic for p in gone} == {
        "homeassistant/sensor/s_g/zone_a_occupancy/config",
        "homeassistant/sensor/s_g/beacon_bcn_battery/config",
        "homeassistant/sensor/s_g/beacon_bcn_last_seen/config",
        "storegate/v1/s/g/state/zones/a",
        "storegate/v1/s/g/state/beacons/bcn",
    }
    # Discovery switched off: its configs go, the plain store state stays.
    off = _publisher(tmp_path, ManualClock(0.0), ha_discovery=False)
    published = off.publications(lambda: _state([], []), session=1)
    assert {p.topic for p in published if p.payload} == {"storegate/v1/s/g/state/offers"}
    assert all("homeassistant/" in p.topic for p in published if not p.payload)


async def test_an_empty_config_removes_the_retained_entity(tmp_path: Path) -> None:
    """What Home Assistant relies on: an empty retained message deletes the retained one."""
    broker = Broker(tmp_path / "broker")
    broker.start()
    try:
        clock = ManualClock(0.0)
        publisher = _publisher(tmp_path, clock)
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            for round_, zones in enumerate((["a", "b"], ["a"])):
                clock.advance(1.0)
                state = _state(zones, [])
                for p in publisher.publications(partial(_same, state), session=1):
                    await client.publish(p.topic, p.payload, qos=p.qos, retain=p.retain)
                held = await retained(broker.port, "homeassistant/#", "storegate/#", quiet_s=0.3)
                zone_configs = {t for t in held if "/zone_" in t}
                assert len(zone_configs) == 2 - round_
    finally:
        broker.stop()


@pytest.mark.parametrize(
    ("raw", "clean"), [("aisle-scifi", "aisle-scifi"), ("café 1", "caf__1_"), ("a/b", "a_b_")]
)
def test_discovery_ids_keep_to_home_assistants_characters(raw: str, clean: str) -> None:
    assert object_id(raw).startswith(clean)
    assert re.fullmatch(r"[a-zA-Z0-9_-]+", object_id(raw))
    assert object_id("a/b") != object_id("a_b")


def test_a_reloaded_map_without_a_zone_removes_its_entity(
    tmp_path: Path, clock: PinnedClock
) -> None:
    """Through the running gateway's own state: SIGHUP with a map that lost a zone."""
    from gateway.resources import shared_path

    source = shared_path("geofences/demo-bookstore.geojson")
    assert source is not None
    store = json.loads(source.read_text())
    smaller = tmp_path / "smaller.geojson"
    smaller.write_text(
        json.dumps(
            {
                **store,
                "features": [
                    f for f in store["features"] if f["properties"].get("id") != "aisle-kids"
                ],
            }
        )
    )
    text = f"[gateway]\nstate_dir = '{tmp_path / 'state'}'\n[sinks]\nstdout = false\n"
    gateway = Gateway(parse_config(text, "gw.toml", tmp_path), quiet_sink=True, clock=clock)
    manual = ManualClock(0.0)
    publisher = StatePublisher(
        type(gateway.config.mqtt)(ha_discovery=True),
        Topics("storegate/v1", "demo-bookstore", "gw-demo-1"),
        manual,
        tmp_path / "state" / "mqtt-retained.json",
    )
    try:
        first = publisher.publications(gateway.store_state, session=1)
        kids = "homeassistant/sensor/demo-bookstore_gw-demo-1/zone_aisle-kids_occupancy/config"
        assert kids in {p.topic for p in first if p.payload}
        assert gateway.reload(parse_config(f"{text}[map]\npath = '{smaller}'\n", "gw.toml")) == []
        manual.advance(1.0)
        after = publisher.publications(gateway.store_state, session=1)
    finally:
        gateway.close()
    assert sorted(p.topic for p in after if not p.payload) == [
        kids,
        "storegate/v1/demo-bookstore/gw-demo-1/state/zones/aisle-kids",
    ]
