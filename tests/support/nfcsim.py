"""A Type 3 (FeliCa) tag emulated on nfcpy's UDP frontend: the only simulated part is the
radio. The tag serves a real NDEF data area (attribute block + message) and accepts writes,
so the reader side runs nfcpy's production code path unchanged."""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Any

import nfc
import nfc.clf

BLOCKS = 16  # NDEF area: 15 blocks of 16 bytes = 240 bytes of message


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def attribute_block(length: int, writable: bool) -> bytearray:
    """Type 3 Tag attribute information block (NFC Forum T3T)."""
    ab = bytearray(16)
    ab[0] = 0x10  # version 1.0
    ab[1], ab[2] = 4, 4  # blocks per read / write
    ab[3:5] = struct.pack(">H", BLOCKS - 1)  # data blocks
    ab[10] = 0x01 if writable else 0x00
    ab[11:14] = length.to_bytes(3, "big")
    ab[14:16] = struct.pack(">H", sum(ab[0:14]))
    return ab


class EmulatedTag:
    def __init__(self, port: int, idm: str, message: bytes = b"", writable: bool = True) -> None:
        self.port = port
        self.idm = bytes.fromhex(idm)
        self.writable = writable
        self.area = bytearray(BLOCKS * 16)
        self.set_message(message)
        self.stop = threading.Event()
        self.present = threading.Event()
        self.present.set()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def set_message(self, message: bytes) -> None:
        self.area[:] = bytes(BLOCKS * 16)
        self.area[0:16] = attribute_block(len(message), self.writable)
        self.area[16 : 16 + len(message)] = message

    @property
    def message(self) -> bytes:
        length = int.from_bytes(self.area[11:14], "big")
        return bytes(self.area[16 : 16 + length])

    def _run(self) -> None:
        clf = nfc.ContactlessFrontend(f"udp:127.0.0.1:{self.port}")

        def on_startup(target: Any) -> Any:
            target.sensf_res = bytearray(b"\x01" + self.idm + bytes.fromhex("03014b024f4993ff12fc"))
            target.brty = "212F"
            return target

        def read(block: int, rb: Any, re: Any) -> bytearray | None:
            if block < BLOCKS:
                return self.area[block * 16 : (block + 1) * 16]
            return None

        def write(block: int, data: bytearray, wb: Any, we: Any) -> bool:
            if not self.writable or block >= BLOCKS:
                return False
            self.area[block * 16 : (block + 1) * 16] = data
            return True

        def on_connect(tag: Any) -> bool:
            tag.add_service(0x0009, read, write)
            tag.add_service(0x000B, read, lambda *a: False)
            return True

        try:
            while not self.stop.is_set():
                if not self.present.wait(0.05):
                    continue
                clf.connect(
                    card={"on-startup": on_startup, "on-connect": on_connect},
                    terminate=lambda: self.stop.is_set() or not self.present.is_set(),
                )
        finally:
            clf.close()

    def __enter__(self) -> EmulatedTag:
        self.thread.start()
        # UDP has no connect: give the emulator time to bind before a reader starts sensing.
        time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
