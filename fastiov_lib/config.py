"""Testbed and experiment-profile models: loading YAML files with errors that name file and key."""
from __future__ import annotations

import os
import re
from importlib import resources
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator

from fastiov_lib.safe_files import FileRefused, read_regular_bytes

PROJECT_ENV = "FASTIOV_PROJECT"


def _is_project(folder: Path) -> bool:
    return (folder / "binaries_manifest.yaml").is_file() and (folder / "notebooks").is_dir()


def project_root(start: Path | None = None) -> Path:
    """The artifact's folder (results/, notebooks/, testbeds/): $FASTIOV_PROJECT, else the nearest folder
    at or above the working directory holding binaries_manifest.yaml and notebooks/, else the checkout
    of an editable install, else the working directory."""
    if os.environ.get(PROJECT_ENV):
        return Path(os.environ[PROJECT_ENV]).expanduser().resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if _is_project(folder):
            return folder
    checkout = Path(__file__).resolve().parent.parent  # an editable install's checkout, if it is one
    return checkout if _is_project(checkout) else here


REPO_ROOT = project_root()
PROFILES_DIR = Path(str(resources.files("fastiov_lib") / "profiles"))

NetworkMode = Literal["none", "bridge", "macvlan", "hostdev", "ipvlan", "sriov"]
# the workload image's functions (bench.app_functions): stand-ins for the paper's five, and the plain download
AppFunction = Literal["standin-image", "standin-video", "standin-compress", "standin-inference", "standin-graph",
                      "download-hash"]

# the address form hw.pci parses (config sits below hw, so it checks the form itself)
PCI_ADDRESS = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]")


def _check_pci(value: str) -> str:
    if not PCI_ADDRESS.fullmatch(value):
        raise ValueError(f"{value!r} is not a PCI address of the form DDDD:BB:DD.F (e.g. 0000:e3:00.0)")
    return value


PciAddress = Annotated[str, AfterValidator(_check_pci)]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # testbed and profile names: letters, digits, '.', '_', '-'
MAX_CONCURRENCY = 1024  # pods started at once; more would exhaust this host's PIDs/ports long before a result
MAX_CONFIG_BYTES = 1 << 20  # testbed/profile YAML files are a few KiB; refuse huge ones before parsing
# Every number a testbed or profile holds has an upper bound: a typo (100000000000 for 100) must be
# refused when the file is loaded, not grow memory or wait for centuries (`testbed down` included).
MAX_SECONDS = 86400.0  # one day: the CLI's --timeout bound, for every timeout and wait
MAX_REPEATS = 1000  # the CLI's --repeats bound
MAX_MEMORY_MB = 1 << 20  # 1 TiB
MAX_VFS_PER_PF = 4096  # above any NIC's sriov_totalvfs (the kernel refuses more than it offers anyway)
MAX_HUGEPAGES_2M = 1 << 22  # 8 TiB of 2 MiB pages
MAX_THREADS = 1024
MAX_SWEEP_LEVELS = 100  # values of one sweep list
# numbers are strict: `true` is not 1 and "64" is not 64 (YAML says what it means)
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]  # strict still takes an integer (60 = 60.0), never a bool or a string
Seconds = Annotated[Float, Field(gt=0, le=MAX_SECONDS)]
Port = Annotated[Int, Field(ge=1, le=65535)]
Concurrency = Annotated[Int, Field(ge=1, le=MAX_CONCURRENCY)]
Repeats = Annotated[Int, Field(ge=1, le=MAX_REPEATS)]
MemoryMb = Annotated[Int, Field(ge=1, le=MAX_MEMORY_MB)]
VmCount = Annotated[Int, Field(ge=1, le=64)]  # VFs or inner VMs of the virtual SR-IOV host (igb offers 7)


