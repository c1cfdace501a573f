"""Matching exported listens to Spotify tracks: the cache key, the query and the rule.

Exports write the same song many ways ("Beyonce" / "Beyoncé", "Song - Remastered 2011",
"Song (feat. Guest)", "ARTIST feat. Guest"), and each distinct song must be searched once
ever. So every listen is reduced to a :class:`SearchKey`: the primary artist and the
title, with featured credits and remaster notes dropped, through :func:`normalize`.
Qualifiers that name a different recording ("(Live)", "- Acoustic", "- Radio Edit") are
kept. The key's :attr:`SearchKey.text` is the unique cache column, so **changing
normalize() or the cleaning rules orphans every cached key**: the same song would get a
new key and be searched again. Such a change needs a migration that recomputes the keys.

The match rule, over the candidates of one search answer, in Spotify's order:

1. **Exact.** The candidate's title, cleaned and normalized like an export's, equals
   ``key.track``, and ``key.artist`` equals the normalized name of one of its artists,
   or of all of them joined ("A & B" or "A, B": an export may credit a collaboration as
   Spotify lists it). The first exact candidate wins, wherever it is in the list
   (score 1.0, ``exact=True``): an exact name beats Spotify's relevance order.
2. **Similarity.** Otherwise ``score = 0.6 * title + 0.4 * artist``, each a
   ``difflib.SequenceMatcher`` ratio over the normalized strings (artist: the best over
   the candidate's artists and their joined forms). A ratio is 0 when the two strings
   disagree on a *distinguishing token*: a number ("Part 1" / "Part 2", "Artist 12" /
   "Artist 13") or a version word such as live, acoustic, remix, edit (counted, so
   "Live and Let Die" is not "Live and Let Die - Live"). Character similarity alone
   cannot tell those apart: "bohemian rhapsody" vs "bohemian rhapsody live" is 0.87.
   The best score wins if it is at least the threshold (ties: Spotify's order);
   otherwise nothing matches (not found).

The title carries more weight than the artist because a search already filtered on the
artist; a near title under the right artist is the usual export noise.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

# Examples from tests/unit/test_matching.py, all with the other name equal:
#   "The Beatles" vs "Beatles" (artist 0.78)             -> 0.91  matches
#   "The Silent River" vs "Silent River" (title 0.86)    -> 0.91  matches
#   "Guns N' Roses" vs "Guns and Roses" (artist 0.92)    -> 0.97  matches
#   "Hey Jude" vs "Hey Bulldog", same artist (title 0.63) -> 0.78  not matched
#   "Help" vs "Help Me", same artist (title 0.73)        -> 0.84  not matched
# A title ratio of 0.75 (0.85 with the artist exact) is where one-word differences
# start to read as spelling, so 0.85 sits between the two groups. Live, acoustic and
# numbered variants never reach it: their title ratio is 0 (distinguishing tokens).
# The price: titles one short word apart under the same artist can still pass ("The
# Silent River" / "The Silent Rain", 0.90), and a missing "The" on a short name fails
# ("The Who" / "Who", 0.84). Above 0.91 the "Beatles" spelling would be lost instead.
DEFAULT_THRESHOLD = 0.85
TITLE_WEIGHT = 0.6
ARTIST_WEIGHT = 0.4

# Words that name a different recording of the same song. Counted per string, so a
# title that contains one ("Live Forever") still equals itself.
VERSION_WORDS = frozenset(
    {
        "acapella",
        "acoustic",
        "cappella",
        "demo",
        "edit",
        "instrumental",
        "karaoke",
        "live",
        "mix",
        "orchestral",
        "rehearsal",
        "remix",
        "remixed",
        "reprise",
        "unplugged",
    }
)

_QUOTES = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',
    }
)
_DASH = "[-\u2010\u2012\u2013\u2014\u2015]"
# "(...)" or "[...]", with the whitespace before it so removing it leaves no gap.
_BRACKETED = re.compile(r"(\s*)([(\[])([^()\[\]]*)([)\]])")
# The last " - Qualifier" of a title (a spaced dash: "Jay-Z" is not one).
_DASH_SUFFIX = re.compile(rf"\s+{_DASH}\s+((?:(?!\s{_DASH}\s).)*)$")
_QUALIFIER_PARTS = re.compile(rf"\s*[/;]\s*|\s+{_DASH}\s+")
# Inside brackets a credit is unambiguous, so "ft" needs no dot and "with" counts.
_BRACKET_CREDIT = re.compile(r"\s*(?:feat(?:uring)?|ft|with)(?:\.\s*|\s+)", re.IGNORECASE)
# Bare credits need the dot ("feat." not "Feat of Clay") or the full word "featuring".
_BARE_CREDIT = r"(?:(?:feat|ft)\.|featuring\s)"
_BARE_CREDIT_START = re.compile(rf"\s*{_BARE_CREDIT}", re.IGNORECASE)
# Up to a bracket or a dash qualifier: "Song feat. B (Live)" keeps "(Live)".
_TITLE_CREDIT = re.compile(
    rf"\s+{_BARE_CREDIT}.*?(?=\s+{_DASH}\s|\s*[(\[]|$)", re.IGNORECASE | re.DOTALL
)
_ARTIST_CREDIT = re.compile(rf"\s+{_BARE_CREDIT}.*$", re.IGNORECASE | re.DOTALL)
_REMASTER_WORDS = frozenset(
    {"album", "digital", "digitally", "edition", "remaster", "remastered", "version"}
)


def normalize(text: str) -> str:
    """The comparable form of a name: the cache key is built from it.

    NFKC, casefold, accents stripped, curly quotes straightened, "&" as "and", every run
    of other characters than letters and digits one space, trimmed. Accents are
    stripped only from Latin and Greek letters: elsewhere the marks are letters' parts
    (Devanagari vowel signs, kana voicing), and dropping them would merge different
    words. Invisible format characters (zero-width spaces, joiners) are dropped.

    Changing this function orphans every cached key (see the module docstring).
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    folded = folded.translate(_QUOTES).replace("&", " and ")
    out: list[str] = []
    keep_marks = False
    for ch in unicodedata.normalize("NFKD", folded):
        category = unicodedata.category(ch)
        if category[0] == "M":
            if keep_marks:
                out.append(ch)
            continue
        if category == "Cf":
            continue
        is_word = category[0] in "LN"
        keep_marks = is_word and not _accents_are_decoration(ch)
        out.append(ch if is_word else " ")
    return " ".join(unicodedata.normalize("NFC", "".join(out)).split())


