"""Runtime configuration of a FastIOV host: deploy containerd/kata/CNI/crictl configs, switch variants.

Configs are rendered from templates in fastiov_lib/testbeds/fastiov_host/templates/ filled from the testbed file.
Variants (vanilla SR-IOV, FastIOV, each optimisation alone, and the network baselines) are applied
by editing the kata TOML with tomlkit: only the variant's keys change, comments and layout stay,
a backup is written first, and the file is read back to verify. The active variant is recorded in
the run directory.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, Literal

import tomlkit
import yaml

from fastiov_lib.config import FastiovHostSettings, Testbed
from fastiov_lib.hw.host_steps import Action, Step, backup_file, default_backup_dir, require_host_changes
from fastiov_lib.testbeds.base import BackendError

KataKey = tuple[str, ...]  # ("hypervisor", "qemu", "path")
VARIANT_FILE = "variant.json"
CNI_CONFLIST = "10-fastiov-artifact.conflist"
SANDBOX_IMAGE = "fastiov.local/fiov-pause:1"  # built from C and imported (build component pod-images): no pull
WORKLOAD_IMAGE = "fastiov.local/fiov-workload:1"  # the app test's functions, the same way
CNI_SUBNET = "10.88.0.0/16"
MAX_TX_RATE = 4000  # Mbit/s per VF, as in the original conflist


class VariantError(BackendError):
    """Unknown variant, unreadable kata config, or a read-back that does not match."""


Flavour = Literal["fastiov", "vanilla"]


@dataclass(frozen=True)
class Variant:
    """One configuration of the stack the benchmark compares (see REFERENCE.md, Variants)."""

    name: str
    description: str
    host_kernel: Flavour  # needs a reboot to change: checked, not switched
    qemu: Flavour
    guest_kernel: Flavour
    image: Flavour  # fastiov = async VF driver init, vanilla = synchronous (e810-sync)
    network: Literal["sriov", "host", "ipvtap"] = "sriov"  # host: the pod shares the host netns, no CNI call
    memory_mb: int | None = None  # guest memory of this variant; None = the testbed's guest_memory_mb


VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("vanilla", "vanilla SR-IOV: stock Linux 6.4 host, noskip QEMU, stock guest kernel, sync image",
            "vanilla", "vanilla", "vanilla", "vanilla"),
    Variant("fastiov", "FastIOV: patched host kernel + module, FastIOV QEMU, patched guest kernel, async image",
            "fastiov", "fastiov", "fastiov", "fastiov"),
    Variant("only-devset", "only decomposed VFIO locking (patched host kernel + fastiov module)",
            "fastiov", "vanilla", "vanilla", "vanilla"),
    Variant("only-skip-dma", "only skipping eager DMA mapping/zeroing of guest memory (FastIOV QEMU; "
            "it registers guest memory with the fastiov module)", "fastiov", "fastiov", "vanilla", "vanilla"),
    Variant("only-guest-kernel", "only the patched guest kernel (pre-faulted virtio buffers)",
            "vanilla", "vanilla", "fastiov", "vanilla"),
    Variant("only-async-driver", "only asynchronous VF driver initialisation in the guest (async image)",
            "vanilla", "vanilla", "vanilla", "fastiov"),
    Variant("no-network", "baseline without a pod network: host-network pods, no CNI call (as the original)",
            "vanilla", "vanilla", "vanilla", "vanilla", "host"),
    Variant("ipvtap", "baseline with tap-based networking (ipvlan + tcfilter), vanilla components",
            "vanilla", "vanilla", "vanilla", "vanilla", "ipvtap"),
    Variant("vanilla-2g", "vanilla SR-IOV with 2 GB guests (the paper's memory experiment)",
            "vanilla", "vanilla", "vanilla", "vanilla", memory_mb=2048),
    Variant("fastiov-2g", "FastIOV with 2 GB guests (the paper's memory experiment)",
            "fastiov", "fastiov", "fastiov", "fastiov", memory_mb=2048),
]}


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise VariantError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}") from None


def variant_table() -> list[dict[str, str]]:
    """The variants as rows, for the notebooks and `variant show`."""
    return [asdict(v) for v in VARIANTS.values()]


def kata_keys(variant: Variant, s: FastiovHostSettings) -> dict[KataKey, Any]:
    """The kata config keys (and values) a variant switches, as the original's variant files do."""
    pick = lambda flavour, fast, van: str(fast if flavour == "fastiov" else van)  # noqa: E731
    keys: dict[KataKey, Any] = {
        ("hypervisor", "qemu", "path"): pick(variant.qemu, s.qemu_fastiov, s.qemu_vanilla),
        ("hypervisor", "qemu", "kernel"): pick(variant.guest_kernel, s.guest_kernel_fastiov, s.guest_kernel_vanilla),
        ("hypervisor", "qemu", "image"): pick(variant.image, s.image_async, s.image_sync),
        ("hypervisor", "qemu", "default_memory"): variant.memory_mb or s.guest_memory_mb,
        # FastIOV's QEMU registers guest memory with the module only when it preallocates, i.e.
        # with hugepages; the original's base file has them off, its fastiov file on
        ("hypervisor", "qemu", "enable_hugepages"): variant.qemu == "fastiov",
        ("runtime", "internetworking_model"): "tcfilter" if variant.network == "ipvtap" else "none",
        # true makes kata skip its network set-up altogether (Sandbox.createNetwork returns at once), so the
        # FastIOV endpoint never sees fastiov-cni's dummy eth0 and QEMU gets no VF (found by the rehearsal);
        # the original's fastiov file leaves it unset (false). Only host-network pods have nothing to set up.
        ("runtime", "disable_new_netns"): variant.network == "host",
    }
    return keys