class ConfigError(Exception):
    """A config file is missing, unreadable or invalid; the message names the file and the key."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # 1e400 is inf: refused


class LocalSettings(StrictModel):
    """The `local` testbed: a private containerd + runc + CNI plugins on this machine."""

    work_dir: Path = Path("/var/tmp/fastiov-local")  # containerd root, state, socket, CNI state, images
    containerd_bin: str = "containerd"
    ctr_bin: str = "ctr"
    runc_bin: str = "runc"
    cni_bin_dir: Path = Path("/usr/lib/cni")
    link_prefix: str = Field("fiov", pattern=r"^[a-z][a-z0-9]{1,5}$")  # every link we create starts with it
    bridge_name: str = Field("fiovbr0", pattern=r"^[a-z][a-z0-9]{1,14}$")
    bridge_subnet: IPv4Network = IPv4Network("10.210.0.0/16")
    macvlan_subnet: IPv4Network = IPv4Network("10.211.0.0/16")
    hostdev_subnet: IPv4Network = IPv4Network("10.212.0.0/16")
    hostdev_pool_size: Concurrency = 64  # veth pairs created up front (the local analogue of VFs)
    network_modes: list[NetworkMode] = Field(
        default_factory=lambda: ["none", "bridge", "macvlan", "hostdev"], min_length=1
    )
    storage_port: Port = 5100
    rpc_timeout_s: Seconds = 60.0
    start_timeout_s: Seconds = 30.0
    # debian: the distribution's containerd (1.6); instrumented: the paper's containerd 1.3 with
    # 0001-containerd.patch (+ the artifact's per-pod-netns fix), built by 01_build into work_dir/build
    containerd: Literal["debian", "instrumented"] = "debian"
    sources_dir: Path | None = None  # offline upstream archives for that build (None/missing: fetch upstream)
    build_dir: Path | None = None  # where it is built and installed (bin/); None = work_dir/build

    @model_validator(mode="after")
    def _subnets_apart(self) -> "LocalSettings":
        used = [m for m in ("bridge", "macvlan", "hostdev") if m in self.network_modes]
        for i, a in enumerate(used):
            for b in used[i + 1:]:
                na, nb = getattr(self, f"{a}_subnet"), getattr(self, f"{b}_subnet")
                if na.overlaps(nb):
                    raise ValueError(f"{a}_subnet {na} overlaps {b}_subnet {nb}; each network mode needs "
                                     "a subnet of its own")
        for mode in used:
            need = self.hostdev_pool_size if mode == "hostdev" else 1
            if self.pod_addresses(mode) < need:
                raise ValueError(f"{mode}_subnet {getattr(self, f'{mode}_subnet')}: room for "
                                 f"{self.pod_addresses(mode)} pod addresses, {need} needed"
                                 + (" (one per hostdev_pool_size link)" if mode == "hostdev" else "")
                                 + "; use a larger subnet (e.g. a /24)")
        return self

    def pod_addresses(self, mode: str) -> int:
        """How many pods of `mode` its subnet can address at once (network, host/gateway and broadcast
        addresses are not handed out)."""
        return max(0, getattr(self, f"{mode}_subnet").num_addresses - 3)


class FastiovHostSettings(StrictModel):
    """A real SR-IOV host running Kata; every path and address the original hard-coded."""

    pfs: list[PciAddress] = Field(min_length=1)
    vfs_per_pf: Annotated[Int, Field(ge=1, le=MAX_VFS_PER_PF)] = 100
    pf_netdevs: list[str] = Field(default_factory=list)  # optional, for the default-route guard
    hugepages_2m: Annotated[Int, Field(ge=1, le=MAX_HUGEPAGES_2M)] = 32768  # 64 GiB of 2 MiB pages, as in the paper
    vf_driver: str = "vfio-pci"
    bind_threads: Annotated[Int, Field(ge=1, le=MAX_THREADS)] = 8
    fastiov_module_path: Path | None = None  # fastiov.ko; None = skip the module on this host
    fastiov_device: Path = Path("/dev/dev_fastiov")  # the module's node: FastIOV QEMU registers guest memory there
    expected_kernel_suffix: str = "-rc5test"
    stock_kernel_suffix: str = Field("-stock", min_length=1)  # EXTRAVERSION of the stock 6.4 kernel (vanilla variants)
    containerd_socket: Path = Path("/run/containerd/containerd.sock")
    containerd_config: Path = Path("/etc/containerd/config.toml")
    kata_config: Path = Path("/etc/kata-containers/configuration-qemu-3.toml")
    cni_conf_dir: Path = Path("/etc/cni/net.d")
    cni_bin_dir: Path = Path("/opt/cni/bin")
    crictl_config: Path = Path("/etc/crictl.yaml")
    kata_prefix: Path = Path("/opt/kata3")
    build_dir: Path = Path("/var/tmp/fastiov-build")
    cache_dir: Path = Path("/var/tmp/fastiov-cache")
    qemu_fastiov: Path = Path("/opt/kata3/bin/qemu-system-x86_64-fastiov")
    qemu_vanilla: Path = Path("/opt/kata3/bin/qemu-system-x86_64-noskip")
    guest_kernel_fastiov: Path = Path("/opt/kata3/share/fastiov-artifact/vmlinuz-5.19.2-96-fastiov")
    guest_kernel_vanilla: Path = Path("/opt/kata3/share/fastiov-artifact/vmlinuz-5.19.2-96-vanilla")
    image_async: Path = Path("/opt/kata3/share/fastiov-artifact/kata-containers-async.img")
    image_sync: Path = Path("/opt/kata3/share/fastiov-artifact/kata-containers-e810-sync.img")
    guest_memory_mb: MemoryMb = 512
    storage_interface: str | None = None  # NIC whose address the storage server binds (app test)
    # the storage server's address on the pods' subnet, put on storage_interface (a PF) at run set-up and
    # taken off again at the end if the artifact added it (the original: 10.88.0.1/16 on the PF); None = use
    # the address storage_interface already has
    storage_address: IPv4Interface | None = None
    storage_port: Port = 5100
    rpc_timeout_s: Seconds = 300.0
    # build, NIC and real-host round hooks (testbeds.fastiov_host.build, hw.nic, testbeds.fastiov_host.round_hooks)
    # per-VF device-set registration of the patched host kernel: _IO(';', 125) on the VFIO container node
    fastiov_register: Literal["auto", "always", "never"] = "auto"  # auto: only on the *expected_kernel_suffix kernel
    fastiov_register_device: Path = Path("/dev/vfio/vfio")
    fastiov_register_ioctl: Annotated[Int, Field(ge=0, le=0xFFFFFFFF)] | None = 0x3B7D  # None = skip the registration
    # the patched components hard-code these directories; they must exist before the first pod
    pod_test_dir: Path = Path("/tmp/pod_test")  # kata shim and fastiov-cni exit at start without it
    instrumentation_log_dirs: dict[str, Path] = Field(default_factory=lambda: {
        "containerd": Path("/home/cni/cnicmp_logs/containerd_logs/tmp"),
        "kata": Path("/home/hdcni/cnicmp/logs/kata_logs/tmp"),
        "cni": Path("/home/hdcni/cnicmp/logs/cni_logs/tmp"),
    })  # component -> dir of its cnicmp-*.log files
    qemu_log_dir: Path | None = Path("/root/ipu/timeline-kata-qemu")  # QEMU timeline logs; None = not collected
    cni_ipam_dir: Path = Path("/var/lib/cni/networks")  # host-local IPAM state cleared between rounds
    containerd_restart: list[str] = Field(default_factory=lambda: ["systemctl", "restart", "containerd"])
    containerd_restart_per_round: bool = False  # the original restarts once per run (per script)
    dmesg_clear: bool = True  # `dmesg -C` before each round (as the original); false = keep the ring buffer
    # wait before collecting a round's logs (the original sleeps 5 s)
    log_settle_s: Annotated[Float, Field(ge=0, le=3600)] = 5.0
    # barrier/lock server the patched kata runtime calls (it hard-codes 127.0.0.1:5005)
    barrier_port: Port = 5005
    barrier_size: Concurrency = 1  # /barrierVM answers when this many sandboxes have arrived (1 = at once)
    stage_limits: dict[Literal["cniAdd", "resource1", "kataInterface", "startVM", "resource2", "total"],
                       Annotated[Int, Field(ge=0, le=MAX_CONCURRENCY)]] = Field(default_factory=lambda: dict.fromkeys(
                           ("cniAdd", "resource1", "kataInterface", "startVM", "resource2", "total"), 400))
    tenants: Concurrency = 200  # pods of a round are spread over this many tenants (200 = one pod each at 200)
    # kata's overhead cgroup confined to CPUs 0..N-1 at run set-up (the original's set_startup_cpu.sh N); None = leave it
    startup_cpus: Annotated[Int, Field(ge=1, le=MAX_THREADS)] | None = None
    guest_kernel_config: Path | None = None  # .config of the guest kernel; None = config-* beside the kernels
    kernel_config: Path | None = None  # .config the host kernel starts from; None = /boot/config-<running>
    build_jobs: Annotated[Int, Field(ge=1, le=MAX_THREADS)] | None = None  # make -j; None = CPU count


class VsriovSettings(StrictModel):
    """A virtual SR-IOV host: a QEMU/TCG guest with an emulated IOMMU and an SR-IOV device."""

    work_dir: Path = Path("/var/tmp/fastiov-vsriov")
    device: Literal["auto", "igb", "nvme"] = "auto"  # auto: igb when QEMU >= 8, else nvme
    qemu_bin: str = "qemu-system-x86_64"
    max_vfs: VmCount = 7
    guest_memory_mb: Annotated[Int, Field(ge=512, le=MAX_MEMORY_MB)] = 2048
    guest_cpus: Annotated[Int, Field(ge=1, le=MAX_THREADS)] = 2
    boot_timeout_s: Seconds = 120.0
    run_timeout_s: Seconds = 900.0
    dma_repeats: Repeats = 3  # each MAP_DMA size is measured this often (TCG timings are noisy)
    # VMM-in-guest runs; [] = skip
    inner_qemu_memory_mb: list[MemoryMb] = Field(default_factory=lambda: [256], max_length=MAX_SWEEP_LEVELS)
    shared_devset_module: bool = True  # build vfio-pci-core with the per-VF device set reverted (the paper's kernel)
    vm_memory_mb: MemoryMb = 128  # memory of each of the concurrently started inner VMs


class Testbed(StrictModel):
    """One machine the artifact runs on, described by testbeds/<name>.yaml."""

    name: str = Field(pattern=NAME_PATTERN)  # part of every run id: one folder name
    kind: Literal["local", "fastiov", "vsriov"]
    description: str = ""
    allow_host_changes: bool = False
    sys_root: Path = Path("/")  # hardware boundary: sysfs/procfs/dev are read below this root
    runtime_handler: str = "runc"
    cri_api: Literal["auto", "v1", "v1alpha2"] = "auto"
    results_dir: Path = Path("results")  # relative to the repository root
    local: LocalSettings | None = None
    fastiov: FastiovHostSettings | None = None
    vsriov: VsriovSettings | None = None
    source_path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _section_matches_kind(self) -> "Testbed":
        if getattr(self, self.kind) is None:
            if self.kind == "fastiov":
                raise ValueError("kind 'fastiov' needs a 'fastiov:' section (at least 'pfs')")
            # local/vsriov sections have usable defaults
            object.__setattr__(self, self.kind, {"local": LocalSettings, "vsriov": VsriovSettings}[self.kind]())
        return self

    def resolve_results_dir(self) -> Path:
        """Absolute results directory (relative paths are taken from the repository root)."""
        return self.results_dir if self.results_dir.is_absolute() else REPO_ROOT / self.results_dir


class Profile(StrictModel):
    """An experiment profile: how much to measure (smoke, default, paper, ...)."""

    name: str = Field(pattern=NAME_PATTERN)  # part of every run id: one folder name
    description: str = ""
    concurrency: list[Concurrency] = Field(min_length=1, max_length=MAX_SWEEP_LEVELS)  # 04_bench's sweep
    repeats: Repeats = 1
    bench_network: NetworkMode = "bridge"  # network mode 04_bench sweeps on the local testbed
    # modes 04_bench's startup sweep compares at every level on the local testbed ([] = bench_network only)
    bench_networks: list[NetworkMode] = Field(default_factory=list)
    ablation_networks: list[NetworkMode] = Field(default_factory=lambda: ["none", "bridge"], min_length=1)
    ablation_concurrency: list[Concurrency] = Field(default_factory=lambda: [4], min_length=1,
                                                    max_length=MAX_SWEEP_LEVELS)
    variants: list[str] = Field(default_factory=lambda: ["vanilla", "fastiov"], min_length=1)  # real host
    # real host: the ablation's variants ([] = `variants`); the memory experiment (2 GB guests) at its own
    # levels ([] = none); the app test's variants (the paper: vanilla, fastiov, no network)
    ablation_variants: list[str] = Field(default_factory=list, max_length=MAX_SWEEP_LEVELS)
    memory_variants: list[str] = Field(default_factory=list, max_length=MAX_SWEEP_LEVELS)
    memory_concurrency: list[Concurrency] = Field(default_factory=lambda: [10], min_length=1,
                                                  max_length=MAX_SWEEP_LEVELS)
    app_variants: list[str] = Field(default_factory=lambda: ["fastiov"], min_length=1, max_length=MAX_SWEEP_LEVELS)
    app_concurrency: list[Concurrency] = Field(default_factory=lambda: [2], min_length=1, max_length=MAX_SWEEP_LEVELS)
    app_repeats: Repeats = 1
    app_file_mb: Annotated[Int, Field(ge=1, le=4096)] = 4
    # the workload image's functions the app test runs, one sweep each (bench.app_functions)
    app_functions: list[AppFunction] = Field(default_factory=lambda: ["download-hash"], min_length=1,
                                             max_length=MAX_SWEEP_LEVELS)
    pod_timeout_s: Seconds = 120.0
    vsriov_vf_counts: list[VmCount] = Field(default_factory=lambda: [1, 2, 4, 7], min_length=1,
                                            max_length=MAX_SWEEP_LEVELS)  # VFs opened at once
    vsriov_dma_sizes_mb: list[MemoryMb] = Field(default_factory=lambda: [64, 128, 256], min_length=1,
                                                max_length=MAX_SWEEP_LEVELS)
    vsriov_vm_counts: list[VmCount] = Field(default_factory=lambda: [1, 2], min_length=1,
                                            max_length=MAX_SWEEP_LEVELS)  # concurrent inner VMs
    vsriov_repeats: Repeats = 1  # device-set opens and concurrent VM starts, each this often
    vsriov_qemu62: bool = False  # build (once) and run QEMU 6.2.0 stock and with 0001-qemu.patch

    @model_validator(mode="after")
    def _sorted_unique(self) -> "Profile":
        for key in ("concurrency", "ablation_concurrency", "app_concurrency", "memory_concurrency"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ValueError(f"{key}: values must be unique, got {values}")
        return self


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _format_validation_error(path: Path, err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key (not part of the schema; check its spelling)"
    elif "input" in first and not isinstance(first["input"], (dict, list)):
        msg += f", got {_short(first['input'])}"
    more = f" (+{len(err.errors()) - 1} more problems)" if len(err.errors()) > 1 else ""
    return f"{path}: key '{key}': {msg}{more}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML says it is an error;
    PyYAML would keep the last one, so `repeats: 1` then `repeats: 1000` would silently mean 1000)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: the constructor names it
                continue
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {first})", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 floats: PyYAML (YAML 1.1) reads `1e3` (no dot) as the string "1e3", which a number field
# would then refuse with a puzzling message
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """Parse YAML text safely, refusing duplicate keys (yaml.YAMLError names the line)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml_text(path: Path, limit: int = MAX_CONFIG_BYTES, what: str = "YAML file") -> Any:
    """A YAML file's content: a regular file of at most `limit` bytes, UTF-8 text without NULs, no
    duplicate keys; ConfigError names the file (and the line)."""
    try:
        raw = read_regular_bytes(path, limit, what)
    except FileRefused as exc:
        raise ConfigError(str(exc)) from None
    if b"\0" in raw:
        raise ConfigError(f"{path}: binary file (NUL bytes), expected a YAML text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}), expected a YAML text file") from None
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} not valid YAML: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply, expected a YAML file of a few levels") from None


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; ConfigError names the file (and line) otherwise."""
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a YAML file")
    data = read_yaml_text(path, MAX_CONFIG_BYTES, "testbed or profile file")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def load_testbed(path: str | Path, overrides: dict[str, Any] | None = None) -> Testbed:
    """Load and validate a testbed YAML file; raise ConfigError naming the file and key."""
    path = resolve_path(path)
    data = read_yaml_mapping(path)
    if overrides:
        data = _apply_overrides(data, overrides)
    try:
        tb = Testbed.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(path, err)) from None
    update: dict[str, Any] = {"source_path": path}
    # a relative work_dir is taken from the testbed file's folder, never from wherever the user stands
    for section in ("local", "vsriov"):
        settings = getattr(tb, section)
        if settings is not None and not settings.work_dir.is_absolute():
            update[section] = settings.model_copy(update={"work_dir": (path.parent / settings.work_dir).resolve()})
    return tb.model_copy(update=update)


def load_profile(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> Profile:
    """Load a profile by name (`smoke`, `default`, `paper`) or from a YAML path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        path = resolve_path(candidate)
    else:
        path = PROFILES_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")))
            raise ConfigError(f"profile {str(name_or_path)!r} not found (known: {known}, or a path to a .yaml)")
    data = read_yaml_mapping(path)
    if overrides:
        data = _apply_overrides(data, overrides)
    try:
        return Profile.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(path, err)) from None


def resolve_path(path: str | Path) -> Path:
    """A path as given if it exists, else relative to the repository root (notebooks run in notebooks/)."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p.resolve() if p.exists() else p
    alt = REPO_ROOT / p
    return alt.resolve() if alt.exists() else p


def parse_override(text: str) -> tuple[str, Any]:
    """Parse `key=value` (dotted keys, YAML value) as given with `-p` on the command line."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    for dotted, value in overrides.items():
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[parts[-1]] = value
    return out
