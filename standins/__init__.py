"""Stand-ins: local HTTP servers that speak an external service's protocol, errors included.

Each one serves on 127.0.0.1 (a free port) from a daemon thread and records what it was
asked, so tests, the demo and the benchmarks exercise the real client code over the wire
without the real service. Nothing here imports ``tests`` or ``bench``: both import these.

- ``standins.spotify``: Spotify's Web API and accounts token endpoint.
- ``standins.webhook``: an alert webhook that accepts JSON posts and keeps them.
"""
