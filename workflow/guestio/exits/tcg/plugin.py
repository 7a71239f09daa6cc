"""The exitcount plugin on a TCG run: its build, its QEMU arguments, the VM lifecycle hook."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from guestio.exits.tcg import TcgExitError
from guestio.vm import Hooks, RunResult, VMSpec, run_vm
from guestio.vm.qemu_argv import qemu_opt

TRACE_EVENTS = ("memory_region_ops_read", "memory_region_ops_write")


def plugin_argv(plugin: Path | str, out_csv: Path | str, serial_log: Path | str | None = None,
                seq: bool = False) -> list[str]:
    """QEMU arguments loading the plugin."""
    opts = [qemu_opt(Path(plugin).absolute()), f"out={qemu_opt(Path(out_csv).absolute())}"]
    if serial_log is not None:
        opts.append(f"serial={qemu_opt(Path(serial_log).absolute())}")
    if seq:
        opts.append("seq=on")
    return ["-plugin", ",".join(opts)]


def trace_argv(log: Path | str) -> list[str]:
    """QEMU arguments putting the plugin's records and the memory-region trace in one log."""
    argv = ["-d", "plugin", "-D", os.fspath(Path(log).absolute())]
    for ev in TRACE_EVENTS:
        argv += ["-trace", ev]
    return argv


@dataclass
class TcgExitRun:
    result: RunResult
    outdir: Path
    csv: Path                 # the plugin's CSV
    log: Path | None = None   # QEMU's log with the sequence and the trace (trace=True)


class ExitCounter(Hooks):
    """The exitcount plugin on a TCG run (a VM lifecycle hook).

    Adds the plugin (writing OUTDIR/exitcount.csv, phases from the run's serial log)
    and, with *trace*, QEMU's memory_region_ops trace into OUTDIR/qemu.log for the
    cross-check.  Refuses a spec the counts would be wrong for.
    """

    def __init__(self, plugin: Path | str, *, trace: bool = False):
        self.plugin, self.trace = Path(plugin), trace
        self.csv: Path | None = None
        self.log: Path | None = None

    def qemu_args(self, machine) -> list[str]:
        spec = machine.spec
        if spec.accel != "tcg":
            raise TcgExitError(f"the exitcount plugin needs TCG, not {spec.accel!r}")
        if int(spec.cpus) != 1:
            raise TcgExitError("modelled exits are counted for one vCPU (the plugin's instruction "
                               "totals and the sequence log assume one vCPU thread)")
        self.csv = machine.outdir / "exitcount.csv"
        self.log = machine.outdir / "qemu.log" if self.trace else None
        for path in (self.csv, self.log):
            if path is not None and path.exists():
                path.unlink()
        argv = plugin_argv(self.plugin, self.csv, machine.serial_log, seq=self.trace)
        return argv + (trace_argv(self.log) if self.log is not None else [])


def run_with_plugin(spec: VMSpec, outdir: Path | str, plugin: Path | str, *,
                    boot_timeout_s: float, job_timeout_s: float, trace: bool = False,
                    log: Callable[[str], None] | None = None) -> TcgExitRun:
    """Run *spec* (a TCG guest job) with the exitcount plugin; results in *outdir*."""
    counter = ExitCounter(plugin, trace=trace)
    result = run_vm(spec, outdir, boot_timeout_s=boot_timeout_s, job_timeout_s=job_timeout_s,
                    log=log, hooks=[counter])
    return TcgExitRun(result=result, outdir=Path(outdir).absolute(), csv=counter.csv, log=counter.log)
