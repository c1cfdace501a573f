"""Declared types and bounds of public task arguments, checked before a task body runs.

Other services send our tasks by name with whatever JSON they like. Unchecked, a wrong
type reached SQL and came back as a DataError quoting the statement, ``track_id=None``
made a ledger row with no track, ``background_task_id=-7`` recorded a success that did
nothing, and a 10 MB string was stored whole. So each public task annotates its
parameters with the types below, and the base task calls ``validate_arguments`` first.

The check is strict (no coercion: ``"5"`` and ``True`` are not ids), so the body gets
exactly the values that passed. A failure is an ``InvalidArgumentsError``, a permanent
error: it fails once, is never retried, and its one-line message names every bad argument
and shows at most a short excerpt of each value.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import json
import reprlib
import types
from collections.abc import Callable, Sized
from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,
    Required,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    with_config,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from typing_extensions import TypedDict  # pydantic refuses typing's before Python 3.12

from worker.errors import InvalidArgumentsError

# -- the types --------------------------------------------------------------------------------

MAX_ID = 2**63 - 1  # every id column is a PostgreSQL bigint, identity starting at 1

Id = Annotated[
    int, Field(strict=True, ge=1, le=MAX_ID, description="an integer between 1 and 2**63-1")
]
OptionalId = Id | None

# Spelled out, as a type checker needs a Literal's values; a unit test checks
# them against the kinds the playlists family generates (db.models.PLAYLIST_TYPES, which
# this module does not import: it sits below the database layer).
PlaylistKind = Literal["daily_mix", "discovery_weekly", "new_for_you", "forgotten_favorites"]
PLAYLIST_KINDS: tuple[str, ...] = get_args(PlaylistKind)
PlaylistType = Annotated[PlaylistKind, Field(description=f"one of {', '.join(PLAYLIST_KINDS)}")]


def _distinct(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError("has repeated values")
    return values


PlaylistKinds = Annotated[
    list[PlaylistKind],
    Field(
        min_length=1,
        max_length=len(PLAYLIST_KINDS),
        description=f"a list of 1 to {len(PLAYLIST_KINDS)} distinct playlist types",
    ),
    AfterValidator(_distinct),
]

# Task names and trigger aliases are under 50 characters; 200 leaves room, and refuses
# a payload posing as a name.
ShortName = Annotated[
    str,
    Field(strict=True, min_length=1, max_length=200, description="a string of 1 to 200 characters"),
]

# Keyword arguments forwarded to other tasks are a few ids and flags. 64 KiB is far more,
# and still a small message for Redis and for the run history that records it.
MAX_JSON_OBJECT_BYTES = 64 * 1024


def _small_json(value: dict[str, Any]) -> dict[str, Any]:
    try:
        encoded = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        raise ValueError("is not JSON") from None
    if len(encoded.encode()) > MAX_JSON_OBJECT_BYTES:
        raise ValueError("is too large")
    return value


JsonObject = Annotated[
    dict[str, Any],
    AfterValidator(_small_json),
    Field(description="a JSON object of at most 64 KiB"),
]


def _aware_iso(value: str) -> str:
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        raise ValueError("has no time zone")
    return value


# The longest ISO 8601 form, with microseconds and an offset, is 32 characters.
AwareIsoDatetime = Annotated[
    str,
    Field(
        strict=True,
        max_length=64,
        description="an ISO 8601 date-time with a time zone (at most 64 characters)",
    ),
    AfterValidator(_aware_iso),
]

# The same bounds as ENRICHMENT_BATCH_SIZE (worker/settings.py): a step asks Spotify about
# that many songs within one run's time budget.
BatchSize = Annotated[
    int, Field(strict=True, ge=1, le=10_000, description="an integer between 1 and 10000")
]

Count = Annotated[int, Field(strict=True, ge=0)]
# One chunk's counts: the playlist types and cold starts, a handful of short keys.
ChunkCounts = Annotated[dict[Annotated[str, Field(max_length=64)], Count], Field(max_length=16)]
# A chord of generate_chunk results: 1000 users a chunk (CHUNK_USERS), so 100 000 chunks
# are 100 million active users, more than the platform has.
ChunkResults = Annotated[
    list[ChunkCounts],
    Field(max_length=100_000, description="a list of at most 100000 objects of counts"),
]

# -- the check -------------------------------------------------------------------------------

SHOWN_CHARS = 80  # of a bad value, in a message
MAX_MESSAGE_CHARS = 500

_short = reprlib.Repr()
_short.maxstring = _short.maxother = _short.maxlong = SHOWN_CHARS
_short.maxlevel = 3


def shown(value: Any) -> str:
    """``repr(value)`` cut to about SHOWN_CHARS characters, noting the full length if cut.

    Never builds the whole repr of a large value: a 10 MB argument costs no more here
    than a short one.
    """
    if isinstance(value, str | bytes):
        text = repr(value[:SHOWN_CHARS])
        cut = len(value) > SHOWN_CHARS
        unit = "characters" if isinstance(value, str) else "bytes"
    else:
        text, cut, unit = _short.repr(value), False, "items"
    if len(text) > SHOWN_CHARS:
        text, cut = text[:SHOWN_CHARS], True
    if not cut:
        return text
    if not isinstance(value, Sized):
        return f"{text}…"
    return f"{text}… ({len(value)} {unit if len(value) != 1 else unit[:-1]})"


class _Checker:
    """One function's argument check, built once: the signature's shape and a validator."""

    def __init__(self, fn: Callable[..., Any], skip_first: bool) -> None:
        hints = get_type_hints(fn, include_extras=True)
        parameters = list(inspect.signature(fn).parameters.values())[1 if skip_first else 0 :]
        # *args and **kwargs take anything, unchecked: only Celery's own tasks have them
        # (a unit test keeps them out of public tasks).
        self.more_args = any(p.kind == p.VAR_POSITIONAL for p in parameters)
        self.more_kwargs = any(p.kind == p.VAR_KEYWORD for p in parameters)
        named = [p for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        fields: dict[str, Any] = {}
        self.descriptions: dict[str, str] = {}
        for parameter in named:
            annotation = hints.get(parameter.name, Any)
            required = parameter.default is parameter.empty
            # Defaults are ours, not the sender's: an absent argument is not checked.
            fields[parameter.name] = Required[annotation] if required else NotRequired[annotation]
            if (description := _description(annotation)) is not None:
                self.descriptions[parameter.name] = description
        self.order = {p.name: index for index, p in enumerate(named)}
        self.positional = tuple(
            p.name for p in named if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        )
        self.keywords = frozenset(p.name for p in named if p.kind != p.POSITIONAL_ONLY)
        # A TypedDict, not a model: parameter names cannot clash with BaseModel's own.
        arguments = TypedDict(f"{fn.__qualname__}.arguments", fields)  # type: ignore[misc]
        self.adapter = TypeAdapter(with_config(ConfigDict(strict=True))(arguments))

    def problems(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
        found: list[str] = []
        if len(args) > len(self.positional) and not self.more_args:
            found.append(
                f"takes at most {len(self.positional)} positional arguments (got {len(args)})"
            )
        values = dict(zip(self.positional, args, strict=False))
        for name, value in kwargs.items():
            if name in values:
                found.append(f"argument {name}: given both by position and by name")
            elif name in self.keywords:
                values[name] = value
            elif not self.more_kwargs:
                found.append(f"unexpected argument {shown(name)}")
        try:
            self.adapter.validate_python(values)
        except ValidationError as exc:
            found.extend(self._explain(exc.errors(include_url=False, include_context=False)))
        return found

    def _explain(self, errors: list[ErrorDetails]) -> list[str]:
        # One line an argument (its first error), in the order of the signature.
        first: dict[str, tuple[ErrorDetails, int]] = {}
        for error in errors:
            name = str(error["loc"][0])
            earlier, more = first.get(name, (error, -1))
            first[name] = (earlier, more + 1)
        lines = []
        for name, (error, more) in sorted(first.items(), key=lambda item: self.order[item[0]]):
            line = self._explain_one(name, error)
            lines.append(f"{line}, and {more} more in {name}" if more else line)
        return lines

    def _explain_one(self, name: str, error: ErrorDetails) -> str:
        if error["type"] == "missing":
            return f"argument {name}: missing"
        inner = error["loc"][1:]
        # A dict key's own error ends its location with the marker "[key]".
        is_key = inner[-1:] == ("[key]",)
        where = name + "".join(f"[{shown(part)}]" for part in inner[: -2 if is_key else None])
        if is_key:
            where += f", key {shown(inner[-2])}"
        if not inner and name in self.descriptions:
            what = f"must be {self.descriptions[name]}"
        else:
            message = error["msg"].removeprefix("Value error, ")
            what = message[:1].lower() + message[1:]
        return f"argument {where}: {what} (got {shown(error['input'])})"


def _description(annotation: Any) -> str | None:
    """What ``annotation`` accepts in words, when one of our types says (None: it does not)."""
    if get_origin(annotation) is Annotated:
        for metadata in reversed(annotation.__metadata__):
            if isinstance(metadata, FieldInfo) and metadata.description:
                return metadata.description
        return _description(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1 and (inner := _description(members[0])) is not None:
            return f"{inner}, or null"
    return None


@functools.cache
def _checker(fn: Callable[..., Any], skip_first: bool) -> _Checker:
    return _Checker(fn, skip_first)


def validate_arguments(
    task_name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """Raise InvalidArgumentsError unless ``fn(*args, **kwargs)`` fits ``fn``'s annotations.

    ``fn`` is a task's ``run``: for a ``bind=True`` task a method bound to the task, whose
    ``self`` is skipped. The check is built on first use and cached per function.
    """
    checker = _checker(fn.__func__, True) if inspect.ismethod(fn) else _checker(fn, False)
    problems = checker.problems(tuple(args), kwargs)
    if problems:
        message = f"{task_name}: {'; '.join(problems)}"
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 1] + "…"
        raise InvalidArgumentsError(message)
