"""SYNC: the link with the central backend over MQTT (the versioned contract in docs/asyncapi.yaml).

`envelopes` wraps pipeline events as CloudEvents, `uplink` publishes the outbox in order and
acknowledges delivered prefixes, `downlink` checks and applies signed documents from the backend
(profiles, carts, stock, campaigns, config), `peers` shares shopper sightings between the store's
gateways.
"""
