"""A webhook receiver: accepts JSON POSTs on any path with 204 and keeps them in order.

Set ``status`` to make it refuse (500: an endpoint that is down); what it refused is
counted in ``refused``, not kept in ``posts``."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


class Webhook:
    """The stand-in for an alerting endpoint (Slack, PagerDuty, ...): ``url`` takes posts."""

    def __init__(self, path: str = "/hooks/alerts") -> None:
        self.posts: list[dict[str, Any]] = []
        self.status = 204
        self.refused = 0
        received = self.posts
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = hook.status
                if status < 300:
                    received.append(json.loads(body))
                else:
                    hook.refused += 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass  # a test's output is no place for an access log

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