def kata_base_keys(s: FastiovHostSettings) -> dict[KataKey, Any]:
    """Keys the original's kata configs set in every variant (kata-static's default lacks most of them)."""
    q = ("hypervisor", "qemu")
    virtiofsd = str(s.kata_prefix / "libexec/virtiofsd")
    return {
        q + ("machine_type",): "q35",
        q + ("default_vcpus",): 1,
        # kata refuses a `path` not listed here: both QEMUs the variants switch between
        q + ("valid_hypervisor_paths",): sorted({str(s.qemu_fastiov), str(s.qemu_vanilla)}),
        q + ("shared_fs",): "virtio-fs",
        q + ("virtio_fs_daemon",): virtiofsd,
        q + ("valid_virtio_fs_daemon_paths",): [virtiofsd],
        q + ("cpu_features",): "pmu=off",
        q + ("hotplug_vfio_on_root_bus",): True,  # the VF goes onto the root bus ...
        q + ("pcie_root_port",): 2,  # ... with root ports for cold-plugged devices
        ("agent", "kata", "debug_console_enabled"): True,
        ("runtime", "vfio_mode"): "guest-kernel",  # the guest's own VF driver (iavf) takes the VF
        ("runtime", "sandbox_cgroup_only"): False,
        ("runtime", "disable_guest_seccomp"): True,
    }


def all_kata_keys(variant: Variant, s: FastiovHostSettings) -> dict[KataKey, Any]:
    """Base keys and the variant's keys: what a deployed kata config holds."""
    return {**kata_base_keys(s), **kata_keys(variant, s)}


def _dotted(key: KataKey) -> str:
    return ".".join(key)


def read_toml_value(data: dict[str, Any], key: KataKey) -> Any:
    node: Any = data
    for part in key:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def edit_toml_text(text: str, keys: dict[KataKey, Any], source: str = "kata config") -> tuple[str, list[dict[str, Any]]]:
    """Set `keys` in TOML text with tomlkit (comments/layout kept); return new text and the changes."""
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise VariantError(f"{source}: not valid TOML: {exc}") from None
    changes = []
    for key, value in keys.items():
        node = doc
        for part in key[:-1]:
            if part not in node:
                node[part] = tomlkit.table()
            node = node[part]
        old = node.get(key[-1])
        old_plain = old.unwrap() if hasattr(old, "unwrap") else old
        if old_plain == value:
            continue
        node[key[-1]] = value
        changes.append({"key": _dotted(key), "old": old_plain, "new": value})
    return tomlkit.dumps(doc), changes


