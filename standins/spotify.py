"""A local stand-in for Spotify's Web API and accounts token endpoint, over real HTTP.

The real spotipy client (or httpx) is pointed at it -- ``sp.prefix = standin.api_url`` and the
auth manager's ``OAUTH_TOKEN_URL = standin.token_url`` -- so tests and the enrichment benchmark
exercise the wire protocol our code depends on: client-credentials and refresh-token grants,
bearer tokens that expire, search with field filters, single and batch lookups, errors in
Spotify's JSON shape, 429 with ``Retry-After``, and the February 2026 development-mode
restrictions (batch endpoints answer 403; no ``popularity`` or ``followers``).

It serves from a ``ThreadingHTTPServer`` on 127.0.0.1 (or ``host``), on a free port, in a
daemon thread, with HTTP/1.1 keep-alive, and records every request it answers (and from
which address).

Deliberately simplified:

- Search serves ``type=track`` only. Matching is exact on word tokens (lowercased, accents
  stripped): no fuzzy matching, stemming, operators (``NOT``, ``OR``) or relevance; results are
  ordered by popularity, then id, and ``next``/``previous`` are always null. Filters: ``track``,
  ``artist``, ``album``, ``isrc``, ``year``. ``genre``, ``upc`` and ``tag`` answer 400 instead
  of being silently ignored, so code relying on them fails loudly. Markets are ignored.
- Objects carry the fields our code reads plus the usual identifiers, not all Spotify sends.
- It never rate-limits or fails on its own: 429s and other errors come only from
  ``rate_limit_next`` / ``fail_next``, so a test decides exactly which request fails.
- Access tokens are random strings with a lifetime; scopes are not enforced. There is no
  authorization-code flow: refresh tokens are whatever the test registers.
- Request paths are normalised without a trailing slash (spotipy asks for ``/v1/tracks/?ids=``),
  in routing, in the log and for ``fail_next`` prefixes: batch calls log as ``/v1/tracks``,
  single ones as ``/v1/tracks/<id>``.
- The catalogue must be added in order, artists, then albums, then tracks: a dangling reference
  raises at ``add_*`` rather than as a 500 in the middle of a benchmark.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import secrets
import socket
import threading
import time
import unicodedata
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlencode, urlsplit

JsonObject = dict[str, Any]

SEARCH_LIMIT_MAX = 10  # Spotify's 2026 maximum
# The OAuth token type Spotify issues.
BEARER = "Bearer"
BATCH_LIMITS = {"tracks": 50, "artists": 50, "albums": 20}
REFRESH_SCOPE = "user-read-recently-played"
LABEL = "Stand-in Records"
FOLLOWERS = 1000

_WORD = re.compile(r"[^\W_]+")
# Only real field names count as filters, so "AC:DC" stays two free words.
_QUERY_TERM = re.compile(
    r'(?:(?P<field>track|artist|album|isrc|year|genre|upc|tag):)?(?:"(?P<quoted>[^"]*)"?|(?P<bare>\S+))',
    re.IGNORECASE,
)
_UNSUPPORTED_FILTERS = frozenset({"genre", "upc", "tag"})
_YEAR = re.compile(r"(\d{4})(?:-(\d{4}))?")
_NOTHING: frozenset[str] = frozenset()


@dataclass(frozen=True)
class StandInArtist:
    id: str
    name: str
    genres: tuple[str, ...] = ()
    popularity: int = 50


@dataclass(frozen=True)
class StandInAlbum:
    id: str
    name: str
    artist_ids: tuple[str, ...]
    release_date: str = "2020-01-01"
    release_date_precision: str = "day"  # "year" -> "2020", "month" -> "2020-01"


@dataclass(frozen=True)
class StandInTrack:
    id: str
    name: str
    artist_ids: tuple[str, ...]
    album_id: str
    duration_ms: int = 200_000
    popularity: int = 50
    isrc: str | None = None


@dataclass(frozen=True)
class RecordedRequest:
    at: float  # time.time() when the request arrived
    method: str
    path: str  # normalised: "/v1/search", "/v1/tracks", "/v1/tracks/abc", "/api/token"
    query: dict[str, str]
    status: int
    token: str | None  # the bearer token sent, if any
    client: str = ""  # the caller's address: which host asked


def words(text: str) -> list[str]:
    """The search tokens of ``text``: accent-free, case-folded runs of letters and digits."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _WORD.findall(bare.casefold())


