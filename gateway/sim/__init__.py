"""SIM: the simulated shop behind the demo trace, the tests and the benchmarks.

`walkers` moves shoppers through a store map and turns their paths into adverts and taps,
`busystore` generates a busy store day for `scripts/bench`.
"""
