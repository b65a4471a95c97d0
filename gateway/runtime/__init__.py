"""RUNTIME: the asyncio shell around the synchronous pipeline.

`gateway` is the composition root (it builds and connects, nothing more), `commit` the unit of
work (batch → one transaction → event sinks, then outbox housekeeping), `loop` the queue, the
consumer and the TaskGroup, `sources` builds replay and radio sources from the config,
`commands` acts on broker messages (peer sightings, signed documents and commands), `reload`
decides what a SIGHUP changes live, `status` is the read-only view everything else looks
through, and `metrics` the Prometheus exposition of that view.
"""
