"""Boot-only exit runs: a kernel booted without an initramfs under the exitcount plugin (TCG), to
the panic at the missing root file system.

Everything the kernel executes before that panic is counted as modelled exits, and nothing of the
guest image's user space runs.  So a kernel of another architecture than the image's can be
counted with the same QEMU and plugin: Fig 6 needs a 32-bit x86 kernel, the only one in which
Linux 6.1 still has verify_pmtmr_rate (an __init path that runs once, at boot).

What it measures (metrics of the long-form table, experiment "boot"):
  pm_timer_setup_exits  modelled exits of the PM timer's set-up: in init_acpi_pm_clocksource
                        itself (GCC inlines the static verify_pmtmr_rate, and mach_countup's
                        polling of PIT channel 2, into it), in the functions it calls (acpi_pm_read
                        for the monotonicity checks and the rate check), and the port-0x80 delay
                        of each inb_p() of that polling (native_io_delay, called from
                        slow_down_io: the shadow stack names only the immediate caller, and the
                        rest of a boot makes 3 of them)
  pm_timer_reads        exits in acpi_pm_read over the whole boot (the PM timer port)
  boot_exits            all modelled exits of the boot
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from guestio import children
from guestio.analysis.measurements import Measurement
from guestio.vm.console import serial_tail
from guestio.vm.qemu_argv import qemu_opt

#: the function whose set-up work Fig 6's modification shortens (verify_pmtmr_rate is inlined in it)
SETUP_FUNCTION = "init_acpi_pm_clocksource"
PM_TIMER_READ = "acpi_pm_read"
#: the I/O delay after each inb_p()/outb_p() (one port-0x80 write), as the plugin attributes it
IO_DELAY = ("native_io_delay", "slow_down_io")
#: how a boot-only run ends: the kernel finds no root file system (or no init) and panics; with
#: panic=-1 it reboots at once and -no-reboot makes QEMU exit
BOOT_END = "Kernel panic - not syncing"


class BootRunError(RuntimeError):
    """A boot-only run did not reach its end; the message names the kernel and the console's tail."""


@dataclass(frozen=True)
class BootRun:
    csv: Path          # the plugin's CSV
    serial_log: Path
    seconds: float
    panic: str         # the console's panic line (why the boot stopped)


def qemu_argv(*, qemu: str, firmware_dir: str | None, kernel: Path, append: str, memory_mib: int,
              plugin: Path, out_csv: Path, serial_log: Path, machine: str = "pc") -> list[str]:
    """The boot-only QEMU command line: no initramfs, no disks, no NIC, the console to a file that
    the plugin follows (its phases), one vCPU under TCG."""
    from guestio.exits.tcg.plugin import plugin_argv

    return [qemu, *(["-L", firmware_dir] if firmware_dir else []),
            "-nodefaults", "-no-user-config", "-nographic", "-display", "none", "-no-reboot",
            "-machine", f"{machine},accel=tcg", "-m", str(int(memory_mib)), "-smp", "1",
            "-kernel", os.fspath(kernel), "-append", append,
            "-chardev", f"file,id=serial0,path={qemu_opt(serial_log)}", "-serial", "chardev:serial0",
            *plugin_argv(plugin, out_csv, serial_log)]


def run(*, qemu: str, firmware_dir: str | None, kernel: Path, append: str, memory_mib: int, plugin: Path,
        outdir: Path, timeout_s: float, log: Callable[[str], None]) -> BootRun:
    """Boot *kernel* to its panic under the plugin; the plugin's CSV and the console in *outdir*."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    out_csv, serial_log = outdir / "exitcount.csv", outdir / "serial.log"
    for stale in (out_csv, serial_log):
        stale.unlink(missing_ok=True)
    argv = qemu_argv(qemu=qemu, firmware_dir=firmware_dir, kernel=kernel, append=append, memory_mib=memory_mib,
                     plugin=plugin, out_csv=out_csv, serial_log=serial_log)
    log(f"booting {kernel} to its panic at the missing root (TCG, exit plugin)")
    started = time.monotonic()
    try:
        done = children.run(argv, timeout=timeout_s, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        raise BootRunError(f"{kernel}: the boot did not end within {timeout_s:.0f} s; console tail:\n"
                           + _tail(serial_log)) from None
    seconds = time.monotonic() - started
    panic = next((line.strip() for line in _lines(serial_log) if BOOT_END in line), None)
    if done.returncode != 0 or panic is None or not out_csv.is_file():
        raise BootRunError(f"{kernel}: QEMU exited {done.returncode} "
                           + ("without the kernel's panic at the missing root" if panic is None else "")
                           + f"; stderr: {done.stderr.strip()[-500:]}; console tail:\n" + _tail(serial_log))
    log(f"boot ended after {seconds:.1f} s: {panic}")
    return BootRun(csv=out_csv, serial_log=serial_log, seconds=round(seconds, 1), panic=panic)


def _lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.is_file() else []


def _tail(path: Path) -> str:
    return "\n".join(serial_tail(path, 15))


def measurements(exit_rows: Iterable[dict]) -> list[Measurement]:
    """The boot's metrics (module docstring) from exit-table rows (guestio.exits.schema)."""
    setup = reads = total = 0
    for r in exit_rows:
        n = int(r["count"])
        total += n
        if SETUP_FUNCTION in (r.get("function"), r.get("caller")) or (r.get("function"), r.get("caller")) == IO_DELAY:
            setup += n
        if r.get("function") == PM_TIMER_READ:
            reads += n
    return [Measurement("pm_timer_setup_exits", setup, "exits"),
            Measurement("pm_timer_reads", reads, "exits"),
            Measurement("boot_exits", total, "exits")]
