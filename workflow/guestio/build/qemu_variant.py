"""Building one QEMU variant: a hard-linked copy of the pristine tree with its layers' patches,
configured out of tree, built with ninja through ccache and checked; or the record of the host's
binary (``qemu.binary: host``).  What is built (source, configuration) is :mod:`guestio.build.qemu`."""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import time
from pathlib import Path

from guestio import progress
from guestio.build import ccache, patches
from guestio.build.qemu import (BINARY_NAME, BINARY_PACKAGE, DEVICES, DEVICES_NAME, FIRMWARE_DIR, FIRMWARE_PACKAGES,
                                FIRMWARE_PATH, HOST_BINARY, REQUIRED_DEVICES, REQUIRED_TRACE_EVENTS, TARGET,
                                QemuBuildError, configure_args, dpkg_field, ensure_source, installed_source)
from guestio.util import exclusive, sha256_file, write_json_atomic


def build_env(ccache_dir: Path | None, workdir: Path | None = None) -> dict:
    """The build's environment; *workdir* (source and objects inside it) is ccache's base
    directory, so the same build in another clone, at any depth, hits (guestio.build.ccache)."""
    return ccache.env(ccache_dir, dict(os.environ, LC_ALL="C", PYTHONDONTWRITEBYTECODE="1"), tree=workdir)


