"""The pickup-counter display: issued offers on the store's MQTT, without personal data."""

from __future__ import annotations

import asyncio
import json
from contextlib import suppress
from pathlib import Path

import aiomqtt
from jsonschema import Draft202012Validator

from gateway.clock import PinnedClock
from gateway.config.sections import parse_config
from gateway.resources import data_file
from gateway.runtime.gateway import Gateway
from gateway.runtime.loop import run_gateway
from gateway.runtime.sources import replay_rebase, replay_source
from tests.support.broker import Broker
from tests.support.fakebluez import wait_for
from tests.sync.test_asyncapi import DOC


async def test_issued_offers_reach_the_counter_screen(tmp_path: Path, clock: PinnedClock) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    config = parse_config(
        f"[gateway]\nstate_dir = '{tmp_path / 'state'}'\n[sinks]\nstdout = false\ndisplay = true\n"
        f"[mqtt]\nenabled = true\nhost = '127.0.0.1'\nport = {broker.port}\nbackoff_max_s = 0.3\n",
        "gw.toml",
        tmp_path,
    )
    gateway = Gateway(config, quiet_sink=True, clock=clock)
    gateway.identity.load_seed(json.loads(data_file("demo-profiles.json").read_text()))
    gateway.refresh()
    shown: list[tuple[str, dict[str, object], bytes]] = []
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="counter-screen") as screen:
            await screen.subscribe("storegate/v1/demo-bookstore/+/display/#", qos=1)

            async def watch() -> None:
                async for message in screen.messages:
                    assert isinstance(message.payload, bytes)
                    shown.append((str(message.topic), json.loads(message.payload), message.payload))

            watcher = asyncio.create_task(watch())
            stop = asyncio.Event()
            run = asyncio.create_task(
                run_gateway(
                    gateway,
                    [
                        replay_source(
                            gateway, data_file("demo-trace.jsonl"), 0.0, replay_rebase(gateway)
                        ),
                        lambda _inlet: stop.wait(),
                    ],
                    stop,
                )
            )
            await wait_for(lambda: len(shown) >= 3, timeout=30)
            stop.set()
            with suppress(asyncio.CancelledError):
                await run
            watcher.cancel()
    finally:
        broker.stop()
    (topic, body, raw) = shown[0]
    offer = gateway.conn.execute("SELECT offer_id, code, profile_id FROM offers").fetchone()
    gateway.close()
    assert topic == "storegate/v1/demo-bookstore/gw-demo-1/display/aisle-scifi"
    assert body["offer_id"] == offer[0] and body["code_hint"] == "…" + offer[1][-4:]
    assert body["title"] == "The Left Hand of Darkness" and body["percent"] == 10
    assert offer[1].encode() not in raw and offer[2].encode() not in raw  # no code, no shopper
    schema = {**DOC, "$ref": "#/components/schemas/DisplayOffer"}
    assert Draft202012Validator(schema).is_valid(body)
    offers = [m for m in shown if not m[0].endswith("/display/pickup-tasks")]
    assert len(offers) == 1
    # the counter screen also follows the pickup task: opened, then collected at the till
    tasks = [m[1] for m in shown if m[0].endswith("/display/pickup-tasks")]
    assert [t["action"] for t in tasks] == ["opened", "collected"]
    task_schema = Draft202012Validator({**DOC, "$ref": "#/components/schemas/DisplayTask"})
    assert all(task_schema.is_valid(t) for t in tasks)
    assert all(offer[1].encode() not in m[2] and offer[2].encode() not in m[2] for m in shown)
