"""Hardware profiles: every shipped one loads; a bad one is rejected with file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.schema import ConfigError
from gateway.site import hardware as profiles


def test_every_shipped_profile_loads() -> None:
    beacons = profiles.profile_names("beacons")
    readers = profiles.profile_names("readers")
    assert {"phone-app-ibeacon", "generic-ibeacon", "generic-eddystone"} <= set(beacons)
    assert {"acs-acr122u", "pn532-uart", "simulated-udp"} <= set(readers)
    for name in beacons:
        p = profiles.load_beacon_profile(name)
        assert p.nominal and p.source, f"{name}: nominal values must say where they come from"
    for name in readers:
        assert ":" in profiles.load_reader_profile(name).device


def _bad(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> ConfigError:
    folder = tmp_path / "firmware_profiles" / "beacons"
    folder.mkdir(parents=True)
    (folder / "broken.toml").write_text(text)
    monkeypatch.setenv("GATEWAY_SHARE", str(tmp_path))
    with pytest.raises(ConfigError) as info:
        profiles.load_beacon_profile("broken")
    return info.value


GOOD = (
    'vendor = "x"\nmodel = "y"\nframe_types = ["ibeacon"]\nmeasured_power_dbm = -59.0\n'
    "path_loss_exponent = 2.0\nadvertising_interval_ms = 100.0\nnominal = true\n"
)


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        (GOOD.replace("-59.0", "12.0"), "measured_power_dbm", "between"),
        (GOOD + "colour = 'red'\n", "colour", "unknown key"),
        (GOOD.replace('vendor = "x"\n', ""), "vendor", "missing"),
        (GOOD.replace("2.0", "'two'"), "path_loss_exponent", "expected a number"),
        ("vendor = ", "", "cannot read profile"),
    ],
)
def test_bad_profiles_name_file_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, key: str, words: str
) -> None:
    error = _bad(tmp_path, monkeypatch, text)
    assert error.file.endswith("broken.toml") and error.key == key and words in str(error)


def test_unknown_profile_is_named() -> None:
    with pytest.raises(ConfigError, match="no such beacon profile 'nope'"):
        profiles.load_beacon_profile("nope")
