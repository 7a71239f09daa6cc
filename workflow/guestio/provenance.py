"""What produced a result: a snapshot of the host and of this checkout.

mmtests keeps a snapshot of the system beside every result; this is ours.
Each run's provenance.json merges the host snapshot with the kernel's
build.json, the image manifest and the accelerator decision.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

DEBIAN_PACKAGES = ["qemu-system-x86", "linux-source-6.1", "gcc", "ccache", "e2fsprogs", "busybox-static"]
PYTHON_PACKAGES = ["snakemake", "qemu.qmp", "pandas", "seaborn", "matplotlib", "numpy", "jsonschema"]


def _run(cmd: list[str], cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=cwd)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted(f for f in line.split(":", 1)[1].split() if f in {"vmx", "svm", "hypervisor", "constant_tsc", "nonstop_tsc"})
    except OSError:
        pass
    return []


def memory_kib() -> int | None:
    try:
        m = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def kvm_modules() -> list[str]:
    try:
        return sorted(line.split()[0] for line in Path("/proc/modules").read_text().splitlines() if line.startswith("kvm"))
    except OSError:
        return []


def debian_versions(packages: list[str]) -> dict[str, str | None]:
    out = {}
    for name in packages:
        out[name] = _run(["dpkg-query", "-W", "-f=${Version}", name]) or None
    return out


def python_versions(packages: list[str]) -> dict[str, str | None]:
    out = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def checkout(repo: Path) -> dict:
    commit = _run(["git", "rev-parse", "HEAD"], cwd=repo)
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo)
    return {"commit": commit, "dirty": bool(dirty) if dirty is not None else None}


def qemu_version(binary: str = "qemu-system-x86_64") -> str | None:
    out = _run([binary, "--version"])
    return out.splitlines()[0] if out else None


def host_snapshot() -> dict:
    uname = platform.uname()
    return {
        "host": {
            "kernel": uname.release,
            "kernel_version": uname.version,
            "machine": uname.machine,
            "cpu_model": cpu_model(),
            "cpu_flags": cpu_flags(),
            "cpus": os.cpu_count(),
            "memory_kib": memory_kib(),
            "dev_kvm": os.path.exists("/dev/kvm"),
            "kvm_modules": kvm_modules(),
            "os_release": _os_release(),
        },
        "qemu": qemu_version(),
        "debian_packages": debian_versions(DEBIAN_PACKAGES),
        "python": sys.version.split()[0],
        "python_packages": python_versions(PYTHON_PACKAGES),
    }


def _os_release() -> str | None:
    try:
        m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', Path("/etc/os-release").read_text(), re.M)
        return m.group(1) if m else None
    except OSError:
        return None


def _load(path: Path) -> dict:
    import json

    return json.loads(Path(path).read_text())


def run_provenance(*, repo: Path, host: Path, accelerator: Path, kernel_build: Path, image_manifest: Path,
                   run: Path, job: Path, vm: dict, qemu_build: Path) -> dict:
    """Everything needed to trace one run back to kernel, patches, image, QEMU and host."""
    from guestio.util import sha256_file
    from guestio.vm import JOB_LIB

    run_record = _load(run)
    return {
        "run": run_record,
        "accelerator": _load(accelerator),
        "qemu": _load(qemu_build),  # the build record: path, version, patches, sha256
        "kernel": _load(kernel_build),
        "image": image_summary(image_manifest),
        "job": {"file": str(job), "sha256": sha256_file(job),
                "lib": {"file": str(JOB_LIB), "sha256": sha256_file(JOB_LIB)}},
        "vm_config": vm,
        "guestio": checkout(repo),
        **_host_part(host),
    }


def boot_run_provenance(*, repo: Path, host: Path, kernel_build: Path, qemu_build: Path, plugin: Path,
                        vm: dict, append: str, seconds: float, panic: str) -> dict:
    """A boot-only exit run (guestio.exits.bootonly): no image, no job; always TCG with the plugin,
    whatever the host's accelerator, and the testbed names the kernel's architecture."""
    from guestio.util import sha256_file

    kernel = _load(kernel_build)
    return {
        "run": {"kind": "boot-only", "append": append, "seconds": seconds, "ended_with": panic},
        "accelerator": {"accelerator": "tcg-modelled", "why": "boot-only runs count modelled exits with the plugin"},
        "qemu": _load(qemu_build),
        "kernel": kernel,
        "plugin": {"file": str(plugin), "sha256": sha256_file(plugin)},
        "testbed": {"guest_arch": kernel.get("arch", "x86_64")},
        "vm_config": vm,
        "guestio": checkout(repo),
        **_host_part(host),
    }


def _host_part(host: Path) -> dict:
    """The host snapshot, its QEMU (the distribution's binary) renamed so it is not taken for the run's."""
    snapshot = _load(host)
    part = {**{k: v for k, v in snapshot.items() if k != "qemu"}, "host_qemu": snapshot.get("qemu")}
    # The capability probe's findings beside the snapshot (guestio.hostprobe): what stood in for
    # what (e.g. the host scheduler in bfq's place).  Read, not a rule input, so no rerun trigger.
    from guestio.hostprobe import summary

    capabilities = summary(Path(host).parent / "capabilities.json")
    if capabilities is not None:
        part["host_capabilities"] = capabilities
    return part


def host_identity() -> list:
    """The host facts that decide whether host-dependent results still hold."""
    return [platform.node(), platform.release(), os.path.exists("/dev/kvm"), kvm_modules()]


def image_summary(image_manifest: Path) -> dict:
    image = _load(image_manifest)
    return {"sha256": image["image"]["sha256"],
            "debs": [{k: d[k] for k in ("package", "version", "sha256") if k in d} for d in image["debs"] if d.get("used")]}


def experiment_provenance(*, experiment: str, repo: Path, host: Path, accelerator: Path, kernel_builds: dict[str, Path],
                          image_manifest: Path, runs: list[Path], config: dict,
                          qemu_builds: dict[str, Path], default_qemu: str) -> dict:
    """Provenance of a whole table: what every run in it shared, and a hash of each run's rows.

    ``qemu`` is the default build (vm.qemu); ``qemus`` every QEMU variant the table's runs
    name in their paths (each comparison's two sides ran on one of them, the same one
    unless the comparison is about the QEMU variant itself).
    """
    from guestio.util import sha256_file

    return {
        "experiment": experiment,
        "accelerator": _load(accelerator),
        "kernels": {variant: _load(path) for variant, path in kernel_builds.items()},
        "qemu": _load(qemu_builds[default_qemu]),
        "qemus": {variant: _load(path) for variant, path in qemu_builds.items()},
        "image": image_summary(image_manifest),
        "config": config,
        "runs": {str(path): sha256_file(path) for path in runs},
        "guestio": checkout(repo),
        **_host_part(host),
    }


def host_clocksource() -> str:
    try:
        return Path("/sys/devices/system/clocksource/clocksource0/current_clocksource").read_text().strip()
    except OSError:
        return "unknown"
