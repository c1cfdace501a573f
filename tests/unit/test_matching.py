"""Matching exported names to Spotify: the cache key, the search query, the match rule."""

from __future__ import annotations

import numpy as np
import pytest

from db import seed
from tasks.enrichment.matching import (
    DEFAULT_THRESHOLD,
    Candidate,
    SearchKey,
    choose_match,
    normalize,
    search_key,
    search_query,
)

# Names in the synthetic catalogue's style (db/seed.py): "<Adjective> <Noun> <n>".
ARTIST = "Velvet Harbor 12"
TITLE = "The Silent River"
GUEST = "Amber Canyon 3"


def candidate(name: str, *artists: str, id: str = "spotify-id") -> Candidate:
    return Candidate(id=id, name=name, artist_names=artists)


def key(artist: str, track: str) -> SearchKey:
    found = search_key(artist, track)
    assert found is not None
    return found


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        pytest.param("Beyoncé", "beyonce", id="accents-stripped"),
        pytest.param("BEYONCE", "beyonce", id="case-folded"),
        pytest.param("Straße", "strasse", id="casefold-not-lower"),
        pytest.param("Guns N\u2019 Roses", "guns n roses", id="curly-apostrophe"),
        pytest.param("Guns N' Roses", "guns n roses", id="straight-apostrophe"),
        pytest.param("Simon & Garfunkel", "simon and garfunkel", id="ampersand-is-and"),
        pytest.param("Simon&Garfunkel", "simon and garfunkel", id="unspaced-ampersand"),
        pytest.param("  The   Silent\tRiver ", "the silent river", id="whitespace-collapsed"),
        pytest.param("AC/DC", "ac dc", id="punctuation-is-a-space"),
        pytest.param("\u201cHeroes\u201d", "heroes", id="curly-double-quotes"),
        pytest.param("\uff30\uff4f\uff4b\uff45\uff4d\uff4f\uff4e", "pokemon", id="fullwidth-nfkc"),
        pytest.param("Bey\u200bonce", "beyonce", id="zero-width-space-dropped"),
        pytest.param(
            "\u0391\u0393\u0386\u03a0\u0397", "\u03b1\u03b3\u03b1\u03c0\u03b7", id="greek"
        ),
        # Marks that are parts of letters elsewhere stay: ga is not ka.
        pytest.param("\u304c", "\u304c", id="kana-voicing-kept"),
        pytest.param("\u0917\u093e\u0928\u093e", "\u0917\u093e\u0928\u093e", id="devanagari-kept"),
        pytest.param(
            "\ubc29\ud0c4\uc18c\ub144\ub2e8", "\ubc29\ud0c4\uc18c\ub144\ub2e8", id="hangul"
        ),
        pytest.param("?!", "", id="nothing-left"),
    ],
)
def test_normalize(text: str, normalized: str) -> None:
    assert normalize(text) == normalized
    assert normalize(normalized) == normalized  # stable: a key normalizes to itself


@pytest.mark.parametrize(
    ("artist", "track"),
    [
        pytest.param(ARTIST.lower(), TITLE.lower(), id="all-lower"),
        pytest.param(ARTIST.upper(), TITLE, id="upper-artist"),
        pytest.param(ARTIST, f"{TITLE} - Remastered", id="remastered"),
        pytest.param(ARTIST, f"{TITLE} - Remastered 2011", id="remastered-year"),
        pytest.param(ARTIST, f"{TITLE} (feat. {GUEST})", id="feat-in-title"),
        pytest.param(f"{ARTIST} feat. {GUEST}", TITLE, id="feat-in-artist"),
        pytest.param(ARTIST, f"{TITLE} - Remastered 2011 (feat. {GUEST})", id="both-suffixes"),
        pytest.param(
            f"{ARTIST.lower()} feat. {GUEST.lower()}",
            f"{TITLE.lower()} - remastered",
            id="lower-with-credit-and-remaster",
        ),
    ],
)
def test_the_seed_generators_noise_keeps_the_clean_key(artist: str, track: str) -> None:
    assert search_key(artist, track) == search_key(ARTIST, TITLE)


