"""STORE: the state directory on disk.

`db` owns the SQLite file (schema and migrations, one transaction per batch, retention purge),
`outbox` is the durable queue every event that must leave the box goes through first.
"""