def edit_kata_config(path: Path, keys: dict[KataKey, Any], backup_dir: Path) -> list[dict[str, Any]]:
    """Edit the kata TOML at `path` in place: backup, atomic write, read back and verify."""
    path = Path(path)
    if not path.is_file():
        raise VariantError(f"{path}: kata config not found (deploy the configs first: fastiov-artifact variant deploy)")
    new_text, changes = edit_toml_text(path.read_text(), keys, str(path))
    if changes:
        backup_file(path, backup_dir)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(new_text)
        os.replace(tmp, path)
    data = tomllib.loads(path.read_text())
    wrong = [f"{_dotted(k)} = {read_toml_value(data, k)!r} (expected {v!r})"
             for k, v in keys.items() if read_toml_value(data, k) != v]
    if wrong:
        raise VariantError(f"{path}: read-back after editing does not match: {'; '.join(wrong)}")
    return changes


# ------------------------------------------------------------------ templates

def template_text(name: str) -> str:
    return (resources.files("fastiov_lib.testbeds.fastiov_host") / "templates" / name).read_text()


def _settings(testbed: Testbed | None) -> FastiovHostSettings:
    if testbed is None:
        return FastiovHostSettings(pfs=["0000:e3:00.0", "0000:e3:00.1"])
    if testbed.fastiov is None:
        raise VariantError(f"testbed {testbed.name!r} has no 'fastiov:' section (a real FastIOV host)")
    return testbed.fastiov


def render_containerd_config(s: FastiovHostSettings) -> str:
    text = Template(template_text("containerd-config.toml.tmpl")).substitute(
        containerd_socket=s.containerd_socket, sandbox_image=SANDBOX_IMAGE, cni_bin_dir=s.cni_bin_dir,
        cni_conf_dir=s.cni_conf_dir, kata_prefix=s.kata_prefix, kata_config=s.kata_config)
    tomllib.loads(text)  # a template error shows up here, not in containerd
    return text


def render_kata_base(s: FastiovHostSettings, variant: str = "fastiov") -> str:
    """Our own commented kata config with the original's base keys and the variant's keys."""
    text = template_text("kata-configuration-qemu.toml.tmpl")
    tomllib.loads(text)
    text, _ = edit_toml_text(text, all_kata_keys(get_variant(variant), s))
    return text


def render_conflist(s: FastiovHostSettings, network: str = "sriov") -> str:
    if network == "sriov":
        text = Template(template_text("10-fastiov-cni.conflist.tmpl")).substitute(
            max_tx_rate=MAX_TX_RATE, subnet=CNI_SUBNET)
    elif network == "host":  # host-network pods make no CNI call; the SR-IOV conflist stays in place
        return render_conflist(s, "sriov")
    elif network == "none":
        text = template_text("10-no-network.conflist.tmpl")
    else:
        master = s.pf_netdevs[0] if s.pf_netdevs else "ens1f0"
        text = Template(template_text("10-ipvtap.conflist.tmpl")).substitute(master=master, subnet=CNI_SUBNET)
    json.loads(text)
    return text


def render_crictl(s: FastiovHostSettings) -> str:
    text = Template(template_text("crictl.yaml.tmpl")).substitute(containerd_socket=s.containerd_socket)
    yaml.safe_load(text)
    return text


def _under(root: Path, path: Path) -> Path:
    return Path(root) / str(path).lstrip("/")


def kata_static_default(s: FastiovHostSettings, root: Path) -> Path:
    """The kata-static release's own QEMU config, the base the deployed kata config starts from."""
    return _under(root, s.kata_prefix / "share/defaults/kata-containers/configuration-qemu.toml")


def rendered_configs(testbed: Testbed | None, root: Path, variant: str = "fastiov") -> dict[Path, str]:
    """Target path (below root) -> text of every config this artifact deploys."""
    s = _settings(testbed)
    base = kata_static_default(s, root)
    if base.is_file():  # kata-static's own file, with the original's base keys and the variant's
        kata_text, _ = edit_toml_text(base.read_text(), all_kata_keys(get_variant(variant), s), str(base))
    else:
        kata_text = render_kata_base(s, variant)
    return {
        _under(root, s.containerd_config): render_containerd_config(s),
        _under(root, s.kata_config): kata_text,
        _under(root, s.cni_conf_dir / CNI_CONFLIST): render_conflist(s, get_variant(variant).network),
        _under(root, s.crictl_config): render_crictl(s),
    }


