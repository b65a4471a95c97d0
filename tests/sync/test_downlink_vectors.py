"""The test vectors in docs/downlink.md are what the gateway computes and accepts, and
`gateway downlink sign` produces them (a backend in another language checks against these)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import subprocess
import sys
from pathlib import Path

from gateway.clock import PinnedClock
from gateway.sync import signed
from gateway.sync.canonical import canonical
from tests.support.fakebluez import wait_for
from tests.sync.test_downlink_attacks import KEY as ATTACK_KEY
from tests.sync.test_downlink_attacks import _daemon, _quantity

DOC = (Path(__file__).parents[2] / "docs" / "downlink.md").read_text()
KEY = bytes.fromhex(re.search(r"Key \(hex\): `([0-9a-f]+)`", DOC).group(1))  # type: ignore[union-attr]
VECTORS = re.findall(r"<!-- vector: (\w+) -->\n```\n(.+)\n```\nsig: `([0-9a-f]{64})`", DOC)


def test_the_documented_vectors_verify() -> None:
    assert len(VECTORS) == 3
    for kind, text, sig in VECTORS:
        body = json.loads(text)
        assert canonical(body).decode() == text  # each block is already canonical
        assert hmac.new(KEY, text.encode(), hashlib.sha256).hexdigest() == sig
        sealed = signed.verify(KEY, json.dumps({**body, "sig": sig}).encode())
        assert isinstance(sealed, dict), sealed
        binding = signed.Binding("demo-bookstore", "gw-demo-1")
        refused = signed.check_envelope(
            sealed, binding, body["issued_at"] + 1, command=kind == "command"
        )
        assert refused is None


def test_gateway_downlink_sign_reproduces_them(tmp_path: Path) -> None:
    key_file = tmp_path / "k.hex"
    key_file.write_text(KEY.hex() + "\n")
    for kind, text, sig in VECTORS:
        body = json.loads(text)
        unsigned = {
            k: v
            for k, v in body.items()
            if k not in ("store", "gateway", "issued_at", "expires_at")
        }
        source = tmp_path / "doc.json"
        # Written as Python writes JSON (5e-05, \u00fc escapes): the signer canonicalises.
        source.write_text(json.dumps(unsigned))
        args = [
            "downlink", "sign", str(source), "--key-file", str(key_file),
            "--store", body["store"], "--gateway", body["gateway"],
            "--now", repr(body["issued_at"]),
            "--valid-for", f"{body['expires_at'] - body['issued_at']}s",
        ]  # fmt: skip
        out = subprocess.run(
            [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, check=True
        ).stdout
        assert json.loads(out) == {**body, "sig": sig}, kind


def test_sign_refuses_what_a_gateway_would_refuse(tmp_path: Path) -> None:
    key_file = tmp_path / "k.hex"
    key_file.write_text("0102")  # one can't sign with a 2-byte key
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps({"family": "stock", "kind": "delta", "version": 1, "data": {}}))

    def sign(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", "downlink", "sign", str(doc), *extra],
            capture_output=True,
            text=True,
        )

    short = sign("--key-file", str(key_file), "--store", "s1")
    assert short.returncode == 2 and "too short" in short.stderr
    key_file.write_text(KEY.hex())
    # Longer than a default gateway accepts (30 days): refused here, not on the box.
    too_long = sign("--key-file", str(key_file), "--store", "s1", "--valid-for", "31d")
    assert too_long.returncode == 2 and "invalid_validity" in too_long.stderr
    assert sign("--key-file", str(key_file), "--store", "s1", "--valid-for", "30d").returncode == 0
    assert "--store" in sign("--key-file", str(key_file)).stderr
    doc.write_text(
        json.dumps({"family": "stock", "kind": "delta", "version": 1, "data": {"itemz": []}})
    )
    typo = sign("--key-file", str(key_file), "--store", "s1")
    assert typo.returncode == 2 and "data.itemz: unknown field" in typo.stderr
    doc.write_text(json.dumps({"command": "flush"}))
    assert "one gateway" in sign("--key-file", str(key_file), "--store", "s1").stderr


async def test_gateway_downlink_publish_reaches_a_running_gateway(
    tmp_path: Path, clock: PinnedClock
) -> None:
    """The backend's side by hand: a stock snapshot and a command, through a real broker."""
    async with _daemon(tmp_path, clock) as (gateway, _intruder, broker):
        config = tmp_path / "backend.toml"
        config.write_text(
            f"[mqtt]\nenabled = true\nhost = '127.0.0.1'\nport = {broker.port}\n"
            f"downlink_key = '{ATTACK_KEY.hex()}'\n"
        )
        doc = tmp_path / "stock.json"
        items = [{"sku": "x", "quantity": 9, "zone_id": "aisle-kids"}]
        doc.write_text(
            json.dumps(
                {"family": "stock", "kind": "snapshot", "version": 1, "data": {"items": items}}
            )
        )

        async def gateway_cli(*args: str) -> tuple[int, str]:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "downlink", "publish", *args,
                "--config", str(config), "--now", repr(clock.wall()),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            out, _ = await process.communicate()
            return process.returncode or 0, out.decode()

        rc, out = await gateway_cli(str(doc), "--retain")
        assert rc == 0 and "demo-bookstore/down/stock" in out, out
        assert "gw-demo-1: applied" in out, out  # the gateway's own word, not just "sent"
        await wait_for(lambda: _quantity(gateway) == 9)
        gap = tmp_path / "gap.json"
        gap.write_text(
            json.dumps({"family": "stock", "kind": "delta", "version": 3, "data": {"items": []}})
        )
        rc, out = await gateway_cli(str(gap))
        assert rc == 1 and "gw-demo-1: rejected: version_gap" in out, out
        command = tmp_path / "cmd.json"
        command.write_text(json.dumps({"command": "diagnose"}))
        rc, out = await gateway_cli(str(command), "--gateway", "gw-demo-1")
        reply = json.loads(out)
        assert rc == 0 and reply["ok"] and "outbox_depth" in reply["result"]
