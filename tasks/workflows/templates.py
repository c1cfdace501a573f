"""Templates in actions: ``"{job.user_id}"`` is filled in from the change.

A placeholder names a field as conditions do (``new_status``, ``job.<column>``, a bare
column) or one of ``workflow_id``, ``execution_id``, ``change_id``, ``changed_at``, ``date`` (the
change's UTC date, 2026-11-25). A string that is one
placeholder and nothing else becomes the field's value with its type (``"{job.user_id}"``
gives the number 42, so a task's ``user_id: int`` gets an int); a placeholder inside other
text is written out as text. ``{{`` and ``}}`` are literal braces. Objects and lists are
filled in throughout, keys left as they are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import Any

from tasks.workflows.conditions import CHANGE_FIELDS, MISSING, field_path, lookup

EXECUTION_FIELDS = ("workflow_id", "execution_id", "change_id", "changed_at", "date")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


class TemplateError(ValueError):
    """A template names a field the change lacks (or an empty one); says which, and where."""


def _path(name: str) -> tuple[str, ...]:
    name = name.strip()
    return (name,) if name in EXECUTION_FIELDS else field_path(name)


def placeholders(template: Any) -> list[str]:
    """Every field name ``template`` refers to, in order."""
    if isinstance(template, str):
        return [m.group(1) for m in _PLACEHOLDER.finditer(template) if m.group(1) is not None]
    if isinstance(template, Mapping):
        return [name for value in template.values() for name in placeholders(value)]
    if isinstance(template, list):
        return [name for value in template for name in placeholders(value)]
    return []


def check(template: Any, where: str, columns: Collection[str] | None) -> None:
    """Refuse, when a workflow is saved, a placeholder no change of the source can fill."""
    for name in placeholders(template):
        parts = _path(name) if name.strip() else ()
        known = (len(parts) == 1 and parts[0] in (*CHANGE_FIELDS, *EXECUTION_FIELDS)) or (
            len(parts) == 2 and parts[0] == "job" and (columns is None or parts[1] in columns)
        )
        if not known:
            raise TemplateError(
                f"{where}: {{{name}}} names no field of the change; fields: "
                f"{', '.join((*CHANGE_FIELDS, *EXECUTION_FIELDS))}, job.<column>"
                + (f" with columns {', '.join(sorted(columns))}" if columns is not None else "")
            )


def render(template: Any, context: Mapping[str, Any], where: str = "template") -> Any:
    """``template`` with its placeholders filled from ``context`` (the trigger data)."""
    if isinstance(template, Mapping):
        return {key: render(value, context, f"{where}.{key}") for key, value in template.items()}
    if isinstance(template, list):
        return [render(value, context, f"{where}[{i}]") for i, value in enumerate(template)]
    if not isinstance(template, str):
        return template
    whole = _PLACEHOLDER.fullmatch(template)
    if whole is not None and whole.group(1) is not None:
        return _value(whole.group(1), context, where)

    def fill(match: re.Match[str]) -> str:
        if match.group(1) is None:
            return match.group(0)[0]
        value = _value(match.group(1), context, where)
        return value if isinstance(value, str) else json.dumps(value, default=str)

    return _PLACEHOLDER.sub(fill, template)


def _value(name: str, context: Mapping[str, Any], where: str) -> Any:
    value = lookup(context, _path(name))
    if value is MISSING:
        raise TemplateError(f"{where}: the change has no field {name.strip()!r}")
    return value
