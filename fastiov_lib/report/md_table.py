"""The one markdown-table helper of report.md and its sections."""
from __future__ import annotations

from typing import Any

import pandas as pd


def md_table(df: pd.DataFrame, floatfmt: str = ".1f") -> str:
    """A DataFrame as a GitHub markdown table (floats in `floatfmt`, NaN and None empty; "_(none)_" when empty)."""
    if df.empty:
        return "_(none)_\n"
    cols = list(df.columns)

    def cell(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return "" if pd.isna(v) else format(v, floatfmt)
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"
