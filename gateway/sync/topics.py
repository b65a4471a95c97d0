"""The MQTT topic contract (docs/asyncapi.yaml), built *and* parsed in one place.

Version 1 lives under `storegate/v1/{store}/{gateway}`. `Topics` builds every topic this
gateway publishes to and the filters it subscribes with; `Topics.match` says what an incoming
topic is (like aiomqtt's `Topic.matches`), so no other module splits topic strings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple


class Publication(NamedTuple):
    """A message published beside the outbox, in real time (peer sightings, displays, the
    retained store state and Home Assistant discovery)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool = False


# Polled by the uplink after each round: what to publish now.
LocalFeed = Callable[[], list[Publication]]


class Inbound(StrEnum):
    """What an incoming message is, by its topic."""

    SIGHTINGS = "sightings"  # a peer gateway's shopper sightings
    FORWARDED = "forwarded"  # a fleet member's decoded readings of devices this gateway owns
    DOCUMENT = "document"  # a signed document for the store or for this gateway
    COMMAND = "command"  # a signed command for this gateway
    STATUS = "status"  # a gateway's retained birth/will (fleet membership)
    HANDOVER = "handover"  # a peer's state of the devices it owns (work sharing)


class Incoming(NamedTuple):
    kind: Inbound
    name: str  # the peer gateway id, the document family or the command name


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching: `+` is one level, a trailing `#` any number (zero included)."""
    pattern = topic_filter.split("/")
    levels = topic.split("/")
    for i, part in enumerate(pattern):
        if part == "#":
            return i == len(pattern) - 1
        if i >= len(levels) or (part != "+" and part != levels[i]):
            return False
    return len(levels) == len(pattern)


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str
    store: str
    gateway: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.store}/{self.gateway}"

    def events(self, stream: str) -> str:
        return f"{self.base}/events/{stream}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def resync(self) -> str:
        return f"{self.base}/resync"

    @property
    def sightings(self) -> str:
        return f"{self.base}/sightings"

    def forwarded(self, owner: str) -> str:
        """Readings of `owner`'s devices that this gateway heard (work sharing, PGS3)."""
        return f"{self.base}/sightings/{owner}"

    @property
    def forwarded_filter(self) -> str:
        """What the store's other gateways forward to this one."""
        return f"{self.prefix}/{self.store}/+/sightings/{self.gateway}"

    def display(self, zone: str) -> str:
        return f"{self.base}/display/{zone}"

    def command_response(self, command: str) -> str:
        """Where a command's answer goes when the request names no response topic."""
        return f"{self.base}/cmd-resp/{command}"

    def is_own_response_topic(self, topic: str) -> bool:
        """A Response Topic this gateway may answer on: inside its own `cmd-resp/` subtree,
        no wildcards, bounded length."""
        prefix = f"{self.base}/cmd-resp/"
        return (
            topic.startswith(prefix)
            and len(prefix) < len(topic) <= 512
            and not any(c in topic for c in "+#\0")
        )

    @property
    def handover(self) -> str:
        return f"{self.base}/handover"

    @property
    def peer_sightings_filter(self) -> str:
        return f"{self.prefix}/{self.store}/+/sightings"

    @property
    def fleet_filters(self) -> list[str]:
        """Work sharing: the store's gateways' statuses and their devices' hand-over state."""
        return [f"{self.prefix}/{self.store}/+/status", f"{self.prefix}/{self.store}/+/handover"]

    @property
    def downlink_filters(self) -> list[str]:
        return [
            f"{self.prefix}/{self.store}/down/+",  # store-wide documents
            f"{self.base}/down/+",  # documents for this gateway only
            f"{self.base}/cmd/+",  # commands
        ]

    def match(self, topic: str) -> Incoming | None:
        """What an incoming topic carries, or None if it is none of ours."""
        name = topic.rsplit("/", 1)[-1]
        if matches(self.peer_sightings_filter, topic):
            peer = topic.split("/")[-2]
            return Incoming(Inbound.SIGHTINGS, peer) if peer else None
        if matches(self.forwarded_filter, topic):
            peer = topic.split("/")[-3]
            return Incoming(Inbound.FORWARDED, peer) if peer else None
        for kind, topic_filter in zip(
            (Inbound.STATUS, Inbound.HANDOVER), self.fleet_filters, strict=True
        ):
            if matches(topic_filter, topic):
                peer = topic.split("/")[-2]
                return Incoming(kind, peer) if peer else None
        store_docs, own_docs, commands = self.downlink_filters
        if matches(store_docs, topic) or matches(own_docs, topic):
            return Incoming(Inbound.DOCUMENT, name)
        if matches(commands, topic):
            return Incoming(Inbound.COMMAND, name)
        return None
