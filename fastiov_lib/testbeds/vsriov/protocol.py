"""The guest's result channel: `RESULT <kind> key=value ...` (or `{json}`) lines, parsed into typed records."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_RESULT_RE = re.compile(r"^RESULT\s+([A-Za-z_][A-Za-z0-9_]*)(?:\s+(.*))?$")
_INT_RE = re.compile(r"^-?\d+$")
_FLOAT_RE = re.compile(r"^-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$")


@dataclass(frozen=True)
class GuestResult:
    """One measurement line from the guest: its kind (numvfs, bind, vfio_open, ...) and fields."""

    kind: str
    fields: dict[str, Any]


class ResultParseError(ValueError):
    """A line that starts with RESULT but is malformed."""


def _typed(value: str) -> Any:
    if _INT_RE.match(value):
        return int(value)
    if _FLOAT_RE.match(value):
        return float(value)
    return value


def parse_result_line(line: str) -> GuestResult | None:
    """Parse one line of the guest's result channel.

    Returns None for lines that are not results (progress markers, program output); raises
    ResultParseError for a RESULT line whose fields are not `key=value` pairs or valid JSON.
    """
    line = line.strip().replace("\r", "")
    match = _RESULT_RE.match(line)
    if not match:
        if line == "RESULT" or line.startswith(("RESULT ", "RESULT\t")):
            raise ResultParseError(f"not a RESULT line of the form 'RESULT <kind> key=value ...': {line!r}")
        return None
    kind, rest = match.group(1), (match.group(2) or "").strip()
    if rest.startswith("{"):
        try:
            obj = json.loads(rest)
        except json.JSONDecodeError as exc:
            raise ResultParseError(f"RESULT {kind}: invalid JSON ({exc.msg}): {rest[:120]!r}") from None
        if not isinstance(obj, dict):
            raise ResultParseError(f"RESULT {kind}: expected a JSON object, got {type(obj).__name__}")
        return GuestResult(kind, obj)
    fields: dict[str, Any] = {}
    for token in rest.split():
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise ResultParseError(f"RESULT {kind}: field {token!r} is not key=value")
        fields[key] = _typed(value)
    return GuestResult(kind, fields)