def deploy_fake_configs(root: Path, testbed: Testbed | None = None,
                        kata_overrides: dict[str, Any] | None = None) -> None:
    """Write the configs into a generated fake tree (fakehost), with optional kata key changes."""
    files = rendered_configs(testbed, root)
    s = _settings(testbed)
    for path, text in files.items():
        if path == _under(root, s.kata_config) and kata_overrides:
            keys = {tuple(k.split(".")): v for k, v in kata_overrides.items()}
            text, _ = edit_toml_text(text, keys)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def deploy_steps(testbed: Testbed, root: Path | None = None, variant: str = "fastiov") -> list[Step]:
    """The config deployment as steps: one write per file (skipped when already identical), then
    every network config that would shadow the artifact's conflist moved aside (cni_conf)."""
    from fastiov_lib.testbeds.fastiov_host.cni_conf import move_aside_step

    root = Path(root or testbed.sys_root)
    actions = []
    for path, text in rendered_configs(testbed, root, variant).items():
        actions.append(Action(
            "write", str(path), f"{len(text.splitlines())} lines from template",
            "configure the runtime as the benchmark expects",
            perform=lambda p=path, t=text: _write_atomic(p, t),
            is_done=lambda p=path, t=text: p.is_file() and p.read_text() == t,
            backup=path))
    return [Step("runtime configs", actions), move_aside_step(_settings(testbed), root, CNI_CONFLIST)]


def deploy_configs(testbed: Testbed, root: Path | None = None, backup_dir: Path | None = None,
                   variant: str = "fastiov") -> list[dict[str, Any]]:
    """Write every runtime config (guarded by allow_host_changes, originals backed up)."""
    s = _settings(testbed)
    root = Path(root or testbed.sys_root)
    backup_dir = backup_dir or default_backup_dir(_under(root, s.build_dir))
    results = []
    for step in deploy_steps(testbed, root, variant):
        results += [r.as_dict() for r in step.apply(testbed.allow_host_changes, backup_dir,
                                                      str(testbed.source_path or ""))]
    return results


# ------------------------------------------------------------------ variants

@dataclass
class VariantResult:
    """What `variant set` did: the keys changed, where the backup went, warnings to read."""

    variant: str
    kata_config: str
    changes: list[dict[str, Any]] = field(default_factory=list)
    conflist: str = ""
    conflist_changed: bool = False  # containerd must reload its CNI config before the next pod
    moved_aside: list[str] = field(default_factory=list)  # conf files that sorted before ours
    backup_dir: str = ""
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def variant_warnings(testbed: Testbed, variant: Variant, root: Path) -> list[str]:
    """What the host itself must provide for a variant (kernel, module, binaries), checked read-only."""
    s = _settings(testbed)
    warnings = []
    try:
        release = (_under(root, Path("/proc/sys/kernel/osrelease"))).read_text().strip()
    except OSError:
        release = ""
    patched = release.endswith(s.expected_kernel_suffix)
    if variant.host_kernel == "fastiov" and not patched:
        warnings.append(f"variant {variant.name} needs the patched host kernel (*{s.expected_kernel_suffix}); "
                        f"running {release or 'unknown'}: reboot into it")
    if variant.host_kernel == "vanilla" and patched:
        warnings.append(f"variant {variant.name} is measured on the stock 6.4 host kernel; running {release}")
    if variant.host_kernel == "fastiov" and not _under(root, s.fastiov_device).exists():
        warnings.append(f"{s.fastiov_device} absent: load the fastiov module")
    for key, value in kata_keys(variant, s).items():
        if key[-1] in ("path", "kernel", "image") and not _under(root, Path(str(value))).exists():
            warnings.append(f"{_dotted(key)}: {value} does not exist")
    return warnings


