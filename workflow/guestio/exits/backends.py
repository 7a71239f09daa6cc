"""Exit sites of one guest workload run, from the backend its accelerator calls for.

* KVM: the kvm tracepoints of the measured window (:class:`guestio.exits.kvm.hook.KvmExitTracer`
  on the run), symbolised against the variant's System.map, with handling times and the
  count of lost events.
* TCG: the exitcount plugin (:class:`guestio.exits.tcg.plugin.ExitCounter`), whose per-port and
  per-MMIO counts must equal QEMU's own trace of the same run.

Both give the schema of :mod:`guestio.exits.schema` and a summary dict; both record the
backend so that every table says whether its exits were measured or modelled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pandas as pd

from guestio.exits import schema
from guestio.exits.kvm.hook import KvmExitTracer
from guestio.exits.kvm.trace_reader import parse_trace_dir
from guestio.exits.symbols import SymbolTable
from guestio.exits.tcg.cross_check import cross_check
from guestio.exits.tcg.exit_rows import to_exits_frame
from guestio.exits.tcg.plugin import ExitCounter
from guestio.exits.tcg.plugin_csv import phase_instructions, read_plugin_csv
from guestio.exits.tcg.sequence import parse_sequence

__all__ = ["ExitBackendError", "backend_for", "tracer_for", "run_sites", "kvm_sites", "tcg_sites"]


class ExitBackendError(RuntimeError):
    pass


def backend_for(accelerator: str) -> str:
    """The exit backend of an accelerator decision: 'kvm' (tracepoints) or 'tcg' (plugin)."""
    if accelerator not in ("kvm", "tcg"):
        raise ExitBackendError(f"no exit backend for accelerator {accelerator!r}")
    return accelerator


def tracer_for(backend: str, *, plugin: Path, tracefs: str | Path):
    """The hook that records a run's exits: KVM's tracepoints, or the exitcount plugin with QEMU's trace."""
    return KvmExitTracer(root=tracefs) if backend == "kvm" else ExitCounter(plugin, trace=True)


def run_sites(backend: str, tracer, run_dir: Path, system_map: Path, *, workload: str, variant: str,
              say: Callable[[str], None]) -> tuple[pd.DataFrame, dict]:
    """Exit sites of a finished run in run_dir, recorded by tracer_for(backend) (for KVM, a run
    recorded elsewhere may be read with tracer None: its trace window is in run_dir)."""
    run_dir = Path(run_dir)
    if backend == "kvm":
        table, summary = kvm_sites(run_dir / "kvm-trace", run_dir / "results", system_map,
                                   workload=workload, variant=variant)
        say(f"{int(table['count'].sum())} exits in the window, at least {summary['events_lost_lower_bound']} "
            "events lost")
        return table, summary
    return tcg_sites(tracer, run_dir / "results", system_map, workload=workload, variant=variant, say=say)


def kvm_sites(trace_dir: Path, guest_results: Path | None, system_map: Path, *, workload: str,
              variant: str) -> tuple[pd.DataFrame, dict]:
    """Exit sites from a saved KVM trace window (``KvmExitTracer``'s kvm-trace directory)."""
    trace_dir = Path(trace_dir)
    if not (trace_dir / "trace").is_file():
        raise ExitBackendError(f"{trace_dir}: no recorded KVM trace (was the job's window reached?)")
    table, trace_summary = parse_trace_dir(trace_dir, workload=workload, variant=variant,
                                           phase="boot", symbols=SymbolTable.from_system_map(system_map))
    summary = schema.run_summary(table, guest_results)
    summary["backend"] = "kvm"
    summary["trace"] = trace_summary
    summary["events_lost_lower_bound"] = trace_summary["events_lost_lower_bound"]
    meta = trace_dir / "meta.json"
    if meta.is_file():
        summary["recorder"] = json.loads(meta.read_text())
    return table, summary


def tcg_sites(counter: ExitCounter, guest_results: Path, system_map: Path, *, workload: str,
              variant: str, say: Callable[[str], None]) -> tuple[pd.DataFrame, dict]:
    """Exit sites from the exitcount plugin of a finished run, checked against QEMU's trace."""
    rows = read_plugin_csv(counter.csv)
    sequence = parse_sequence(counter.log)
    check = cross_check(rows, sequence)
    crosscheck = counter.csv.parent / "crosscheck.txt"
    crosscheck.write_text(check.summary() + "\n")
    say(check.summary().splitlines()[0])
    if not check.ok:
        raise ExitBackendError(f"exits {variant}: the plugin disagrees with QEMU's trace events: {crosscheck}")
    counter.log.unlink()  # hundreds of MB; what it proved is in crosscheck.txt
    table = to_exits_frame(rows, system_map, workload=workload, variant=variant,
                               pio_ports=sequence.pio_by_site)
    summary = schema.run_summary(table, guest_results, instructions=phase_instructions(rows))
    summary["backend"] = "tcg-plugin"
    summary["cross_check"] = {"ok": check.ok, "port_accesses": sum(check.pio_qemu.values()),
                              "ports": len(check.pio_qemu), "mmio_accesses": sum(check.mmio_qemu.values()),
                              # QEMU variant coalesce: accesses its doorbell replayed (no guest instructions)
                              "replayed_port_accesses": sum(check.replayed.values())}
    return table, summary