def test_every_name_the_seed_generator_writes_keeps_its_tracks_key() -> None:
    # Driven by the generator itself, so a noise form added there must be handled here.
    rng = np.random.default_rng(7)
    catalogue = seed._catalogue(rng, 200, now_ms=1_700_000_000_000, days=30)
    tracks = np.repeat(np.arange(200, dtype=np.int64), 20)
    artists, titles, _ = seed._noisy_names(rng, catalogue, tracks)

    for t, artist, title in zip(tracks.tolist(), artists, titles, strict=True):
        clean = search_key(
            catalogue.artist_names[catalogue.track_artist[t]], catalogue.track_titles[t]
        )
        assert search_key(artist, title) == clean, (artist, title)
    assert sum(a not in catalogue.artist_names for a in artists) > 0  # the noise was there


@pytest.mark.parametrize(
    "track",
    [
        pytest.param("Song (Remastered 2009)", id="bracketed-remastered-year"),
        pytest.param("Song [Remastered]", id="square-remastered"),
        pytest.param("Song - 2011 Remaster", id="dash-year-remaster"),
        pytest.param("Song (2011 Remaster)", id="bracketed-year-remaster"),
        pytest.param("Song - Digitally Remastered Version", id="dash-remastered-version"),
        pytest.param("Song (feat. X)", id="feat"),
        pytest.param("Song [feat. X]", id="square-feat"),
        pytest.param("Song (ft. X)", id="ft"),
        pytest.param("Song (featuring X, Y & Z)", id="featuring-several"),
        pytest.param("Song (with X)", id="with"),
        pytest.param("Song feat. X", id="bare-feat"),
        pytest.param("Song ft. X", id="bare-ft"),
        pytest.param("Song - feat. X", id="dash-feat"),
        pytest.param("  song  ", id="whitespace"),
    ],
)
def test_export_noise_in_titles_is_dropped(track: str) -> None:
    assert search_key("Artist", track) == SearchKey("artist", "song")


@pytest.mark.parametrize(
    "artist",
    [
        pytest.param("Beyonce feat. Jay-Z", id="feat"),
        pytest.param("Beyonce ft. Jay-Z", id="ft"),
        pytest.param("Beyonce featuring Jay-Z", id="featuring"),
        pytest.param("Beyonce (with Jay-Z)", id="bracketed-with"),
        pytest.param("Beyonc\u00e9", id="accented"),
    ],
)
def test_featured_artists_are_dropped(artist: str) -> None:
    assert search_key(artist, "Halo") == SearchKey("beyonce", "halo")


@pytest.mark.parametrize(
    ("artist", "track", "expected"),
    [
        pytest.param("Simon & Garfunkel", "Mrs. Robinson", "simon and garfunkel", id="ampersand"),
        pytest.param("Six Ft Under", "Song", "six ft under", id="ft-without-dot-is-a-word"),
    ],
)
def test_artist_names_that_only_look_like_credits_are_kept(
    artist: str, track: str, expected: str
) -> None:
    found = search_key(artist, track)
    assert found is not None
    assert found.artist == expected


@pytest.mark.parametrize(
    ("track", "expected"),
    [
        pytest.param("Stay With Me", "stay with me", id="bare-with-is-a-word"),
        pytest.param("A Feat of Clay", "a feat of clay", id="feat-without-dot-is-a-word"),
        pytest.param(
            "(I Can't Get No) Satisfaction", "i can t get no satisfaction", id="leading-bracket"
        ),
        pytest.param("Song - Live", "song live", id="dash-live"),
        pytest.param("Song (Live)", "song live", id="bracketed-live"),
        pytest.param("Song (Acoustic)", "song acoustic", id="acoustic"),
        pytest.param("Song - Radio Edit", "song radio edit", id="radio-edit"),
        pytest.param("Song (Live / Remastered 2009)", "song live", id="live-remastered"),
        pytest.param("Song - Live - 2011 Remaster", "song live", id="live-then-remaster"),
        pytest.param("Song feat. X (Live)", "song live", id="credit-before-version"),
    ],
)
def test_titles_keep_what_names_a_recording(track: str, expected: str) -> None:
    found = search_key("Artist", track)
    assert found is not None
    assert found.track == expected


