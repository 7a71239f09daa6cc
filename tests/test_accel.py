"""The accelerator probe (guestio.vm.accel): a failed KVM probe boot falls back to TCG only when
KVM is what failed; a probe guest that does not boot under TCG either is a broken config
(vm.memory_mib, vm.append, the kernel), reported with the serial and QEMU stderr tails."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from guestio.vm import accel
from guestio.vm.accel import AcceleratorError, ProbeConfigError, probe_accelerator
from guestio.vm import RunResult, run_vm

REACHED_INIT = RunResult("ok", "", exit_status=0, boot_s=4.0, job_s=0.1)
HUNG = RunResult("boot-timeout", "guest did not reach init within 7 s")


@pytest.fixture
def probe_files(tmp_path, monkeypatch):
    """A device node stand-in for /dev/kvm, and kernel and initramfs files."""
    dev = tmp_path / "kvm"
    dev.write_text("")
    monkeypatch.setattr(accel, "KVM_DEVICE", dev)
    kernel, initrd = tmp_path / "bzImage", tmp_path / "initramfs.cpio"
    kernel.write_bytes(b"\0" * 4096)
    initrd.write_bytes(b"\0" * 512)
    return kernel, initrd


def _boots(monkeypatch, outcomes: dict, serial: dict | None = None, stderr: dict | None = None) -> list[str]:
    """Fake probe boots: accel -> RunResult; returns the accelerators booted, in order."""
    booted: list[str] = []

    def fake(spec, outdir, boot_timeout_s, job_timeout_s, log=None):
        booted.append(spec.accel)
        Path(outdir).mkdir(parents=True, exist_ok=True)
        (Path(outdir) / "serial.log").write_text((serial or {}).get(spec.accel, "SeaBIOS\nBooting from ROM...\n"))
        (Path(outdir) / "qemu-stderr.log").write_text((stderr or {}).get(spec.accel, ""))
        return outcomes[spec.accel]

    monkeypatch.setattr(accel, "run_vm", fake)
    return booted


def test_kvm_hangs_where_tcg_boots_falls_back_to_tcg(probe_files, monkeypatch):
    booted = _boots(monkeypatch, {"kvm": HUNG, "tcg": REACHED_INIT})
    got, reason = probe_accelerator(*probe_files, "auto", timeout_s=7)
    assert got == "tcg" and booted == ["kvm", "tcg"]
    assert "did not reach init within 7 s" in reason and "under tcg reached init in 4.0 s" in reason
    with pytest.raises(AcceleratorError, match="kvm requested but"):
        probe_accelerator(*probe_files, "kvm", timeout_s=7)


def test_qemu_saying_kvm_failed_falls_back_without_a_tcg_boot(probe_files, monkeypatch):
    failed = RunResult("qemu-failed", "QEMU exited before QMP (QEMU exit status 1)")
    booted = _boots(monkeypatch, {"kvm": failed},
                    stderr={"kvm": "ioctl(KVM_CREATE_VM) failed: 12 Cannot allocate memory\n"
                                   "qemu-system-x86_64: failed to initialize kvm: Cannot allocate memory\n"})
    got, reason = probe_accelerator(*probe_files, "auto", timeout_s=7)
    assert got == "tcg" and booted == ["kvm"] and "qemu-failed" in reason


def test_a_cmdline_that_stops_the_guest_under_both_is_a_config_error(probe_files, monkeypatch):
    panic = RunResult("panic", "Kernel panic - not syncing: No working init found.")
    booted = _boots(monkeypatch, {"kvm": HUNG, "tcg": panic},
                    serial={"tcg": "Run /nonexistent as init process\n"
                                   "Kernel panic - not syncing: No working init found.\n"})
    for requested in ("auto", "kvm"):
        with pytest.raises(ProbeConfigError) as caught:
            probe_accelerator(*probe_files, requested, timeout_s=7, append="console=ttyS0 rdinit=/nonexistent")
        text = str(caught.value)
        assert "not KVM" in text and "no falling back to tcg" in text
        assert text.index("vm.append ('console=ttyS0 rdinit=/nonexistent'") < text.index("vm.memory_mib")
        assert "No working init found" in text
    assert booted == ["kvm", "tcg"] * 2


def test_a_missing_kernel_is_a_config_error_before_any_boot(probe_files, monkeypatch):
    booted = _boots(monkeypatch, {})
    kernel, initrd = probe_files
    kernel.unlink()
    with pytest.raises(ProbeConfigError, match=f"guest kernel {kernel} does not exist"):
        probe_accelerator(kernel, initrd, "auto")
    assert booted == []


@pytest.mark.boot
def test_memory_no_host_can_give_is_named_after_a_real_tcg_boot(probe_files, monkeypatch, tmp_path):
    """The TCG control boot is real (QEMU refuses the memory before it loads the kernel, so any
    file stands in for one); the KVM boot is the hang of a nested KVM, faked to keep it short."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("no qemu-system-x86_64")

    def kvm_hangs_tcg_is_real(spec, outdir, boot_timeout_s, job_timeout_s, log=None):
        if spec.accel == "kvm":
            Path(outdir).mkdir(parents=True, exist_ok=True)
            return HUNG
        return run_vm(spec, outdir, boot_timeout_s=boot_timeout_s, job_timeout_s=job_timeout_s, log=log)

    monkeypatch.setattr(accel, "run_vm", kvm_hangs_tcg_is_real)
    impossible = 64 << 30   # MiB: 64 PiB
    with pytest.raises(ProbeConfigError) as caught:
        probe_accelerator(*probe_files, "auto", timeout_s=7, memory_mib=impossible, workdir=tmp_path / "probe")
    text = str(caught.value)
    assert text.index(f"vm.memory_mib ({impossible} MiB") < text.index("vm.append")
    assert "cannot set up guest memory" in text
    assert not subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True).stdout