@dataclass(frozen=True)
class _Response:
    status: int
    body: JsonObject
    headers: dict[str, str] = field(default_factory=dict)


def _api_error(status: int, message: str) -> _Response:
    return _Response(status, {"error": {"status": status, "message": message}})


def _oauth_error(error: str, description: str) -> _Response:
    return _Response(400, {"error": error, "error_description": description})


def _unauthorized(message: str) -> _Response:
    # Spotify names the problem in WWW-Authenticate too; clients that only read headers see it.
    challenge = f'Bearer realm="spotify", error="invalid_token", error_description="{message}"'
    body = {"error": {"status": 401, "message": message}}
    return _Response(401, body, {"WWW-Authenticate": challenge})


class _BadRequestError(Exception):
    pass


@dataclass
class _Criteria:
    track: list[str] = field(default_factory=list)
    artist: list[str] = field(default_factory=list)
    album: list[str] = field(default_factory=list)
    free: list[str] = field(default_factory=list)
    isrc: list[str] = field(default_factory=list)
    years: list[tuple[int, int]] = field(default_factory=list)


def _parse_query(q: str) -> _Criteria:
    criteria = _Criteria()
    for term in _QUERY_TERM.finditer(q):
        text = term["quoted"] if term["quoted"] is not None else term["bare"]
        name = (term["field"] or "").lower()
        if name in _UNSUPPORTED_FILTERS:
            raise _BadRequestError(f"The stand-in does not support the {name}: filter")
        if name == "isrc":
            criteria.isrc.append(text.strip().upper())
        elif name == "year":
            span = _YEAR.fullmatch(text.strip())
            if span is None:
                raise _BadRequestError(f"Invalid year filter: {text}")
            criteria.years.append((int(span[1]), int(span[2] or span[1])))
        else:
            fields = {"track": criteria.track, "artist": criteria.artist, "album": criteria.album}
            fields.get(name, criteria.free).extend(words(text))
    return criteria


@dataclass
class _Scripted:
    prefix: str
    remaining: int
    response: _Response


