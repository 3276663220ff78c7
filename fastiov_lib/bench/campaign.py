"""A profile's whole evaluation on a testbed as boots: each with its host kernel, rounds and needs.

On a real FastIOV host the paper's vanilla variants run on stock Linux 6.4 and FastIOV's on the
patched 6.4-rc5, so the evaluation spans two boots; `campaign plan` prints it before anything runs
(each boot's rounds with an estimated time, the hugepages and VFs the boot needs, what to do before
it), and 04/05 run the booted kernel's share into one run directory that the next boot continues.
A testbed without kernels of its own (local) is one boot on whatever kernel runs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from fastiov_lib.config import Profile
from fastiov_lib.testbeds.base import SweepSpec, TestbedBackend
from fastiov_lib.testbeds.checks import Check

EXPERIMENTS = ("startup", "ablation", "app")  # as the notebooks run them: 04 (startup, app), 05 (ablation)
NEED_KEYS = ("hugepages_2m", "vfs", "pods")


@dataclass
class CampaignRound:
    """`repeats` rounds of one variant at one concurrency (and, in the app test, one function)."""

    experiment: str
    variant: str
    concurrency: int
    repeats: int
    function: str | None = None
    estimated_s: float = 0.0  # all repeats together
    needs: dict[str, int] = field(default_factory=dict)


@dataclass
class Boot:
    """One boot of the host: its kernel, what to do to get into it, its rounds and what they need."""

    kernel: str | None
    description: str
    recognised_by: str
    booted: bool  # the host runs this kernel now
    before: list[str]
    rounds: list[CampaignRound] = field(default_factory=list)
    needs: dict[str, int] = field(default_factory=dict)
    estimated_s: float = 0.0


@dataclass
class Campaign:
    """The boots of a profile on a testbed, and the problems found before anything runs."""

    testbed: str
    profile: str
    booted_kernel: str | None
    kernel_release: str
    boots: list[Boot]
    capacity: dict[str, int]
    problems: list[str] = field(default_factory=list)

    @property
    def estimated_s(self) -> float:
        return sum(b.estimated_s for b in self.boots)

    def as_dict(self) -> dict[str, Any]:
        """The JSON of `campaign plan --json`."""
        return {"testbed": self.testbed, "profile": self.profile,
                "booted": {"kernel": self.booted_kernel, "release": self.kernel_release},
                "boots": [asdict(b) for b in self.boots], "capacity": self.capacity,
                "estimated_s": round(self.estimated_s), "problems": self.problems}


def _rounds(backend: TestbedBackend, spec: SweepSpec) -> list[CampaignRound]:
    out = []
    for variant in spec.variants:
        for fn in spec.functions or (None,):
            for c in spec.concurrency:
                est = backend.estimated_round_s(spec.experiment, variant, c) * spec.repeats
                out.append(CampaignRound(spec.experiment, variant, c, spec.repeats, fn, round(est, 1),
                                         {**backend.round_needs(spec.experiment, variant, c), "pods": c}))
    return out


def _max_needs(rounds: list[CampaignRound]) -> dict[str, int]:
    keys = sorted({k for r in rounds for k in r.needs}, key=lambda k: (k not in NEED_KEYS, k))
    return {k: max(r.needs.get(k, 0) for r in rounds) for k in keys}


def live_campaign_checks(backend: TestbedBackend, profile: Profile) -> list[Check]:
    """campaign_checks against what this host has now (reserved hugepages, ...): `host-check --profile`."""
    camp = plan_campaign(backend, profile)
    camp.capacity = backend.capacity(live=True)
    return campaign_checks(camp)


def plan_campaign(backend: TestbedBackend, profile: Profile) -> Campaign:
    """Every experiment of `profile` on the back end's testbed, grouped into boots by host kernel."""
    kernels = backend.kernels()
    booted = backend.booted_kernel()
    by_kernel: dict[str | None, list[CampaignRound]] = {}
    for experiment in EXPERIMENTS:
        for spec in backend.campaign_specs(profile, experiment):
            by_kernel.setdefault(spec.kernel, []).extend(_rounds(backend, spec))
    boots = []
    order = [k for k in kernels if k in by_kernel] + [k for k in by_kernel if k not in kernels]
    for name in order:
        info = kernels.get(name) if name is not None else None
        rounds = by_kernel[name]
        boots.append(Boot(
            kernel=name, description=info.description if info else "the kernel the host runs",
            recognised_by=info.recognised_by if info else "", booted=name is None or name == booted,
            before=list(info.how_to_boot) if info else [], rounds=rounds, needs=_max_needs(rounds),
            estimated_s=round(sum(r.estimated_s for r in rounds), 1)))
    capacity = backend.capacity(live=False)  # what the testbed file sets up, wherever the plan is made
    camp = Campaign(backend.name, profile.name, booted, backend.kernel_release(), boots, capacity)
    camp.problems = [c.seen for c in campaign_checks(camp) if c.status == "fail"]
    return camp


