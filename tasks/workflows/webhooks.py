"""Workflow webhooks: where they may go, how they are signed, what counts as failing.

A POST carries the JSON body, ``Idempotency-Key`` (the execution's key, the same on every
retry, so a receiver can drop a repeat) and ``X-Automation-Signature: sha256=<hex>``, the
HMAC-SHA256 of the exact body bytes with the workflow's secret.

Where: ``WEBHOOK_ALLOWED_HOSTS`` lists the hosts a webhook may name; left empty, any host
whose addresses are all public. A private, loopback, link-local or reserved address is
refused unless its host is listed (tests list 127.0.0.1). The address is checked when the
workflow is saved (a literal IP) and again before each send (every address the name
resolves to), so a name that later points inside is refused then.

Outcomes: 2xx done; 429 (honouring Retry-After), 5xx, a timeout or a connection failure
retry; any other status, a redirect included (never followed), fails at once. Only the
first ``EXCERPT_BYTES`` of a response are read.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import ipaddress
import json
import os
import socket
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

EXCERPT_BYTES = 1024
SIGNATURE_HEADER = "X-Automation-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class WebhookRefusedError(ValueError):
    """The URL may not be posted to (scheme, or a host outside the allow-list)."""


@dataclass(frozen=True)
class Outcome:
    ok: bool
    transient: bool  # worth retrying
    status: int | None  # the HTTP status, None if none came back
    detail: str  # a bounded excerpt of the response, or what went wrong
    retry_after: float | None = None  # seconds the receiver asked for (429, 503)


def payload(
    workflow_id: int, execution_id: int | None, idempotency_key: str, change: Mapping[str, Any]
) -> bytes:
    """The body of a workflow's POST: the same bytes on every retry of an execution."""
    return json.dumps(
        {
            "workflow_id": workflow_id,
            "execution_id": execution_id,
            "idempotency_key": idempotency_key,
            "source": change["source"],
            "job_id": change["job_id"],
            "old_status": change["old_status"],
            "new_status": change["new_status"],
            "job": change["job"],
            "changed_at": change["changed_at"],
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    ).encode()


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def check_url(
    url: str, allowed_hosts: Collection[str], *, resolve: bool = True, where: str = "url"
) -> None:
    """Raise ``WebhookRefusedError`` unless ``url`` may be posted to."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise WebhookRefusedError(f"{where}: {url!r} is not an http(s) URL with a host")
    if allowed_hosts and host not in allowed_hosts:
        listed = ", ".join(sorted(allowed_hosts))
        raise WebhookRefusedError(
            f"{where}: host {host} is not in WEBHOOK_ALLOWED_HOSTS ({listed})"
        )
    if host in allowed_hosts:
        return
    for address in _addresses(host, parts.port, resolve):
        if not address.is_global:
            raise WebhookRefusedError(
                f"{where}: {host} is a private, loopback or reserved address ({address}); "
                "add the host to WEBHOOK_ALLOWED_HOSTS to allow it"
            )


def _addresses(
    host: str, port: int | None, resolve: bool
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    if host == "localhost" or host.endswith(".localhost"):
        return [ipaddress.ip_address("127.0.0.1")]
    if not resolve:
        return []
    try:
        infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise WebhookRefusedError(f"url: {host} does not resolve ({exc})") from None
    return [ipaddress.ip_address(info[4][0]) for info in infos]


# One client per process, made on first use (after the worker forked its children): a
# client per post built an SSL context each time, some 19 ms of CPU, over half of a worker
# child's time on a run of executions (bench/workflows.py: 43 to 58 executions a second,
# 168 to 184 with one client). It also keeps connections to a receiver open between posts.
_clients: dict[int, httpx.Client] = {}


def shared_client() -> httpx.Client:
    client = _clients.get(os.getpid())
    if client is None:
        client = _clients[os.getpid()] = httpx.Client()
    return client


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    client: httpx.Client | None = None,
) -> Outcome:
    """POST ``body``; what came of it. Never raises for what the receiver or the network
    did: that is the outcome."""
    own = client is None
    http = client or httpx.Client()
    try:
        with http.stream(
            "POST",
            url,
            content=body,
            headers={"Content-Type": "application/json", **headers},
            timeout=timeout,
            follow_redirects=False,
        ) as response:
            excerpt = _excerpt(response)
            status = response.status_code
            retry_after = _retry_after(response.headers.get("Retry-After"))
    except httpx.TimeoutException as exc:
        return Outcome(False, True, None, f"timed out after {timeout:g} s ({type(exc).__name__})")
    except httpx.TransportError as exc:
        return Outcome(False, True, None, f"{type(exc).__name__}: {exc}"[:EXCERPT_BYTES])
    finally:
        if own:
            http.close()
    if 200 <= status < 300:
        return Outcome(True, False, status, excerpt)
    if status == 429 or status >= 500:
        return Outcome(False, True, status, excerpt, retry_after)
    return Outcome(False, False, status, excerpt)


def _excerpt(response: httpx.Response) -> str:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= EXCERPT_BYTES:
            break
    return b"".join(chunks)[:EXCERPT_BYTES].decode("utf-8", errors="replace")


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
