"""Choose the QEMU accelerator: KVM only if a real probe boot under KVM works.

/dev/kvm existing is not enough: nested or broken KVM can hang a guest before
it prints anything.  So for "auto" and "kvm" we boot the real guest kernel and
initramfs under KVM with a trivial job and require ``GUESTIO: init started``
within a short timeout.

A probe boot can fail for reasons that have nothing to do with KVM: more memory
than the host can give (``vm.memory_mib``), a kernel command line that stops the
guest (``vm.append``), a kernel or initramfs that is missing or does not boot.
Falling back to TCG then would only hide a broken config until the first real
run, slower.  So a KVM failure is taken as KVM's only when QEMU says so (its
stderr names KVM, vmx or svm), or when the same boot under TCG reaches init; if
it fails under TCG too, :class:`ProbeConfigError` names the settings to check
with the serial and QEMU stderr tails.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Literal

from guestio.vm import QEMU_BINARY, RunResult, VMSpec, last_serial_line, run_vm, serial_tail

__all__ = ["AcceleratorError", "ProbeConfigError", "probe_accelerator", "KVM_DEVICE",
           "DEFAULT_PROBE_TIMEOUT_S", "DEFAULT_PROBE_APPEND"]

KVM_DEVICE = Path("/dev/kvm")
DEFAULT_PROBE_TIMEOUT_S = 20.0
DEFAULT_PROBE_APPEND = "console=ttyS0 panic=-1 nokaslr rootfstype=ramfs"


class AcceleratorError(RuntimeError):
    """KVM was requested explicitly but cannot be used."""


class ProbeConfigError(AcceleratorError):
    """The probe guest does not boot under TCG either: the config is broken, not KVM."""


#: QEMU's own words when KVM itself is what fails (no module, no vmx/svm, KVM_CREATE_VM refused).
KVM_FAILURE = re.compile(r"\bkvm\b|KVM_|\bvmx\b|\bsvm\b|hardware virtuali[sz]ation", re.IGNORECASE)
#: A TCG boot of the probe guest is this many times as slow as KVM's timeout allows, at least
#: TCG_MIN_TIMEOUT_S (TCG boots of the pipeline's kernels take seconds to tens of seconds).
TCG_SLOWDOWN = 3.0
TCG_MIN_TIMEOUT_S = 60.0


def _stderr_tail(outdir: Path, lines: int = 8) -> list[str]:
    try:
        text = (outdir / "qemu-stderr.log").read_text(errors="replace")
    except OSError:
        return []
    return [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]


def _kvm_said_so(result: RunResult, outdir: Path) -> bool:
    """QEMU stopped because of KVM itself (its message names KVM, vmx or svm)."""
    return result.status == "qemu-failed" and bool(
        KVM_FAILURE.search(result.reason) or any(KVM_FAILURE.search(ln) for ln in _stderr_tail(outdir)))


def _suspects(result: RunResult, outdir: Path, memory_mib: int, append: str) -> list[str]:
    """The settings a failed TCG boot points at, most likely first."""
    text = " ".join([result.reason, *_stderr_tail(outdir), *serial_tail(outdir / "serial.log", 20)]).lower()
    memory = f"vm.memory_mib ({memory_mib} MiB: more than this host can give the guest?)"
    cmdline = f"vm.append ({append!r}: does it let the guest reach init?)"
    image = "the kernel and initramfs the probe boots (rebuild them)"
    if "memory" in text or "cannot allocate" in text or "ram size" in text:
        return [memory, cmdline, image]
    return [cmdline, memory, image]


def probe_accelerator(
    kernel: Path | str,
    initrd: Path | str,
    requested: Literal["auto", "kvm", "tcg"] = "auto",
    timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
    *,
    append: str = DEFAULT_PROBE_APPEND,
    memory_mib: int = 256,
    workdir: Path | str | None = None,
    log: Callable[[str], None] | None = None,
    qemu: str = QEMU_BINARY,
    firmware_dir: str | None = None,
) -> tuple[str, str]:
    """Return (accel, reason) with accel "kvm" or "tcg".

    requested="tcg": tcg, no probe.  "auto": kvm if a probe boot under KVM
    reaches init within *timeout_s*, else tcg (reason says why).  "kvm": the
    same probe, but failure raises AcceleratorError instead of falling back.
    The probe run's files (serial.log, run.json, ...) go to *workdir* if
    given (kept for inspection), else to a temp dir that is removed.
    """
    if requested == "tcg":
        return "tcg", "tcg requested"
    if requested not in ("auto", "kvm"):
        raise ValueError(f"accelerator must be 'auto', 'kvm' or 'tcg', not {requested!r}")

    def refuse(why: str) -> tuple[str, str]:
        if requested == "kvm":
            raise AcceleratorError(f"vm.accel: kvm requested but {why}")
        return "tcg", why

    if not KVM_DEVICE.exists():
        return refuse(f"{KVM_DEVICE} does not exist")
    if not os.access(KVM_DEVICE, os.R_OK | os.W_OK):
        return refuse(f"{KVM_DEVICE} exists but is not readable and writable by this user")

    for what, path in (("guest kernel", kernel), ("initramfs", initrd)):
        if not Path(path).is_file():
            raise ProbeConfigError(f"the probe's {what} {path} does not exist: build it (snakemake builds it "
                                   f"before the probe; a path given by hand must name a file)")

    say = log if log is not None else (lambda msg: None)
    tmp = Path(tempfile.mkdtemp(prefix="guestio-probe-"))
    try:
        job = tmp / "probe-job.sh"
        job.write_text("echo probe\n")
        base = Path(workdir) if workdir is not None else tmp

        def boot(accel: str, boot_timeout_s: float) -> tuple[RunResult, Path]:
            say(f"probing {accel}: booting {Path(kernel).name} under {accel} (timeout {boot_timeout_s:g} s)")
            outdir = base / f"{accel}-probe" if workdir is None or accel != "kvm" else base
            spec = VMSpec(kernel=Path(kernel), initrd=Path(initrd), append=append, accel=accel,
                          memory_mib=memory_mib, job=job, qemu=qemu, firmware_dir=firmware_dir)
            return run_vm(spec, outdir, boot_timeout_s=boot_timeout_s,
                          job_timeout_s=max(boot_timeout_s, 10.0), log=say), outdir

        result, kvm_out = boot("kvm", timeout_s)
        if result.boot_s is not None:  # reached init: KVM works (job outcome is irrelevant)
            return "kvm", f"probe boot under kvm reached init in {result.boot_s:.1f} s"
        if result.status == "boot-timeout":
            why = (f"{KVM_DEVICE} exists but a probe boot did not reach init within "
                   f"{timeout_s:g} s: last serial line: {last_serial_line(kvm_out / 'serial.log')}")
        else:
            why = (f"{KVM_DEVICE} exists but a probe boot under kvm failed "
                   f"({result.status}: {result.reason})")
        if not _kvm_said_so(result, kvm_out):
            # Not KVM's own words: the same boot under TCG tells a broken KVM from a broken config.
            tcg_timeout_s = max(timeout_s * TCG_SLOWDOWN, TCG_MIN_TIMEOUT_S)
            control, tcg_out = boot("tcg", tcg_timeout_s)
            if control.boot_s is None:
                raise ProbeConfigError(_broken_config(result, control, tcg_out, memory_mib, append, tcg_timeout_s))
            why += f"; the same boot under tcg reached init in {control.boot_s:.1f} s"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"kvm unusable: {why}")
    return refuse(why)


def _broken_config(kvm: RunResult, tcg: RunResult, tcg_out: Path, memory_mib: int, append: str,
                   tcg_timeout_s: float) -> str:
    how = (f"did not reach init within {tcg_timeout_s:g} s" if tcg.status == "boot-timeout"
           else f"failed ({tcg.status}: {tcg.reason})")
    lines = [f"the probe guest does not boot under kvm ({kvm.status}) nor under tcg, where it {how}: "
             f"the config is broken, not KVM, so there is no falling back to tcg. Check "
             + "; ".join(_suspects(tcg, tcg_out, memory_mib, append)) + ".",
             "  serial (tcg): " + " | ".join(serial_tail(tcg_out / "serial.log", 6))]
    stderr = _stderr_tail(tcg_out, 6)
    if stderr:
        lines.append("  QEMU stderr (tcg): " + " | ".join(stderr))
    return "\n".join(lines)
