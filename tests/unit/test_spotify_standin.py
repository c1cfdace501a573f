"""The Spotify stand-in, driven through the real spotipy client as our enrichment code uses it.

These pin down the protocol behaviour that code relies on (and what spotipy makes of it), so a
spotipy upgrade that changes it fails here rather than in production.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import spotipy

from standins.spotify import (
    SpotifyStandIn,
    StandInAlbum,
    StandInArtist,
    StandInTrack,
)

CLIENT_ID = "test-client"
CLIENT_SECRET = "test-secret"


def fill(standin: SpotifyStandIn) -> None:
    standin.add_artist(StandInArtist("band", "Band", genres=("indie rock",), popularity=61))
    standin.add_artist(StandInArtist("other", "The Other Band"))
    standin.add_artist(StandInArtist("sigur", "Sigur Rós"))
    standin.add_album(StandInAlbum("debut", "Debut", ("band",), "2019-03-01", "month"))
    standin.add_album(StandInAlbum("takk", "Takk...", ("sigur",), "2005", "year"))
    standin.add_track(
        StandInTrack("song", "Song Name", ("band",), "debut", 215_000, 70, "GBAAA1900001")
    )
    standin.add_track(StandInTrack("cover", "Song Name", ("other",), "debut", popularity=90))
    standin.add_track(
        StandInTrack("remix", "Song Name (Remix)", ("band", "other"), "debut", popularity=40)
    )
    standin.add_track(StandInTrack("hoppipolla", "Hoppípolla", ("sigur",), "takk"))


@pytest.fixture
def standin() -> Iterator[SpotifyStandIn]:
    with SpotifyStandIn(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as running:
        fill(running)
        yield running


def client_token(standin: SpotifyStandIn, secret: str = CLIENT_SECRET) -> str:
    # Without a cache_handler spotipy uses CacheFileHandler: it writes ".cache" in the working
    # directory and hands back any unexpired token it finds there, even one another server
    # issued. Our code must pass a cache handler of its own.
    cc = spotipy.SpotifyClientCredentials(
        CLIENT_ID,
        secret,
        requests_session=requests.Session(),
        cache_handler=spotipy.MemoryCacheHandler(),
    )
    cc.OAUTH_TOKEN_URL = standin.token_url
    token: str = cc.get_access_token(as_dict=False)
    return token


def client(standin: SpotifyStandIn, token: str) -> Any:
    # Our own requests.Session has no retry adapter: spotipy then raises on 429/5xx at once,
    # with the response headers, instead of sleeping through Retry-After inside urllib3.
    sp = spotipy.Spotify(
        auth=token, requests_session=requests.Session(), requests_timeout=5, retries=0
    )
    sp.prefix = standin.api_url
    return sp


def user_oauth(standin: SpotifyStandIn) -> Any:
    oauth = spotipy.SpotifyOAuth(
        CLIENT_ID,
        CLIENT_SECRET,
        redirect_uri="http://127.0.0.1/callback",
        cache_handler=spotipy.MemoryCacheHandler(),
        requests_session=requests.Session(),
        open_browser=False,
    )
    oauth.OAUTH_TOKEN_URL = standin.token_url
    return oauth


def test_client_credentials_then_search_with_field_filters(standin: SpotifyStandIn) -> None:
    sp = client(standin, client_token(standin))

    found = sp.search(q='track:"Song Name" artist:"Band"', type="track", limit=10)["tracks"]

    # "Band" is a word of "The Other Band" too; ordered by popularity, then id.
    assert [t["id"] for t in found["items"]] == ["cover", "song", "remix"]
    assert found["total"] == 3
    song = found["items"][1]
    assert song["uri"] == "spotify:track:song"
    assert song["external_ids"] == {"isrc": "GBAAA1900001"}
    assert song["popularity"] == 70
    assert [a["name"] for a in song["artists"]] == ["Band"]
    assert song["album"]["release_date"] == "2019-03"
    assert "external_ids" not in found["items"][0]

    with pytest.raises(spotipy.SpotifyException) as raised:
        sp.search(q='track:"Song Name"', type="track", limit=11)
    assert raised.value.http_status == 400


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ('track:"song name" artist:"the other band"', ["cover", "remix"]),
        ("track:remix", ["remix"]),
        ("hoppipolla sigur ros", ["hoppipolla"]),  # accents folded, free words
        ("song other", ["cover", "remix"]),  # a free word may match an artist
        ('track:"song" artist:"sigur"', []),
        ("isrc:gbaaa1900001", ["song"]),
        ('year:2005 artist:"Sigur Rós"', ["hoppipolla"]),
    ],
)
def test_search_matches_every_word_of_every_filter(
    standin: SpotifyStandIn, q: str, expected: list[str]
) -> None:
    sp = client(standin, standin.issue_access_token())

    assert [t["id"] for t in sp.search(q=q, type="track")["tracks"]["items"]] == expected


def test_batch_endpoints_and_the_development_mode_restrictions(standin: SpotifyStandIn) -> None:
    sp = client(standin, client_token(standin))

    tracks = sp.tracks(["song", "missing", "cover"])["tracks"]
    assert [t and t["id"] for t in tracks] == ["song", None, "cover"]
    artists = sp.artists(["band", "sigur"])["artists"]
    assert [a["followers"]["total"] for a in artists] == [1000, 1000]
    with pytest.raises(spotipy.SpotifyException) as raised:
        sp.tracks(["song"] * 51)
    assert raised.value.http_status == 400

    with SpotifyStandIn(batch_endpoints=False, popularity=False) as restricted:
        fill(restricted)
        sp = client(restricted, client_token(restricted))
        for batch in (sp.tracks, sp.artists):
            with pytest.raises(spotipy.SpotifyException) as raised:
                batch(["song"])
            assert raised.value.http_status == 403
        track = sp.track("song")
        artist = sp.artist("band")
        album = sp.album("debut")

    assert track["id"] == "song"
    assert "popularity" not in track
    assert "popularity" not in artist
    assert "followers" not in artist
    assert artist["genres"] == ["indie rock"]
    assert "popularity" not in album
    assert [t["id"] for t in album["tracks"]["items"]] == ["song", "cover", "remix"]


def test_a_429_surfaces_at_once_with_retry_after_and_reason(standin: SpotifyStandIn) -> None:
    sp = client(standin, client_token(standin))
    standin.rate_limit_next(3600, reason="QUOTA_EXCEEDED")

    started = time.monotonic()
    with pytest.raises(spotipy.SpotifyException) as raised:
        sp.track("song")

    assert time.monotonic() - started < 2  # spotipy did not sleep through Retry-After
    error = raised.value
    assert error.http_status == 429
    assert error.headers["Retry-After"] == "3600"  # requests' case-insensitive headers
    # spotipy copies error.reason of the JSON body to .reason; .msg is "<url>:\n <message>".
    assert error.reason == "QUOTA_EXCEEDED"
    assert error.msg.endswith("API rate limit exceeded")
    assert error.code == -1
    assert standin.count("/v1/tracks") == 1  # no retry
    assert sp.track("song")["id"] == "song"  # the script is used up


def test_spotipys_own_retrying_session_loses_retry_after(standin: SpotifyStandIn) -> None:
    # Why our code passes its own session: spotipy's built session (urllib3 Retry, with 429 in
    # the status_forcelist) ends a 429 in RetryError, which spotipy reports without headers and
    # with a urllib3 ResponseError as .reason. With retries=0 it at least does not sleep; with
    # retries > 0 it would sleep Retry-After (an hour) inside the call.
    sp = spotipy.Spotify(auth=client_token(standin), requests_timeout=5, retries=0)
    sp.prefix = standin.api_url
    standin.rate_limit_next(3600, reason="QUOTA_EXCEEDED")

    with pytest.raises(spotipy.SpotifyException) as raised:
        sp.track("song")

    assert raised.value.http_status == 429
    assert raised.value.headers == {}
    assert "Max Retries" in raised.value.msg
    assert raised.value.reason != "QUOTA_EXCEEDED"
    assert standin.count("/v1/") == 1


def test_a_scripted_503_surfaces_at_once(standin: SpotifyStandIn) -> None:
    sp = client(standin, client_token(standin))
    standin.fail_next("/v1/search", 503)

    started = time.monotonic()
    with pytest.raises(spotipy.SpotifyException) as raised:
        sp.search(q="track:song", type="track")

    assert time.monotonic() - started < 2
    assert raised.value.http_status == 503
    assert raised.value.msg.endswith("Service Unavailable")
    assert sp.track("song")["id"] == "song"  # only /v1/search was scripted
    assert sp.search(q="track:song", type="track")["tracks"]["total"] == 3


def test_expired_and_unknown_access_tokens_answer_401(standin: SpotifyStandIn) -> None:
    sp = client(standin, client_token(standin))
    assert sp.track("song")["id"] == "song"
    standin.expire_access_tokens()

    with pytest.raises(spotipy.SpotifyException) as raised:
        sp.track("song")
    assert raised.value.http_status == 401
    assert "expired" in raised.value.msg
    assert raised.value.reason is None

    with pytest.raises(spotipy.SpotifyException) as raised:
        client(standin, "made-up").track("song")
    assert raised.value.http_status == 401
    assert "Invalid access token" in raised.value.msg

    assert client(standin, client_token(standin)).track("song")["id"] == "song"


def test_refresh_token_grant_revocation_and_a_wrong_client(standin: SpotifyStandIn) -> None:
    standin.add_refresh_token("user-refresh")
    oauth = user_oauth(standin)

    info = oauth.refresh_access_token("user-refresh")

    assert client(standin, info["access_token"]).track("song")["id"] == "song"
    assert info["expires_in"] == 3600
    # The answer carried no refresh_token: spotipy keeps the one it sent. It also overwrites
    # the granted scope with the manager's own (None here), so the scope is not to be trusted.
    assert info["refresh_token"] == "user-refresh"
    assert info["scope"] is None

    standin.revoke_refresh_token("user-refresh")
    with pytest.raises(spotipy.SpotifyOauthError) as raised:
        oauth.refresh_access_token("user-refresh")
    assert raised.value.error == "invalid_grant"
    assert raised.value.error_description == "Refresh token revoked"

    with pytest.raises(spotipy.SpotifyOauthError) as raised:
        client_token(standin, secret="wrong-secret")
    assert raised.value.error == "invalid_client"


def test_every_request_is_logged_in_arrival_order(standin: SpotifyStandIn) -> None:
    before = time.time()
    token = client_token(standin)
    sp = client(standin, token)
    sp.search(q="track:song", type="track")
    sp.search(q="track:hoppipolla", type="track", limit=1)
    sp.tracks(["song", "cover"])
    with pytest.raises(spotipy.SpotifyException):
        sp.track("missing")
    after = time.time()

    log = standin.requests
    assert [(r.method, r.path, r.status) for r in log] == [
        ("POST", "/api/token", 200),
        ("GET", "/v1/search", 200),
        ("GET", "/v1/search", 200),
        ("GET", "/v1/tracks", 200),  # spotipy asks for /v1/tracks/?ids=; logged normalised
        ("GET", "/v1/tracks/missing", 404),
    ]
    assert all(before <= r.at <= after for r in log)
    assert [r.at for r in log] == sorted(r.at for r in log)
    assert log[0].token is None
    assert {r.token for r in log[1:]} == {token}
    assert log[2].query == {"q": "track:hoppipolla", "type": "track", "limit": "1", "offset": "0"}
    assert log[3].query == {"ids": "song,cover"}
    assert standin.count("/v1/search") == 2
    assert standin.count("/v1/tracks/") == 1
    assert [r.path for r in standin.recorded("/api/")] == ["/api/token"]

    standin.reset_log()
    assert standin.requests == []
