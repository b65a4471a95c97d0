"""The daily campaign aggregate: queued once per ended store day, counts only, and true to
the contract (docs/asyncapi.yaml)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, FormatChecker

from gateway.clock import PinnedClock
from gateway.model import GatewayNotice, NoticeKind
from gateway.offers.report import daily_reports
from gateway.ops.demo import run_demo
from gateway.sync.envelopes import EnvelopeFactory
from tests.conftest import REPO, STORE_MORNING

ALICE = "p-alice-3f9c"


def test_the_daily_aggregate_goes_up_once_without_shoppers(tmp_path: Path) -> None:
    _, gateway = run_demo(0, tmp_path, io.StringIO(), clock=PinnedClock(STORE_MORNING))
    try:
        campaigns, tz = gateway.offers.campaigns, gateway.offers.tz
        assert daily_reports(gateway.conn, campaigns, tz, STORE_MORNING) == []  # day not over
        next_day = STORE_MORNING + 86400
        days = daily_reports(gateway.conn, campaigns, tz, next_day)
        assert [d for d, _ in days] == ["2031-06-17"]
        assert daily_reports(gateway.conn, campaigns, tz, next_day + 3600) == []  # once
        day, data = days[0]
        c = data["campaigns"]["pickup-discount"]
        assert (c["exposed"], c["redeemed_exposed"], c["holdout"]) == (1, 1, 0)
        assert data["posteriors"]["pickup-discount"]["base"] == {"alpha": 2.0, "beta": 1.0}
        envelope = EnvelopeFactory.for_config(gateway.config).envelope(
            GatewayNotice(next_day, NoticeKind.CAMPAIGN_REPORT, day, data)
        )
        assert envelope is not None
        body: dict[str, Any] = envelope.body
        text = json.dumps(body)
        assert ALICE not in text and "dev-" not in text and "PK-" not in text
        doc = yaml.safe_load((REPO / "docs" / "asyncapi.yaml").read_text())
        validator = Draft202012Validator(
            {**doc, "$ref": "#/components/schemas/CloudEvent"}, format_checker=FormatChecker()
        )
        assert body["type"] == "com.storegate.gateway.campaign_report"
        assert validator.is_valid(body), list(validator.iter_errors(body))
        assert not validator.is_valid(body | {"data": data | {"profile_id": ALICE}})
    finally:
        gateway.close()
