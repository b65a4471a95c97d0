"""The CloudEvents SDK (package `cloudevents`) as the oracle for what the uplink publishes.

The SDK has no MQTT binding of its own, so this reads a PUBLISH the way the CloudEvents MQTT
binding says a receiver does (spec §3): a Content Type starting `application/cloudevents` is
structured mode (the SDK's JSON event format reads it), a message without Content Type (MQTT
3.1.1) is structured JSON, anything else is binary mode: User Properties are the attributes,
Content Type is `datacontenttype`, the payload is `data` (the SDK's `read_data`). The SDK's
`CloudEvent` then validates the attributes. It fills in a missing `id`, `specversion` or
`time` itself, so their presence on the wire is checked here first.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, NamedTuple

import aiomqtt
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.common import get_event_factory_for_version
from cloudevents.core.formats.json import JSONFormat

REQUIRED = ("specversion", "id", "source", "type")
BATCH = "application/cloudevents-batch+json"


class NotACloudEvent(AssertionError):
    pass


class Parsed(NamedTuple):
    event: BaseCloudEvent
    on_wire: frozenset[str]  # the attributes the message carried (the SDK adds defaults)


def _structured(text: str) -> Parsed:
    attributes = json.loads(text)
    if not isinstance(attributes, dict):
        raise NotACloudEvent(f"structured payload is not a JSON object: {text[:80]!r}")
    missing = [name for name in REQUIRED if name not in attributes]
    if missing:
        raise NotACloudEvent(f"structured event lacks {missing}")
    return Parsed(JSONFormat().read(None, text), frozenset(attributes) - {"data"})


def read(message: aiomqtt.Message) -> list[Parsed]:
    """Every CloudEvent one MQTT message carries (one, or several for the batch extension),
    parsed and validated by the SDK; raises if the message is not a valid CloudEvent."""
    payload = bytes(message.payload) if isinstance(message.payload, bytes | bytearray) else b""
    content_type = getattr(message.properties, "ContentType", None)
    if content_type is None or content_type.startswith("application/cloudevents+json"):
        return [_structured(payload.decode())]
    if content_type.startswith(BATCH):
        items = json.loads(payload)
        if not isinstance(items, list):
            raise NotACloudEvent("a batch is a JSON array")
        return [_structured(json.dumps(item)) for item in items]
    if content_type.startswith("application/cloudevents"):
        raise NotACloudEvent(f"unknown event format {content_type}")
    # binary mode
    attributes: dict[str, Any] = dict(getattr(message.properties, "UserProperty", []))
    missing = [name for name in REQUIRED if name not in attributes]
    if missing:
        raise NotACloudEvent(f"binary-mode message lacks the User Properties {missing}")
    if "datacontenttype" in attributes:
        raise NotACloudEvent("binary mode: datacontenttype belongs in Content Type")
    attributes["datacontenttype"] = content_type
    on_wire = frozenset(attributes)
    if "time" in attributes:
        attributes["time"] = datetime.fromisoformat(attributes["time"])
    data = JSONFormat().read_data(payload, content_type)
    factory = get_event_factory_for_version(attributes["specversion"])
    return [Parsed(factory(attributes, data), on_wire)]


def as_dict(parsed: Parsed) -> dict[str, Any]:
    """The event as the JSON event format carries it (time back in RFC 3339, `Z`), with the
    attributes the message carried and none of the SDK's defaults."""
    event = parsed.event
    body = {k: v for k, v in event.get_attributes().items() if k in parsed.on_wire}
    time = body.get("time")
    if isinstance(time, datetime):
        text = time.isoformat(timespec="milliseconds")
        body["time"] = text.replace("+00:00", "Z")
    data = event.get_data()
    if data is not None:
        body["data"] = data
    return body
