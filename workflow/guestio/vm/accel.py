"""Choose the QEMU accelerator: KVM only if a real probe boot under KVM works.

/dev/kvm existing is not enough: nested or broken KVM can hang a guest before
it prints anything.  So for "auto" and "kvm" we boot the real guest kernel and
initramfs under KVM with a trivial job and require ``GUESTIO: init started``
within a short timeout.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Literal

from guestio.vm.machine import QEMU_BINARY, VMSpec, last_serial_line, run_vm

__all__ = ["AcceleratorError", "probe_accelerator", "KVM_DEVICE",
           "DEFAULT_PROBE_TIMEOUT_S", "DEFAULT_PROBE_APPEND"]

KVM_DEVICE = Path("/dev/kvm")
DEFAULT_PROBE_TIMEOUT_S = 20.0
DEFAULT_PROBE_APPEND = "console=ttyS0 panic=-1 nokaslr rootfstype=ramfs"


class AcceleratorError(RuntimeError):
    """KVM was requested explicitly but cannot be used."""


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

    say = log if log is not None else (lambda msg: None)
    say(f"probing kvm: booting {Path(kernel).name} under kvm (timeout {timeout_s:g} s)")
    tmp = Path(tempfile.mkdtemp(prefix="guestio-probe-"))
    try:
        job = tmp / "probe-job.sh"
        job.write_text("echo probe\n")
        probe_out = Path(workdir) if workdir is not None else tmp / "kvm-probe"
        spec = VMSpec(kernel=Path(kernel), initrd=Path(initrd), append=append, accel="kvm",
                      memory_mib=memory_mib, job=job, qemu=qemu, firmware_dir=firmware_dir)
        result = run_vm(spec, probe_out, boot_timeout_s=timeout_s,
                        job_timeout_s=max(timeout_s, 10.0), log=say)
        last = last_serial_line(probe_out / "serial.log")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if result.boot_s is not None:  # reached init: KVM works (job outcome is irrelevant)
        return "kvm", f"probe boot under kvm reached init in {result.boot_s:.1f} s"
    if result.status == "boot-timeout":
        why = (f"{KVM_DEVICE} exists but a probe boot did not reach init within "
               f"{timeout_s:g} s: last serial line: {last}")
    else:
        why = (f"{KVM_DEVICE} exists but a probe boot under kvm failed "
               f"({result.status}: {result.reason})")
    say(f"kvm unusable: {why}")
    return refuse(why)