def test_live_and_acoustic_versions_keep_distinct_keys() -> None:
    keys = {search_key(ARTIST, t) for t in [TITLE, f"{TITLE} (Live)", f"{TITLE} - Acoustic"]}
    assert len(keys) == 3


@pytest.mark.parametrize(
    ("artist", "track"),
    [
        pytest.param("", "Song", id="no-artist"),
        pytest.param("Artist", "", id="no-title"),
        pytest.param("   ", "Song", id="blank-artist"),
        pytest.param("Artist", "?!", id="punctuation-only"),
        pytest.param("Artist", "(Remastered)", id="only-a-remaster-note"),
        pytest.param("Artist", "(feat. X)", id="only-a-credit"),
    ],
)
def test_empty_names_have_no_key(artist: str, track: str) -> None:
    assert search_key(artist, track) is None


def test_the_key_text_joins_with_a_separator_normalize_never_keeps() -> None:
    found = key("Simon & Garfunkel", "The Boxer")
    assert found.text == "simon and garfunkel\x1fthe boxer"
    assert normalize("a\x1fb") == "a b"


@pytest.mark.parametrize(
    ("artist", "track", "query"),
    [
        pytest.param(
            "Beyonc\u00e9", "Halo", 'track:"Halo" artist:"Beyonc\u00e9"', id="case-accents"
        ),
        pytest.param(
            "Beyonc\u00e9 feat. JAY-Z",
            "Crazy in Love (feat. JAY-Z) - Remastered",
            'track:"Crazy in Love" artist:"Beyonc\u00e9"',
            id="credits-and-remaster-dropped",
        ),
        pytest.param(
            "David Bowie",
            "\u201cHeroes\u201d - 2017 Remaster",
            'track:"Heroes" artist:"David Bowie"',
            id="curly-double-quotes-removed",
        ),
        pytest.param(
            'The "Band"', 'Say "Hi"', 'track:"Say Hi" artist:"The Band"', id="quotes-removed"
        ),
        pytest.param(
            "Guns N\u2019 Roses",
            "Sweet Child O\u2019 Mine",
            'track:"Sweet Child O\' Mine" artist:"Guns N\' Roses"',
            id="curly-apostrophes-straightened",
        ),
        pytest.param(
            "Artist", "Song (Live)", 'track:"Song (Live)" artist:"Artist"', id="live-kept"
        ),
    ],
)
def test_search_query(artist: str, track: str, query: str) -> None:
    assert search_query(artist, track) == query


def test_a_query_with_nothing_to_search_is_refused() -> None:
    with pytest.raises(ValueError, match="nothing to search"):
        search_query("Artist", '""')


def test_an_exact_match_wins_wherever_it_is_in_the_list() -> None:
    live = candidate(f"{TITLE} - Live", ARTIST, id="live")
    exact = candidate(f"{TITLE} - Remastered 2011", ARTIST.upper(), id="exact")
    later = candidate(TITLE, ARTIST, id="later")

    match = choose_match(key(ARTIST, TITLE), [live, exact, later], DEFAULT_THRESHOLD)

    assert match is not None
    assert (match.candidate.id, match.score, match.exact) == ("exact", 1.0, True)


@pytest.mark.parametrize(
    ("artist", "artists"),
    [
        pytest.param("Simon & Garfunkel", ("Simon & Garfunkel",), id="one-artist-with-and"),
        pytest.param("Beyonce", ("Beyonc\u00e9", "JAY-Z"), id="one-of-its-artists"),
        pytest.param("Jay-Z & Kanye West", ("JAY-Z", "Kanye West"), id="all-joined-with-and"),
        pytest.param("Jay-Z, Kanye West", ("JAY-Z", "Kanye West"), id="all-joined-with-comma"),
    ],
)
def test_exact_artist_forms(artist: str, artists: tuple[str, ...]) -> None:
    match = choose_match(key(artist, "Song"), [candidate("Song", *artists)], DEFAULT_THRESHOLD)
    assert match is not None
    assert match.exact


