"""The webhook push sink against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.clock import PinnedClock
from gateway.config.edges import WebhookSection
from gateway.config.sections import parse_config
from gateway.resources import data_file
from gateway.runtime.gateway import Gateway
from gateway.runtime.loop import run_gateway
from gateway.runtime.sources import replay_rebase, replay_source
from gateway.sinks.push import Push, push_event
from gateway.sinks.webhook import WebhookSender
from gateway.store import db
from gateway.store.outbox import Outbox
from tests.support.fakebluez import wait_for

SECRET = "shop-push-secret"


class PushService:
    """Answers each request with the next scripted behaviour: (status, headers, delay)."""

    def __init__(self, script: list[tuple[int, dict[str, str], float]]) -> None:
        self.script = list(script)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                service.requests.append((dict(self.headers), body))
                status, headers, delay = service.script.pop(0) if service.script else (200, {}, 0.0)
                time.sleep(delay)
                with suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/push"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    conn = db.connect(tmp_path / "gw.db")
    yield Outbox(conn)
    conn.close()


def _push(n: int = 1) -> Push:
    return Push(f"of-{n}", "p-alice", 1000.0, "978-1", "PK-ABCD-EFGH", 8200.0, "Your book is here")


async def _drain(sender: WebhookSender, outbox: Outbox, timeout: float = 20) -> None:
    task = asyncio.create_task(sender.run())
    try:
        await wait_for(lambda: outbox.depth("push") == 0, timeout=timeout)
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def _settings(url: str, **kw: Any) -> WebhookSection:
    base: dict[str, Any] = {"url": url, "secret": SECRET, "timeout_s": 0.5, "backoff_max_s": 0.05}
    base.update(kw)
    return WebhookSection(**base)


def _signed(headers: dict[str, str], body: bytes) -> bool:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["X-Signature"], expected)


async def test_retries_through_500_429_and_a_slow_answer_then_delivers_once(
    outbox: Outbox, clock: PinnedClock
) -> None:
    service = PushService(
        [(500, {}, 0.0), (429, {"Retry-After": "0"}, 0.0), (200, {}, 1.0), (200, {}, 0.0)]
    )
    try:
        outbox.append([push_event(_push())], clock.wall())
        sender = WebhookSender(_settings(service.url), outbox, clock, poll_s=0.01)
        await _drain(sender, outbox)
        assert [json.loads(b)["offer_id"] for _, b in service.requests] == ["of-1"] * 4
        assert {h["Idempotency-Key"] for h, _ in service.requests} == {"push-of-1"}
        assert all(_signed(h, b) for h, b in service.requests)
        assert (sender.stats.delivered, sender.stats.retried, sender.stats.dead) == (1, 3, 0)
        assert "ReadTimeout" in sender.stats.last_error or "HTTP 429" in sender.stats.last_error
    finally:
        service.close()


async def test_a_rejected_request_is_dead_lettered_not_retried(
    outbox: Outbox, clock: PinnedClock
) -> None:
    service = PushService([(400, {}, 0.0)])
    try:
        outbox.append([push_event(_push())], clock.wall())
        sender = WebhookSender(_settings(service.url), outbox, clock, poll_s=0.01)
        await _drain(sender, outbox)
        assert len(service.requests) == 1
        row = outbox.conn.execute(
            "SELECT event_id, attempts, last_error FROM dead_letter"
        ).fetchone()
        assert row == ("push-of-1", 1, "HTTP 400")
    finally:
        service.close()


async def test_gives_up_after_max_attempts(outbox: Outbox, clock: PinnedClock) -> None:
    service = PushService([(503, {}, 0.0)] * 10)
    try:
        outbox.append([push_event(_push())], clock.wall())
        sender = WebhookSender(_settings(service.url, max_attempts=3), outbox, clock, poll_s=0.01)
        await _drain(sender, outbox)
        assert len(service.requests) == 3 and sender.stats.dead == 1
    finally:
        service.close()


async def test_unreachable_service_keeps_the_push(outbox: Outbox, clock: PinnedClock) -> None:
    outbox.append([push_event(_push())], clock.wall())
    sender = WebhookSender(
        _settings("http://127.0.0.1:9/push", max_attempts=100), outbox, clock, poll_s=0.01
    )
    async with httpx.AsyncClient(timeout=0.5) as client:
        for _ in range(3):
            outbox.conn.execute("UPDATE outbox SET next_try = 0")
            await sender.deliver_due(client)
    assert outbox.depth("push") == 1  # still waiting, never lost
    assert "ConnectError" in sender.stats.last_error


async def test_the_demo_push_reaches_the_webhook(tmp_path: Path, clock: PinnedClock) -> None:
    service = PushService([])
    try:
        config = parse_config(
            f"[gateway]\nstate_dir = '{tmp_path}'\n"
            f"[sinks]\nstdout = false\n"
            f"[sinks.webhook]\nurl = '{service.url}'\nsecret = '{SECRET}'\n"
        )
        gateway = Gateway(config, quiet_sink=True, clock=clock)
        gateway.identity.load_seed(json.loads(data_file("demo-profiles.json").read_text()))
        gateway.refresh()
        run = asyncio.create_task(
            run_gateway(
                gateway,
                [
                    replay_source(
                        gateway, data_file("demo-trace.jsonl"), 0.0, replay_rebase(gateway)
                    )
                ],
                drain_s=10,
            )
        )
        await wait_for(lambda: len(service.requests) >= 1, timeout=30)
        await run
        [(headers, body)] = service.requests
        push = json.loads(body)
        assert push["profile_id"] == "p-alice-3f9c" and push["sku"] == "978-0441478125"
        assert "The Left Hand of Darkness" in push["message"] and push["code"].startswith("PK-")
        assert _signed(headers, body)
        assert gateway.outbox.depth("push") == 0
        # The uplink never sees the local push stream.
        assert all(e.stream != "push" for e in gateway.outbox.peek(1000))
    finally:
        service.close()
