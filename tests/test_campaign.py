"""The paper's evaluation as a campaign of two boots (issue 18): plan, needs, the kernel guard of 04/05."""
from __future__ import annotations

import json

import pytest

from fastiov_lib.bench.campaign import plan_campaign
from fastiov_lib.commands.cli import main
from fastiov_lib.config import REPO_ROOT, load_profile, load_testbed
from fastiov_lib.testbeds.fastiov_host.fake_host import build_fake_host, spec_for_testbed
from fastiov_lib.testbeds import backend_for
from fastiov_lib.testbeds.fastiov_host.backend import FastiovHostError
from fastiov_lib.testbeds.fastiov_host.runtime_config import VARIANTS

EXAMPLE = REPO_ROOT / "testbeds" / "fastiov-e810.example.yaml"


def _plan_json(capsys, profile: str = "paper") -> dict:
    assert main(["campaign", "plan", "--testbed", str(EXAMPLE), "--profile", profile, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _fake_host(tmp_path, kernel_release: str, **changes):
    tb = load_testbed(EXAMPLE, overrides={"allow_host_changes": True})
    root = build_fake_host(tmp_path / "root", spec_for_testbed(tb, kernel_release=kernel_release, **changes), tb)
    return tb.model_copy(update={"sys_root": root}), root


def test_campaign_plan_json_gives_each_boot_its_kernel_rounds_and_needs(capsys):
    plan = _plan_json(capsys)
    assert [b["kernel"] for b in plan["boots"]] == ["stock", "patched"]
    for boot in plan["boots"]:
        assert boot["before"] and boot["needs"]["hugepages_2m"] >= 0 and boot["needs"]["vfs"] == 200
        for r in boot["rounds"]:
            assert {"variant", "experiment", "concurrency", "repeats", "estimated_s"} <= set(r)
            flavour = VARIANTS[r["variant"]].host_kernel
            assert boot["kernel"] == ("patched" if flavour == "fastiov" else "stock"), r  # vanilla only on stock
    assert plan["estimated_s"] > 0 and plan["problems"] == []


def test_the_paper_profile_holds_every_experiment_of_the_paper(capsys):
    rounds = [r for b in _plan_json(capsys)["boots"] for r in b["rounds"]]
    have = {(r["experiment"], r["variant"]) for r in rounds}
    startup = {("startup", v) for v in ("vanilla", "fastiov", "no-network", "ipvtap")}
    ablation = {("ablation", v) for v in ("only-devset", "only-skip-dma", "only-guest-kernel", "only-async-driver")}
    memory = {("memory", "vanilla-2g"), ("memory", "fastiov-2g")}
    app = {("app", v) for v in ("vanilla", "fastiov", "no-network")}
    assert startup | ablation | memory | app <= have
    assert {r["concurrency"] for r in rounds if r["experiment"] == "startup"} == {10, 20, 50, 100, 200}
    assert all(r["repeats"] >= 3 for r in rounds)


def test_the_hugepages_need_covers_the_largest_fastiov_round(capsys):
    plan = _plan_json(capsys)
    s = load_testbed(EXAMPLE).fastiov
    largest = max(r["concurrency"] * (VARIANTS[r["variant"]].memory_mb or s.guest_memory_mb) // 2
                  for b in plan["boots"] for r in b["rounds"] if VARIANTS[r["variant"]].qemu == "fastiov")
    patched = next(b for b in plan["boots"] if b["kernel"] == "patched")
    stock = next(b for b in plan["boots"] if b["kernel"] == "stock")
    assert largest == 51200 and patched["needs"]["hugepages_2m"] == largest  # 200 x 512 MiB = 50 x 2 GiB
    assert stock["needs"]["hugepages_2m"] == 0  # no vanilla variant preallocates from hugepages


def test_too_few_hugepages_for_the_profile_fail_host_check_naming_both_numbers(tmp_path, capsys):
    _tb, root = _fake_host(tmp_path, "6.4.0-rc5test", hugepages_2m=32768)
    rc = main(["host-check", "--testbed", str(EXAMPLE), "--root", str(root), "--profile", "paper"])
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "campaign.hugepages" in ln)
    assert rc == 1 and line.startswith("FAIL") and "32768" in line and "51200" in line
    assert "fastiov at 200 pods x 512 MiB" in line
    rc = main(["host-check", "--testbed", str(EXAMPLE), "--root", str(root)])
    assert "campaign.hugepages" not in capsys.readouterr().out  # only with --profile


def test_the_plan_names_a_testbed_that_cannot_hold_the_profile(tmp_path):
    tb = load_testbed(EXAMPLE, overrides={"fastiov.hugepages_2m": 32768, "fastiov.vfs_per_pf": 50,
                                          "fastiov.tenants": 100})
    camp = plan_campaign(backend_for(tb), load_profile("paper"))
    problems = "\n".join(camp.problems)
    assert "32768 2 MiB hugepages, fewer than the 51200" in problems
    assert "100 VFs, fewer than the 200" in problems and "100 tenants, fewer than the 200" in problems


def test_a_variant_on_the_wrong_kernel_is_refused_naming_kernel_and_variant(tmp_path):
    from fastiov_lib.bench import engine
    from fastiov_lib.run.rundir import RunDir

    tb, _ = _fake_host(tmp_path, "6.4.0-rc5test")
    with pytest.raises(engine.BenchError, match=r"variant 'vanilla' is measured on the stock kernel .*this host "
                                                r"runs 6\.4\.0-rc5test \(the patched kernel\)"):
        engine.run_startup_sweep(backend_for(tb), RunDir(tmp_path / "run"), [1], 1, variants=["fastiov", "vanilla"])
    assert not (tmp_path / "run" / "pods.jsonl").exists()  # refused before any round


def test_04_and_05_run_the_booted_kernels_share_and_name_the_rest(tmp_path):
    profile = load_profile("paper")
    tb, _ = _fake_host(tmp_path / "a", "6.4.0-stock")
    backend = backend_for(tb)
    assert backend.booted_kernel() == "stock" and backend.kernel_release() == "6.4.0-stock"
    plan = backend.sweep_plan(profile, "startup")
    assert {s.kernel for s in plan.specs} == {"stock"}
    assert {v for s in plan.specs for v in s.variants} == {"no-network", "ipvtap", "vanilla", "vanilla-2g"}
    assert any("fastiov" in n and "patched kernel" in n for n in plan.notes)
    tb2, _ = _fake_host(tmp_path / "b", "6.4.0-rc5test")
    ablation = backend_for(tb2).sweep_plan(profile, "ablation")
    assert [s.variants for s in ablation.specs] == [("only-devset", "only-skip-dma", "fastiov")]
    tb3, _ = _fake_host(tmp_path / "c", "6.1.0-27-amd64")
    with pytest.raises(FastiovHostError, match="6.1.0-27-amd64, neither kernel of the campaign"):
        backend_for(tb3).sweep_plan(profile, "startup")


def test_a_testbed_without_kernels_of_its_own_is_one_boot(capsys):
    assert main(["campaign", "plan", "--testbed", str(REPO_ROOT / "testbeds" / "local.yaml"), "--profile", "smoke",
                 "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [b["kernel"] for b in plan["boots"]] == [None] and plan["boots"][0]["booted"] is True
    assert {r["experiment"] for r in plan["boots"][0]["rounds"]} == {"startup", "ablation", "app"}


def test_a_run_continued_after_a_reboot_records_both_boots_and_its_captions_name_both_kernels(tmp_path):
    from fastiov_lib.analysis.stats import load_run
    from fastiov_lib.run.rundir import create_run_dir
    from fastiov_lib.testbeds.fastiov_host.round_hooks import RealHostRoundHooks

    profile = load_profile("paper")
    for sub, release in (("stock", "6.4.0-stock"), ("patched", "6.4.0-rc5test")):
        tb, root = _fake_host(tmp_path / sub, release)
        (root / "proc/sys/kernel/random").mkdir(parents=True, exist_ok=True)
        (root / "proc/sys/kernel/random/boot_id").write_text(f"boot-{sub}\n")
        run = create_run_dir(tb, profile, run_id="campaign", results_root=tmp_path / "results",
                             facts=backend_for(tb).facts())  # the second boot continues the first's run
        hooks = RealHostRoundHooks(tb, root=root)
        hooks.record_boot(run)
        hooks.record_boot(run)  # once per boot, however often the run set-up runs
    boots = run.read_run_info()["boots"]
    assert [(b["kernel"], b["release"]) for b in boots] == [("stock", "6.4.0-stock"), ("patched", "6.4.0-rc5test")]
    assert "kernels 6.4.0-rc5test (patched), 6.4.0-stock (stock)" in load_run(run.path).caption
