"""`adopt-outputs`: a run's executed notebooks become the committed expected outputs (nbval compares them).

Only outputs are adopted. Every executed notebook must say what the committed one says (cell types,
sources and tags, papermill's injected parameters aside) and must have run without an error; a
mismatch (an edit since the run, or a file of another notebook) and a committed notebook that is
missing are refused, naming the notebook and the first differing cell, before anything is written.
"""
from __future__ import annotations

import json
from pathlib import Path

import nbformat

from fastiov_lib import sh
from fastiov_lib.config import ConfigError
from fastiov_lib.notebook.nbfiles import normalise
from fastiov_lib.safe_files import FileRefused, atomic_write_text, read_regular_text

MAX_NOTEBOOK_BYTES = 64 << 20  # executed notebooks hold figures; the committed ones are a few MiB

Cell = tuple[str, str, tuple[str, ...]]


class AdoptRefused(ConfigError):
    """A run's notebooks cannot be adopted as they are; nothing was written."""


def _read(path: Path) -> nbformat.NotebookNode:
    try:
        return nbformat.reads(read_regular_text(path, MAX_NOTEBOOK_BYTES, "notebook"), as_version=4)
    except FileRefused as exc:
        raise AdoptRefused(f"{exc}; nothing was adopted") from None
    except Exception as exc:  # nbformat raises several kinds (NotJSONError, ValidationError, ...)
        raise AdoptRefused(f"{path}: not a readable notebook ({type(exc).__name__}: "
                           f"{' '.join(str(exc).split())[:200]}); nothing was adopted") from None


def _is_injected(cell: nbformat.NotebookNode) -> bool:
    return "injected-parameters" in cell.get("metadata", {}).get("tags", [])


def cells_of(nb: nbformat.NotebookNode) -> list[Cell]:
    """What a notebook says, cell by cell: type, source, tags (no outputs, counts or papermill cells)."""
    return [(str(c.cell_type), str(c.source), tuple(c.get("metadata", {}).get("tags", [])))
            for c in nb.cells if not _is_injected(c)]


def _first_difference(a: list[Cell], b: list[Cell]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            what = "type" if x[0] != y[0] else "source" if x[1] != y[1] else "tags"
            first = (y[1].strip().splitlines() or [""])[0][:60]
            return f"cell {i} ({what}; committed: {first!r})"
    return f"cell count ({len(a)} in the run, {len(b)} committed)"


def _committed_cells(target: Path) -> list[Cell] | None:
    """The notebook's cells as in git's HEAD (None: not in a git checkout, or not committed)."""
    try:
        top = sh.output(["git", "rev-parse", "--show-toplevel"], cwd=target.parent, what="git", timeout=20)
        rel = target.resolve().relative_to(Path(top).resolve())
        text = sh.output(["git", "show", f"HEAD:{rel.as_posix()}"], cwd=top, what="git", timeout=20)
        return cells_of(nbformat.reads(text, as_version=4))
    except (sh.CommandError, ValueError, json.JSONDecodeError, nbformat.reader.NotJSONError):
        return None


def _first_error(nb: nbformat.NotebookNode) -> str | None:
    for i, cell in enumerate(c for c in nb.cells if not _is_injected(c)):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"cell {i} ({out.get('ename')}: {' '.join(str(out.get('evalue', '')).split())[:100]})"
    return None


def check_adoptable(executed: Path, target: Path) -> nbformat.NotebookNode:
    """The executed notebook, when its outputs may replace `target`'s; AdoptRefused naming why not."""
    nb = _read(executed)
    if not target.is_file():
        raise AdoptRefused(f"{executed}: there is no committed notebook {target} to adopt it as; nothing was adopted")
    failed = _first_error(nb)
    if failed:
        raise AdoptRefused(f"{executed}: the run failed in {failed}; outputs of a failed notebook are not "
                           "adopted; nothing was adopted")
    ran, working = cells_of(nb), cells_of(_read(target))
    if ran != working:
        where = _first_difference(ran, working)
        head = _committed_cells(target)
        if head is not None and head != working:
            raise AdoptRefused(f"{target}: has uncommitted edits ({_first_difference(head, working)}) and differs "
                               f"from what the run executed at {where}; adopting would replace them: commit or "
                               "stash them and re-run; nothing was adopted")
        raise AdoptRefused(f"{executed}: does not match {target} at {where}: the run executed other code (an "
                           "older checkout, or another notebook's file); re-run it; nothing was adopted")
    return nb


def adopt_outputs(run_dir: Path, notebooks_dir: Path) -> list[Path]:
    """Copy a run's executed notebooks' outputs back as the committed expected outputs.

    Every notebook is checked before the first is written (check_adoptable); each is replaced
    atomically. Papermill's injected-parameters cell is dropped, so the committed notebooks keep
    their default parameters; outputs are kept as they came out of the real run.
    """
    executed = sorted((Path(run_dir) / "notebooks").glob("*.ipynb"))
    if not executed:
        raise AdoptRefused(f"{Path(run_dir) / 'notebooks'}: no executed notebooks; expected a run directory "
                           "made by `reproduce`")
    checked = [(path, check_adoptable(path, Path(notebooks_dir) / path.name)) for path in executed]
    adopted = []
    for path, nb in checked:
        nb.cells = [c for c in nb.cells if not _is_injected(c)]
        nb.metadata.pop("papermill", None)
        for cell in nb.cells:
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
        target = Path(notebooks_dir) / path.name
        # as JupyterLab would save it, and naming no run id that is not committed
        text = nbformat.writes(normalise(nb, run_id=Path(run_dir).name))
        atomic_write_text(target, text if text.endswith("\n") else text + "\n")
        adopted.append(target)
    return adopted
