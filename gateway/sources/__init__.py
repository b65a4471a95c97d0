"""Sources: where sightings come from (replayed traces now; BLE and NFC radios next)."""