class SpotifyStandIn:
    """Spotify's Web API and token endpoint on a local port; see the module docstring."""

    def __init__(
        self,
        *,
        client_id: str = "test-client",
        client_secret: str = "test-secret",
        batch_endpoints: bool = True,
        popularity: bool = True,
        token_lifetime: int = 3600,
        latency: float = 0.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.client_id = client_id
        self.client_secret = client_secret
        self.batch_endpoints = batch_endpoints
        self._popularity = popularity
        self.token_lifetime = token_lifetime
        self.latency = latency

        # One lock for all state: requests arrive on many server threads.
        self._lock = threading.Lock()
        self._artists: dict[str, StandInArtist] = {}
        self._albums: dict[str, StandInAlbum] = {}
        self._tracks: dict[str, StandInTrack] = {}
        # Inverted indexes, so a search costs a few set intersections, not a catalogue scan.
        self._tracks_by_word: dict[str, set[str]] = {}
        self._artists_by_word: dict[str, set[str]] = {}
        self._albums_by_word: dict[str, set[str]] = {}
        self._tracks_by_artist: dict[str, set[str]] = {}
        # Insertion-ordered, to number an album's tracks.
        self._tracks_by_album: dict[str, dict[str, None]] = {}
        self._tracks_by_isrc: dict[str, set[str]] = {}
        # JSON objects built once; cleared whenever the catalogue or base URL changes.
        self._rendered: dict[tuple[str, str], JsonObject] = {}

        self._access_tokens: dict[str, float] = {}  # token -> time.monotonic() expiry
        self._refresh_tokens: dict[str, bool] = {}  # token -> still valid
        self._scripted: list[_Scripted] = []
        # A slot is appended on arrival and filled on completion, so the log keeps arrival
        # order under concurrency; reset_log swaps in a new list, orphaning in-flight slots.
        self._log: list[RecordedRequest | None] = []

        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._base_url = ""

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("the Spotify stand-in is already running")
        server = _Server(self)
        with self._lock:
            self._base_url = f"http://{self.host}:{server.server_port}"
            self._rendered.clear()
        self._server = server
        # A short poll interval keeps stop() fast; shutdown() waits for the next poll.
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"spotify-standin-{server.server_port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def popularity(self) -> bool:
        return self._popularity

    @popularity.setter
    def popularity(self, value: bool) -> None:
        # Settable mid-run, to play an app losing extended quota; cached objects must follow.
        with self._lock:
            self._popularity = value
            self._rendered.clear()

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:<port>/v1/``: what spotipy's ``prefix`` is set to."""
        return f"{self._running_base_url()}/v1/"

    @property
    def token_url(self) -> str:
        return f"{self._running_base_url()}/api/token"

    def _running_base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("start() the Spotify stand-in before asking for its URL")
        return self._base_url

    # -- catalogue -------------------------------------------------------------------------

    def add_artist(self, artist: StandInArtist) -> None:
        with self._lock:
            old = self._artists.get(artist.id)
            if old is not None:
                _unindex(self._artists_by_word, words(old.name), old.id)
            self._artists[artist.id] = artist
            _index(self._artists_by_word, words(artist.name), artist.id)
            self._rendered.clear()

    def add_album(self, album: StandInAlbum) -> None:
        with self._lock:
            self._require(album.artist_ids, self._artists, f"album {album.id}", "artist")
            old = self._albums.get(album.id)
            if old is not None:
                _unindex(self._albums_by_word, words(old.name), old.id)
            self._albums[album.id] = album
            _index(self._albums_by_word, words(album.name), album.id)
            self._rendered.clear()

    def add_track(self, track: StandInTrack) -> None:
        with self._lock:
            self._require(track.artist_ids, self._artists, f"track {track.id}", "artist")
            self._require((track.album_id,), self._albums, f"track {track.id}", "album")
            old = self._tracks.get(track.id)
            if old is not None:
                _unindex(self._tracks_by_word, words(old.name), old.id)
                for artist_id in old.artist_ids:
                    self._tracks_by_artist[artist_id].discard(old.id)
                if old.isrc:
                    self._tracks_by_isrc[old.isrc.upper()].discard(old.id)
                if old.album_id != track.album_id:
                    del self._tracks_by_album[old.album_id][old.id]
            self._tracks[track.id] = track
            _index(self._tracks_by_word, words(track.name), track.id)
            for artist_id in track.artist_ids:
                self._tracks_by_artist.setdefault(artist_id, set()).add(track.id)
            if track.isrc:
                self._tracks_by_isrc.setdefault(track.isrc.upper(), set()).add(track.id)
            self._tracks_by_album.setdefault(track.album_id, {})[track.id] = None
            self._rendered.clear()

    @staticmethod
    def _require(ids: Iterable[str], known: dict[str, Any], owner: str, kind: str) -> None:
        missing = [i for i in ids if i not in known]
        if missing:
            raise ValueError(f"{owner} refers to unknown {kind} {missing}: add those first")

    # -- scripting -------------------------------------------------------------------------

    def fail_next(
        self,
        path_prefix: str,
        status: int,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: JsonObject | None = None,
    ) -> None:
        """The next ``times`` requests whose path starts with ``path_prefix`` answer ``status``.

        Scripted failures are consumed in the order they were scripted: a request takes the
        oldest pending one whose prefix matches. API requests are authenticated first, so a
        request with a bad token answers 401 and leaves the script alone.
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        if body is None:
            body = {"error": {"status": status, "message": _reason_phrase(status)}}
        response = _Response(status, body, dict(headers or {}))
        with self._lock:
            self._scripted.append(_Scripted(path_prefix, times, response))

    def rate_limit_next(
        self, retry_after: int, *, times: int = 1, reason: str | None = None
    ) -> None:
        """The next ``times`` API requests answer 429 with ``Retry-After: <retry_after>``."""
        error: JsonObject = {"status": 429, "message": "API rate limit exceeded"}
        if reason:
            error["reason"] = reason
        self.fail_next(
            "/v1/",
            429,
            times=times,
            headers={"Retry-After": str(retry_after)},
            body={"error": error},
        )

    def _take_scripted(self, path: str) -> _Response | None:
        for position, scripted in enumerate(self._scripted):
            if path.startswith(scripted.prefix):
                scripted.remaining -= 1
                if scripted.remaining == 0:
                    del self._scripted[position]
                return scripted.response
        return None

    # -- tokens ----------------------------------------------------------------------------

    def issue_access_token(self) -> str:
        """A valid access token without an HTTP round trip (and without a log entry)."""
        token = "BQ" + secrets.token_urlsafe(24)
        with self._lock:
            self._access_tokens[token] = time.monotonic() + self.token_lifetime
        return token

    def expire_access_tokens(self) -> None:
        """Every access token issued so far answers 401 "The access token expired"."""
        with self._lock:
            for token in self._access_tokens:
                self._access_tokens[token] = float("-inf")

    def add_refresh_token(self, refresh_token: str) -> None:
        with self._lock:
            self._refresh_tokens[refresh_token] = True

    def revoke_refresh_token(self, refresh_token: str) -> None:
        with self._lock:
            self._refresh_tokens[refresh_token] = False

    # -- request log -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every completed request in arrival order (a copy)."""
        return self.recorded()

    def recorded(self, path_prefix: str = "") -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self._log if r is not None and r.path.startswith(path_prefix)]

    def count(self, path_prefix: str) -> int:
        with self._lock:
            return sum(1 for r in self._log if r is not None and r.path.startswith(path_prefix))

    def reset_log(self) -> None:
        with self._lock:
            self._log = []

    def _reserve_slot(self) -> tuple[list[RecordedRequest | None], int]:
        with self._lock:
            log = self._log
            log.append(None)
            return log, len(log) - 1

    def _fill_slot(
        self, slot: tuple[list[RecordedRequest | None], int], record: RecordedRequest
    ) -> None:
        log, index = slot
        with self._lock:
            log[index] = record

    # -- request handling ------------------------------------------------------------------

    def _respond(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: Message,
        body: bytes,
        token: str | None,
    ) -> _Response:
        if path == "/v1" or path.startswith("/v1/"):
            return self._api(method, path, query, token)
        if path == "/api/token":
            return self._token_endpoint(method, headers, body)
        with self._lock:
            scripted = self._take_scripted(path)
        return scripted or _api_error(404, "Service not found")

    def _token_endpoint(self, method: str, headers: Message, body: bytes) -> _Response:
        with self._lock:
            scripted = self._take_scripted("/api/token")
        if scripted is not None:
            return scripted
        if method != "POST":
            return _api_error(405, "Method not allowed")
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        client_id, client_secret = _basic_credentials(headers.get("Authorization", ""))
        if client_id is None:
            client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if (client_id, client_secret) != (self.client_id, self.client_secret):
            return _oauth_error("invalid_client", "Invalid client")
        return self._grant(form)

    def _grant(self, form: dict[str, str]) -> _Response:
        grant = form.get("grant_type")
        if grant == "client_credentials":
            return self._token_response({})
        if grant == "refresh_token":
            with self._lock:
                valid = self._refresh_tokens.get(form.get("refresh_token", ""), False)
            if not valid:
                return _oauth_error("invalid_grant", "Refresh token revoked")
            # Spotify often leaves refresh_token out; clients must keep the one they have.
            return self._token_response({"scope": REFRESH_SCOPE})
        return _oauth_error("unsupported_grant_type", f"grant_type {grant!r} is not supported")

    def _token_response(self, extra: JsonObject) -> _Response:
        token = self.issue_access_token()
        body = {"access_token": token, "token_type": BEARER, "expires_in": self.token_lifetime}
        return _Response(200, body | extra)

    def _api(self, method: str, path: str, query: dict[str, str], token: str | None) -> _Response:
        if self.latency > 0:
            time.sleep(self.latency)
        with self._lock:
            expiry = self._access_tokens.get(token) if token is not None else None
            if expiry is None:
                return _unauthorized("Invalid access token")
            if expiry <= time.monotonic():
                return _unauthorized("The access token expired")
            scripted = self._take_scripted(path)
            if scripted is not None:
                return scripted
            if method != "GET":
                return _api_error(405, "Method not allowed")
            return self._serve(path, query)

    def _serve(self, path: str, query: dict[str, str]) -> _Response:
        parts = path.split("/")[2:]
        if parts == ["search"]:
            try:
                return self._search(query)
            except _BadRequestError as bad:
                return _api_error(400, str(bad))
        if parts and parts[0] in BATCH_LIMITS:
            if len(parts) == 1:
                return self._batch(parts[0], query)
            if len(parts) == 2:
                found = self._render(parts[0], parts[1])
                return _Response(200, found) if found else _api_error(404, "Resource not found")
        return _api_error(404, "Service not found")

    def _batch(self, kind: str, query: dict[str, str]) -> _Response:
        if not self.batch_endpoints:
            return _api_error(403, "Forbidden")
        ids = [i for i in query.get("ids", "").split(",") if i]
        if not ids:
            return _api_error(400, "invalid id")
        if len(ids) > BATCH_LIMITS[kind]:
            return _api_error(400, "Too many ids requested")
        return _Response(200, {kind: [self._render(kind, i) for i in ids]})

    def _search(self, query: dict[str, str]) -> _Response:
        q = query.get("q", "")
        if not q.strip():
            raise _BadRequestError("No search query")
        if query.get("type", "") != "track":
            raise _BadRequestError("The stand-in searches type=track only")
        try:
            limit = int(query.get("limit", "10"))
            offset = int(query.get("offset", "0"))
        except ValueError:
            raise _BadRequestError("Invalid limit") from None
        if not 1 <= limit <= SEARCH_LIMIT_MAX:
            raise _BadRequestError("Invalid limit")
        if offset < 0:
            raise _BadRequestError("Invalid offset")
        found = self._matching_tracks(_parse_query(q))
        ranked = sorted(found, key=lambda i: (-self._tracks[i].popularity, i))
        items = [self._render("tracks", i) for i in ranked[offset : offset + limit]]
        page = {
            "href": f"{self._base_url}/v1/search?{urlencode(query)}",
            "items": items,
            "limit": limit,
            "offset": offset,
            "total": len(ranked),
            "next": None,
            "previous": None,
        }
        return _Response(200, {"tracks": page})

    def _matching_tracks(self, criteria: _Criteria) -> set[str]:
        candidates: list[AbstractSet[str]] = [
            self._tracks_by_word.get(token, _NOTHING) for token in criteria.track
        ]
        if criteria.artist:
            artists = _intersection(
                [self._artists_by_word.get(t, _NOTHING) for t in criteria.artist]
            )
            candidates.append(self._union(self._tracks_by_artist, artists))
        if criteria.album:
            albums = _intersection([self._albums_by_word.get(t, _NOTHING) for t in criteria.album])
            candidates.append({t for album in albums for t in self._tracks_by_album.get(album, {})})
        for token in criteria.free:
            by_artist = self._union(self._tracks_by_artist, self._artists_by_word.get(token, ()))
            candidates.append(self._tracks_by_word.get(token, _NOTHING) | by_artist)
        candidates.extend(self._tracks_by_isrc.get(code, _NOTHING) for code in criteria.isrc)
        if candidates:
            found = _intersection(candidates)
        elif criteria.years:
            found = set(self._tracks)  # a year-only search is the one catalogue scan
        else:
            return set()
        for first, last in criteria.years:
            found = {
                t
                for t in found
                if first <= int(self._albums[self._tracks[t].album_id].release_date[:4]) <= last
            }
        return found

    @staticmethod
    def _union(index: dict[str, set[str]], keys: Iterable[str]) -> set[str]:
        result: set[str] = set()
        for key in keys:
            result |= index.get(key, _NOTHING)
        return result

    # -- JSON objects ----------------------------------------------------------------------

    def _render(self, kind: str, object_id: str) -> JsonObject | None:
        cached = self._rendered.get((kind, object_id))
        if cached is not None:
            return cached
        rendered: JsonObject | None
        if kind == "tracks":
            track = self._tracks.get(object_id)
            rendered = self._full_track(track) if track else None
        elif kind == "artists":
            artist = self._artists.get(object_id)
            rendered = self._full_artist(artist) if artist else None
        else:
            album = self._albums.get(object_id)
            rendered = self._full_album(album) if album else None
        if rendered is not None:
            self._rendered[(kind, object_id)] = rendered
        return rendered

    def _identity(self, kind: str, object_id: str, name: str) -> JsonObject:
        return {
            "id": object_id,
            "name": name,
            "type": kind,
            "uri": f"spotify:{kind}:{object_id}",
            "href": f"{self._base_url}/v1/{kind}s/{object_id}",
            "external_urls": {"spotify": f"https://open.spotify.com/{kind}/{object_id}"},
        }

    def _simple_artists(self, artist_ids: Iterable[str]) -> list[JsonObject]:
        return [self._identity("artist", i, self._artists[i].name) for i in artist_ids]

    def _simple_album(self, album: StandInAlbum) -> JsonObject:
        precision = album.release_date_precision
        shown = {"year": 4, "month": 7}.get(precision, len(album.release_date))
        return self._identity("album", album.id, album.name) | {
            "album_type": "album",
            "total_tracks": len(self._tracks_by_album.get(album.id, {})),
            "release_date": album.release_date[:shown],
            "release_date_precision": precision,
            "artists": self._simple_artists(album.artist_ids),
        }

    def _simple_track(self, track: StandInTrack) -> JsonObject:
        numbering = list(self._tracks_by_album.get(track.album_id, {}))
        return self._identity("track", track.id, track.name) | {
            "duration_ms": track.duration_ms,
            "explicit": False,
            "is_local": False,
            "disc_number": 1,
            "track_number": numbering.index(track.id) + 1,
            "artists": self._simple_artists(track.artist_ids),
        }

    def _full_track(self, track: StandInTrack) -> JsonObject:
        rendered = self._simple_track(track)
        rendered["album"] = self._simple_album(self._albums[track.album_id])
        if track.isrc is not None:
            rendered["external_ids"] = {"isrc": track.isrc}
        if self._popularity:
            rendered["popularity"] = track.popularity
        return rendered

    def _full_artist(self, artist: StandInArtist) -> JsonObject:
        rendered = self._identity("artist", artist.id, artist.name)
        rendered["genres"] = list(artist.genres)
        if self._popularity:
            rendered["popularity"] = artist.popularity
            rendered["followers"] = {"href": None, "total": FOLLOWERS}
        return rendered

    def _full_album(self, album: StandInAlbum) -> JsonObject:
        rendered = self._simple_album(album)
        track_ids = list(self._tracks_by_album.get(album.id, {}))
        rendered["tracks"] = {
            "href": f"{self._base_url}/v1/albums/{album.id}/tracks",
            "items": [self._simple_track(self._tracks[t]) for t in track_ids[:50]],
            "limit": 50,
            "offset": 0,
            "total": len(track_ids),
            "next": None,
            "previous": None,
        }
        rendered["genres"] = []
        rendered["label"] = LABEL
        if self._popularity:
            rendered["popularity"] = max((self._tracks[t].popularity for t in track_ids), default=0)
        return rendered


