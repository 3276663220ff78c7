"""The Python lock file: exact versions of every dependency, agreeing with pyproject.toml and environment.yml."""
from __future__ import annotations

import re
import tomllib

import yaml
from packaging.requirements import Requirement

from fastiov_lib.config import REPO_ROOT, load_profile, load_testbed
from fastiov_lib.run.provenance import LOCK_FILE, collect_provenance, lock_file_state
from fastiov_lib.testbeds import backend_for

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO_ROOT / LOCK_FILE).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = PIN.match(line.strip())
        assert m, f"{LOCK_FILE}: not an exact pin: {line!r}"
        pins[_norm(m.group(1))] = m.group(2)
    return pins


def test_lock_file_pins_every_dependency_of_pyproject_within_its_ranges():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]
    pins = _locked()
    for req in wanted:
        name = _norm(req.name)
        assert name in pins, f"{req.name} (pyproject.toml) is not in {LOCK_FILE}"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"{LOCK_FILE} pins {req.name}=={pins[name]}, outside pyproject's {req.specifier}"


def test_environment_yml_installs_the_lock_file_and_the_package():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert f"-r {LOCK_FILE}" in pip_section and "-e ." in pip_section
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    header = (REPO_ROOT / LOCK_FILE).read_text()
    assert python.split("=")[1].startswith("3.11") and "pip-compile" in header


def test_makefile_venv_installs_from_the_lock_file():
    make = (REPO_ROOT / "Makefile").read_text()
    assert f"pip install -q -r {LOCK_FILE}" in make and "pip install -q --no-deps -e ." in make


def test_run_json_records_the_lock_file_hash():
    import hashlib

    testbed = load_testbed(REPO_ROOT / "testbeds" / "local.yaml")
    prov = collect_provenance(testbed, load_profile("smoke"), "x", backend_for(testbed).facts())
    assert prov.python_lock == lock_file_state()
    assert prov.python_lock.sha256 == hashlib.sha256((REPO_ROOT / LOCK_FILE).read_bytes()).hexdigest()
