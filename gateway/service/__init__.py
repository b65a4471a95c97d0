"""SERVICE: the gateway as a systemd service process, the top of the daemon.

`process` runs a gateway with its control endpoint and console under systemd: signals, reload,
watchdog, readiness; `sdnotify` speaks the notify socket; `logs` formats the journal's lines.
It sits above `web` because it starts the web server, and above `runtime`, whose gateway it runs.
"""
