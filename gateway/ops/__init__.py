"""OPS: operator tools that run beside the daemon.

`doctor` checks an installation and says what to fix, `demo` runs the embedded demo shop,
`locate` solves positions from a trace for `gateway locate` and calibration walks.
"""
