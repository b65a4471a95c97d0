"""`gateway profiles import`, `gateway stock import` and what follows, as a shop meets them:
real subprocesses, the shipped demo data, the daemon run on it, `offers why` by pseudonym."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from gateway.resources import data_file

DEMO_DATA = data_file("demo-profiles.json")


def _gateway(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_CONFIG"}
    if config is not None:
        env["GATEWAY_CONFIG"] = str(config)  # the default location: no --config needed
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(f"[gateway]\nstate_dir = 'st'\n{extra}")
    return path


def _count(tmp_path: Path, table: str) -> int:
    conn = sqlite3.connect(tmp_path / "st" / "gateway.db")
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def test_a_typo_column_is_an_error_and_nothing_is_imported(tmp_path: Path) -> None:
    config = _config(tmp_path)
    (tmp_path / "shop.csv").write_text(
        "profile_id,consent,cart_sku,cart_title\np-1,true,978-1,Book\np-2,false,978-2,Other\n"
    )
    result = _gateway("profiles", "import", str(tmp_path / "shop.csv"), "--config", str(config))
    assert result.returncode == 2
    assert (
        f"{tmp_path / 'shop.csv'}:1: column consent: unknown column; use proximity_offers"
        in result.stderr
    )
    assert "nothing imported" in result.stderr and result.stdout == ""
    assert _count(tmp_path, "profiles") == 0


def test_every_bad_line_with_line_field_and_reason(tmp_path: Path) -> None:
    config = _config(tmp_path)
    path = tmp_path / "p.jsonl"
    path.write_text(
        json.dumps({"profile_id": "p-1", "consent": {"proximity_offers": True}})
        + "\n"
        + json.dumps({"profile_id": "p-2", "consnet": {"proximity_offers": True}})
        + "\n"
        + "{bad\n"
    )
    result = _gateway("profiles", "import", str(path), "--dry-run", "--config", str(config))
    assert result.returncode == 2
    assert f"{path}:2: consnet: unknown field; did you mean 'consent'?" in result.stderr
    assert f"{path}:3: line: not JSON" in result.stderr
    assert "2 problem(s) on 2 line(s)" in result.stderr
    assert "(the other 1 profiles are fine)" in result.stderr
    path.write_text(path.read_text().splitlines()[0] + "\n")
    dry = _gateway("profiles", "import", str(path), "--dry-run", "--config", str(config))
    assert dry.returncode == 0, dry.stderr
    assert not (tmp_path / "st").exists()  # a check writes nothing, not even the database
    assert "would import 1 profiles" in dry.stdout
    done = _gateway("profiles", "import", str(path), "--config", str(config))
    assert done.returncode == 0 and "imported 1 profiles" in done.stdout
    assert _count(tmp_path, "profiles") == 1


def test_stock_import_checks_zones_against_the_configured_map(tmp_path: Path) -> None:
    config = _config(tmp_path)  # the demo bookstore's map, by default
    path = tmp_path / "stock.csv"
    path.write_text("sku,title,quantity,zone_id\n1,A,2,aisle-scifi\n2,B,1,aisle-scfi\n")
    result = _gateway("stock", "import", str(path), "--config", str(config))
    assert result.returncode == 2
    assert f"{path}:3: zone_id: 'aisle-scfi' is not a zone of the map" in result.stderr
    assert _count(tmp_path, "stock") == 0
    path.write_text("sku,title,quantity,zone_id\n1,A,2,aisle-scifi\n")
    assert _gateway("stock", "import", str(path), "--config", str(config)).returncode == 0
    assert _count(tmp_path, "stock") == 1


def test_a_stock_row_with_several_bad_cells_names_each(tmp_path: Path) -> None:
    """A spreadsheet row is fixed once: every bad cell of it is named, not only the first;
    a superscript digit or a count beyond SQLite's integers is an error, not a crash."""
    config = _config(tmp_path)
    path = tmp_path / "stock.csv"
    path.write_text(
        "sku,title,quantity,zone_id\n"
        "1,A,2,aisle-scifi\n"
        ",B,-1,aisle-scfi\n"
        "3,C,\u00b2,\n"
        "4,D,99999999999999999999999,\n"
    )
    result = _gateway("stock", "import", str(path), "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert f"{path}:3: sku: expected a non-empty string" in result.stderr
    assert f"{path}:3: quantity: expected a whole number, 0 or more" in result.stderr
    assert f"{path}:3: zone_id: 'aisle-scfi' is not a zone of the map" in result.stderr
    assert f"{path}:4: quantity: expected a whole number, 0 or more" in result.stderr
    assert f"{path}:5: quantity: 99999999999999999999999 is more than 1,000,000,000" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert _count(tmp_path, "stock") == 0


def test_first_day_demo_data_in_offer_out_and_why_by_pseudonym(tmp_path: Path) -> None:
    """The shipped demo data through the command line alone, the daemon on the demo trace,
    and the decisions found again by the device pseudonym the daemon printed."""
    config = _config(
        tmp_path,
        f"[sources.replay]\npath = '{data_file('demo-trace.jsonl')}'\nstart = '10:00'\n"
        "[sinks]\nstdout = false\n[service]\ncontrol_listen = ''\n",
    )
    profiles = _gateway("profiles", "import", str(DEMO_DATA), config=config)
    assert profiles.returncode == 0, profiles.stderr
    assert "imported 2 profiles (3 identifiers, 3 cart items)" in profiles.stdout
    assert "'stock' list (4 entries) is not read here: gateway stock import" in profiles.stderr
    stock = _gateway("stock", "import", str(DEMO_DATA), config=config)
    assert stock.returncode == 0, stock.stderr
    assert "imported 4 stock items" in stock.stdout
    run = _gateway("run", "--once", "-v", config=config)
    assert run.returncode == 0, run.stderr
    assert re.search(r"OFFER\s+issue p-alice-3f9c", run.stdout), run.stdout[-2000:]
    alice = re.search(r"IDENTITY\s+ibeacon (dev-[0-9a-f]{16}) → profile p-alice-3f9c", run.stdout)
    assert alice, run.stdout[:2000]
    why = _gateway("offers", "why", alice.group(1), config=config)
    assert why.returncode == 0, why.stderr
    assert "issued (cart_item_in_stock)" in why.stdout
    by_profile = _gateway("offers", "why", "p-alice-3f9c", config=config)
    assert by_profile.stdout.startswith(why.stdout)
    # and what became of her offer (the demo: she redeems it at the counter)
    assert re.search(r"  offer …\w{4} for 978-\S+: redeemed at ", by_profile.stdout), (
        by_profile.stdout
    )
    nobody = _gateway("offers", "why", "dev-0000000000000000", config=config)
    assert "no decisions recorded for dev-0000000000000000" in nobody.stdout


def test_export_to_stdout(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert _gateway("profiles", "import", str(DEMO_DATA), config=config).returncode == 0
    out = _gateway("profiles", "export", "-", config=config)
    assert out.returncode == 0 and "exported 2 profiles" in out.stderr
    assert [json.loads(line)["profile_id"] for line in out.stdout.splitlines()] == [
        "p-alice-3f9c",
        "p-bob-81d2",
    ]
