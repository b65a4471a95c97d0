from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.clock import PinnedClock
from gateway.identity.store import IdentityStore
from gateway.resources import data_file, shared_path
from gateway.site.storemap import StoreMap, load_map
from gateway.store import db
from tests.support.fakebluez import PrivateBus

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = db.connect(tmp_path / "state" / "gateway.db")
    yield connection
    connection.close()


@pytest.fixture
def seeded(conn: sqlite3.Connection) -> IdentityStore:
    store = IdentityStore(conn)
    store.load_seed(json.loads(data_file("demo-profiles.json").read_text()))
    return store


@pytest.fixture(scope="session")
def demo_map() -> StoreMap:
    path = shared_path("geofences/demo-bookstore.geojson")
    assert path is not None
    return load_map(path)


def shared_data(relative: str) -> Path:
    """A file from ../shared/data, or skip (with the reason) outside this repository layout."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is absent: run the suite from the project layout with ../shared")
    return path


@pytest.fixture
def bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateBus]:
    """A private system bus (dbus-daemon) that bleak and the doctor will talk to."""
    private = PrivateBus()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", private.address)
    yield private
    private.close()


# The wall clock of in-process tests: a summer Tuesday morning in 2031 in the demo store's
# zone, far from the demo trace's recording (a November Saturday in 2026), so that every
# replay is moved in time and nothing depends on the day the suite runs.
STORE_MORNING = datetime(2031, 6, 17, 10, 30, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()


@pytest.fixture
def clock() -> PinnedClock:
    """Wall time pinned to STORE_MORNING, ticking at the real rate from there."""
    return PinnedClock(STORE_MORNING)
