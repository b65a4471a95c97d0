"""SINKS: where decisions reach the shop floor.

`push` hands offers to the local push service (through the outbox), `webhook` delivers them over
HTTP with retries and backoff, `terminal` prints the pipeline's story for people (demo, replay).
"""
