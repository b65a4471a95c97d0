"""The command line where people meet it: pipes that close, paths that do not exist, `sim`
output fed to `locate`, your own map simulated, and where the config is found."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from gateway.cli import build_parser
from gateway.cli._common import CONFIG_ENV, INSTALLED_CONFIG
from tests.conftest import REPO

CORNER = REPO / "geofences" / "corner-bookshop.geojson"
DEMO_MAP = REPO / "geofences" / "demo-bookstore.geojson"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != CONFIG_ENV}
    return env | extra


def _gateway(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(**env),
    )


def test_sim_into_a_pipe_that_closes_early_is_no_traceback() -> None:
    sim = subprocess.Popen(
        [sys.executable, "-m", "gateway", "sim"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    assert sim.stdout is not None and sim.stderr is not None
    first = sim.stdout.readline()  # what `| head -1` reads
    sim.stdout.close()
    stderr = sim.stderr.read().decode()
    sim.stderr.close()
    assert sim.wait(timeout=60) == 141  # 128 + SIGPIPE, as any Unix writer
    assert json.loads(first)["kind"] == "ble"
    assert "Traceback" not in stderr and stderr == ""


def test_sim_to_a_missing_directory_is_a_clear_error() -> None:
    result = _gateway("sim", "-o", "/missing/dir/x.jsonl")
    assert result.returncode == 2
    assert result.stderr == "gateway: -o /missing/dir/x.jsonl: No such file or directory\n"


def test_other_outputs_to_a_missing_directory_are_clear_errors(tmp_path: Path) -> None:
    render = _gateway("fences", "render", str(DEMO_MAP), "-o", "/missing/dir/plan.png")
    assert (render.returncode, render.stderr) == (
        2,
        "gateway: -o /missing/dir/plan.png: No such file or directory\n",
    )
    config = tmp_path / "gw.toml"
    config.write_text("[gateway]\nstate_dir = 'st'\n")
    export = _gateway("profiles", "export", "/missing/dir/p.jsonl", "--config", str(config))
    assert (export.returncode, export.stderr) == (
        2,
        "gateway: /missing/dir/p.jsonl: No such file or directory\n",
    )


def test_locate_reads_what_sim_writes() -> None:
    trace = _gateway("sim")
    assert trace.returncode == 0
    result = _gateway("locate", "--map", str(DEMO_MAP), stdin=trace.stdout)
    assert result.returncode == 0, result.stderr[-2000:]
    estimates = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(estimates) > 1000
    assert {"aisle-scifi", "entrance", "pickup-counter"} <= {
        zone for e in estimates for zone in e["zones"]
    }


def test_locate_exits_non_zero_on_rejected_lines_and_bounds_its_complaints() -> None:
    lines = [json.dumps({"t": i, "receiver": "gw-sw", "rssi": -60}) for i in range(200)]
    result = _gateway("locate", "--map", str(DEMO_MAP), stdin="\n".join(lines) + "\n")
    assert result.returncode == 2
    complaints = result.stderr.splitlines()
    assert len(complaints) == 22  # 20 named lines, "… and 180 more", the summary
    assert complaints[0].startswith("gateway locate: line 1: device: expected a string")
    assert complaints[-2] == "gateway locate: … and 180 more rejected lines"
    assert "rejected 200 lines (200 malformed)" in complaints[-1]


def test_sim_simulates_your_own_map_and_the_pipeline_sees_its_zones(tmp_path: Path) -> None:
    trace = tmp_path / "corner.jsonl"
    result = _gateway(
        "sim", "--map", str(CORNER), "--shoppers", "2", "--seed", "3", "-o", str(trace)
    )
    assert result.returncode == 0, result.stderr
    again = _gateway("sim", "--map", str(CORNER), "--shoppers", "2", "--seed", "3")
    assert again.stdout == trace.read_text()  # seeded: the same trace every time
    store = json.loads(CORNER.read_text())
    zone_ids = {
        f["properties"]["id"] for f in store["features"] if f["properties"]["kind"] == "zone"
    }
    config = tmp_path / "gw.toml"
    config.write_text(
        f"[gateway]\nstate_dir = 'st'\n[map]\npath = '{CORNER}'\n"
        f"[sources.replay]\npath = '{trace}'\nspeed = 0\n"
        "[sinks]\nstdout = false\n[service]\ncontrol_listen = ''\n"
    )
    run = _gateway("run", "--once", "-v", "--config", str(config))
    assert run.returncode == 0, run.stderr[-2000:]
    entered = {
        line.split()[3]
        for line in run.stdout.splitlines()
        if " ZONE " in f" {line} " and " enter " in line
    }
    assert len(entered & zone_ids) >= 3, run.stdout[:3000]
    dwelled = [line for line in run.stdout.splitlines() if "ZONE" in line and " dwell " in line]
    assert dwelled, run.stdout[:3000]


def test_sim_refuses_a_broken_map_with_the_feature_named(tmp_path: Path) -> None:
    broken = tmp_path / "mine.geojson"
    broken.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature"}]}))
    result = _gateway("sim", "--map", str(broken))
    assert result.returncode == 2 and "feature #0" in result.stderr
    assert "Traceback" not in result.stderr


def test_commands_find_the_config_or_say_where_they_looked(tmp_path: Path) -> None:
    missing = _gateway("status")
    if not Path(INSTALLED_CONFIG).exists():  # a test box has no installed gateway
        assert missing.returncode == 2
        assert missing.stderr == (
            f"gateway: no config file: pass --config FILE, set {CONFIG_ENV}=FILE, or install one "
            f"at {INSTALLED_CONFIG} (sudo scripts/install; docs/operations.md)\n"
        )
    config = tmp_path / "gw.toml"
    config.write_text("[gateway]\nstate_dir = 'st'\n")
    found = _gateway("offers", "why", "p-1", **{CONFIG_ENV: str(config)})
    # it read that config's state: no such profile there (a typo is not "no decisions")
    assert found.returncode == 2 and "p-1: no decisions, and not a profile id" in found.stderr
    assert (tmp_path / "st" / "gateway.db").exists()  # it used that config's state
    # doctor reports a missing config as its failed first check instead of stopping
    doctor = _gateway("doctor", "--json", **{CONFIG_ENV: str(tmp_path / "nope.toml")})
    checks = json.loads(doctor.stdout)
    assert doctor.returncode == 1 and checks[0]["name"] == "config"
    assert checks[0]["status"] == "fail" and "nope.toml" in checks[0]["detail"]


def test_every_config_option_says_what_it_is_and_where_it_defaults_to() -> None:
    parser = build_parser()
    seen = 0

    def walk(p: object, path: str) -> None:
        nonlocal seen
        for action in getattr(p, "_actions", []):
            if action.dest == "config":
                seen += 1
                assert action.help and CONFIG_ENV in action.help, path
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, f"{path} {name}")

    walk(parser, "gateway")
    assert seen >= 13  # every command that reads a config


def test_sim_on_a_map_nobody_can_walk_says_so(tmp_path: Path) -> None:
    """A shop drawn in millimetres: `sim` used to write 0 lines and exit 0."""

    def scaled(value: object) -> object:
        if isinstance(value, list):
            return [scaled(v) for v in value]
        return value * 1000 if isinstance(value, (int, float)) else value

    store = json.loads(CORNER.read_text())
    for feature in store["features"]:
        feature["geometry"]["coordinates"] = scaled(feature["geometry"]["coordinates"])
    millimetres = tmp_path / "mm.geojson"
    millimetres.write_text(json.dumps(store))
    result = _gateway("sim", "--map", str(millimetres), "-o", str(tmp_path / "t.jsonl"))
    assert result.returncode == 2 and "millimetres" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_every_command_says_what_it_does_in_its_own_help() -> None:
    """`gateway console-password --help` had no description; every command, nested ones
    too, opens its help with a sentence."""

    def commands(
        parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
    ) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, command in action.choices.items():
                    found.append(((*path, name), command))
                    found += commands(command, (*path, name))
        return found

    listed = commands(build_parser())
    assert len(listed) > 25
    missing = [" ".join(path) for path, command in listed if not command.description]
    assert missing == []
    assert "Hash a staff password" in _gateway("console-password", "--help").stdout
