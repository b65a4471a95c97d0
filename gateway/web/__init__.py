"""WEB: the daemon's HTTP side on the control endpoint (aiohttp).

`control` serves status, metrics and health to machines, `console` is the staff console (live plan,
events, calibration, doctor), `auth` holds passwords, sessions and the login limiter.
"""
