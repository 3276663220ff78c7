"""Notebook parameters: the names and types a notebook's `parameters` cell declares, checked before a
run starts (papermill itself only warns about an unknown name and passes any type on).

A parameter's type is its default's: the cell holds literals only (`new_run = False`), so a value of
another type (`-p new_run=maybe`, `-p testbed_path=42`) is refused as the command line refuses
`--repeats x`, naming the notebook, the parameter and the value, before a run directory exists.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import papermill

from fastiov_lib.config import ConfigError


class UnknownParameter(ConfigError):
    """A parameter was passed that the notebook's `parameters` cell does not declare."""


class ParameterTypeError(ConfigError):
    """A parameter's value is not of the type the notebook's `parameters` cell gives it."""


_WORDS = {bool: "True or False (YAML: true/false)", int: "an integer", float: "a number", str: "text",
          list: "a list", dict: "a mapping"}


def declared_parameters(path: Path) -> dict[str, Any]:
    """The names (and inferred types/defaults) in the notebook's cell tagged `parameters`."""
    return papermill.inspect_notebook(str(path))


def declared_type(default_source: str) -> type | None:
    """The type of a parameter's default literal (None: no literal, or None itself: any value)."""
    try:
        value = ast.literal_eval(default_source)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return None if value is None else type(value)


def type_problem(name: str, value: Any, expected: type | None) -> str | None:
    """Why `value` does not fit a parameter of type `expected` (None when it fits)."""
    if expected is None or value is None:
        return None
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return None  # 5 is a number of seconds as much as 5.0
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return None
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:60] + "..."
    hint = f"; quote it: -p '{name}=\"{value}\"'" if expected is str and isinstance(value, (int, float, bool)) else ""
    return f"expected {_WORDS.get(expected, expected.__name__)}, got {shown} ({type(value).__name__}){hint}"


def check_parameters(path: Path, parameters: dict[str, Any], declared: dict[str, Any] | None = None) -> None:
    """Refuse parameters a notebook does not declare, or of another type than its default's."""
    declared = declared_parameters(path) if declared is None else declared
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise UnknownParameter(
            f"{path.name}: parameter(s) {', '.join(unknown)} not declared in its 'parameters' cell "
            f"(declared: {', '.join(sorted(declared)) or 'none'})"
        )
    for name, value in parameters.items():
        problem = type_problem(name, value, declared_type(str(declared[name].get("default", ""))))
        if problem:
            raise ParameterTypeError(f"{path.name}: parameter {name!r}: {problem}")


def require_types(**values: tuple[Any, type]) -> None:
    """For the library calls a notebook makes with its parameters (a JupyterLab user edits the cell
    by hand): ParameterTypeError unless each value is of its type, e.g. `new_run=(new_run, bool)`."""
    for name, (value, expected) in values.items():
        problem = type_problem(name, value, expected)
        if problem:
            raise ParameterTypeError(f"parameter {name!r}: {problem}")
