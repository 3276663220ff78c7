"""Turning what library calls return into the DataFrames a notebook shows."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import pandas as pd


def as_frame(obj: Any) -> pd.DataFrame:
    """A DataFrame from a DataFrame, records, a dataclass, a pydantic model or a dict."""
    if isinstance(obj, pd.DataFrame):
        return obj
    for attr in ("to_frame", "as_frame", "table"):
        fn = getattr(obj, attr, None)
        if callable(fn):
            return fn()
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    if isinstance(obj, dict):
        return pd.DataFrame([{k: (v if not isinstance(v, (list, dict)) else json.dumps(v, default=str))
                              for k, v in obj.items()}])
    if isinstance(obj, list):
        return pd.DataFrame([dataclasses.asdict(o) if dataclasses.is_dataclass(o) else o for o in obj])
    return pd.DataFrame([{"result": str(obj)}])


# Text columns are shown whole (claim statements, fixes, paths); wide tables wrap instead of
# dropping columns; long tables show up to 200 rows before pandas elides the middle.
DISPLAY_OPTIONS = {"display.max_colwidth": None, "display.max_columns": None, "display.width": 200,
                   "display.max_rows": 200}


def notebook_display_options() -> None:
    """Set the pandas display options the notebooks' tables are read with (no truncated text)."""
    for key, value in DISPLAY_OPTIONS.items():
        pd.set_option(key, value)


def explained(df: pd.DataFrame, why: str) -> pd.DataFrame:
    """The table, or when it is empty a one-row table saying why (instead of a bare header)."""
    return df if len(df) else pd.DataFrame([{"empty because": why}])
