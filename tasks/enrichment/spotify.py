"""Spotify's catalogue as the enrichment asks it: search, tracks and artists, within limits.

Every request passes the one Redis rate limiter first (worker/rate_limit.py), shared by
all workers and hosts. spotipy makes the calls, with a ``requests.Session`` of our own:
spotipy's built-in urllib3 retry obeys Retry-After by sleeping, which can hold a worker
slot for an hour (spotipy#766, #1158), and its ``retries=0`` path loses the header. With
our own session a 429 comes back at once as a SpotifyException carrying its headers, and
this module decides:

- 429: pause every worker until Retry-After (the limiter's shared pause), then wait
  inline if that is short, else raise ``SpotifyPausedError`` so the run ends its batch and
  reschedules itself. A body reason ``QUOTA_EXCEEDED`` (the app's quota is spent) is
  logged at error level: an operator may need to act.
- 5xx and network errors: exponential backoff with full jitter, up to
  ``RETRIES_PER_REQUEST`` more tries, then ``SpotifyUnavailableError``.
- 401 (the app token expired early or was revoked): forget the shared token, fetch a new
  one, try once more.

The app's client-credentials token is shared through Redis: one token for every worker,
renewed a minute before it expires, sealed (``SealedTokenCache``) so that whoever can read
Redis cannot call Spotify as us.

Batch endpoints (``/tracks?ids=``, ``/artists?ids=``) were removed for development-mode
apps in 2026 and answer 403; apps with extended quota keep them. The first 403 switches
that endpoint to single-item calls for the rest of the process's life.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
import requests
import spotipy
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from spotipy.cache_handler import CacheHandler

from worker.errors import PermanentError
from worker.rate_limit import RateLimitWaitTooLong, SharedRateLimiter, Wait
from worker.settings import Settings

log = logging.getLogger(__name__)
# spotipy logs every 4xx/5xx at error level, expected ones too (a 429 we pause for, the
# 403 of a removed batch endpoint). This module logs each of those at the level it
# deserves, and failures end up on the rows, so spotipy's own lines would only mislead.
logging.getLogger("spotipy.client").setLevel(logging.CRITICAL)

T = TypeVar("T")
JSON = dict[str, Any]

SEARCH_LIMIT = 10  # the 2026 maximum
BATCH_SIZE = {"tracks": 50, "artists": 50}
RETRIES_PER_REQUEST = 3
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 8.0
# A run of 429s with tiny Retry-After values would otherwise loop: give up on the request.
MAX_RATE_LIMITED_TRIES = 5
# A Redis key name, not a password (bandit's B105 guesses one from "token").
APP_TOKEN_KEY = "spotify:app-token"  # nosec B105
LIMITER_NAME = "spotify"

# Batch endpoints that answered 403 in this process: single-item calls from then on.
_removed_batch_endpoints: set[str] = set()


class SealedTokenCache(CacheHandler):  # type: ignore[misc]  # spotipy ships no types
    """spotipy's token cache in Redis, encrypted and expiring with the token.

    The key is derived from the client secret: the token is worth exactly what the secret
    is (anyone holding the secret can mint one), so sealing it under the secret needs no
    key of its own, and a new secret simply makes the old token unreadable, hence fetched
    again. A value that does not decrypt or parse is treated as no token.
    """

    def __init__(self, client: redis.Redis, key: str, client_secret: str) -> None:
        self._redis = client
        self._key = key
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"spotify app token cache"
        ).derive(client_secret.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def get_cached_token(self) -> dict[str, Any] | None:
        try:
            sealed = self._redis.get(self._key)
        except redis.RedisError as exc:
            log.warning("reading the shared Spotify app token failed: %s", exc)
            return None
        if not sealed:
            return None
        try:
            token: dict[str, Any] = json.loads(self._fernet.decrypt(sealed))
        except (InvalidToken, ValueError):
            return None
        return token

    def save_token_to_cache(self, token_info: dict[str, Any]) -> None:
        sealed = self._fernet.encrypt(json.dumps(token_info).encode())
        # Kept no longer than the token lives: an expired one is of use to nobody.
        lifetime = max(1, int(token_info.get("expires_at", 0) - time.time()))
        try:
            self._redis.set(self._key, sealed, ex=lifetime)
        except redis.RedisError as exc:
            log.warning("storing the shared Spotify app token failed: %s", exc)


class SpotifyPausedError(Exception):
    """Spotify (or our own limit) wants a longer wait than a task may sit through."""

    def __init__(self, wait: Wait) -> None:
        super().__init__(f"Spotify requests paused for {wait.seconds:.0f} s ({wait.reason})")
        self.wait = wait


class SpotifyUnavailableError(Exception):
    """5xx or network errors outlasted the retries: try this item again later."""


class SpotifyRejectedError(Exception):
    """Spotify refused the request itself (4xx): asking again will not help."""


@dataclass
class RequestCounts:
    search: int = 0
    batch: int = 0
    single: int = 0
    retried: int = 0


# Spotify counts a request when it arrives, the limiter when it admits it. Between the two
# lie the client's work, the scheduler and the network: tens of milliseconds on a loaded
# host, so a burst admitted at a window's edge reached the stand-in inside the previous
# window (55 arrivals in one 5 s window against a budget of 50, across three hosts). The
# log counts each admission for this much longer than Spotify's window, so any delay up to
# it still keeps Spotify's own count within the budget, at 1% of the rate on 30 s.
ARRIVAL_ALLOWANCE_SECONDS = 0.3


def rate_limiter(settings: Settings, client: redis.Redis) -> SharedRateLimiter:
    return SharedRateLimiter(
        client,
        LIMITER_NAME,
        limit=settings.spotify_rate_budget,
        window_seconds=settings.spotify_rate_window_seconds + ARRIVAL_ALLOWANCE_SECONDS,
    )


class SpotifyCatalog:
    def __init__(
        self,
        settings: Settings,
        redis_client: redis.Redis,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        secret = settings.spotify_client_secret
        if not settings.spotify_configured or secret is None:
            raise PermanentError(
                "SPOTIFY_CLIENT_ID and SPOTIFY_CLIENT_SECRET must be set to enrich listens"
            )
        self.limiter = rate_limiter(settings, redis_client)
        self.counts = RequestCounts()
        self._max_inline_wait = settings.spotify_max_inline_wait_seconds
        self._sleep = sleep
        self._redis = redis_client
        http = requests.Session()
        self._credentials = spotipy.SpotifyClientCredentials(
            client_id=settings.spotify_client_id,
            client_secret=secret.get_secret_value(),
            cache_handler=SealedTokenCache(redis_client, APP_TOKEN_KEY, secret.get_secret_value()),
            requests_session=http,
            requests_timeout=settings.spotify_request_timeout_seconds,
        )
        # spotipy reads the token URL through the instance: point it at SPOTIFY_TOKEN_URL.
        self._credentials.OAUTH_TOKEN_URL = settings.spotify_token_url
        self._client = spotipy.Spotify(
            auth_manager=self._credentials,
            requests_session=http,
            requests_timeout=settings.spotify_request_timeout_seconds,
            retries=0,
            status_retries=0,
        )
        self._client.prefix = settings.spotify_api_url

    # -- what the enrichment asks -------------------------------------------------------

    def search_tracks(self, query: str) -> list[JSON]:
        answer = self._request(
            "search",
            functools.partial(self._client.search, q=query, type="track", limit=SEARCH_LIMIT),
        )
        return list(((answer or {}).get("tracks") or {}).get("items") or [])

    def tracks(self, ids: Sequence[str]) -> dict[str, JSON | None]:
        return self._fetch("tracks", ids, self._client.tracks, self._client.track)

    def artists(self, ids: Sequence[str]) -> dict[str, JSON | None]:
        return self._fetch("artists", ids, self._client.artists, self._client.artist)

    # -- batching with the single-item fallback ----------------------------------------

    def _fetch(
        self,
        endpoint: str,
        ids: Sequence[str],
        batch: Callable[[list[str]], JSON],
        single: Callable[[str], JSON],
    ) -> dict[str, JSON | None]:
        found: dict[str, JSON | None] = {}
        size = BATCH_SIZE[endpoint]
        for start in range(0, len(ids), size):
            if endpoint in _removed_batch_endpoints:
                break
            chunk = list(ids[start : start + size])
            try:
                answer = self._request("batch", functools.partial(batch, chunk))
            except spotipy.SpotifyException as exc:
                if exc.http_status != 403:
                    raise
                _removed_batch_endpoints.add(endpoint)
                log.warning(
                    "Spotify answered 403 to /%s?ids= (batch endpoints are removed for "
                    "development-mode apps): single-item calls from now on",
                    endpoint,
                )
                break
            found.update(zip(chunk, (answer or {}).get(endpoint) or [], strict=False))
        for item_id in ids:
            if item_id in found:
                continue
            try:
                found[item_id] = self._request("single", functools.partial(single, item_id))
            except spotipy.SpotifyException as exc:
                if exc.http_status not in (400, 404):
                    raise
                found[item_id] = None  # not in the catalogue (any more)
        return found

    # -- one request: limit, 429, 401, 5xx -----------------------------------------------

    def _request(self, kind: str, call: Callable[[], T]) -> T:
        failures = 0
        rate_limited = 0
        token_renewed = False
        while True:
            self._admit()
            setattr(self.counts, kind, getattr(self.counts, kind) + 1)
            try:
                return self._with_app_token(call)
            except spotipy.SpotifyException as exc:
                status = exc.http_status
                if status == 429 and rate_limited < MAX_RATE_LIMITED_TRIES:
                    rate_limited += 1
                    self._pause_everyone(exc)
                elif status == 401 and not token_renewed:
                    token_renewed = True
                    self._redis.delete(APP_TOKEN_KEY)
                elif status == 429 or (status or 0) >= 500:
                    failures += 1
                    if status == 429 or failures > RETRIES_PER_REQUEST:
                        raise SpotifyUnavailableError(_describe(exc)) from None
                    self._back_off(failures)
                else:
                    raise
            except (requests.ConnectionError, requests.Timeout) as exc:
                failures += 1
                if failures > RETRIES_PER_REQUEST:
                    raise SpotifyUnavailableError(f"{type(exc).__name__}: {exc}") from None
                self._back_off(failures)
            self.counts.retried += 1

    def _with_app_token(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except spotipy.SpotifyOauthError as exc:
            # The token endpoint refused our client: a configuration error, not a hiccup.
            raise PermanentError(
                f"Spotify refused the app's credentials ({exc}): check SPOTIFY_CLIENT_ID, "
                "SPOTIFY_CLIENT_SECRET and SPOTIFY_TOKEN_URL"
            ) from None

    def _admit(self) -> None:
        try:
            self.limiter.acquire(self._max_inline_wait, sleep=self._sleep)
        except RateLimitWaitTooLong as exc:
            raise SpotifyPausedError(exc.wait) from None

    def _pause_everyone(self, exc: spotipy.SpotifyException) -> None:
        headers = exc.headers or {}
        try:
            retry_after = max(1.0, float(headers.get("Retry-After", 1)))
        except ValueError:
            retry_after = 60.0  # an HTTP date or garbage: be conservative
        reason = f"429 {exc.reason}" if exc.reason else "429"
        self.limiter.pause(retry_after, reason)
        level = logging.ERROR if exc.reason == "QUOTA_EXCEEDED" else logging.WARNING
        log.log(level, "Spotify answered %s: every worker pauses for %.0f s", reason, retry_after)

    def _back_off(self, failures: int) -> None:
        # Full jitter: spreads the retries of many workers hit by the same outage.
        ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (failures - 1))
        self._sleep(random.uniform(0, ceiling))


def _describe(exc: spotipy.SpotifyException) -> str:
    message = str(exc.msg).split("\n")[-1].strip()
    return f"HTTP {exc.http_status}: {message}"
