"""The conditions language: when a change fires a workflow.

A condition is a JSON object, either a leaf or a group:

- a leaf: ``{"field": F, "op": OP, "value": V}``. ``F`` names a field of the change:
  ``new_status``, ``old_status`` (null when the job was inserted), ``source``, ``job_id``,
  or ``job.<column>`` for any column of the job row as the change left it (a bare column
  name means the same). ``OP`` is one of
  - ``eq``, ``ne``: equal, not equal (null compares as a value: ``{"field":
    "old_status", "op": "eq", "value": null}`` holds for an inserted job);
  - ``in``, ``not_in``: ``V`` is a list;
  - ``lt``, ``lte``, ``gt``, ``gte``: both sides numbers, or both strings (ISO times
    compare as strings); anything else does not hold;
  - ``exists``: ``V`` is true (the field is present and not null) or false.
- a group: ``{"all": [...]}`` (every one holds; an empty list holds), ``{"any": [...]}``
  (at least one), ``{"not": {...}}``.

``validate`` names the first bad part by its path (``conditions.all[1].op: unknown
operator 'equals'; known: ...``) when a workflow is saved; ``evaluate`` is total on a
valid condition, and ``explain`` says for a dry run which leaves held.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

CHANGE_FIELDS = ("new_status", "old_status", "source", "job_id")
COMPARISONS = ("lt", "lte", "gt", "gte")
OPERATORS = ("eq", "ne", "in", "not_in", *COMPARISONS, "exists")
GROUPS = ("all", "any", "not")
MISSING = object()  # a field the change does not have


class ConditionError(ValueError):
    """A condition that is not valid; the message starts with the path of the bad part."""


def field_path(field: str) -> tuple[str, ...]:
    """``new_status`` -> ("new_status",); ``job.user_id`` and ``user_id`` -> ("job", "user_id")."""
    if field in CHANGE_FIELDS:
        return (field,)
    parts = tuple(field.split("."))
    return parts if parts[0] == "job" else ("job", *parts)


def lookup(change: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path`` in ``change``, or ``MISSING``."""
    value: Any = change
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value


def validate(  # noqa: PLR0912 (a branch per rule)
    condition: Any,
    path: str = "conditions",
    columns: Collection[str] | None = None,
    statuses: Collection[str] | None = None,
) -> None:
    """Raise ``ConditionError`` naming the first bad part. ``columns`` and ``statuses``,
    when given, are the source's: a field or a status value they lack is refused."""
    if not isinstance(condition, Mapping):
        raise ConditionError(f"{path}: must be an object, got {type(condition).__name__}")
    groups = [key for key in GROUPS if key in condition]
    if groups:
        if len(condition) != 1:
            raise ConditionError(
                f"{path}: a group has one key ({'/'.join(GROUPS)}), not {sorted(condition)}"
            )
        key = groups[0]
        inner = condition[key]
        if key == "not":
            validate(inner, f"{path}.not", columns, statuses)
            return
        if not isinstance(inner, list):
            raise ConditionError(f"{path}.{key}: must be a list of conditions")
        for index, item in enumerate(inner):
            validate(item, f"{path}.{key}[{index}]", columns, statuses)
        return
    extra = set(condition) - {"field", "op", "value"}
    if extra or "field" not in condition or "op" not in condition:
        raise ConditionError(
            f'{path}: a condition is {{"field", "op", "value"}} or a group '
            f"({', '.join(GROUPS)}); got keys {sorted(condition)}"
        )
    field, op = condition["field"], condition["op"]
    if not isinstance(field, str) or not field:
        raise ConditionError(f"{path}.field: must be a field name")
    parts = field_path(field)
    if columns is not None and parts[0] == "job" and (len(parts) != 2 or parts[1] not in columns):
        raise ConditionError(
            f"{path}.field: {field!r} is not a field of the change; fields: "
            f"{', '.join(CHANGE_FIELDS)}, job.<column> with columns {', '.join(sorted(columns))}"
        )
    if op not in OPERATORS:
        raise ConditionError(f"{path}.op: unknown operator {op!r}; known: {', '.join(OPERATORS)}")
    value = condition.get("value", MISSING)
    if value is MISSING:
        raise ConditionError(f"{path}.value: missing")
    if op in ("in", "not_in") and not isinstance(value, list):
        raise ConditionError(f"{path}.value: {op} takes a list")
    if op == "exists" and not isinstance(value, bool):
        raise ConditionError(f"{path}.value: exists takes true or false")
    if op in COMPARISONS and (isinstance(value, bool) or not isinstance(value, int | float | str)):
        raise ConditionError(f"{path}.value: {op} compares a number or a string")
    if statuses is not None and parts in (("new_status",), ("old_status",)):
        values = value if isinstance(value, list) else [value]
        unknown = [v for v in values if op != "exists" and v is not None and v not in statuses]
        if unknown:
            raise ConditionError(
                f"{path}.value: {unknown[0]!r} is not a status of this source; its statuses: "
                f"{', '.join(statuses)}"
            )


