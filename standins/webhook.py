"""A webhook receiver: accepts JSON POSTs on any path and keeps them in order.

By default it answers ``status`` (204). Set ``status`` to make it refuse (500: an endpoint
that is down); what it refused is counted in ``refused``, not kept in ``posts``. For a
scripted conversation, ``script`` holds the next replies, one per request: a status with
optional headers (``Reply(429, {"Retry-After": "2"})``), or one that hangs for a while
before answering (a receiver that never answers in time). Every request, answered or
refused, is kept in ``received`` with its headers, body and arrival time.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    hang_seconds: float = 0.0  # wait this long before answering
    body: bytes = b""


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival
    status: int  # what it was answered

    def json(self) -> Any:
        return json.loads(self.body)


class Webhook:
    """The stand-in for an endpoint (Slack, PagerDuty, an importer's hook): ``url`` takes posts."""

    def __init__(self, path: str = "/hooks/alerts") -> None:
        self.posts: list[dict[str, Any]] = []
        self.received: list[Received] = []
        self.script: collections.deque[Reply] = collections.deque()
        self.status = 204
        self.refused = 0
        hook = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                arrived = time.monotonic()
                with lock:
                    reply = hook.script.popleft() if hook.script else Reply(hook.status)
                    hook.received.append(
                        Received(self.path, dict(self.headers), body, arrived, reply.status)
                    )
                    if reply.status < 300:
                        hook.posts.append(json.loads(body))
                    else:
                        hook.refused += 1
                if reply.hang_seconds:
                    time.sleep(reply.hang_seconds)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:
                    pass  # the caller gave up waiting (a timeout): nobody to answer

            def log_message(self, *_: Any) -> None:
                pass  # a test's output is no place for an access log

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
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