def _index(index: dict[str, set[str]], tokens: Iterable[str], object_id: str) -> None:
    for token in tokens:
        index.setdefault(token, set()).add(object_id)


def _unindex(index: dict[str, set[str]], tokens: Iterable[str], object_id: str) -> None:
    for token in tokens:
        index.get(token, set()).discard(object_id)


def _intersection(sets: Iterable[AbstractSet[str]]) -> set[str]:
    # Smallest first: the cost is then bounded by the rarest word, not the commonest.
    ordered = sorted(sets, key=len)
    result = set(ordered[0])
    for other in ordered[1:]:
        if not result:
            break
        result &= other
    return result


def _reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _basic_credentials(header: str) -> tuple[str | None, str | None]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    client_id, _, client_secret = decoded.partition(":")
    return client_id, client_secret


def _bearer_token(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Keep-alive connections stay open while clients hold them; don't wait for them on close.
    block_on_close = False
    # The default backlog of 5 drops connections when a benchmark opens many at once.
    request_queue_size = 128

    def __init__(self, standin: SpotifyStandIn) -> None:
        super().__init__((standin.host, 0), _Handler)
        self.standin = standin
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def track_connection(self, connection: socket.socket, *, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """End idle keep-alive connections so their handler threads exit with the server."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-response is normal in tests; tracebacks on stderr are noise.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so requests' connection pool is reused
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle's algorithm and the
    # client's delayed ACK would add tens of milliseconds to each response.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track_connection(self.connection, open_=True)

    def finish(self) -> None:
        self.server.track_connection(self.connection, open_=False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        standin = self.server.standin
        at = time.time()
        slot = standin._reserve_slot()
        body = self._read_body()
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        token = _bearer_token(self.headers.get("Authorization", ""))
        try:
            response = standin._respond(self.command, path, query, self.headers, body, token)
        except Exception as error:  # a stand-in bug should reach the test as a 500, not a hang
            response = _api_error(500, f"Spotify stand-in failed: {error!r}")
        # Logged before the answer is written, so a client that has its answer sees the entry.
        standin._fill_slot(
            slot,
            RecordedRequest(
                at, self.command, path, query, response.status, token, self.client_address[0]
            ),
        )
        self._send(response)

    def _read_body(self) -> bytes:
        # Unread body bytes would be parsed as the next request on this keep-alive connection.
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, response: _Response) -> None:
        payload = json.dumps(response.body, separators=(",", ":")).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
