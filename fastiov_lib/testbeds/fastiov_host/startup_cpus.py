"""Kata's overhead threads on CPUs 0..N-1: the effect of the original's `set_startup_cpu.sh N`.

With `sandbox_cgroup_only = false` (the original's setting) kata 3 puts everything of a pod that is
not the guest's vCPUs (the shim, QEMU's I/O threads while the VM starts) into the `kata_overhead`
cgroup. The original's script wrote `0-(N-1)` to that cgroup's `cpuset.cpus` (cgroup v1), so pod
start-up ran on the first N CPUs and the app test's containers, pinned from CPU 12 on, kept theirs.
`fastiov.startup_cpus: N` does the same on cgroup v1 or v2 as a step of the run set-up (planned,
shown, idempotent, the old value recorded); null leaves the cgroup alone.
"""
from __future__ import annotations

from pathlib import Path

from fastiov_lib.hw.host_steps import Action, Step

OVERHEAD_CGROUP = "kata_overhead"


def _under(root: Path, path: str) -> Path:
    return Path(root) / path.lstrip("/")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def cgroup_layout(root: Path) -> str:
    """'v2' (unified), 'v1' (a cpuset hierarchy) or 'none', read below `root`."""
    base = _under(root, "sys/fs/cgroup")
    if (base / "cgroup.controllers").is_file():
        return "v2"
    if (base / "cpuset").is_dir():
        return "v1"
    return "none"


def cpu_range(n: int) -> str:
    """cpuset syntax for CPUs 0..n-1."""
    return "0" if n == 1 else f"0-{n - 1}"


def startup_cpus_step(root: Path, n: int) -> Step:
    """The writes that confine kata's overhead cgroup to CPUs 0..n-1 (cgroup v1 or v2)."""
    layout = cgroup_layout(root)
    if layout == "none":
        raise RuntimeError(f"{_under(root, 'sys/fs/cgroup')}: neither cgroup v2 nor a v1 cpuset hierarchy; "
                           "cannot confine kata's overhead to fastiov.startup_cpus CPUs")
    base = _under(root, "sys/fs/cgroup") / ("cpuset" if layout == "v1" else "")
    group = base / OVERHEAD_CGROUP
    cpus = cpu_range(n)
    why = f"kata's overhead (shim, QEMU threads) on CPUs {cpus}, as the original's set_startup_cpu.sh {n}"
    actions = [Action("mkdir", str(group), "", f"the cgroup kata puts pod overhead in ({layout})",
                      perform=lambda: group.mkdir(exist_ok=True), is_done=group.is_dir)]
    if layout == "v2":
        control = base / "cgroup.subtree_control"
        actions.insert(0, Action("write", str(control), "+cpuset", "cpuset files appear in child cgroups",
                                 perform=lambda: control.write_text("+cpuset"),
                                 is_done=lambda: "cpuset" in (w.lstrip("+") for w in _read(control).split())))
    else:  # a v1 cpuset takes no CPUs before it has memory nodes (copied from its parent)
        mems = group / "cpuset.mems"
        actions.append(Action("write", str(mems), _read(base / "cpuset.mems") or "0",
                               "a v1 cpuset needs memory nodes before it takes tasks",
                               perform=lambda: mems.write_text(_read(base / "cpuset.mems") or "0"),
                               is_done=lambda: bool(_read(mems))))
    target = group / "cpuset.cpus"
    actions.append(Action("write", str(target), cpus, why, perform=lambda: target.write_text(cpus),
                          is_done=lambda: _read(target) == cpus))
    return Step("startup CPUs", actions)


def confine_overhead(root: Path, n: int) -> dict[str, object]:
    """Apply the step (the caller checked allow_host_changes); what was there before and what was done."""
    step = startup_cpus_step(root, n)
    before = _read(Path(step.actions[-1].target))
    results = step.apply(True, None)
    return {"cgroup": step.actions[-1].target, "before": before, "cpus": cpu_range(n),
            "actions": [r.as_dict() for r in results]}
