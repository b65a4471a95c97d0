"""Configuration: defaults valid, every mistake named by file and key, docs in step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli.tools import config_reference
from gateway.config.schema import ConfigError
from gateway.config.sections import Config, load_config, parse_config
from tests.conftest import REPO


def test_embedded_defaults_are_valid_and_complete() -> None:
    config = load_config(None)
    assert config.offers.pickup_discount.percent == 10
    assert config.presence.method == "max_likelihood"
    assert config.nfc.touchpoints["counter-reader"].redeem is True


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[gateway]\nidd = 'x'\n", "gateway.idd", "unknown key"),
        ("[presence]\nstale_after_s = 'ten'\n", "presence.stale_after_s", "expected a number"),
        ("[presence]\nmethod = 'magic'\n", "presence.method", "max_likelihood"),
        ("[offers.pickup_discount]\npercent = 150\n", "offers.pickup_discount.percent", "between"),
        (
            "[offers.pickup_discount]\nenter_zones = 'entrance'\n",
            "offers.pickup_discount.enter_zones",
            "list",
        ),
        ("[gateway]\ntimezone = 'Mars/Olympus'\n", "gateway.timezone", "unknown time zone"),
        ("[gateway]\npseudonym_key = 'zz'\n", "gateway.pseudonym_key", "hex"),
        ("[nfc.touchpoints.door]\nredeem = true\n", "nfc.touchpoints.door.zone", "missing"),
        ("[zones]\ndwell_s = true\n", "zones.dwell_s", "expected a number"),
        ("surprise = 1\n", "surprise", "unknown key"),
        # values no range check of a section would catch: NaN passes every comparison
        ("[presence]\nprocess_noise_db = nan\n", "presence.process_noise_db", "finite"),
        ("[offers.limits]\ncooldown_s = nan\n", "offers.limits.cooldown_s", "finite"),
        ("[presence]\nstale_after_s = inf\n", "presence.stale_after_s", "finite"),
        ("[zones]\ndwell_s = 1e30\n", "zones.dwell_s", "sensible range"),
        ("[outbox]\nmax_events = 9223372036854775807\n", "outbox.max_events", "range"),
        ('[map]\npath = "a\\u0000b"\n', "map.path", "NUL"),
        (f"[gateway]\ntimezone = '{'x' * 5000}'\n", "gateway.timezone", "at most 4096"),
        # MQTT wildcards in ids: the broker would refuse every publish, silently
        ("[gateway]\nstore = 'shop/+'\n", "gateway.store", "topic level"),
        ("[gateway]\nid = 'gw#1'\n", "gateway.id", "wildcard"),
        ("[mqtt]\ntopic_prefix = 'storegate/+'\n", "mqtt.topic_prefix", "wildcard"),
        ("[mqtt]\ntopic_prefix = 'storegate//v1'\n", "mqtt.topic_prefix", "empty"),
    ],
)
def test_bad_config_names_file_and_key(text: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc/gateway/config.toml")
    assert info.value.key == key
    assert info.value.file == "/etc/gateway/config.toml"
    assert words in str(info.value)
    assert str(info.value).startswith("/etc/gateway/config.toml: " + key)


def test_invalid_toml_is_reported_with_position() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("[gateway\nid = 1", "c.toml")


def test_ints_are_accepted_for_floats() -> None:
    config = parse_config("[zones]\ndwell_s = 30\n")
    assert config.zones.dwell_s == 30.0 and isinstance(config.zones.dwell_s, float)


def test_relative_paths_resolve_against_config_dir(tmp_path: Path) -> None:
    (tmp_path / "store.geojson").write_text("{}")
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[map]\npath = 'store.geojson'\n[gateway]\nstate_dir = 'st'\n")
    config = load_config(cfg)
    assert config.resolve(config.map.path) == tmp_path / "store.geojson"
    assert config.state_path == tmp_path / "st"
    # Shipped maps are found when not next to the config.
    default = Config(base_dir=tmp_path)
    assert default.resolve(default.map.path).exists()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_exits_2_with_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[zones]\nhysteresis = 2\n")
    result = _run("run", "--config", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(bad) in lines[0] and "zones.hysteresis" in lines[0] and "unknown key" in lines[0]

    missing = _run("run", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2
    assert "nope.toml" in missing.stderr and "file not found" in missing.stderr


def test_cli_rejects_a_broken_map(tmp_path: Path) -> None:
    broken = tmp_path / "map.geojson"
    broken.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature"}]}')
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f"[map]\npath = '{broken}'\n[sources.replay]\npath = 'x.jsonl'\n")
    result = _run("run", "--config", str(cfg))
    assert result.returncode == 2
    assert "map.geojson" in result.stderr and "feature #0" in result.stderr


def test_config_reference_is_current() -> None:
    doc = (REPO / "docs" / "config.md").read_text()
    assert doc == config_reference(), "docs/config.md is stale: run `gateway config-doc`"
