"""RUNTIME: the asyncio shell around the synchronous pipeline.

`gateway` composes a running gateway (pipeline, state, outbox, uplink, sinks) and commits each
batch in one transaction; `metrics` counts and exposes what it does.
"""