# (export artist, export title, Spotify artist, Spotify title, score, found at the default).
SIMILARITY = [
    pytest.param(
        "Beatles", "Hey Jude", "The Beatles", "Hey Jude", 0.911, True, id="artist-missing-the"
    ),
    pytest.param(
        ARTIST, "Silent River", ARTIST, "The Silent River", 0.914, True, id="title-missing-the"
    ),
    pytest.param(
        "Guns N' Roses",
        "Patience",
        "Guns and Roses",
        "Patience",
        0.969,
        True,
        id="spelling-variant",
    ),
    pytest.param(
        "The Beatles",
        "Hey Jude",
        "The Beatles",
        "Hey Bulldog",
        0.779,
        False,
        id="different-song-same-artist",
    ),
    pytest.param(
        "The Beatles", "Help!", "The Beatles", "Help Me", 0.836, False, id="title-one-word-longer"
    ),
    pytest.param(
        "Queen",
        "Bohemian Rhapsody",
        "Queen",
        "Bohemian Rhapsody - Live Aid",
        0.4,
        False,
        id="live-version",
    ),
    pytest.param(
        "Queen",
        "Bohemian Rhapsody (Live)",
        "Queen",
        "Bohemian Rhapsody",
        0.4,
        False,
        id="studio-version-of-a-live-listen",
    ),
    pytest.param(
        "Artist",
        "Live and Let Die",
        "Artist",
        "Live and Let Die - Live",
        0.4,
        False,
        id="live-version-of-a-title-with-live",
    ),
    pytest.param(
        "Nirvana",
        "Come as You Are",
        "Nirvana",
        "Come as You Are - Acoustic",
        0.4,
        False,
        id="acoustic-version",
    ),
    pytest.param(
        "Pink Floyd",
        "Another Brick in the Wall, Pt. 1",
        "Pink Floyd",
        "Another Brick in the Wall, Pt. 2",
        0.4,
        False,
        id="different-part-number",
    ),
    pytest.param(
        "Velvet Harbor 12",
        TITLE,
        "Velvet Harbor 13",
        TITLE,
        0.6,
        False,
        id="different-artist-number",
    ),
]


@pytest.mark.parametrize(
    ("artist", "track", "their_artist", "their_track", "score", "found"), SIMILARITY
)
def test_similarity_against_the_default_threshold(
    artist: str, track: str, their_artist: str, their_track: str, score: float, found: bool
) -> None:
    only = candidate(their_track, their_artist)

    scored = choose_match(key(artist, track), [only], threshold=0.0)
    matched = choose_match(key(artist, track), [only], DEFAULT_THRESHOLD)

    assert scored is not None
    assert not scored.exact
    assert scored.score == pytest.approx(score, abs=1e-3)
    assert (matched is not None) is found


def test_the_threshold_is_inclusive() -> None:
    beatles = key("Beatles", "Hey Jude")
    only = candidate("Hey Jude", "The Beatles")
    scored = choose_match(beatles, [only], threshold=0.0)
    assert scored is not None

    assert choose_match(beatles, [only], threshold=scored.score) == scored
    assert choose_match(beatles, [only], threshold=scored.score + 1e-9) is None


def test_the_best_score_wins_over_spotifys_order() -> None:
    weaker = candidate("Hey Jude", "Beatles Tribute", id="weaker")
    stronger = candidate("Hey Jude", "The Beatles", id="stronger")

    match = choose_match(key("Beatles", "Hey Jude"), [weaker, stronger], threshold=0.0)

    assert match is not None
    assert match.candidate.id == "stronger"


def test_a_tie_goes_to_spotifys_order() -> None:
    first = candidate("Hey Jude", "The Beatles", id="first")
    second = candidate("Hey Jude", "The Beatles", id="second")

    match = choose_match(key("Beatles", "Hey Jude"), [first, second], DEFAULT_THRESHOLD)

    assert match is not None
    assert match.candidate.id == "first"


def test_no_candidates_is_not_found() -> None:
    assert choose_match(key(ARTIST, TITLE), [], DEFAULT_THRESHOLD) is None


def test_the_threshold_defaults_to_the_documented_one() -> None:
    help_me = [candidate("Help Me", "The Beatles")]  # scores 0.836

    assert choose_match(key("The Beatles", "Help!"), help_me) is None
    assert choose_match(key("The Beatles", "Help!"), help_me, threshold=0.83) is not None
