"""The operators' console: the HTTP API, the status page and /metrics, in one ASGI app
(``console.app.create_app``), served by ``automation api``."""