def plan_variant(testbed: Testbed, name: str, root: Path | None = None) -> list[dict[str, str]]:
    """Rows (step, action, target, value, why) of switching to `name`; nothing is written."""
    s = _settings(testbed)
    root = Path(root or testbed.sys_root)
    variant = get_variant(name)
    kata = _under(root, s.kata_config)
    rows = []
    current = tomllib.loads(kata.read_text()) if kata.is_file() else {}
    for key, value in kata_keys(variant, s).items():
        old = read_toml_value(current, key)
        if old != value:
            rows.append({"step": f"variant {name}", "action": "edit", "target": f"{kata} [{_dotted(key)}]",
                         "value": json.dumps(value), "why": f"was {json.dumps(old)}"})
    conf = _under(root, s.cni_conf_dir / CNI_CONFLIST)
    text = render_conflist(s, variant.network)
    if not conf.is_file() or conf.read_text() != text:
        rows.append({"step": f"variant {name}", "action": "write", "target": str(conf),
                     "value": f"{variant.network} conflist", "why": "pod network of this variant"})
    from fastiov_lib.testbeds.fastiov_host.cni_conf import move_aside_step

    rows += [{**r, "step": f"variant {name}"} for r in move_aside_step(s, root, CNI_CONFLIST).plan()]
    return rows


def set_variant(testbed: Testbed, name: str, run_path: Path | None = None, root: Path | None = None,
                backup_dir: Path | None = None) -> VariantResult:
    """Switch the host to variant `name`: kata keys (tomlkit), CNI conflist; verify; record in run dir."""
    s = _settings(testbed)
    variant = get_variant(name)
    require_host_changes(testbed.allow_host_changes, f"variant set {name}", str(testbed.source_path or ""))
    root = Path(root or testbed.sys_root)
    backup_dir = Path(backup_dir or default_backup_dir(_under(root, s.build_dir)))
    kata = _under(root, s.kata_config)
    result = VariantResult(name, str(kata), backup_dir=str(backup_dir))
    result.changes = edit_kata_config(kata, kata_keys(variant, s), backup_dir)
    conf = _under(root, s.cni_conf_dir / CNI_CONFLIST)
    text = render_conflist(s, variant.network)
    if not conf.is_file() or conf.read_text() != text:
        backup_file(conf, backup_dir)
        _write_atomic(conf, text)
        result.conflist_changed = True
    result.conflist = str(conf)
    from fastiov_lib.testbeds.fastiov_host.cni_conf import move_aside_step

    moves = move_aside_step(s, root, CNI_CONFLIST)
    moves.apply(True, backup_dir)
    result.moved_aside = [a.target for a in moves.actions]
    result.warnings = variant_warnings(testbed, variant, root)
    if run_path is not None:
        record_variant(Path(run_path), result)
    return result


def record_variant(run_path: Path, result: VariantResult) -> None:
    """Write <run>/variant.json and append the switch to <run>/variants.jsonl."""
    entry = {**result.as_dict(), "time": _dt.datetime.now(_dt.timezone.utc).isoformat()}
    run_path.mkdir(parents=True, exist_ok=True)
    _write_atomic(run_path / VARIANT_FILE, json.dumps(entry, indent=2, default=str) + "\n")
    with open(run_path / "variants.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, default=str) + "\n")


def show_variant(testbed: Testbed, root: Path | None = None) -> dict[str, Any]:
    """The kata keys now in effect and which variant they match (None if none matches exactly)."""
    s = _settings(testbed)
    root = Path(root or testbed.sys_root)
    kata = _under(root, s.kata_config)
    if not kata.is_file():
        raise VariantError(f"{kata}: kata config not found")
    data = tomllib.loads(kata.read_text())
    keys = {_dotted(k): read_toml_value(data, k) for k in kata_keys(VARIANTS["fastiov"], s)}
    conf = _under(root, s.cni_conf_dir / CNI_CONFLIST)
    conf_text = conf.read_text() if conf.is_file() else None
    matching = [v.name for v in VARIANTS.values()
                if all(read_toml_value(data, k) == val for k, val in kata_keys(v, s).items())
                and conf_text == render_conflist(s, v.network)]
    return {"kata_config": str(kata), "keys": keys, "matches": matching[0] if matching else None}