def evaluate(condition: Mapping[str, Any], change: Mapping[str, Any]) -> bool:
    """Whether a valid ``condition`` holds for ``change``."""
    if "all" in condition:
        return all(evaluate(item, change) for item in condition["all"])
    if "any" in condition:
        return any(evaluate(item, change) for item in condition["any"])
    if "not" in condition:
        return not evaluate(condition["not"], change)
    return _leaf(condition, change)


def _leaf(condition: Mapping[str, Any], change: Mapping[str, Any]) -> bool:  # noqa: PLR0911
    op, expected = condition["op"], condition["value"]
    actual = lookup(change, field_path(condition["field"]))
    if op == "exists":
        return (actual is not MISSING and actual is not None) is expected
    if actual is MISSING:
        actual = None
    if op == "eq":
        return bool(actual == expected)
    if op == "ne":
        return bool(actual != expected)
    if op == "in":
        return actual in expected
    if op == "not_in":
        return actual not in expected
    comparable = (isinstance(actual, str) and isinstance(expected, str)) or (
        _is_number(actual) and _is_number(expected)
    )
    if not comparable:
        return False
    if op == "lt":
        return bool(actual < expected)
    if op == "lte":
        return bool(actual <= expected)
    if op == "gt":
        return bool(actual > expected)
    return bool(actual >= expected)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def explain(
    condition: Mapping[str, Any], change: Mapping[str, Any], path: str = "conditions"
) -> list[dict[str, Any]]:
    """Every leaf with whether it held and the value it saw: the dry run's account."""
    for key in ("all", "any"):
        if key in condition:
            return [
                line
                for index, item in enumerate(condition[key])
                for line in explain(item, change, f"{path}.{key}[{index}]")
            ]
    if "not" in condition:
        return explain(condition["not"], change, f"{path}.not")
    actual = lookup(change, field_path(condition["field"]))
    return [
        {
            "path": path,
            "field": condition["field"],
            "op": condition["op"],
            "value": condition["value"],
            "actual": None if actual is MISSING else actual,
            "holds": _leaf(condition, change),
        }
    ]


def required_statuses(condition: Mapping[str, Any]) -> list[str] | None:
    """The new statuses ``condition`` can hold for, when a top-level leaf pins them
    (``new_status`` eq or in, alone or inside the top ``all``); None: any status."""
    leaves = condition.get("all", [condition]) if "all" in condition else [condition]
    allowed: set[str] | None = None
    for leaf in leaves:
        if not isinstance(leaf, Mapping) or field_path(str(leaf.get("field", ""))) != (
            "new_status",
        ):
            continue
        if leaf.get("op") == "eq" and isinstance(leaf.get("value"), str):
            values = {leaf["value"]}
        elif leaf.get("op") == "in":
            values = {v for v in leaf["value"] if isinstance(v, str)}
        else:
            continue
        allowed = values if allowed is None else allowed & values
    return None if allowed is None else sorted(allowed)
