"""Any JSONL records file of a run directory (nic.jsonl, variants.jsonl, ...) as a DataFrame."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from fastiov_lib.run.rundir import read_jsonl


def records_frame(path: Path, first: list[str]) -> pd.DataFrame:
    """The records of a JSONL file as a DataFrame, the `first` columns leading (empty: just those columns)."""
    records, _ = read_jsonl(Path(path))
    df = pd.DataFrame(records)
    if not len(df):
        return pd.DataFrame(columns=first)
    return df[[c for c in first if c in df] + [c for c in df if c not in first]]
