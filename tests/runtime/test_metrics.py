"""/metrics by the Prometheus conventions: every documented family in the first scrape, the
exposition clean for `promtool check metrics` and a strict parser, process_* as the official
client computes them, histograms that add up; and the dashboard's alert rules valid."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import ProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from gateway.clock import PinnedClock
from gateway.config.sections import parse_config
from gateway.runtime.gateway import Gateway
from gateway.runtime.metrics import (
    DECODE_REASONS,
    PRESENCE_REASONS,
    Histogram,
    Runtime,
    exposition,
)
from gateway.runtime.status import StatusView
from tests.conftest import REPO

PROMTOOL = shutil.which("promtool")
# Families that only exist once something reported them (documented so in docs/operations.md).
LATE = {"gateway_beacon_battery_percent"}


def documented_families() -> set[str]:
    text = (REPO / "docs" / "operations.md").read_text()
    section = text[text.index("## Metrics") : text.index("## Logs")]
    table = [line for line in section.splitlines() if line.startswith("| `")]
    return {n for line in table for n in re.findall(r"`((?:gateway|process|python)_\w+)`", line)}


def first_scrape(tmp_path: Path, clock: PinnedClock) -> str:
    """A gateway that has seen nothing yet, with one BLE adapter configured (not started)."""
    config = parse_config(
        f"[gateway]\nstate_dir = '{tmp_path / 'state'}'\n[sinks]\nstdout = false\n"
        "[sources.ble.hci0]\nreceiver = 'gw-entrance'\n",
        "test.toml",
        tmp_path,
    )
    gateway = Gateway(config, quiet_sink=True, clock=clock)
    try:
        return exposition(StatusView(gateway, Runtime(clock=clock)))
    finally:
        gateway.close()


def test_every_documented_family_is_in_the_first_scrape(tmp_path: Path, clock: PinnedClock) -> None:
    text = first_scrape(tmp_path, clock)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # the parser drops a counter's _total suffix from the family name
    names = {f"{n}_total" if f.type == "counter" else n for n, f in families.items()}
    documented = documented_families()
    assert len(documented) >= 40
    assert documented <= names, documented - names
    assert names <= documented, f"undocumented: {names - documented}"
    empty = {n for n in names if not families[n.removesuffix("_total")].samples}
    assert empty == LATE
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    # labelled families at 0 with their known label values
    assert samples[("gateway_outbox_depth", (("stream", "offer"),))] == 0
    assert samples[("gateway_decode_rejected_total", (("reason", "ad_truncated"),))] == 0
    assert samples[("gateway_adverts_total", (("receiver", "gw-entrance"),))] == 0
    assert samples[("gateway_ble_adapter_up", (("adapter", "hci0"),))] == 0
    assert samples[("gateway_reloads_total", (("result", "failed"),))] == 0
    assert samples[("gateway_peer_sightings_total", (("result", "accepted"),))] == 0
    assert samples[("gateway_mqtt_connects_total", ())] == 0
    assert samples[("gateway_zone_occupancy", (("zone", "entrance"),))] == 0
    assert samples[("gateway_start_time_seconds", ())] == pytest.approx(clock.wall(), abs=60)
    assert ("gateway_up_seconds", ()) not in samples
    assert samples[("gateway_decision_latency_seconds_count", ())] == 0


def test_promtool_check_metrics_is_clean(tmp_path: Path, clock: PinnedClock) -> None:
    assert PROMTOOL, "promtool is missing: scripts/setup --dev installs Debian's prometheus"
    text = first_scrape(tmp_path, clock)
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
    # and a broken exposition is caught, so the check above can fail
    bad = text.replace("# TYPE gateway_ready gauge", "# TYPE gateway_ready counter")
    worse = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=bad, capture_output=True, text=True, timeout=60
    )
    assert "gateway_ready" in worse.stdout + worse.stderr


def test_process_metrics_match_the_official_client(tmp_path: Path, clock: PinnedClock) -> None:
    ours = {
        s.name: s.value
        for f in text_string_to_metric_families(first_scrape(tmp_path, clock))
        for s in f.samples
        if s.name.startswith("process_")
    }
    theirs = {s.name: s.value for f in ProcessCollector(registry=None).collect() for s in f.samples}
    assert set(ours) == set(theirs)
    assert ours["process_start_time_seconds"] == pytest.approx(
        theirs["process_start_time_seconds"], abs=0.02
    )
    assert ours["process_max_fds"] == theirs["process_max_fds"]
    for name in ("process_resident_memory_bytes", "process_virtual_memory_bytes"):
        assert ours[name] == pytest.approx(theirs[name], rel=0.1)
    # read first, so at most as much CPU as the client's later reading (it sums in floats)
    assert 0 < ours["process_cpu_seconds_total"] <= theirs["process_cpu_seconds_total"] + 1e-6


def test_a_histogram_is_cumulative_and_parses() -> None:
    from gateway.runtime.metrics import Exposition

    histogram = Histogram((0.1, 1.0, 10.0))
    for value in (0.05, 0.1, 0.5, 3.0, 30.0, 30.0):
        histogram.observe(value)
    out = Exposition()
    out.histogram("x_seconds", "Test.", histogram)
    (family,) = text_string_to_metric_families(out.text())
    assert family.type == "histogram"
    got = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert got[("x_seconds_bucket", "0.1")] == 2  # le is inclusive
    assert got[("x_seconds_bucket", "1")] == 3
    assert got[("x_seconds_bucket", "10")] == 4
    assert got[("x_seconds_bucket", "+Inf")] == got[("x_seconds_count", None)] == 6
    assert math.isclose(got[("x_seconds_sum", None)], 63.65)


def test_the_known_reasons_are_every_reason_the_stages_give() -> None:
    """The zero-initialised label values must not drift from the code that counts them."""
    decode = (REPO / "gateway" / "decode" / "ble.py").read_text()
    assert set(re.findall(r'return None, "([a-z_]+)"', decode)) == set(DECODE_REASONS)
    tracker = (REPO / "gateway" / "presence" / "tracker.py").read_text()
    assert set(re.findall(r'rejected\["([a-z_]+)"\]', tracker)) == set(PRESENCE_REASONS)


ALERTS = REPO / "docs" / "prometheus-alerts.yml"
DASHBOARD = REPO / "docs" / "grafana-dashboard.json"


def test_promtool_check_rules_is_clean() -> None:
    assert PROMTOOL, "promtool is missing: scripts/setup --dev installs Debian's prometheus"
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # the rules' own unit tests: each alert fires on its scenario and stays quiet before
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", ALERTS.with_suffix(".test.yml").name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ALERTS.parent,
    )
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert {
        "GatewayOutboxGrowing",
        "GatewayMqttDown",
        "GatewayBeaconBatteryLow",
        "GatewayLoopLag",
    } <= names
    for rule in rules:
        assert rule["annotations"]["summary"] and rule["labels"]["severity"]


def test_the_dashboard_and_the_rules_use_only_exported_metrics(
    tmp_path: Path, clock: PinnedClock
) -> None:
    exported = documented_families()
    text = (REPO / "docs" / "operations.md").read_text()
    histograms = set(re.findall(r"^\| `(\w+)` \| histogram \|", text, re.M))
    assert histograms == {"gateway_decision_latency_seconds", "gateway_outbox_delivery_age_seconds"}
    known = exported | {f"{h}_{s}" for h in histograms for s in ("bucket", "sum", "count")}
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert len(exprs) >= 12
    used = {n for e in exprs for n in re.findall(r"\b((?:gateway|process|python)_\w+)", e)}
    assert used <= known, used - known
    assert dashboard["title"] and dashboard["schemaVersion"] >= 36
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"])