def _run(cmd: list[str], cwd: Path, env: dict, log, what: str) -> None:
    log.write(f"$ (cd {cwd} && {' '.join(cmd)})\n")
    log.flush()
    result = subprocess.run(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise QemuBuildError(f"{what} failed (exit {result.returncode}); see {log.name}")


def compiler_version(cc: str) -> str:
    out = subprocess.run([cc.split()[-1], "--version"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0]


def firmware_packages() -> dict[str, str | None]:
    return {p: dpkg_field(p, "${Version}") for p in FIRMWARE_PACKAGES}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _copy_atomic(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.copy2(src, tmp)
    tmp.replace(dest)


def check_binary(binary: Path | str, firmware_dir: str | None, timeout_s: float = 60) -> dict:
    """What the pipeline needs of a QEMU binary, checked by running it; raise if anything lacks.

    Its version; the devices of REQUIRED_DEVICES; TCG and KVM; -plugin; the trace events of
    the exit cross-check; and firmware: a pc machine is created (which loads SeaBIOS and the
    option ROMs) paused, then quit over QMP on stdin.
    """
    binary = str(binary)
    base = [binary] + (["-L", firmware_dir] if firmware_dir else [])

    def out(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([*base, *args], capture_output=True, text=True, input=stdin, timeout=timeout_s)

    version = out("--version")
    if version.returncode != 0:
        raise QemuBuildError(f"{binary} --version failed: {version.stderr.strip()}")
    problems = []
    devices = out("-device", "help").stdout
    listed = set(re.findall(r'^name "([^"]+)"', devices, re.M))
    problems += [f"device {d} missing from -device help" for d in REQUIRED_DEVICES if d not in listed]
    accels = out("-accel", "help").stdout.splitlines()[1:]  # after "Accelerators supported in QEMU binary:"
    accels = [a.strip() for a in accels if a.strip()]
    problems += [f"accelerator {a} missing from -accel help" for a in ("tcg", "kvm") if a not in accels]
    if "-plugin" not in out("-help").stdout:
        problems.append("no -plugin option (built without --enable-plugins?)")
    events = out("-trace", "help").stdout.split()
    problems += [f"trace event {e} missing from -trace help" for e in REQUIRED_TRACE_EVENTS if e not in events]
    boot = out("-machine", "pc", "-accel", "tcg", "-nodefaults", "-no-user-config", "-display", "none",
               "-S", "-qmp", "stdio", stdin='{"execute": "qmp_capabilities"}\n{"execute": "quit"}\n')
    if boot.returncode != 0:
        problems.append(f"a paused pc machine did not start (firmware?): {boot.stderr.strip()[-500:]}")
    if problems:
        raise QemuBuildError(f"{binary} lacks what the pipeline needs:\n" + "\n".join(f"  - {p}" for p in problems))
    lines = version.stdout.strip().splitlines()
    m = re.search(r"version (\S+)", lines[0])
    return {"version": m.group(1) if m else lines[0], "version_output": version.stdout.strip(),
            "devices": sorted(d for d in listed if d in REQUIRED_DEVICES), "accelerators": sorted(accels),
            "firmware_loaded": True}


def build_variant(
    *,
    variant: str,
    layers: list[str],
    layers_root: Path,
    pristine: Path,
    source: dict,
    workdir: Path,
    outdir: Path,
    jobs: int,
    ccache_dir: Path | None,
    log_path: Path,
) -> dict:
    """Patch, configure and build one QEMU variant; write its binary and build.json to outdir."""
    workdir = Path(workdir).absolute()
    tree, objdir = workdir / "src", workdir / "build"
    patch_files = patches.variant_patches(layers_root, layers, what="QEMU layer", error=QemuBuildError)
    cc = ccache.compiler(ccache_dir)
    env = build_env(ccache_dir, workdir)
    args = configure_args(variant)
    with open(log_path, "w") as log, exclusive(workdir, log=lambda m: log.write(m + "\n")):
        ensure_source(source, pristine, log=log)
        started = time.monotonic()  # from here: copy and patch the tree, configure, compile
        cpu_before = _children_cpu()
        with exclusive(pristine, shared=True):
            patches.prepare_tree(Path(pristine).absolute(), tree, patch_files, QemuBuildError)
        devices = tree / "configs" / "devices" / TARGET / f"{DEVICES_NAME}.mak"
        devices.write_text(DEVICES)
        shutil.rmtree(objdir, ignore_errors=True)
        objdir.mkdir(parents=True)
        # A relative path to configure: meson then names sources ../src/..., the same for every
        # variant and every clone, so ccache (base dir: workdir) shares objects between them.
        _run([f"../{tree.name}/configure", f"--cc={cc}", *args], objdir, env, log, f"configure of QEMU {variant}")
        # A cold build takes minutes: a line a minute, in the log and on stderr.
        with progress.heartbeat(lambda: f"QEMU {variant}: {progress.ninja_steps(log_path)} build steps", log):
            _run(["ninja", "-j", str(jobs), BINARY_NAME], objdir, env, log, f"ninja {BINARY_NAME} of QEMU {variant}")
        seconds = time.monotonic() - started
        cpu = _children_cpu() - cpu_before
        binary = Path(outdir).absolute() / BINARY_NAME
        _copy_atomic(objdir / BINARY_NAME, binary)
    checks = check_binary(binary, FIRMWARE_DIR)
    record = {
        "variant": variant,
        "kind": "build",
        "binary": str(binary),
        "sha256": sha256_file(binary),
        "size_bytes": binary.stat().st_size,
        "version": checks.pop("version"),
        "version_output": checks.pop("version_output"),
        "checks": checks,
        "source": source,
        "layers": list(layers),
        "patches": patches.describe(patch_files),
        "configure_args": [f"--cc={cc}", *args],
        "devices_file": DEVICES,
        "target": TARGET,
        "firmware_dir": FIRMWARE_DIR,
        "firmware_path": FIRMWARE_PATH,
        "firmware_packages": firmware_packages(),
        "compiler": compiler_version(cc),
        "ccache": cc.startswith("ccache"),
        "jobs": jobs,
        "build_seconds": round(seconds, 1),
        # CPU time of configure, ninja and the compilers: less sensitive than the wall time
        # to whatever else runs on the machine.
        "build_cpu_seconds": round(cpu, 1),
    }
    write_json_atomic(Path(outdir) / "build.json", record)
    return record


def describe_host(variant: str, outdir: Path, binary: str = HOST_BINARY) -> dict:
    """build.json for qemu.binary: host: the distribution's binary, as it is."""
    path = Path(binary)
    if not path.is_file():
        raise QemuBuildError(f"qemu.binary: host, but {binary} does not exist (is {BINARY_PACKAGE} installed?)")
    checks = check_binary(path, None)
    record = {
        "variant": variant,
        "kind": "host",
        "binary": str(path.resolve()),
        "sha256": sha256_file(path),
        "size_bytes": path.stat().st_size,
        "version": checks.pop("version"),
        "version_output": checks.pop("version_output"),
        "checks": checks,
        "source": installed_source(),
        "dpkg": {"package": BINARY_PACKAGE, "version": dpkg_field(BINARY_PACKAGE, "${Version}")},
        "layers": [],
        "patches": [],
        "configure_args": None,
        "firmware_dir": None,
        "firmware_path": None,
        "firmware_packages": firmware_packages(),
    }
    write_json_atomic(Path(outdir) / "build.json", record)
    return record
