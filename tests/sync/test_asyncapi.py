"""docs/asyncapi.yaml is the contract: well-formed, in step with the code, and true of the
events the gateway really emits (validated against its JSON schemas)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator, FormatChecker

from gateway.clock import ManualClock, PinnedClock
from gateway.config.sections import Config
from gateway.model import AdapterHealth, AdapterState, GatewayNotice, NoticeKind
from gateway.offers.rules import Reason
from gateway.ops.demo import run_demo
from gateway.store.outbox import Outbox
from gateway.sync import downlink, signed
from gateway.sync.envelopes import PRIORITY, EnvelopeFactory
from gateway.sync.homeassistant import StatePublisher, StoreState, ZoneState
from gateway.sync.topics import Topics
from gateway.sync.uplink import Uplink
from tests.conftest import REPO, STORE_MORNING

DOC: dict[str, Any] = yaml.safe_load((REPO / "docs" / "asyncapi.yaml").read_text())


def _validator(schema_name: str) -> Draft202012Validator:
    root = {**DOC, "$ref": f"#/components/schemas/{schema_name}"}
    return Draft202012Validator(root, format_checker=FormatChecker())


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return ([node["$ref"]] if "$ref" in node else []) + [
            r for v in node.values() for r in _refs(v)
        ]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_is_asyncapi_3_and_every_reference_resolves() -> None:
    assert str(DOC["asyncapi"]).startswith("3.")
    for ref in _refs(DOC):
        node: Any = DOC
        for part in ref.removeprefix("#/").split("/"):
            assert part in node, f"unresolved {ref}"
            node = node[part]
    for name, op in DOC["operations"].items():
        assert op["action"] in ("send", "receive"), name


def test_channel_parameters_match_their_addresses() -> None:
    for name, channel in DOC["channels"].items():
        placeholders = set(re.findall(r"{(\w+)}", channel["address"]))
        assert placeholders == set(channel.get("parameters", {})), name


def test_the_code_uses_exactly_the_documented_topics() -> None:
    topics = Topics("storegate/v1", "{store}", "{gateway}")
    addresses = {c["address"] for c in DOC["channels"].values()}
    used = {
        topics.events("{stream}"),
        topics.status,
        topics.resync,
        topics.sightings,
        topics.handover,
        topics.forwarded("{owner}"),
        topics.display("{zone}"),
        f"{topics.base}/cmd-resp/{{command}}",
        *(
            f.replace("down/+", "down/{family}").replace("cmd/+", "cmd/{command}")
            for f in topics.downlink_filters
        ),
    }
    publisher = StatePublisher(Config().mqtt, topics, ManualClock(0.0))
    used |= {
        publisher.zone_topic("{zone}"),
        publisher.beacon_topic("{beacon}"),
        publisher.offers_topic,
        publisher.config_topic("{component}", "{object}").replace(publisher.node_id, "{node}"),
    }
    assert used == addresses
    channels = DOC["channels"]
    assert set(channels["events"]["parameters"]["stream"]["enum"]) == set(PRIORITY)
    assert tuple(channels["storeDocuments"]["parameters"]["family"]["enum"]) == downlink.FAMILIES
    assert tuple(channels["commands"]["parameters"]["command"]["enum"]) == signed.COMMANDS
    reasons = DOC["components"]["schemas"]["OfferDecisionData"]["properties"]["reason"]["enum"]
    codes = set(Reason)
    assert set(reasons) == codes


@pytest.fixture(scope="module")
def demo_events(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    state = tmp_path_factory.mktemp("state")
    _, gateway = run_demo(0, state, io.StringIO(), clock=PinnedClock(STORE_MORNING))
    events = [json.loads(r[0]) for r in gateway.conn.execute("SELECT body FROM outbox")]
    gateway.close()
    return events


def test_every_demo_event_matches_the_contract(demo_events: list[dict[str, Any]]) -> None:
    validator = _validator("CloudEvent")
    assert len({e["type"] for e in demo_events}) >= 7
    for event in demo_events:
        errors = [e.message for e in validator.iter_errors(event)]
        assert not errors, (event["type"], errors)


def test_the_schemas_reject_what_they_should(demo_events: list[dict[str, Any]]) -> None:
    validator = _validator("CloudEvent")
    issued = next(e for e in demo_events if e["type"] == "com.storegate.offer.issued")
    assert not validator.is_valid(issued | {"type": "com.storegate.offer.sent"})
    assert not validator.is_valid(issued | {"data": {**issued["data"], "code": "pk-1"}})
    zone = next(e for e in demo_events if e["type"] == "com.storegate.zone.enter")
    raw_mac = {**zone["data"], "device": "AA:BB:CC:DD:EE:FF"}
    assert not validator.is_valid(zone | {"data": raw_mac})


def test_gateway_events_and_status_match(tmp_path: Path) -> None:
    factory = EnvelopeFactory("s", "g", lambda d: "dev-0123456789abcdef")
    validator = _validator("CloudEvent")
    for event in (
        AdapterHealth(1.0, "hci0", AdapterState.RESTARTING, "ScannerSilent: no advert", 2),
        GatewayNotice(
            1.0,
            NoticeKind.DOWNLINK_REJECTED,
            "stock",
            {"topic": "t", "reason": "version_gap", "detail": "d"},
        ),
        GatewayNotice(
            1.0, NoticeKind.DOWNLINK_APPLIED, "stock", {"topic": "t", "version": 3, "kind": "delta"}
        ),
        GatewayNotice(1.0, NoticeKind.COMMAND, "flush", {"ok": True, "reason": None}),
    ):
        envelope = factory.envelope(event)
        assert envelope is not None
        assert validator.is_valid(envelope.body), list(validator.iter_errors(envelope.body))
    uplink = Uplink(Config(), Outbox.__new__(Outbox), ManualClock(1_900_000_000.0))
    status = json.loads(uplink._status("online"))
    assert _validator("Status").is_valid(status)
    sealed = signed.seal(
        b"k" * 16,
        {"family": "stock", "kind": "delta", "version": 2, "data": {}},
        store="demo-bookstore",
        now=1_900_000_000.0,
    )
    assert _validator("Document").is_valid(sealed), list(_validator("Document").iter_errors(sealed))
    command = signed.seal(
        b"k" * 16,
        {"command": "flush", "args": {}, "nonce": "n-0123456789"},
        store="demo-bookstore",
        gateway="gw-demo-1",
        now=1_900_000_000.0,
        valid_s=300.0,
    )
    assert _validator("Command").is_valid(command), list(_validator("Command").iter_errors(command))
    assert not _validator("Document").is_valid({**sealed, "extra": 1})


def test_a_batch_matches_the_batch_message(demo_events: list[dict[str, Any]]) -> None:
    schema = DOC["components"]["messages"]["cloudEventBatch"]["payload"]
    validator = Draft202012Validator({**DOC, **schema}, format_checker=FormatChecker())
    zone = [e for e in demo_events if e["type"].startswith("com.storegate.zone.")][:5]
    assert validator.is_valid(zone)
    assert not validator.is_valid(zone[:1])  # a single event is never wrapped


def test_shared_sightings_match_the_contract() -> None:
    from gateway.model import Advert
    from gateway.sync import peers

    adverts = [
        Advert(1795424400.07, "gw-sw", "C0:FF:EE:00:00:02", -85, bytes.fromhex("0201061aff4c00")),
        Advert(1795424400.5, "gw-nw", "C0:FF:EE:00:00:02", -77, b"", {0x004C: b"\x02\x15"}),
    ]
    topic = peers.PeerTopic("storegate/v1", "demo-bookstore", "gw-a")
    payload = peers.encode(topic, b"k" * 16, adverts, sent_at=1795424400.6)
    header, _, raw = payload.partition(b"\n")
    assert header.startswith(b"PGS2 ") and len(header) == 5 + 64
    body = json.loads(raw)
    validator = _validator("SightingsBatch")
    assert validator.is_valid(body), list(validator.iter_errors(body))
    body["sightings"][0]["address"] = "C0:FF:EE:00:00:02"
    assert not validator.is_valid(body)  # the contract forbids MACs too


def test_forwarded_readings_match_the_contract() -> None:
    from gateway.sync import forward

    topic = forward.ForwardTopic("storegate/v1", "demo-bookstore", "gw-a", "gw-b")
    readings = [(1795424400.07, "gw-sw", -85), (1795424400.5, "gw-nw", -77)]
    devices: list[forward.DeviceReadings] = [("ibeacon:x:1:2", -59, readings)]
    payload = forward.encode(topic, b"k" * 16, devices, sent_at=1795424400.6)
    header, _, raw = payload.partition(b"\n")
    assert header.startswith(b"PGS3 ") and len(header) == 5 + 64
    body = json.loads(raw)
    validator = _validator("ForwardedReadings")
    assert validator.is_valid(body), list(validator.iter_errors(body))
    body["devices"][0][2][0][2] = -130.5
    assert not validator.is_valid(body)


def test_handover_state_and_a_members_status_match_the_contract() -> None:
    from gateway.sync import ownership
    from gateway.zones.handover import HandedOver, VisitState

    offer = {
        "offer_id": "of-1",
        "profile_id": "p-alice-3f9c",
        "campaign": "pickup-discount",
        "sku": "978-0441478125",
        "code": "K7QS0W7",
        "store_day": "2031-06-17",
        "status": "issued",
        "issued_at": 10.0,
        "expires_at": 7210.0,
    }
    state = HandedOver(
        "ibeacon:x:1:2",
        "visit:0123",
        None,
        12.0,
        [VisitState("entrance", 2.0, True, False, None)],
        [offer],
    )
    topic = "storegate/v1/demo-bookstore/gw-a/handover"
    payload = ownership.encode_handover(topic, b"k" * 16, "gw-a", [state], sent_at=12.5)
    header, _, raw = payload.partition(b"\n")
    assert header.startswith(b"PGH1 ") and len(header) == 5 + 64
    validator = _validator("HandoverState")
    body = json.loads(raw)
    assert validator.is_valid(body), list(validator.iter_errors(body))
    body["devices"][0]["visits"][0][2] = "yes"
    assert not validator.is_valid(body)
    status = {
        "state": "online",
        "gateway": "gw-a",
        "store": "s",
        "version": "1",
        "started_at": 1.0,
        "uptime_s": 0.0,
        "config_hash": "x",
        "fleet": ownership.status_signature(b"k" * 16, "t", "online", 1.0),
    }
    assert _validator("Status").is_valid(status)


def test_every_offer_reason_is_in_the_contract() -> None:

    schema = DOC["components"]["schemas"]["OfferDecisionData"]["properties"]["reason"]
    assert set(schema["enum"]) == set(Reason)


def _message_validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator({**DOC, **schema}, format_checker=FormatChecker())


def test_every_message_has_examples_that_match_it() -> None:
    for name, message in DOC["components"]["messages"].items():
        examples = message.get("examples", [])
        assert examples, f"{name} has no example"
        for example in examples:
            payload = _message_validator(message["payload"])
            errors = [e.message for e in payload.iter_errors(example["payload"])]
            assert not errors, (name, example["name"], errors)
            if "headers" in message:
                headers = _message_validator(message["headers"])
                assert headers.is_valid(example["headers"]), (name, example["name"])
        assert message["bindings"]["mqtt"]["bindingVersion"] == "0.2.0"


def test_qos_retain_will_and_security_are_bindings_not_prose() -> None:
    server = DOC["servers"]["store-broker"]
    will = server["bindings"]["mqtt"]["lastWill"]
    assert will["qos"] == 1 and will["retain"] is True and will["topic"].endswith("/status")
    assert _validator("Status").is_valid(json.loads(will["message"]))
    schemes = DOC["components"]["securitySchemes"]
    assert {schemes[r["$ref"].rsplit("/", 1)[1]]["type"] for r in server["security"]} == {
        "X509",
        "userPassword",
    }
    assert DOC["info"]["license"]["name"]
    expected = {  # (qos, retain) as the code publishes them
        "sendEvents": (1, False),
        "sendStatus": (1, True),
        "shareSightings": (0, False),
        "showOffers": (1, False),
        "publishZoneState": (1, True),
        "publishBeaconState": (1, True),
        "publishOffersState": (1, True),
        "announceToHomeAssistant": (1, True),
    }
    for name, op in DOC["operations"].items():
        binding = op["bindings"]["mqtt"]
        assert binding["qos"] in (0, 1), name
        if name in expected:
            assert (binding["qos"], binding.get("retain", False)) == expected[name], name


def test_the_retained_state_and_discovery_match_the_contract() -> None:
    from gateway.model import BeaconHealth

    publisher = StatePublisher(
        dataclasses.replace(Config().mqtt, ha_discovery=True),
        Topics("storegate/v1", "s", "g"),
        ManualClock(0.0),
    )
    state = StoreState(
        zones=[ZoneState("aisle-1", "Aisle 1", 2)],
        beacons=[
            BeaconHealth(1.0, "b1", "ok", 1_900_000_000.0, 1.0, 2900, 77.7, 20.0),
            BeaconHealth(1.0, "b2", "missing", None, None, None, None, None),
        ],
        day="2031-06-17",
        offers_issued=3,
        offers_redeemed=1,
    )
    by_schema = {"zones": "ZoneState", "beacons": "BeaconState", "offers": "OffersState"}
    published = publisher.publications(lambda: state, session=1)
    assert len(published) == 4 + 8  # states: zone, 2 beacons, offers; 8 discovery configs
    for p in published:
        body = json.loads(p.payload)
        if p.topic.startswith("homeassistant/"):
            name = "DiscoveryConfig"
        else:
            name = by_schema[p.topic.split("/state/")[1].split("/")[0]]
        errors = [e.message for e in _validator(name).iter_errors(body)]
        assert not errors, (p.topic, errors)


ASYNCAPI_CLI = "6.2.0"  # @asyncapi/cli, pinned


def _asyncapi_cli() -> Path:
    """The official AsyncAPI CLI from npm, installed once into .venv (kept between runs)."""
    prefix = REPO / ".venv" / "npm" / f"asyncapi-cli-{ASYNCAPI_CLI}"
    binary = prefix / "node_modules" / ".bin" / "asyncapi"
    # Twice at most: npm has been seen to report success with a package half-extracted (no
    # bin/) when other installs shared its cache; a second, clean install repairs that.
    for _attempt in range(2):
        if binary.exists():
            return binary
        shutil.rmtree(prefix, ignore_errors=True)
        npm = shutil.which("npm")
        assert npm, "npm is missing (Debian: apt-get install npm)"
        installed = subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
             f"@asyncapi/cli@{ASYNCAPI_CLI}"],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert installed.returncode == 0, installed.stderr[-2000:]
    assert binary.exists(), f"npm installed @asyncapi/cli@{ASYNCAPI_CLI} without {binary}"
    return binary


def _validate(cli: Path, document: Path, tmp_path: Path) -> tuple[int, str]:
    analytics = tmp_path / "analytics.json"  # no usage tracking, no network
    analytics.write_text('{"analyticsEnabled": "false", "infoMessageShown": "true", "userID": "t"}')
    env = {
        **os.environ,
        "ASYNCAPI_METRICS_CONFIG_PATH": str(analytics),
        "SUPPRESS_NO_CONFIG_WARNING": "1",
    }
    result = subprocess.run(
        [str(cli), "validate", str(document), "--score"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    return result.returncode, result.stdout + result.stderr


@pytest.mark.registry  # npm installs the AsyncAPI CLI from the package registry
def test_the_official_asyncapi_cli_scores_it_100_without_warnings(tmp_path: Path) -> None:
    cli = _asyncapi_cli()
    code, output = _validate(cli, REPO / "docs" / "asyncapi.yaml", tmp_path)
    assert code == 0, output
    score = re.search(r"score of the asyncapi document is (\d+)", output)
    assert score and int(score.group(1)) >= 90, output
    assert "is valid" in output and "don't have governance issues" in output, output
    # the same tool, on the contract without its license: the score it had before (75)
    unlicensed = tmp_path / "unlicensed.yaml"
    unlicensed.write_text(
        yaml.safe_dump({**DOC, "info": {k: v for k, v in DOC["info"].items() if k != "license"}})
    )
    _, output = _validate(cli, unlicensed, tmp_path)
    assert "score of the asyncapi document is 75" in output, output
    # and a broken reference is an error, so the check above can fail
    broken = tmp_path / "broken.yaml"
    channels = {**DOC["channels"], "status": {**DOC["channels"]["status"], "messages": {
        "status": {"$ref": "#/components/messages/nowhere"}}}}  # fmt: skip
    broken.write_text(yaml.safe_dump({**DOC, "channels": channels}))
    code, output = _validate(cli, broken, tmp_path)
    assert code != 0 and "nowhere" in output, output