def _accents_are_decoration(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith(("LATIN", "GREEK"))


@dataclass(frozen=True)
class SearchKey:
    artist: str  # normalized primary artist (featured credits dropped)
    track: str  # normalized title (credits and remaster notes dropped; versions kept)

    @property
    def text(self) -> str:
        """One string for a unique column; U+001F (unit separator) never survives normalize."""
        return f"{self.artist}\x1f{self.track}"


@dataclass(frozen=True)
class Candidate:
    id: str
    name: str
    artist_names: tuple[str, ...]


@dataclass(frozen=True)
class Match:
    candidate: Candidate
    score: float
    exact: bool


def search_key(artist_name: str, track_name: str) -> SearchKey | None:
    """The cache key of a listen; None when the artist or the title cleans to nothing."""
    artist = normalize(_clean_artist(artist_name))
    track = normalize(_clean_title(track_name))
    if not artist or not track:
        return None
    return SearchKey(artist, track)


def search_query(artist_name: str, track_name: str) -> str:
    """The q= of a Spotify search, e.g. ``track:"Halo" artist:"Beyoncé"``.

    Names are cleaned like the key's (credits, remaster notes) but keep their case and
    accents: Spotify's search folds those itself. Double quotes would end the field, so
    they are removed. Raises ValueError when there is nothing to search (the cases where
    search_key() returns None).
    """
    artist = _unquoted(_clean_artist(artist_name))
    track = _unquoted(_clean_title(track_name))
    if not normalize(artist) or not normalize(track):
        raise ValueError(f"nothing to search for {artist_name!r} / {track_name!r}")
    return f'track:"{track}" artist:"{artist}"'


def choose_match(
    key: SearchKey, candidates: Sequence[Candidate], threshold: float = DEFAULT_THRESHOLD
) -> Match | None:
    """The candidate the rule in the module docstring picks, or None (not found)."""
    for candidate in candidates:
        if _is_exact(key, candidate):
            return Match(candidate, 1.0, exact=True)
    best: Match | None = None
    for candidate in candidates:
        score = _score(key, candidate)
        if score >= threshold and (best is None or score > best.score):
            best = Match(candidate, score, exact=False)
    return best


def _is_exact(key: SearchKey, candidate: Candidate) -> bool:
    title = normalize(_clean_title(candidate.name))
    return title == key.track and key.artist in _artist_forms(candidate)


def _score(key: SearchKey, candidate: Candidate) -> float:
    title = _similarity(key.track, normalize(_clean_title(candidate.name)))
    artist = max((_similarity(key.artist, form) for form in _artist_forms(candidate)), default=0.0)
    return TITLE_WEIGHT * title + ARTIST_WEIGHT * artist


def _artist_forms(candidate: Candidate) -> set[str]:
    names = [_clean_artist(name) for name in candidate.artist_names]
    forms = {normalize(name) for name in names}
    if len(names) > 1:
        forms |= {normalize(" & ".join(names)), normalize(", ".join(names))}
    forms.discard("")
    return forms


def _similarity(a: str, b: str) -> float:
    if _distinguishing(a.split()) != _distinguishing(b.split()):
        return 0.0
    return SequenceMatcher(None, a, b).ratio()


def _distinguishing(tokens: Iterable[str]) -> Counter[str]:
    return Counter(t for t in tokens if t.isdigit() or t in VERSION_WORDS)


def _tidy(name: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", name).translate(_QUOTES).split())


def _unquoted(name: str) -> str:
    return " ".join(name.replace('"', " ").split())


def _clean_artist(name: str) -> str:
    """The primary artist: "A feat. B", "A ft. B", "A featuring B", "A (with B)" -> "A".

    "&" and "and" stay: "Simon & Garfunkel" is one artist.
    """
    name = _BRACKETED.sub(_bracket_without_remaster_or_credit, _tidy(name))
    return _ARTIST_CREDIT.sub("", name).strip()


def _clean_title(name: str) -> str:
    """The title without featured credits and remaster notes, other qualifiers kept.

    "Song (feat. B)", "Song [ft. B]", "Song feat. B", "Song - Remastered 2011",
    "Song (2011 Remaster)", "Song [Remastered]" -> "Song";
    "Song (Live / Remastered 2009)" -> "Song (Live)"; "Song - Radio Edit" unchanged.
    """
    name = _BRACKETED.sub(_bracket_without_remaster_or_credit, _tidy(name))
    while suffix := _DASH_SUFFIX.search(name):
        kept = _qualifier(suffix[1], credit=_BARE_CREDIT_START)
        if kept:
            name = f"{name[: suffix.start()]} - {kept}"
            break
        name = name[: suffix.start()]
    return _TITLE_CREDIT.sub("", name).strip()


def _bracket_without_remaster_or_credit(bracket: re.Match[str]) -> str:
    space, opening, content, closing = bracket.groups()
    kept = _qualifier(content, credit=_BRACKET_CREDIT)
    if not kept:
        return ""
    if kept == content:
        return bracket[0]
    return f"{space}{opening}{kept}{closing}"


def _qualifier(content: str, credit: re.Pattern[str]) -> str:
    """What is left of a qualifier once its credit or remaster parts are gone."""
    if credit.match(content):
        return ""
    parts = _QUALIFIER_PARTS.split(content.strip())
    kept = [p for p in parts if p and not _is_remaster(p)]
    return content if len(kept) == len(parts) else " / ".join(kept)


def _is_remaster(part: str) -> bool:
    # Only remaster words and years: "Remastered 2009", "2011 Remaster", "Digitally
    # Remastered Version". "Remastered Live" is kept whole rather than guessed at.
    words = re.findall(r"\w+", part.casefold())
    return any(w.startswith("remaster") for w in words) and all(
        w in _REMASTER_WORDS or (w.isdigit() and len(w) == 4) for w in words
    )
