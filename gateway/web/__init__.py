"""WEB: the daemon's HTTP side on the control endpoint (aiohttp).

`control` serves status, metrics and health to machines, `console` is the staff console (live plan,
events, calibration, doctor), `access` guards every request and handles logins, `auth` holds
passwords, sessions, the login limiter, device cookies and trusted proxies, `server` bounds the
HTTP server (connection cap, timeouts, security headers).
"""
