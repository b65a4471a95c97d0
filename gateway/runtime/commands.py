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
from gateway.sync import downlink, peers, signed, wire
from gateway.sync.topics import Inbound

if TYPE_CHECKING:
    import aiomqtt

    from gateway.runtime.gateway import Gateway
    from gateway.sync.uplink import Uplink

log = logging.getLogger(__name__)


class Commands:
    """The downlink handler the uplink calls for every message it receives.

    Nothing a message does may end the MQTT session: every refusal is counted and reasoned,
    and even an exception this code did not foresee becomes a rejection (`internal_error`)
    instead of propagating into the uplink, which would drop the connection and, for a
    retained message, keep the gateway off the broker for good."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.nonces = signed.NonceCache(path=gateway.config.state_path / "command-nonces.json")
        # Peer sightings: accepted, and rejected by reason (bad batches and bad sightings).
        self.peer_stats: Counter[str] = Counter()
        self.peer_clock = peers.PeerClock()
        # Downlink rejections: all counted, told (log + uplinked notice) at a bounded rate.
        self.rejections = wire.RejectionLog()
        self._peer_log = wire.RejectionLog()

    def binding(self) -> signed.Binding:
        config = self.gateway.config
        return signed.Binding(
            config.gateway.store,
            config.gateway.id,
            config.mqtt.downlink_max_validity_days * 86400.0,
        )

    async def on_message(self, message: aiomqtt.Message, uplink: Uplink) -> None:
        topic = str(message.topic)
        try:
            await self._on_message(topic, message, uplink)
        except Exception as exc:  # the session must survive whatever a message does
            log.exception("downlink message on %s could not be handled", topic)
            self._reject(self.gateway.clock.wall(), topic, "internal_error", repr(exc)[:300])

    async def _on_message(self, topic: str, message: aiomqtt.Message, uplink: Uplink) -> None:
        gateway = self.gateway
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
        if incoming.kind is Inbound.FORWARDED:
            if gateway.fleet_work is not None:
                gateway.fleet_work.on_forwarded(incoming.name, payload)
            return
        if incoming.kind in (Inbound.STATUS, Inbound.HANDOVER):
            fleet = gateway.fleet_work
            if fleet is not None and incoming.kind is Inbound.STATUS:
                fleet.on_status(incoming.name, topic, payload)
            elif fleet is not None:
                fleet.on_handover(incoming.name, topic, payload)
            return
        name = incoming.name
        mqtt = gateway.config.mqtt
        key = bytes.fromhex(mqtt.downlink_key)
        now = gateway.clock.wall()
        document = signed.verify(key, payload, max_bytes=mqtt.max_message_kb * 1024)
        is_command = incoming.kind is Inbound.COMMAND
        held = None
        if isinstance(document, dict) and not is_command and document.get("family") == name:
            held = downlink.stored_version(gateway.conn, name)
        if not isinstance(document, signed.Rejected):
            refused = signed.check_envelope(
                document, self.binding(), now, command=is_command, held_version=held
            )
            if refused is not None:
                document = refused
        if isinstance(document, signed.Rejected):
            self._reject(now, topic, document.reason, document.detail)
            if is_command:
                await self._answer(message, uplink, name, None, document.reason, {})
            return
        if is_command:
            await self._command(message, uplink, document, name, now)
            return
        if document.get("family") != name:
            self._reject(now, topic, "family_mismatch", f"{document.get('family')!r} on {topic}")
            return
        try:
            zones = frozenset(zone.id for zone in gateway.store_map.zones)
            outcome = downlink.apply_document(gateway.conn, document, zones)
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
            if name == "stock":
                # fewer units than holds: the newest holds go, their shoppers are told
                gateway.withdraw_over_held(now)
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
        config = self.gateway.config
        if peer == config.gateway.id:
            return  # our own batch, echoed by the broker
        wall = self.gateway.clock.wall()
        try:
            # A replay runs ahead of the wall clock; its peers share the replayed time.
            now = max(wall, self.gateway.pipeline.now)
            batch = peers.decode(
                payload,
                peers.PeerTopic(config.mqtt.topic_prefix, config.gateway.store, peer),
                key=bytes.fromhex(config.mqtt.peer_key),
                now=now,
                clock=self.peer_clock,
            )
        except peers.PeerRejected as exc:
            self.peer_stats[f"rejected_{exc.reason}"] += 1
            held = self._peer_log.record(exc.reason, wall)
            if held is not None:
                log.warning(
                    "peer sightings from %.64r rejected: %s (+%d held back)", peer, exc, held
                )
            return
        for error in batch.errors:
            self.peer_stats["rejected_sighting"] += 1
            if self._peer_log.record("sighting", wall) is not None:
                log.warning("peer sightings from %s: %s", peer, error)
        self.peer_stats["accepted"] += len(batch.adverts)
        if batch.adverts:
            self.gateway.process(list(batch.adverts))

    def _reject(self, now: float, topic: str, reason: str, detail: str) -> None:
        held = self.rejections.record(reason, now)
        if held is None:
            return  # counted; told with the next one let through
        log.warning(
            "downlink rejected on %.200s: %s (%.300s)%s",
            topic,
            reason,
            detail,
            f"; {held} more like it held back" if held else "",
        )
        name = topic.rsplit("/", 1)[-1][:64]
        details: dict[str, object] = {
            "topic": topic[:256],
            "reason": reason,
            "detail": detail[:500],
            "suppressed": held,
        }
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
        # The topic is checked before the nonce is spent: a command sent to the wrong topic
        # must not burn the nonce of the same command sent correctly.
        reason = "command_mismatch" if document.get("command") != name else ""
        if not reason:
            reason = signed.check_command(document, self.nonces, now)
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
        else:
            self._reject(now, str(message.topic), reason, f"command {name}")
        nonce = document.get("nonce")
        await self._answer(
            message, uplink, name, nonce if isinstance(nonce, str) else None, reason, result
        )
        outcome: dict[str, object] = {"ok": not reason, "reason": reason or None}
        gateway.notify([GatewayNotice(now, NoticeKind.COMMAND, name, outcome)])

    async def _answer(
        self,
        message: aiomqtt.Message,
        uplink: Uplink,
        name: str,
        nonce: str | None,
        reason: str,
        result: dict[str, object],
    ) -> None:
        """Every command gets an answer, refused ones too (with the reason). The MQTT 5
        Response Topic is not covered by the signature, so it is followed only inside this
        gateway's own `cmd-resp/` subtree: a reply cannot be steered into another stream."""
        response = {
            "command": name,
            "nonce": nonce,
            "ok": not reason,
            "reason": reason or None,
            "result": result,
        }
        props = getattr(message, "properties", None)
        asked = getattr(props, "ResponseTopic", None)
        topic = uplink.topics.command_response(name)
        if isinstance(asked, str) and uplink.topics.is_own_response_topic(asked):
            topic = asked
        kwargs: dict[str, object] = {}
        correlation = getattr(props, "CorrelationData", None)
        if (
            isinstance(correlation, bytes)
            and len(correlation) <= 256
            and self.gateway.config.mqtt.protocol == "5"
        ):
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            out = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            out.CorrelationData = correlation
            kwargs["properties"] = out
        await uplink.publish_json(topic, response, **kwargs)
