"""CONFIG: the gateway's typed, self-documenting TOML configuration.

`schema` is the engine (documented dataclass fields, loading with errors that name file, key and
fix; it knows no section), `secrets` checks hex keys and the staff password hash, `sections` holds
the stages' sections and assembles everything into a frozen `Config` (`load_config`), `edges` the
sections of sources, sinks, MQTT, outbox, service and console, and `reference` writes the
commented template for a fresh install. The offers stage declares its own settings
(`gateway.offers.rules`) with the same engine.
"""
