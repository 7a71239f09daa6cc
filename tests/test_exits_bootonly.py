"""Boot-only exit runs (guestio.exits.bootonly): Fig 6's 32-bit kernels booted to the missing root."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from guestio.exits import bootonly


def _row(function, caller, count, **kw):
    return {"function": function, "caller": caller, "count": count, **kw}


def test_the_setup_counts_the_function_its_callees_and_the_polls_io_delays():
    rows = [
        _row("init_acpi_pm_clocksource", "do_one_initcall", 66907),   # verify_pmtmr_rate's polling, inlined
        _row("acpi_pm_read", "init_acpi_pm_clocksource", 22),         # monotonicity and rate checks
        _row("native_io_delay", "slow_down_io", 66907),               # inb_p's port-0x80 delay
        _row("acpi_pm_read", "tk_clock_read", 1349),                  # the clocksource later: not the set-up
        _row("pit_hpet_ptimer_calibrate_cpu", "determine_cpu_tsc_frequencies", 385573),
        _row("", "", 263),                                            # firmware, no symbol
    ]
    got = {m.metric: (m.value, m.unit) for m in bootonly.measurements(rows)}
    assert got == {"pm_timer_setup_exits": (66907 + 22 + 66907, "exits"),
                   "pm_timer_reads": (22 + 1349, "exits"),
                   "boot_exits": (sum(r["count"] for r in rows), "exits")}


def test_the_command_line_boots_without_initramfs_or_disks_and_exits_at_the_panic(tmp_path):
    serial = tmp_path / "a,b" / "serial.log"
    argv = bootonly.qemu_argv(qemu="qemu-system-x86_64", firmware_dir=None, kernel=tmp_path / "bzImage",
                              append="console=ttyS0 panic=-1", memory_mib=256, plugin=tmp_path / "p.so",
                              out_csv=tmp_path / "exitcount.csv", serial_log=serial)
    assert "-no-reboot" in argv and "-initrd" not in argv and "-drive" not in argv
    assert argv[argv.index("-machine") + 1] == "pc,accel=tcg" and argv[argv.index("-smp") + 1] == "1"
    assert argv[argv.index("-append") + 1] == "console=ttyS0 panic=-1"
    plugin = argv[argv.index("-plugin") + 1]
    assert f"serial={tmp_path}/a,,b/serial.log" in plugin    # a comma in a path is QEMU-escaped


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs QEMU (envs/debian-packages.txt)")
def test_a_boot_that_does_not_reach_the_panic_is_an_error_naming_the_kernel(tmp_path):
    not_a_kernel = tmp_path / "bzImage"
    not_a_kernel.write_text("not a kernel\n")
    with pytest.raises(bootonly.BootRunError, match=r"bzImage: QEMU exited [1-9]") as error:
        bootonly.run(qemu=shutil.which("qemu-system-x86_64"), firmware_dir=None, kernel=not_a_kernel,
                     append="console=ttyS0 panic=-1", memory_mib=64, plugin=tmp_path / "no-plugin.so",
                     outdir=tmp_path / "run", timeout_s=60, log=lambda msg: None)
    assert "console tail" in str(error.value)
