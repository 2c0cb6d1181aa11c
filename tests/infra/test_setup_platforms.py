"""`make setup` on learners' machines: the pins each platform installs, the scripts a Mac's bash 3.2 runs, and the
peak-RSS unit `make bench` reads on macOS."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from scripts.bench_validator import _CHILD_PRELUDE, maxrss_mb
from tests.conftest import ROOT

WORKLOAD_REQUIREMENTS = (
    ROOT / "workloads" / "pretrain" / "requirements.txt",
    ROOT / "workloads" / "finetune_sagemaker" / "requirements.txt",
)
# torch and the two pins whose wheels require it (peft: Requires-Dist torch>=1.13.0; accelerate: torch>=2.0.0).
TORCH_STACK = ("torch", "peft", "accelerate")


def requirements(path: Path) -> list[Requirement]:
    """The requirement lines of a pip requirements file (comments, blank lines and options such as -r left out)."""
    lines = (line.split(" #")[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith(("#", "-"))]


def dev_requirements() -> dict[str, Requirement]:
    return {canonicalize_name(req.name): req for req in requirements(ROOT / "requirements-dev.txt")}


def machine(system: str, arch: str, release: str) -> dict[str, str]:
    """The marker environment pip evaluates on another machine (platform.release() is the kernel's release: Darwin
    23 is macOS 14, e.g. "macOS 14.4.1 (23E224), Kernel Version: Darwin 23.4.0" in actions/runner-images)."""
    return {
        **default_environment(),
        "sys_platform": system.lower(),
        "platform_system": system,
        "platform_machine": arch,
        "platform_release": release,
    }


def installs(req: Requirement, environment: dict[str, str]) -> bool:
    return req.marker is None or req.marker.evaluate(environment)


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        (machine("Darwin", "x86_64", "22.6.0"), False),  # Intel Mac, macOS 13
        (machine("Darwin", "x86_64", "23.4.0"), False),  # Intel Mac, macOS 14: torch has no x86_64 macOS wheel
        (machine("Darwin", "arm64", "22.6.0"), False),  # Apple silicon, macOS 13
        (machine("Darwin", "arm64", "23.4.0"), True),  # macOS 14: torch-2.13.0-...-macosx_14_0_arm64.whl
        (machine("Darwin", "arm64", "25.1.0"), True),
        (machine("Linux", "x86_64", "6.8.0-1017-azure"), True),  # not a PEP 440 version
        (machine("Linux", "aarch64", "5.15.153.1-microsoft-standard-WSL2"), True),
    ],
    ids=["mac13-intel", "mac14-intel", "mac13-arm", "mac14-arm", "mac26-arm", "linux-x86_64", "wsl-aarch64"],
)
def test_torch_and_the_pins_that_need_it_install_only_where_torch_has_a_wheel(
    environment: dict[str, str], expected: bool
) -> None:
    """torch 2.13.0 has no sdist and, for macOS, only a macosx_14_0_arm64 wheel: before, `make setup` stopped on an
    Intel Mac or macOS 13 with a resolution error about torch, though synth never imports it."""
    dev = dev_requirements()
    assert {name: installs(dev[name], environment) for name in TORCH_STACK} == dict.fromkeys(TORCH_STACK, expected)
    # Everything else installs everywhere (the tests that need torch skip without it: tests/torch_helpers.py).
    assert all(installs(req, environment) for name, req in dev.items() if name not in TORCH_STACK)


def test_no_marker_compares_platform_release_from_the_left() -> None:
    """`platform_release >= "23"` stops pip on most Linux machines: packaging 22.0 to 25.0 (pip 24.2, Python 3.13's
    own, vendors 24.1) read the kernel release as a PEP 440 version and raise InvalidVersion on e.g. 6.8.0-1017-azure
    (pypa/packaging#774, pypa/pip#12736); markers do not short-circuit, so `sys_platform != "darwin" or ...` does not
    spare Linux. `"23" <= platform_release` makes the specifier invalid there instead, and pip compares strings."""
    for path in (ROOT / "requirements.txt", ROOT / "requirements-dev.txt", *WORKLOAD_REQUIREMENTS):
        for req in requirements(path):
            assert not re.search(r"platform_release\s*(?:[<>=!~]=|[<>]|===)", str(req.marker or "")), (path, req)


def test_the_dev_requirements_pin_each_workload_pin_as_the_workload_does() -> None:
    """A requirements file's -r line takes no marker, so requirements-dev.txt repeats the workloads' pins."""
    dev = dev_requirements()
    for path in WORKLOAD_REQUIREMENTS:
        for req in requirements(path):
            name = canonicalize_name(req.name)
            assert name in dev and dev[name].specifier == req.specifier, (path.name, str(req))


def test_the_editable_install_finds_its_build_backend_where_torch_is_left_out() -> None:
    """make setup installs the checkout with --no-build-isolation, and a Python 3.12+ venv has no setuptools: torch
    brought it in (Requires-Dist: setuptools>=77.0.3), so without torch the editable install failed."""
    intel_mac = machine("Darwin", "x86_64", "22.6.0")
    dev = {name: req for name, req in dev_requirements().items() if installs(req, intel_mac)}
    with (ROOT / "pyproject.toml").open("rb") as f:
        backend = [Requirement(text) for text in tomllib.load(f)["build-system"]["requires"]]
    for need in backend:
        pinned = dev.get(canonicalize_name(need.name))
        assert pinned is not None, need.name
        [version] = [spec.version for spec in pinned.specifier if spec.operator == "=="]
        assert need.specifier.contains(version), (str(need), version)


def shell_scripts() -> list[Path]:
    return sorted(
        path
        for folder in ("workloads", "lifecycle")
        for path in (ROOT / folder).rglob("*")
        if path.suffix in {".sh", ".sbatch"}
    )


def test_shell_scripts_expand_arrays_safely_under_bash_3_2() -> None:
    """Before bash 4.4, "${a[@]}" of an empty array is an unbound variable under set -u (bash's CHANGES, 4.4-rc2):
    pretrain.sbatch stopped before srun on macOS's /bin/bash 3.2 off HyperPod, where AUTO_RESUME is empty, which
    failed its tests there. ${a[@]+"${a[@]}"} is empty for an empty array on every bash."""
    assert shell_scripts()
    for path in shell_scripts():
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.lstrip().startswith("#"):
                continue
            for match in re.finditer(r'"\$\{(\w+)\[@\]\}"', line):
                guard = "${" + match.group(1) + "[@]+"
                where = f"{path.relative_to(ROOT)}:{number}"
                assert line[: match.start()].endswith(guard), f"{where}: write {guard}{match[0]}}} instead"


@pytest.mark.parametrize(("platform", "ru_maxrss"), [("linux", 40 * 1024), ("darwin", 40 * 1024 * 1024)])
def test_peak_rss_reads_ru_maxrss_in_each_platforms_unit(platform: str, ru_maxrss: int) -> None:
    """getrusage(2): ru_maxrss is in KiB on Linux and in bytes on macOS. Before, a 40 MiB peak read as 40,960 MiB on a
    Mac, and `make bench` reported its 200 MB target missed."""
    assert maxrss_mb(ru_maxrss, platform) == 40
    # The benchmark's child interpreters, without /proc (as on a Mac), report the same.
    namespace: dict[str, Any] = {"__name__": "child"}
    exec(compile(_CHILD_PRELUDE.replace("path = sys.argv[1]", ""), "prelude", "exec"), namespace)

    def no_proc(*_: Any, **__: Any) -> Any:
        raise OSError("no /proc here")

    usage = SimpleNamespace(ru_maxrss=ru_maxrss)
    namespace["open"] = no_proc
    namespace["resource"] = SimpleNamespace(RUSAGE_SELF=0, getrusage=lambda _: usage)
    namespace["sys"] = SimpleNamespace(platform=platform)
    assert namespace["peak_rss_mb"]() == 40
