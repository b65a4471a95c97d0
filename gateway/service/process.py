"""`gateway run`: the daemon as systemd runs it.

One TaskGroup owns everything: the gateway itself (sources → pipeline, uplink, webhook), the
watchdog pinger, the reload handler and the control endpoint. Signals only set events:

* SIGTERM / SIGINT — sources stop, the queue is processed and committed, queued events get
  `service.stop_drain_s` to leave, the store is closed. Exit 0.
* SIGHUP — re-read the config file and the store map and apply them without dropping
  state (`Gateway.reload`); a broken file is reported and the running config kept.

systemd integration (`sdnotify.Notifier`): READY=1 once the store is open, the map loaded,
the sinks started and every configured source has started (a source that then fails keeps
retrying and is reported, the daemon still serves); WATCHDOG=1 every half watchdog interval
from the event loop, and only while the pipeline keeps up — a blocked loop or a stuck
consumer stops the pings and systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from gateway.clock import Clock, SystemClock
from gateway.config.schema import ConfigError
from gateway.config.sections import Config, load_config
from gateway.model import OfferDecision, PipelineEvent
from gateway.runtime.commit import Queued
from gateway.runtime.gateway import Gateway
from gateway.runtime.loop import Inlet, Source, run_gateway
from gateway.runtime.metrics import Runtime
from gateway.runtime.sources import ble_sources, nfc_sources, replay_rebase, replay_source
from gateway.service.sdnotify import Notifier
from gateway.site.storemap import MapError
from gateway.store.lock import lock_state

log = logging.getLogger(__name__)

# The consumer must have committed a batch within this many watchdog intervals while work is
# queued, or the watchdog stops being fed.
STUCK_AFTER_INTERVALS = 1.0
LAG_TICK_S = 0.5


def configured_sources(gateway: Gateway, config_file: str) -> tuple[list[Source], int]:
    """Every source the config names, and how many of them are radios."""
    config = gateway.config
    sources: list[Source] = []
    if config.sources.replay.path:
        path = config.resolve(config.sources.replay.path)
        if not path.exists():
            raise ConfigError(
                config_file, "sources.replay.path", f"{path} does not exist; fix the path"
            )
        replay = config.sources.replay
        try:
            rebase = replay_rebase(gateway, replay.keep_times, replay.start)
        except ValueError as exc:
            raise ConfigError(config_file, "sources.replay.start", str(exc)) from None
        sources.append(replay_source(gateway, path, replay.speed, rebase))
    radios = ble_sources(gateway) + nfc_sources(gateway)
    return sources + radios, len(radios)  # radios last: the caller tells them apart


class Service:
    def __init__(
        self,
        config_file: str,
        *,
        once: bool = False,
        verbose: bool = False,
        notifier: Notifier | None = None,
        gateway_factory: Callable[[Config, Clock], Gateway] | None = None,
        extra_sources: list[Source] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.config_file = config_file
        self.once = once
        self.verbose = verbose
        self.notifier = notifier or Notifier()
        self.gateway_factory = gateway_factory or (
            lambda config, clock: Gateway(config, clock=clock)
        )
        self.extra_sources = extra_sources or []  # e.g. a test's scripted source
        self.runtime = Runtime(clock=self.clock, config_file=config_file)
        self.hub: Any = None  # the console's event hub, once the control endpoint is up
        self.stop = asyncio.Event()
        self.ready = asyncio.Event()  # store, sinks, radios and control up: READY=1 sent
        self.listening = asyncio.Event()  # the control endpoint listens (or could not)
        self.reload_wanted = asyncio.Event()
        self.gateway: Gateway | None = None

    async def run(self) -> int:
        config = load_config(self.config_file)
        # One daemon per state directory (StateLocked names the other one); held to the end.
        with lock_state(config.state_path):
            return await self._run(config)

    async def _run(self, config: Config) -> int:
        gateway = self.gateway = self.gateway_factory(config, self.clock)
        gateway.add_sink(self._on_events)
        if self.verbose:
            from gateway.sinks.terminal import ConsoleReporter

            gateway.report_to(ConsoleReporter(config.gateway.timezone, gateway.pipeline.pseudonym))
        configured, radios = configured_sources(gateway, self.config_file)
        finite = configured[: len(configured) - radios] + self.extra_sources
        radio_sources = configured[len(configured) - radios :]
        sources = finite + radio_sources
        if not sources and self.once:
            raise ConfigError(self.config_file, "sources", "no source configured")
        if self.once and radio_sources:
            sources = self._until_finite_sources_end(finite) + radio_sources
        if not self.once:
            sources.append(lambda _inlet: self.stop.wait())  # a daemon outlives its replay
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload_wanted.set)
        try:
            async with asyncio.TaskGroup() as tg:
                main = tg.create_task(
                    run_gateway(gateway, sources, self.stop, drain_s=config.service.stop_drain_s)
                )
                helpers = [
                    tg.create_task(self._ready_when_up(radios)),
                    tg.create_task(self._reloads()),
                    tg.create_task(self._watchdog()),
                ]
                if config.service.control_listen:
                    helpers.append(tg.create_task(self._control(config)))
                summary, _ = await main
                for helper in helpers:
                    helper.cancel()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            self.notifier.stopping("closing the store")
            depth = gateway.outbox.depth()
            gateway.close()
        fields = {"items": summary.items, "pushes": summary.pushes, "outbox_depth": depth}
        log.info("stopped; the store is closed", extra={"fields": fields})
        return 0

    def _until_finite_sources_end(self, finite: list[Source]) -> list[Source]:
        """`--once` runs until the replay (and any scripted source) ends; radios never end, so
        they are stopped then. With radios only there is nothing to wait for: refused."""
        if not finite:
            raise ConfigError(
                self.config_file,
                "sources",
                "--once runs until the replay ends, but only radios are configured and they "
                "never end: add [sources.replay] or run without --once",
            )
        left = len(finite)

        def until_end(source: Source) -> Source:
            async def run(inlet: Inlet) -> object:
                nonlocal left
                try:
                    return await source(inlet)
                finally:
                    left -= 1
                    if left == 0:
                        self.stop.set()  # the radios' tasks are cancelled, the store closes

            return run

        return [until_end(source) for source in finite]

    async def _control(self, config: Config) -> None:
        """The control endpoint and console. READY waits for it to listen (or to fail to),
        so `systemctl start` returning means `gateway status` answers."""
        await asyncio.sleep(0)  # let the pipeline take its first items before the import
        from gateway.web.console import Hub
        from gateway.web.control import serve_control

        assert self.gateway is not None
        self.hub = Hub()
        await serve_control(self.gateway, self.runtime, config, self.hub, self.listening)

    def _request_stop(self, sig: signal.Signals) -> None:
        log.info("stopping on %s: draining", sig.name)
        self.notifier.stopping(f"stopping on {sig.name}")
        self.stop.set()

    def _on_events(self, events: list[PipelineEvent], queued: list[Queued]) -> None:
        for event, (_seq, envelope, _unsaved) in zip(events, queued, strict=True):
            if isinstance(event, OfferDecision):
                self.runtime.last_offers.append(event)
            if self.hub is not None and envelope is not None:
                self.hub.publish(envelope.body)  # pseudonymous, as sent upstream

    async def _ready_when_up(self, radios: int) -> None:
        gateway = self.gateway
        assert gateway is not None
        await gateway.wait_for_sources(radios)
        if gateway.config.service.control_listen:
            await self.listening.wait()
        uplink = "on" if gateway.config.mqtt.enabled else "off"
        self.runtime.ready = True
        self.ready.set()
        self.notifier.ready(
            f"serving {gateway.store_map.name}: {len(gateway.store_map.zones)} zones, "
            f"{radios} radios, mqtt {uplink}"
        )
        log.info(
            "ready", extra={"fields": {"zones": len(gateway.store_map.zones), "radios": radios}}
        )

    async def _reloads(self) -> None:
        gateway = self.gateway
        assert gateway is not None
        while True:
            await self.reload_wanted.wait()
            self.reload_wanted.clear()
            self.notifier.reloading(self.clock.monotonic())
            try:
                new = load_config(self.config_file)
                restart = gateway.reload(new)
            except (ConfigError, MapError) as exc:
                self.runtime.reloads["failed"] += 1
                log.error("reload refused, still running the previous config: %s", exc)
                self.notifier.ready(f"reload refused: {exc}")
                continue
            self.runtime.reloads["ok"] += 1
            if restart:
                log.warning(
                    "reloaded; these sections change only on restart: %s", ", ".join(restart)
                )
            else:
                log.info("reloaded %s", self.config_file)
            self.notifier.ready(f"reloaded; serving {gateway.store_map.name}")

    def healthy(self) -> bool:
        """Is the pipeline keeping up? (a full queue with no recent commit is stuck)"""
        gateway = self.gateway
        interval = self.notifier.watchdog_s or 10.0
        if gateway is None:
            return False
        stuck_for = self.clock.monotonic() - gateway.last_progress
        return stuck_for < STUCK_AFTER_INTERVALS * interval or (gateway.queue_depth() == 0)

    async def _watchdog(self) -> None:
        """Measure loop lag every tick; feed systemd's watchdog every half interval."""
        interval = self.notifier.watchdog_s
        ping_every = interval / 2 if interval else None
        last_ping = 0.0
        while True:
            before = self.clock.monotonic()
            await asyncio.sleep(LAG_TICK_S)
            now = self.clock.monotonic()
            lag = max(0.0, now - before - LAG_TICK_S)
            self.runtime.loop_lag_s = lag
            self.runtime.loop_lag_max_s = max(self.runtime.loop_lag_max_s, lag)
            if ping_every is not None and now - last_ping >= ping_every and self.healthy():
                if self.notifier.watchdog():
                    self.runtime.watchdog_pings += 1
                last_ping = now


def run_service(config_file: str, once: bool = False, verbose: bool = False) -> int:
    from gateway.service.logs import configure

    config = load_config(config_file)  # fail fast, before logging is set up, with exit 2
    configure(config.service.log_format, config.service.log_level)
    service = Service(config_file, once=once, verbose=verbose, clock=SystemClock())
    code = asyncio.run(service.run())
    if once and service.gateway is not None:
        summary = service.gateway.summary
        print(
            f"processed {summary.items} items; {summary.pushes} pushes; "
            f"{len(summary.trace_errors)} bad trace lines",
            file=sys.stderr,
        )
    return code