def _largest(camp: Campaign, key: str) -> tuple[int, CampaignRound | None]:
    best: tuple[int, CampaignRound | None] = (0, None)
    for b in camp.boots:
        for r in b.rounds:
            if r.needs.get(key, 0) > best[0]:
                best = (r.needs[key], r)
    return best


def campaign_checks(camp: Campaign) -> list[Check]:
    """What the campaign needs against what the testbed has (hugepages, VFs, tenants)."""
    out = []
    labels = {"hugepages_2m": ("campaign.hugepages", "2 MiB hugepages",
                               "set fastiov.hugepages_2m to at least {need} in the testbed file, then "
                               "`fastiov-artifact nic apply` (or lower the profile's concurrency / guest memory)"),
              "vfs": ("campaign.vfs", "VFs", "raise fastiov.vfs_per_pf (or add a PF) so that at least {need} VFs "
                                             "exist, then `fastiov-artifact nic apply`"),
              "tenants": ("campaign.tenants", "tenants", "set fastiov.tenants to at least {need}: fastiov-cni gives "
                                                         "every tenant one VF, so pods of one tenant would share it")}
    for key, (name, what, fix) in labels.items():
        need, rnd = _largest(camp, "vfs" if key == "tenants" else key)
        have = camp.capacity.get(key)
        if have is None or rnd is None:
            continue
        round_text = f"{rnd.experiment} {rnd.variant} at {rnd.concurrency} pods" + (
            f" x {need * 2 // rnd.concurrency} MiB" if key == "hugepages_2m" else "")
        seen = f"{have} {what}, the {camp.profile} profile's largest round needs {need} ({round_text})"
        if have >= need:
            out.append(Check(name, "pass", seen))
        else:
            out.append(Check(name, "fail", f"{have} {what}, fewer than the {need} the {camp.profile} profile's "
                                           f"largest round needs ({round_text})", fix.format(need=need)))
    return out


def format_campaign(camp: Campaign) -> str:
    """The campaign for the terminal: boots, their steps, rounds, needs and estimated times."""
    def hm(s: float) -> str:
        return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min" if s >= 3600 else f"{s / 60:.0f} min"

    lines = [f"campaign: profile {camp.profile} on {camp.testbed}; this host runs {camp.kernel_release or '?'}"
             f" ({'the ' + camp.booted_kernel + ' kernel' if camp.booted_kernel else 'no kernel of the campaign'});"
             f" {len(camp.boots)} boot(s), about {hm(camp.estimated_s)} of measuring (estimate)"]
    for i, b in enumerate(camp.boots, 1):
        lines += ["", f"boot {i}: {b.kernel or 'any kernel'}{' (booted now)' if b.booted else ''}: {b.description}"]
        if b.recognised_by:
            lines.append(f"  recognised by: {b.recognised_by}")
        for step in b.before:
            lines.append(f"  before: {step}")
        lines.append("  needs: " + ", ".join(f"{k} {v}" for k, v in b.needs.items()))
        lines.append(f"  rounds ({sum(r.repeats for r in b.rounds)}, about {hm(b.estimated_s)}):")
        for r in b.rounds:
            fn = f" {r.function}" if r.function else ""
            lines.append(f"    {r.experiment:<9} {r.variant:<18}{fn} x{r.concurrency:<4} repeats {r.repeats}"
                         f"  ~{r.estimated_s:.0f} s")
    if camp.problems:
        lines += ["", *(f"problem: {p}" for p in camp.problems)]
    return "\n".join(lines)
