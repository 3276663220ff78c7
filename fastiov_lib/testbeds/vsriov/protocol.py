"""The guest's result channel: `RESULT <kind> key=value ...` (or `{json}`) lines, parsed into typed records."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

_RESULT_RE = re.compile(r"^RESULT\s+([A-Za-z_][A-Za-z0-9_]*)(?:\s+(.*))?$")
_INT_RE = re.compile(r"^-?\d+$")
_FLOAT_RE = re.compile(r"^-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$")


@dataclass(frozen=True)
class GuestResult:
    """One measurement line from the guest: what it measured (numvfs, bind, vfio_open, ...) and fields."""

    measurement: str
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




_BLOCK_RE = re.compile(r"^VSRIOV (trace|timeline) (begin|end)=(\S+)(?:\s+file=(\S+))?")
_SAFE = re.compile(r"[^A-Za-z0-9_.+-]")


class BlockCollector:
    """The guest's raw blocks: kernel traces (`KTRACE` lines) and QEMU timeline logs (`TIMELINE` lines).

    Each block is written verbatim to `<dir>/<kind>-<label>[-<file>].txt` (the evidence) and, when
    it ends, summarised into records through `emit`: `ktrace_vfio` (per thread: device opens, their
    lock waits and locks, DMA maps) and `qemu_timeline` (per stage of the patched QEMU's timeline,
    parsed with the same parser as the real host's logs).
    """

    def __init__(self, out_dir: Path, emit: Callable[[dict[str, Any]], None]):
        self.out_dir = out_dir
        self.emit = emit
        self.block: str | None = None
        self.label = ""
        self.file = ""
        self.lines: list[str] = []

    def feed(self, line: str) -> bool:
        """Take the line if it belongs to a block (True), else leave it to the caller (False)."""
        m = _BLOCK_RE.match(line)
        if m and m.group(2) == "begin":
            self.block, self.label, self.file, self.lines = m.group(1), m.group(3), m.group(4) or "", []
            return True
        if m and self.block:
            self._close()
            return True
        if self.block == "trace" and line.startswith("KTRACE "):
            self.lines.append(line[7:])
            return True
        if self.block == "timeline" and line.startswith("TIMELINE "):
            self.lines.append(line[9:])
            return True
        return False

    def _close(self) -> None:
        kind, label, file, lines = self.block, self.label, self.file, self.lines
        self.block, self.lines = None, []
        self.out_dir.mkdir(parents=True, exist_ok=True)
        name = "-".join(_SAFE.sub("_", p) for p in (kind or "", label, file) if p) + ".txt"
        (self.out_dir / name).write_text("".join(ln + "\n" for ln in lines))
        if kind == "trace":
            from fastiov_lib.testbeds.vsriov.ktrace import summarize

            for thread in summarize(lines).values():
                if thread.opens or thread.dma_maps:
                    self.emit({"kind": "ktrace_vfio", "label": label, "trace_file": name, **thread.record()})
        else:
            from fastiov_lib.analysis.qemu_timeline import parse_timeline_lines, stages_from_markers

            markers, _report = parse_timeline_lines(lines, name)
            stages = stages_from_markers(markers, name)
            for row in stages.to_dict("records"):
                extra = json.loads(row["extra"]) if isinstance(row.get("extra"), str) else {}
                self.emit({"kind": "qemu_timeline", "label": label, "timeline_file": file, "pid": int(row["pid"]),
                           "stage": row["subject"], "region": row["record_id"] or None,
                           "elapsed_ns": int(row["elapsed_ns"]), "start_mono_ns": extra.get("start_mono_ns"),
                           "size_mb": extra.get("size_mb")})
