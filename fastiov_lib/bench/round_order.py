"""The order a sweep runs its rounds in: variants and levels interleaved, shuffled with a recorded seed.

Running every round of one variant, then every round of the next, confounds the variant with
time: on a busy host whose load drifts, the variant that ran last gets the worse host. Here every
repeat is one block that holds each (variant, concurrency) cell once, in an order shuffled per
block (a randomised complete block design), so drift falls on every variant alike and
round-level statistics compare like with like. The seed is drawn per sweep unless given and is
recorded with the order, so the same order can be run again.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class PlannedRound:
    """One round of the plan: what it measures and its place in the order."""

    order_index: int
    variant: str
    concurrency: int
    repeat: int


def new_seed() -> int:
    """A fresh seed for one sweep's order (recorded with it)."""
    return secrets.randbits(31)


def plan_rounds(cells: Sequence[tuple[str, int]], repeats: int, seed: int | None) -> list[PlannedRound]:
    """Each repeat a block of every (variant, concurrency) cell in shuffled order; seed None keeps
    the cells in the order given, for callers that must not shuffle."""
    cells = [(str(v), int(c)) for v, c in cells]
    rng = np.random.default_rng(seed) if seed is not None else None
    out: list[PlannedRound] = []
    for rep in range(repeats):
        block = [cells[i] for i in rng.permutation(len(cells))] if rng is not None else cells
        out += [PlannedRound(len(out) + i, v, c, rep) for i, (v, c) in enumerate(block)]
    return out


def cells_of(variants: Sequence[str], concurrency: Sequence[int]) -> list[tuple[str, int]]:
    """Every variant at every level."""
    return [(str(v), int(c)) for v in variants for c in concurrency]


def order_record(experiment: str, plan: list[PlannedRound], seed: int | None, boot_group: str = "") -> dict:
    """The plan as run.json keeps it: experiment, seed, boot group and [variant, concurrency, repeat] per round."""
    return {"experiment": experiment, "seed": seed, "boot_group": boot_group,
            "design": "shuffled blocks (each repeat: every variant x level once)" if seed is not None else "as given",
            "rounds": [[r.variant, r.concurrency, r.repeat] for r in plan]}
