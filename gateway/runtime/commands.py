"""What the gateway does with a message from the broker: peer sightings, signed documents
(profiles, carts, stock, campaigns, config) and signed commands (flush, diagnose, reload).

The wire stays in `gateway.sync` (topics, document checks, peer batches); this module acts on
the running gateway, so it lives in the shell. Every outcome is queued as a gateway notice
(`downlink_applied`, `downlink_rejected`, `command`), so the backend sees what happened.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING

from gateway.model import GatewayNotice, NoticeKind
from gateway.sync import downlink, peers
from gateway.sync.topics import Inbound

if TYPE_CHECKING:
    import aiomqtt

    from gateway.runtime.gateway import Gateway
    from gateway.sync.uplink import Uplink

log = logging.getLogger(__name__)


class Commands:
    """The downlink handler the uplink calls for every message it receives."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.nonces = downlink.NonceCache()
        # Peer sightings: accepted, and rejected by reason (bad batches and bad sightings).
        self.peer_stats: Counter[str] = Counter()

    async def on_message(self, message: aiomqtt.Message, uplink: Uplink) -> None:
        gateway = self.gateway
        topic = str(message.topic)
        payload = (
            message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
        )
        incoming = uplink.topics.match(topic)
        if incoming is None:
            return  # not ours (a broker may deliver overlapping subscriptions)
        if incoming.kind is Inbound.SIGHTINGS:
            if gateway.config.mqtt.peer_sightings:
                self.on_peer_sightings(incoming.name, payload)
            return
        name = incoming.name
        key = bytes.fromhex(gateway.config.mqtt.downlink_key)
        now = gateway.clock.wall()
        document = downlink.verify(key, payload)
        if isinstance(document, downlink.Rejected):
            self._reject(now, topic, document.reason, document.detail)
            return
        if incoming.kind is Inbound.COMMAND:
            await self._command(message, uplink, document, name, now)
            return
        if document.get("family") != name:
            self._reject(now, topic, "family_mismatch", f"{document.get('family')!r} on {topic}")
            return
        try:
            outcome = downlink.apply_document(gateway.conn, document)
        except downlink.DocumentRejected as exc:
            self._reject(now, topic, exc.reason, exc.detail)
            if exc.reason == "version_gap":
                await uplink.publish_json(
                    uplink.topics.resync,
                    {"family": name, "have": downlink.stored_version(gateway.conn, name)},
                )
            return
        if outcome == "applied":
            if name == "campaigns":
                # The good campaigns apply; each bad one is reported on its own.
                for where, problem in downlink.campaign_rules(document["data"])[1]:
                    self._reject(now, topic, "invalid_campaign", f"{where}: {problem}")
            gateway.refresh()
            gateway.pipeline.profiles.clear()  # identities may have changed: resolve again
            details: dict[str, object] = {
                "topic": topic,
                "version": document["version"],
                "kind": document["kind"],
            }
            gateway.notify([GatewayNotice(now, NoticeKind.DOWNLINK_APPLIED, name, details)])

    def on_peer_sightings(self, peer: str, payload: bytes) -> None:
        """A peer gateway's shopper sightings: into the pipeline as if heard here."""
        if peer == self.gateway.config.gateway.id:
            return  # our own batch, echoed by the broker
        try:
            # A replay runs ahead of the wall clock; its peers share the replayed time.
            now = max(self.gateway.clock.wall(), self.gateway.pipeline.now)
            batch = peers.decode(payload, peer, now=now)
        except peers.PeerRejected as exc:
            self.peer_stats[f"rejected_{exc.reason}"] += 1
            log.warning("peer sightings from %s rejected: %s", peer, exc)
            return
        for error in batch.errors:
            self.peer_stats["rejected_sighting"] += 1
            log.warning("peer sightings from %s: %s", peer, error)
        self.peer_stats["accepted"] += len(batch.adverts)
        if batch.adverts:
            self.gateway.process(list(batch.adverts))

    def _reject(self, now: float, topic: str, reason: str, detail: str) -> None:
        log.warning("downlink rejected on %s: %s (%s)", topic, reason, detail)
        name = topic.rsplit("/", 1)[-1]
        details: dict[str, object] = {"topic": topic, "reason": reason, "detail": detail}
        self.gateway.notify([GatewayNotice(now, NoticeKind.DOWNLINK_REJECTED, name, details)])

    async def _command(
        self,
        message: aiomqtt.Message,
        uplink: Uplink,
        document: dict[str, object],
        name: str,
        now: float,
    ) -> None:
        gateway = self.gateway
        reason = downlink.check_command(document, self.nonces, now)
        if not reason and document.get("command") != name:
            reason = "command_mismatch"
        result: dict[str, object] = {}
        if not reason:
            if name == "flush":
                uplink.notify()
                result = {"outbox_depth": gateway.outbox.depth()}
            elif name == "diagnose":
                result = {
                    "outbox_depth": gateway.outbox.depth(),
                    "uplink": {
                        "connects": uplink.stats.connects,
                        "delivered": uplink.stats.delivered,
                    },
                    "adverts": gateway.pipeline.stats.adverts,
                    "decode_rejected": dict(gateway.pipeline.stats.decode.rejected),
                }
            elif name == "reload":
                gateway.refresh()
                gateway.pipeline.profiles.clear()
                result = {"reloaded": ["stock", "profiles"]}
        response = {
            "command": name,
            "nonce": document.get("nonce"),
            "ok": not reason,
            "reason": reason or None,
            "result": result,
        }
        props = getattr(message, "properties", None)
        topic = getattr(props, "ResponseTopic", None) or uplink.topics.command_response(name)
        kwargs: dict[str, object] = {}
        correlation = getattr(props, "CorrelationData", None)
        if correlation is not None and gateway.config.mqtt.protocol == "5":
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            out = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            out.CorrelationData = correlation
            kwargs["properties"] = out
        await uplink.publish_json(topic, response, **kwargs)
        outcome: dict[str, object] = {"ok": not reason, "reason": reason or None}
        gateway.notify([GatewayNotice(now, NoticeKind.COMMAND, name, outcome)])
