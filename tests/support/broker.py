"""A real Mosquitto broker for the tests: free loopback port, generated config and
certificates, and the ability to stop, kill and restart it on the same port."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for localhost/127.0.0.1, and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def make_pki(folder: Path, name: str = "test") -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, server: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = _key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return builder.sign(ca_key, hashes.SHA256()), key

    server_cert, server_key = leaf("localhost", True)
    client_cert, client_key = leaf("gw-test", False)
    pki = Pki(
        folder / "ca.pem",
        folder / "server.pem",
        folder / "server.key",
        folder / "client.pem",
        folder / "client.key",
    )
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    pki.client_cert.write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(server_key, pki.server_key)
    _write_key(client_key, pki.client_key)
    return pki


class Broker:
    """mosquitto with one listener. mode: plain | password | tls | mtls."""

    def __init__(self, folder: Path, mode: str = "plain", pki: Pki | None = None) -> None:
        if not Path(MOSQUITTO).exists():
            raise RuntimeError(
                "mosquitto is not installed: scripts/test installs it (Debian package "
                "mosquitto); or run: apt-get install mosquitto"
            )
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.mode = mode
        self.port = free_port()
        self.log = folder / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        lines = ["per_listener_settings true"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to 'mosquitto' and cannot read our files
        lines += [
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "persistence true",
            f"persistence_location {folder}/",
            "autosave_interval 1",
            "autosave_on_changes true",
            "max_queued_messages 100000",
            f"listener {self.port} 127.0.0.1",
        ]
        if mode == "password":
            passwd = folder / "passwd"
            subprocess.run(
                [MOSQUITTO_PASSWD, "-b", "-c", str(passwd), "gateway", "s3cret"], check=True
            )
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if mode in ("tls", "mtls"):
            assert pki is not None
            lines += [
                f"cafile {pki.ca}",
                f"certfile {pki.server_cert}",
                f"keyfile {pki.server_key}",
            ]
            if mode == "mtls":
                lines += ["require_certificate true", "use_identity_as_username true"]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)])
        deadline = time.monotonic() + timeout
        # The port opens before certificates load: wait for the "running" line.
        while time.monotonic() < deadline:
            if self.log.exists():
                with self.log.open("rb") as f:
                    f.seek(offset)
                    if b" running" in f.read():
                        return
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.01)
        raise RuntimeError("mosquitto did not start in time")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, sig: int = signal.SIGKILL) -> None:
        self.stop(sig)
        self.start()


class Consumer:
    """A central system: a durable QoS 1 subscription that reconnects through restarts."""

    def __init__(
        self, port: int, topic: str = "storegate/v1/+/+/events/#", name: str = "central-consumer"
    ) -> None:
        self.port = port
        self.topic = topic
        self.name = name
        self.received: list[tuple[str, dict[str, Any], str | None]] = []
        self.batches = 0
        self.invalid: list[str] = []  # messages the CloudEvents SDK could not read
        self.ready = asyncio.Event()

    async def run(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: unannotated
        props.SessionExpiryInterval = 3600
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1",
                    self.port,
                    identifier=self.name,
                    protocol=aiomqtt.ProtocolVersion.V5,
                    clean_start=False,
                    properties=props,
                ) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.ready.set()
                    async for m in client.messages:
                        self._take(m)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)

    def _take(self, m: aiomqtt.Message) -> None:
        """Every message goes through the CloudEvents SDK (tests/support/ce_oracle.py); what
        it refuses is kept in `invalid` for the test to assert on."""
        from tests.support import ce_oracle

        content_type = getattr(m.properties, "ContentType", None)
        if "/events/" not in self.topic:  # e.g. the status topic: plain JSON
            self.received.append((str(m.topic), json.loads(bytes(m.payload)), content_type))
            return
        try:
            events = ce_oracle.read(m)
        except Exception as exc:
            self.invalid.append(f"{m.topic}: {type(exc).__name__}: {exc}")
            return
        if content_type == ce_oracle.BATCH:
            self.batches += 1
        for event in events:
            self.received.append((str(m.topic), ce_oracle.as_dict(event), content_type))

    def ids(self) -> list[str]:
        return [body["id"] for _, body, _ in self.received]
