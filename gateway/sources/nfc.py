"""NFC source: an nfcpy ContactlessFrontend per touchpoint, in a worker thread.

nfcpy is blocking, so each reader runs `clf.connect(rdwr=...)` in its own thread and hands
taps to the event loop with `call_soon_threadsafe` — the loop never blocks on the radio.
A card held on the reader is one tap: `on-connect` returns True, so nfcpy waits for the
card to leave before sensing again (re-taps within the debounce window are merged by the
pipeline). A reader that is missing or unplugged is reopened with backoff, and every state
change is reported as reader health. The same `read_once`/`write_ndef` functions serve the
`gateway nfc read|write` commands, so staff tools and the daemon share one code path.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.clock import Clock
from gateway.model import AdapterHealth, AdapterState, Tap

log = logging.getLogger(__name__)

# Type 2/4 (ISO 14443-A) and Type 3 (FeliCa, 212 and 424 kbit/s) tags; Type 1/B rarely seen.
DEFAULT_TARGETS = ["106A", "212F", "424F"]


@dataclass(frozen=True, slots=True)
class TagRead:
    uid: bytes
    technology: str  # e.g. "Type2Tag", "Type3Tag"
    product: str
    ndef: bytes  # the NDEF message, b"" when the tag has none


def _describe(tag: Any) -> TagRead:
    ndef_bytes = b""
    if getattr(tag, "ndef", None) is not None:
        ndef_bytes = bytes(tag.ndef.octets)
    technology = str(getattr(tag, "type", type(tag).__name__))  # "Type2Tag", "Type3Tag", ...
    product = str(getattr(tag, "product", ""))
    return TagRead(bytes(tag.identifier), technology, product, ndef_bytes)


def open_frontend(device: str) -> Any:
    import nfc

    try:
        return nfc.ContactlessFrontend(device)
    except (OSError, ValueError) as exc:
        raise OSError(f"no NFC reader at {device!r}: {exc}") from exc


def read_once(
    device: str, clock: Clock, timeout: float = 10.0, targets: list[str] | None = None
) -> TagRead | None:
    """Wait for one tag and return what it holds (None when nothing came in time)."""
    clf = open_frontend(device)
    found: list[TagRead] = []
    started = clock.monotonic()

    def on_connect(tag: Any) -> bool:
        found.append(_describe(tag))
        return False  # done with it: release at once

    try:
        clf.connect(
            rdwr={"targets": targets or DEFAULT_TARGETS, "on-connect": on_connect},
            terminate=lambda: bool(found) or clock.monotonic() - started > timeout,
        )
    finally:
        clf.close()
    return found[0] if found else None


def write_ndef(
    device: str,
    message: bytes,
    clock: Clock,
    timeout: float = 10.0,
    targets: list[str] | None = None,
) -> TagRead:
    """Write an NDEF message to the next tag, then read it back to verify."""
    import ndef

    clf = open_frontend(device)
    result: dict[str, Any] = {}
    started = clock.monotonic()

    def on_connect(tag: Any) -> bool:
        try:
            if tag.ndef is None:
                result["error"] = "the tag is not NDEF formatted"
            elif not tag.ndef.is_writeable:
                result["error"] = "the tag is read-only"
            elif len(message) > tag.ndef.capacity:
                result["error"] = (
                    f"message of {len(message)} bytes exceeds capacity {tag.ndef.capacity}"
                )
            else:
                tag.ndef.records = list(ndef.message_decoder(message))
                result["read"] = _describe(tag)  # nfcpy re-reads the NDEF area after writing
        except Exception as exc:  # the tag left mid-write, or refused
            result["error"] = f"write failed: {exc}"
        return False

    try:
        clf.connect(
            rdwr={"targets": targets or DEFAULT_TARGETS, "on-connect": on_connect},
            terminate=lambda: bool(result) or clock.monotonic() - started > timeout,
        )
    finally:
        clf.close()
    if "error" in result:
        raise OSError(result["error"])
    if "read" not in result:
        raise TimeoutError("no tag presented in time")
    read: TagRead = result["read"]
    if read.ndef != message:
        raise OSError("verification failed: the tag holds something else than was written")
    return read


@dataclass(slots=True)
class NfcSource:
    """One reader at one touchpoint, running until cancelled."""

    reader: str  # touchpoint id
    device: str  # nfcpy device string
    emit: Callable[[Tap | AdapterHealth], None]
    clock: Clock  # wall: tap times
    backoff_max_s: float = 30.0
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    taps: int = 0
    state: AdapterState = AdapterState.STARTING
    _stop: threading.Event = field(default_factory=threading.Event)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()

        def emit(item: Tap | AdapterHealth) -> None:
            loop.call_soon_threadsafe(self.emit, item)

        worker = asyncio.create_task(asyncio.to_thread(self._work, emit))
        try:
            await asyncio.shield(worker)
        except asyncio.CancelledError:
            self._stop.set()  # the worker sees it within one sensing cycle
            await worker
            raise

    def _health(
        self, emit: Callable[[Tap | AdapterHealth], None], state: AdapterState, reason: str = ""
    ) -> None:
        self.state = state
        emit(AdapterHealth(self.clock.wall(), f"nfc:{self.reader}", state, reason, 0))

    def _pause(self, seconds: float) -> None:
        """Back off for `seconds`, waking within 50 ms when asked to stop.

        Short sleeps rather than `Event.wait(seconds)`: a timed wait on a lock sleeps until
        a CLOCK_MONOTONIC deadline the kernel computes, which libfaketime (scripts/test runs
        the suite with the clock years ahead) cannot shift, so it would never return."""
        end = self.clock.monotonic() + seconds
        while not self._stop.is_set() and self.clock.monotonic() < end:
            time.sleep(min(0.05, seconds))

    def _work(self, emit: Callable[[Tap | AdapterHealth], None]) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                clf = open_frontend(self.device)
            except OSError as exc:
                failures += 1
                self._health(emit, AdapterState.UNAVAILABLE, str(exc))
                self._pause(min(self.backoff_max_s, 0.2 * 2.0 ** min(failures, 10)))
                continue
            failures = 0
            self._health(emit, AdapterState.READING)

            def on_connect(tag: Any) -> bool:
                read = _describe(tag)
                self.taps += 1
                emit(Tap(self.clock.wall(), self.reader, read.uid, read.ndef))
                return True  # hold: a card left on the reader is one tap

            try:
                while not self._stop.is_set():
                    clf.connect(
                        rdwr={"targets": self.targets, "on-connect": on_connect},
                        terminate=self._stop.is_set,
                    )
            except Exception as exc:  # unplugged reader, USB error
                self._health(emit, AdapterState.RESTARTING, f"{type(exc).__name__}: {exc}")
            finally:
                clf.close()
