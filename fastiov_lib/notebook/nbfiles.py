"""Committed notebooks as JupyterLab saves them, so opening and saving one changes outputs only."""
from __future__ import annotations

from pathlib import Path

import nbformat

# what ipykernel's kernelspec says, and so what JupyterLab writes back on save
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
# committed outputs never name a run id that is not committed with them
RUN_ID_MASK = "RUN-ID"


def normalise(nb: nbformat.NotebookNode, run_id: str | None = None) -> nbformat.NotebookNode:
    """Kernelspec and nbformat as JupyterLab writes them; `run_id` in outputs replaced by RUN-ID."""
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.nbformat, nb.nbformat_minor = 4, 5
    if run_id:
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                for key, value in list(out.get("data", {}).items()):
                    if isinstance(value, str):
                        out["data"][key] = value.replace(run_id, RUN_ID_MASK)
                if isinstance(out.get("text"), str):
                    out["text"] = out["text"].replace(run_id, RUN_ID_MASK)
    return nb


def write_normalised(path: Path, run_id: str | None = None) -> Path:
    """Rewrite a notebook file normalised (nbformat's writer: what JupyterLab itself uses)."""
    nb = nbformat.read(str(path), as_version=4)
    nbformat.write(normalise(nb, run_id), str(path))
    return Path(path)
