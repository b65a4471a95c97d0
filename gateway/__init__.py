"""proximity-gateway: an edge daemon for shops (BLE/NFC presence, zones, consent-aware offers)."""

__version__ = "0.1.0"
