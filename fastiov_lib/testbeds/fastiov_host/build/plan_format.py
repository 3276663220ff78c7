"""Build plan rows for people: a terminal listing and a per-component summary."""
from __future__ import annotations

from typing import Any


def format_build_plan(rows: list[dict[str, str]]) -> str:
    """The plan for a terminal: per component its source, pin and checksum status, then its steps."""
    lines: list[str] = []
    current = None
    for r in rows:
        if r["component"] != current:
            current = r["component"]
            lines.append(f"\n== {current}")
        check = f"  [{r['checksum']}]" if r["checksum"] else ""
        src = f"\n       source: {r['source']}  pin: {r['pin']}" if r["step"] == "fetch" else ""
        flag = "  (host change)" if r["host change"] else ""
        lines.append(f"  {r['step']:<9} {r['state']:<5}  {r['what']}{check}{flag}{src}")
    return "\n".join(lines).lstrip("\n")


def plan_summary(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Per component: number of steps and actions, host-changing actions, checksum statuses seen."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        c = out.setdefault(r["component"], {"component": r["component"], "steps": set(), "actions": 0,
                                            "host changes": 0, "checksums": set()})
        c["steps"].add(r["step"])
        c["actions"] += 1
        c["host changes"] += r["host change"] == "yes"
        if r["checksum"]:
            c["checksums"].add(r["checksum"])
    return [{**c, "steps": len(c["steps"]), "checksums": "; ".join(sorted(c["checksums"]))} for c in out.values()]
