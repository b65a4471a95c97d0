"""RUNTIME: the asyncio shell around the synchronous pipeline, and the systemd integration.

`gateway` composes a running gateway (pipeline, state, outbox, uplink, sinks) and commits each
batch in one transaction, `service` runs it under systemd (signals, watchdog, readiness, reload),
`sdnotify` speaks the notify socket, `logs` formats logs, `metrics` counts and exposes them.
"""
