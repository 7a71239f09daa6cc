"""Modelled VM exits under TCG: run a guest job with the exitcount plugin, read its counts.

Under TCG there are no VM exits.  ``workflow/plugin/exitcount.c`` (a QEMU 7.2 TCG plugin,
API version 1) counts, per guest pc, the instructions that would exit under Intel VMX with
KVM's defaults -- port I/O, MMIO, HLT, CPUID, RDMSR/WRMSR, VMCALL/VMMCALL and a few others --
with the call site that entered the function (shadow call stack), separately per phase
(``boot``, ``init``, ``benchmark``, ``shutdown`` and named windows: the plugin follows the
serial console log, see the plugin's header comment).  This module

* runs a guest job with the plugin (:func:`run_with_plugin`; :func:`guestio.vm.machine.run_vm`
  does the run, the plugin is only extra QEMU arguments),
* reads the plugin's CSV (:func:`read_plugin_csv`) and turns it into rows of the exits
  schema (:func:`to_exits`): accelerator ``tcg-modelled``, pc -> function+offset and call
  site -> calling function through the guest kernel's System.map,
* with ``trace=True`` also runs QEMU with ``-d plugin -D qemu.log -trace
  memory_region_ops_read -trace memory_region_ops_write`` and the plugin's ``seq=on``: the
  plugin then writes every port-I/O execution (before it executes) and MMIO access (after
  it) into QEMU's own log, interleaved in execution order with QEMU's trace events for the
  same accesses (one vCPU thread, one log stream).  :func:`parse_sequence` attributes every
  trace event to the plugin record it belongs to, which (a) gives the port of the DX-form
  IN/OUT/INS/OUTS executions (API v1 cannot read DX), and (b) is the cross-check of
  :func:`cross_check`: the plugin's accesses per I/O port and per MMIO address equal QEMU's
  own count of the same run.

The trace log is large (about 150 bytes per port/MMIO access) and tracing slows QEMU
down: use it for short jobs, or to learn which port(s) each DX-form pc uses
(:func:`learn_pio_ports`) and pass that map to :func:`to_exits` for untraced runs (only
single-port pcs are filled in; a pc such as ``ioread8`` that serves several ports keeps an
empty port unless the run itself was traced).

Counting conventions (the plugin's): ``count`` is executions; a REP INS/OUTS counts every
iteration (as QEMU's trace does); KVM's string-PIO emulation exits about once per page of
data, which the plugin's ``starts`` column (first iterations) approximates.  All RDMSR/WRMSR
are counted (ECX is unreadable, so KVM's MSR pass-through cannot be modelled).
"""

from __future__ import annotations

import argparse
import collections
import csv
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from guestio.build.plugin import make_argv as plugin_make_argv
from guestio.exits.schema import COLUMNS as EXIT_COLUMNS, EXIT_KINDS
from guestio.util import atomic_path, exclusive
from guestio.vm import Hooks, RunResult, VMSpec, run_vm

__all__ = [
    "ACCELERATOR", "EXIT_COLUMNS", "PLUGIN_COLUMNS", "EXIT_KINDS", "PHASES",
    "PluginRow", "TcgExitRun", "SeqRecord", "SequenceResult", "CrossCheck",
    "plugin_argv", "trace_argv", "run_with_plugin", "read_plugin_csv", "phase_instructions",
    "to_exits", "parse_sequence", "learn_pio_ports", "cross_check", "build_plugin",
    "PLUGIN_DIR", "to_exits_frame", "write_exits_csv",
    "measure_overhead", "pc_space",
]

ACCELERATOR = "tcg-modelled"
PLUGIN_DIR = Path(__file__).resolve().parents[2] / "plugin"
PLUGIN_COLUMNS = ["phase", "pc", "kind", "detail", "port_or_address", "size", "caller_site_pc",
                  "device", "count", "starts"]
#: Phases the plugin derives from the guestio console lines, in order ("GUESTIO: phase NAME"
#: adds named windows).
PHASES = ("boot", "init", "benchmark", "shutdown")
TRACE_EVENTS = ("memory_region_ops_read", "memory_region_ops_write")
IO_SPACE_END = 0x10000
#: QEMU's region name of the guestio-coalesce doorbell (QEMU variant ``coalesce``,
#: workflow/qemu/layers/coalesce).  Inside one doorbell write the device replays a batch of
#: port accesses; their trace events follow the doorbell's own event in the vCPU thread but
#: are no guest instructions: they are kept apart (``replayed_events``), like MSI writes.
DOORBELL_REGION = "guestio-coalesce"
KERNEL_SPLIT = 1 << 63


class TcgExitError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------
# Building and running


def build_plugin(build_dir: Path | str, *, fetch: bool = True) -> Path:
    """Fetch qemu-plugin.h (cached) and compile libexitcount.so into *build_dir*; its path.

    The same two commands a Snakemake rule runs: ``workflow/plugin/fetch_header.sh DIR`` and
    ``make -C workflow/plugin BUILD=DIR``.
    """
    build_dir = Path(build_dir).absolute()
    with exclusive(build_dir):  # the exit_plugin rule of another invocation may build here too
        if fetch:
            subprocess.run(["sh", str(PLUGIN_DIR / "fetch_header.sh"), str(build_dir)], check=True,
                           capture_output=True, text=True)
        subprocess.run(plugin_make_argv(build_dir, silent=True, plugin_dir=PLUGIN_DIR), check=True,
                       capture_output=True, text=True)
    return build_dir / "libexitcount.so"


def _opt(value: os.PathLike | str) -> str:
    return os.fspath(value).replace(",", ",,")


def plugin_argv(plugin: Path | str, out_csv: Path | str, serial_log: Path | str | None = None,
                seq: bool = False) -> list[str]:
    """QEMU arguments loading the plugin."""
    opts = [_opt(Path(plugin).absolute()), f"out={_opt(Path(out_csv).absolute())}"]
    if serial_log is not None:
        opts.append(f"serial={_opt(Path(serial_log).absolute())}")
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


# --------------------------------------------------------------------------------------------
# The plugin's CSV


@dataclass(frozen=True)
class PluginRow:
    phase: str
    pc: int | None
    kind: str
    detail: str
    port_or_address: int | None
    size: int
    caller_site: int | None
    device: str
    count: int
    starts: int


def _hex(s: str) -> int | None:
    return int(s, 16) if s else None


def read_plugin_csv(path: Path | str) -> list[PluginRow]:
    """The plugin's rows (including the per-phase ``insns`` rows)."""
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != PLUGIN_COLUMNS:
            raise TcgExitError(f"{path}: unexpected header {reader.fieldnames}")
        for r in reader:
            rows.append(PluginRow(
                phase=r["phase"], pc=_hex(r["pc"]), kind=r["kind"], detail=r["detail"],
                port_or_address=_hex(r["port_or_address"]), size=int(r["size"] or 0),
                caller_site=_hex(r["caller_site_pc"]), device=r["device"],
                count=int(r["count"]), starts=int(r["starts"])))
    return rows


def phase_instructions(rows: Iterable[PluginRow]) -> dict[str, int]:
    """Executed guest instructions per phase."""
    return {r.phase: r.count for r in rows if r.kind == "insns"}


# --------------------------------------------------------------------------------------------
# Symbols


def _symbol_table(system_map: Path | str):
    from guestio.exits.symbols import SymbolTable
    return SymbolTable.from_system_map(system_map)


def _function(symtab, pc: int | None) -> tuple[str, int | None]:
    """(function, offset) of a pc through the kernel's System.map; ("", None) elsewhere
    (user space, firmware below 1 MiB, early boot code) -- the exits schema's "unknown"."""
    if pc is None or symtab is None:
        return "", None
    hit = symtab.lookup(pc)
    if hit is None:
        return "", None
    return hit[0], hit[1]


def pc_space(pc: int) -> str:
    """"kernel", "user" or "firmware" (below 1 MiB): where an unsymbolised pc lives."""
    if pc >= KERNEL_SPLIT:
        return "kernel"
    return "firmware" if pc < 0x100000 else "user"


# --------------------------------------------------------------------------------------------
# Exits rows


def to_exits(rows: Iterable[PluginRow], system_map: Path | str | None, *, workload: str,
             variant: str, pio_ports: Mapping[tuple[str, int, int | None], Mapping[int, int]]
             | Mapping[int, Mapping[int, int]] | None = None,
             extra_columns: bool = False) -> list[dict]:
    """Rows of the exits schema (:data:`EXIT_COLUMNS`), most frequent first within a phase.

    One row per (phase, guest pc, exit kind, port/address, calling function).  Port I/O of
    DX-form instructions has an empty port unless *pio_ports* knows it:

    * ``{(phase, pc, caller_site): {port: count}}`` from :func:`parse_sequence` of the SAME
      run (``SequenceResult.pio_by_site``): the row is split by port exactly;
    * ``{pc: {port: count}}`` from :func:`learn_pio_ports` of another run: the port is filled
      in only where that pc used exactly one port.

    ``count_share`` is the row's share of all modelled exits of its phase; ``handling_ns``
    and ``time_share`` are empty (TCG has no exit handling time).  function/caller are ""
    outside the kernel's text (user space, firmware).  *extra_columns* adds ``detail``,
    ``size``, ``caller_site``, ``device``, ``starts`` and ``space`` (kernel/user/firmware);
    without it the rows have exactly the columns of :mod:`guestio.exits.schema` (see
    :func:`to_exits_frame`).
    """
    symtab = _symbol_table(system_map) if system_map is not None else None
    exact = per_pc = None
    if pio_ports:
        first_key = next(iter(pio_ports))
        if isinstance(first_key, tuple):
            exact = pio_ports
        else:
            per_pc = pio_ports

    agg: dict[tuple, dict] = {}
    for r in rows:
        if r.kind == "insns":
            continue
        if r.kind not in EXIT_KINDS:
            raise TcgExitError(f"unknown exit kind {r.kind!r} in the plugin's CSV")
        splits: list[tuple[int | None, int, int]] = [(r.port_or_address, r.count, r.starts)]
        if r.kind in ("pio_in", "pio_out") and r.port_or_address is None:
            if exact is not None:
                ports = exact.get((r.phase, r.pc, r.caller_site))
                if ports is None or sum(ports.values()) != r.count:
                    raise TcgExitError(
                        f"sequence log and CSV disagree for {r.phase} pc {r.pc:#x} caller "
                        f"{r.caller_site}: CSV {r.count}, sequence {ports}")
                # starts are not split by port: attribute them proportionally (integers).
                splits = [(p, n, n if r.starts == r.count else 0) for p, n in
                          sorted(ports.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))]
                if r.starts != r.count:
                    # REP string I/O: keep the starts on the most used port.
                    top = max(ports, key=lambda p: ports[p])
                    splits = [(p, n, r.starts if p == top else 0) for p, n, _ in splits]
            elif per_pc is not None:
                ports = per_pc.get(r.pc)
                if ports and len(ports) == 1:
                    splits = [(next(iter(ports)), r.count, r.starts)]
        fn, off = _function(symtab, r.pc)
        caller_fn, _ = _function(symtab, r.caller_site)
        for port, n, starts in splits:
            key = (r.phase, r.pc, r.kind, port, caller_fn)
            row = agg.get(key)
            if row is None:
                row = agg[key] = {
                    "accelerator": ACCELERATOR, "workload": workload, "variant": variant,
                    "phase": r.phase, "guest_pc": f"0x{r.pc:016x}", "function": fn,
                    "offset": off, "caller": caller_fn, "exit_kind": r.kind,
                    "port_or_address": "" if port is None else f"0x{port:x}",
                    "count": 0, "handling_ns": None, "count_share": None, "time_share": None,
                    "_detail": set(), "_size": set(), "_sites": set(), "_device": set(),
                    "_starts": 0, "_space": pc_space(r.pc),
                }
            row["count"] += n
            row["_starts"] += starts
            row["_detail"].add(r.detail)
            row["_size"].add(r.size)
            if r.caller_site is not None:
                row["_sites"].add(r.caller_site)
            if r.device:
                row["_device"].add(r.device)

    totals: collections.Counter = collections.Counter()
    for row in agg.values():
        totals[row["phase"]] += row["count"]
    out = []
    for row in agg.values():
        row["count_share"] = row["count"] / totals[row["phase"]] if totals[row["phase"]] else None
        detail, size, sites, device, starts, space = (
            row.pop("_detail"), row.pop("_size"), row.pop("_sites"), row.pop("_device"),
            row.pop("_starts"), row.pop("_space"))
        if extra_columns:
            row["detail"] = "|".join(sorted(d for d in detail if d))
            row["size"] = "|".join(str(s) for s in sorted(size))
            row["caller_site"] = "|".join(f"0x{s:016x}" for s in sorted(sites))
            row["device"] = "|".join(sorted(device))
            row["starts"] = starts
            row["space"] = space
        out.append(row)
    phase_order = {p: i for i, p in enumerate(PHASES)}
    out.sort(key=lambda r: (phase_order.get(r["phase"], len(PHASES)), r["phase"], -r["count"],
                            r["guest_pc"], r["port_or_address"], r["caller"]))
    return out


def to_exits_frame(rows: Iterable[PluginRow], system_map: Path | str | None, *, workload: str,
                   variant: str, pio_ports=None):
    """:func:`to_exits` as a validated :mod:`guestio.exits.schema` DataFrame."""
    from guestio.exits import schema as exits
    return exits.frame(to_exits(rows, system_map, workload=workload, variant=variant,
                                pio_ports=pio_ports))


def write_exits_csv(rows: list[dict], path: Path | str) -> None:
    """Write :func:`to_exits` rows as they are (also with extra columns)."""
    columns = list(EXIT_COLUMNS) + [c for c in (rows[0] if rows else {}) if c not in EXIT_COLUMNS]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})


# --------------------------------------------------------------------------------------------
# The sequence log: the plugin's records interleaved with QEMU's trace events


@dataclass
class TraceEvent:
    write: bool
    addr: int
    size: int
    region: str


@dataclass
class SeqRecord:
    kind: str                  # "P" (port I/O execution) or "M" (MMIO access)
    phase: str
    pc: int
    write: bool
    size: int                  # 0 = unknown (16-bit code)
    addr: int | None           # imm8 port (P) / physical address (M); None: port in DX
    rep: bool
    caller_site: int | None
    events: list[TraceEvent] = field(default_factory=list)

    @property
    def port(self) -> int | None:
        """The port (P) / address (M) QEMU saw: the lowest address of its trace events."""
        if self.events:
            return min(e.addr for e in self.events)
        return self.addr


@dataclass
class SequenceResult:
    records: list[SeqRecord]
    problems: list[str]                      # inconsistencies found while attributing
    foreign_events: int                      # trace events of other threads (cpu -1)
    orphan_events: list[TraceEvent]          # vCPU events no plugin record explains
    phases: list[str]
    internal_events: list[TraceEvent] = field(default_factory=list)  # device-internal (MSI)
    replayed_events: list[TraceEvent] = field(default_factory=list)  # a doorbell's replays

    @property
    def pio_by_site(self) -> dict[tuple[str, int, int | None], dict[int | None, int]]:
        """{(phase, pc, caller_site): {port: executions}} for the port-I/O records."""
        out: dict = {}
        for r in self.records:
            if r.kind == "P":
                d = out.setdefault((r.phase, r.pc, r.caller_site), {})
                d[r.port] = d.get(r.port, 0) + 1
        return out


_PLUGIN_RE = re.compile(r"^exitcount: (?:(P) ([0-9a-f]+) (in|out) (\d+) ([0-9a-f]+|-) ([01]) "
                        r"([0-9a-f]+)|(M) ([0-9a-f]+) ([rw]) (\d+) ([0-9a-f]+) ([0-9a-f]+)|"
                        r"phase (\S+))$")
_TRACE_RE = re.compile(r"^(?:\d+@\d+\.\d+:)?memory_region_ops_(read|write) cpu (-?\d+) mr \S+ "
                       r"addr 0x([0-9a-f]+) value 0x[0-9a-f]+ size (\d+) name '(.*)'$")


def _read_lines(path: Path) -> Iterator[str]:
    with open(path, "r", errors="replace") as f:
        for line in f:
            yield line.rstrip("\n")


def parse_sequence(log: Path | str, vcpu: int = 0) -> SequenceResult:
    """Attribute QEMU's memory_region_ops_* events (of *vcpu*) to the plugin's records.

    Order in the log: a port-I/O record is written before the instruction executes, so its
    trace events follow it; an MMIO record is written after the access, so its events
    precede it.  An MMIO record takes the pending events whose addresses lie in
    [address, address + size); the other pending port events (address < 0x10000) belong to
    the last port-I/O record.  An access wider than a region's maximum access size gives
    several events (split by QEMU).

    Device emulation running in the vCPU thread also accesses memory regions on its own: an
    interrupt raised by the access is delivered by the IOAPIC or a PCI device as an MSI
    write into the APIC's region ("apic-msi", 0xfee0xxxx), and shows up between the
    guest's records.  Such MSI writes are kept apart (``internal_events``); any other event
    that no record explains is a problem.
    """
    records: list[SeqRecord] = []
    problems: list[str] = []
    orphans: list[TraceEvent] = []
    foreign = 0
    phase = "boot"
    phases = [phase]
    pending: list[TraceEvent] = []
    cur_p: SeqRecord | None = None

    internal: list[TraceEvent] = []
    replayed: list[TraceEvent] = []

    def flush_pending() -> None:
        nonlocal pending
        for e in pending:
            if e.addr < IO_SPACE_END:
                if cur_p is not None and any(x.write and x.region == DOORBELL_REGION for x in cur_p.events):
                    replayed.append(e)   # the coalesce device replaying its batch
                else:
                    (orphans if cur_p is None else cur_p.events).append(e)
            elif _is_msi(e):
                internal.append(e)
            else:
                problems.append(f"MMIO trace event without a plugin record: {e}")
        pending = []

    for line in _read_lines(Path(log)):
        if line.startswith("exitcount: "):
            m = _PLUGIN_RE.match(line)
            if not m:
                problems.append(f"unparsable plugin record: {line!r}")
                continue
            if m.group(1):
                flush_pending()
                cur_p = SeqRecord(
                    kind="P", phase=phase, pc=int(m.group(2), 16), write=m.group(3) == "out",
                    size=int(m.group(4)), addr=None if m.group(5) == "-" else int(m.group(5), 16),
                    rep=m.group(6) == "1", caller_site=int(m.group(7), 16) or None)
                records.append(cur_p)
            elif m.group(8):
                addr, size = int(m.group(12), 16), int(m.group(11))
                rec = SeqRecord(kind="M", phase=phase, pc=int(m.group(9), 16),
                                write=m.group(10) == "w", size=size, addr=addr, rep=False,
                                caller_site=int(m.group(13), 16) or None)
                rec.events = [e for e in pending if addr <= e.addr < addr + size]
                pending = [e for e in pending if not addr <= e.addr < addr + size]
                records.append(rec)
            else:
                flush_pending()
                phase = m.group(14)
                if phase not in phases:
                    phases.append(phase)
                cur_p = None   # a phase line is written between two instructions
            continue
        if "memory_region_ops_" in line:
            t = _TRACE_RE.match(line)
            if not t:
                problems.append(f"unparsable trace line: {line[:200]!r}")
                continue
            if int(t.group(2)) != vcpu:
                foreign += 1
                continue
            pending.append(TraceEvent(write=t.group(1) == "write", addr=int(t.group(3), 16),
                                      size=int(t.group(4)), region=t.group(5)))
    flush_pending()

    # Consistency of every attribution.
    for r in records:
        if r.kind == "P":
            if not r.events:
                if not r.rep:   # a REP with ECX = 0 executes no access
                    problems.append(f"port I/O at pc {r.pc:#x} ({r.phase}) has no trace event")
                continue
            if any(e.write != r.write for e in r.events):
                problems.append(f"direction mismatch at pc {r.pc:#x}: {r.events}")
            if any(e.addr >= IO_SPACE_END for e in r.events):
                problems.append(f"non-port event after port I/O at pc {r.pc:#x}: {r.events}")
            total = sum(e.size for e in r.events)
            if r.size and total != r.size:
                problems.append(f"size mismatch at pc {r.pc:#x}: plugin {r.size}, "
                                f"QEMU {[(hex(e.addr), e.size) for e in r.events]}")
            if r.addr is not None and r.port != r.addr:
                problems.append(f"port mismatch at pc {r.pc:#x}: imm8 {r.addr:#x}, QEMU "
                                f"{r.port:#x}")
        else:
            if r.events:
                if any(e.write != r.write for e in r.events):
                    problems.append(f"direction mismatch at MMIO pc {r.pc:#x} {r.addr:#x}")
                if sum(e.size for e in r.events) != r.size:
                    problems.append(f"size mismatch at MMIO pc {r.pc:#x} {r.addr:#x}: "
                                    f"plugin {r.size}, QEMU {[e.size for e in r.events]}")
    return SequenceResult(records=records, problems=problems, foreign_events=foreign,
                          orphan_events=orphans, phases=phases, internal_events=internal,
                          replayed_events=replayed)


def _is_msi(e: TraceEvent) -> bool:
    """An MSI write into QEMU's APIC region (not a guest LAPIC register access)."""
    off = e.addr - 0xfee00000
    return (e.write and e.region == "apic-msi" and 0 <= off < 0x100000
            and (off > 0xfff or (off & 0xff0) == 0))


def _untraced_ok(device: str, write: bool) -> bool:
    """MMIO that QEMU legitimately has no memory_region_ops event for.

    * no region at all ("unassigned": QEMU answers without calling any region's ops);
    * a write that matches an ioeventfd (virtio "...-notify-..." regions): QEMU signals the
      eventfd instead of calling the region's ops (under KVM the same write exits to KVM).
    """
    return device == "unassigned" or (write and "notify" in device)


def learn_pio_ports(seq: SequenceResult) -> dict[int, dict[int, int]]:
    """{pc: {port: executions}} of the port-I/O instructions in a traced run."""
    out: dict[int, dict[int, int]] = {}
    for r in seq.records:
        if r.kind == "P" and r.events:
            d = out.setdefault(r.pc, {})
            d[r.port] = d.get(r.port, 0) + 1
    return out


# --------------------------------------------------------------------------------------------
# Cross-check: the plugin's counts against QEMU's own view of the same run


@dataclass
class CrossCheck:
    ok: bool
    pio_plugin: dict[int, int]        # port -> accesses, the plugin's CSV (DX ports resolved)
    pio_qemu: dict[int, int]          # port -> accesses, QEMU's trace events (split merged)
    mmio_plugin: dict[int, int]       # physical address -> accesses, the plugin's CSV
    mmio_qemu: dict[int, int]         # address -> accesses, QEMU's trace events
    mmio_regions: dict[str, int]      # QEMU region name -> accesses
    unassigned: dict[int, int]        # plugin MMIO QEMU has no event for (no region, ioeventfd)
    internal: dict[str, int]          # device-internal vCPU-thread events (MSI), not guest's
    csv_vs_sequence: list[str]        # differences between the CSV and the sequence log
    problems: list[str]               # everything that makes ok False
    replayed: dict[int, int] = field(default_factory=dict)  # port -> accesses a doorbell replayed

    def summary(self) -> str:
        lines = [f"cross-check {'OK' if self.ok else 'FAILED'}: "
                 f"{sum(self.pio_qemu.values())} port accesses on {len(self.pio_qemu)} ports, "
                 f"{sum(self.mmio_qemu.values())} MMIO accesses on {len(self.mmio_qemu)} "
                 f"addresses ({', '.join(f'{k}={v}' for k, v in sorted(self.mmio_regions.items()))})"]
        if self.unassigned:
            lines.append(f"  MMIO without a QEMU event (ioeventfd / no region): "
                         f"{ {hex(k): v for k, v in self.unassigned.items()} }")
        if self.internal:
            lines.append(f"  device-internal events in the vCPU thread (MSI delivery, not "
                         f"guest accesses): {self.internal}")
        if self.replayed:
            lines.append(f"  port accesses replayed by the coalesce doorbell (not guest "
                         f"instructions): {sum(self.replayed.values())} on {len(self.replayed)} ports "
                         f"{ {hex(k): v for k, v in sorted(self.replayed.items())} }")
        lines += [f"  {p}" for p in self.problems[:50]]
        return "\n".join(lines)


def cross_check(rows: list[PluginRow], seq: SequenceResult) -> CrossCheck:
    """Compare the plugin's CSV with QEMU's trace events of the same (traced) run.

    Checks, all exact:
    1. every vCPU trace event belongs to a plugin record, and every attribution is
       consistent (direction, total size, imm8 port; see :func:`parse_sequence`);
    2. the CSV (the plugin's hash table) and the sequence log (its ordered stream) agree per
       (phase, pc, kind, caller site) -- and per port where the instruction carries it;
    3. per I/O port: the plugin's accesses (CSV counts; the ports of DX-form executions from
       the attribution) == QEMU's accesses (trace events, the split parts of one access
       merged) -- for imm8-form instructions this compares two independent sources;
    4. per MMIO physical address: the plugin's CSV count == QEMU's access count (the plugin's
       address comes from the TLB, QEMU's from the memory region: independent), plus the
       accesses QEMU has no event for: no region (``unassigned``) or a write consumed by an
       ioeventfd (virtio notify); any other untraced MMIO is a problem.
    """
    problems = list(seq.problems)
    if seq.orphan_events:
        problems.append(f"{len(seq.orphan_events)} vCPU trace events before any plugin record, "
                        f"e.g. {seq.orphan_events[:3]}")

    # 2. CSV vs sequence
    csv_counts: collections.Counter = collections.Counter()
    for r in rows:
        if r.kind in ("pio_in", "pio_out"):
            csv_counts[("P", r.phase, r.pc, r.port_or_address, r.caller_site)] += r.count
        elif r.kind in ("mmio_read", "mmio_write"):
            csv_counts[("M", r.phase, r.pc, r.port_or_address, r.caller_site)] += r.count
    seq_counts: collections.Counter = collections.Counter()
    for s in seq.records:
        seq_counts[(s.kind, s.phase, s.pc, s.addr, s.caller_site)] += 1
    diff = []
    for key in sorted(set(csv_counts) | set(seq_counts), key=str):
        if csv_counts[key] != seq_counts[key]:
            diff.append(f"{key[0]} {key[1]} pc {key[2]:#x} addr {key[3]} caller {key[4]}: "
                        f"CSV {csv_counts[key]}, sequence {seq_counts[key]}")
    problems += diff

    # 3. per port
    by_site = seq.pio_by_site
    pio_plugin: collections.Counter = collections.Counter()
    for r in rows:
        if r.kind not in ("pio_in", "pio_out"):
            continue
        if r.port_or_address is not None:
            pio_plugin[r.port_or_address] += r.count
        else:
            for port, n in by_site.get((r.phase, r.pc, r.caller_site), {}).items():
                pio_plugin[port] += n
    pio_qemu: collections.Counter = collections.Counter()
    mmio_qemu: collections.Counter = collections.Counter()
    regions: collections.Counter = collections.Counter()
    for s in seq.records:
        if s.events:
            if s.kind == "P":
                pio_qemu[s.port] += 1
            else:
                mmio_qemu[s.port] += 1
                regions[s.events[0].region] += 1
    # Zero-iteration REP records have no port; drop the None key they may have produced.
    pio_plugin.pop(None, None)
    for port in sorted(set(pio_plugin) | set(pio_qemu)):
        if pio_plugin[port] != pio_qemu[port]:
            problems.append(f"port {port:#x}: plugin {pio_plugin[port]}, QEMU {pio_qemu[port]}")

    # 4. per MMIO address
    mmio_plugin: collections.Counter = collections.Counter()
    for r in rows:
        if r.kind in ("mmio_read", "mmio_write"):
            mmio_plugin[r.port_or_address] += r.count
    unassigned: collections.Counter = collections.Counter()
    for s in seq.records:
        if s.kind == "M" and not s.events:
            unassigned[s.addr] += 1
    for addr in sorted(set(mmio_plugin) | set(mmio_qemu)):
        expect = mmio_qemu[addr] + unassigned[addr]
        if mmio_plugin[addr] != expect:
            problems.append(f"MMIO {addr:#x}: plugin {mmio_plugin[addr]}, QEMU {mmio_qemu[addr]}"
                            f" (+{unassigned[addr]} without a QEMU event)")
    for r in rows:
        if r.kind in ("mmio_read", "mmio_write") and r.port_or_address in unassigned \
                and not _untraced_ok(r.device, r.kind == "mmio_write"):
            problems.append(f"MMIO {r.port_or_address:#x} ({r.kind}) in region {r.device!r} has "
                            f"no QEMU trace event")
    internal = collections.Counter(f"{e.region}@{e.addr:#x}" for e in seq.internal_events)
    return CrossCheck(ok=not problems, pio_plugin=dict(pio_plugin), pio_qemu=dict(pio_qemu),
                      mmio_plugin=dict(mmio_plugin), mmio_qemu=dict(mmio_qemu),
                      mmio_regions=dict(regions), unassigned=dict(unassigned),
                      internal=dict(internal), csv_vs_sequence=diff, problems=problems,
                      replayed=dict(collections.Counter(e.addr for e in seq.replayed_events)))


# --------------------------------------------------------------------------------------------
# Overhead


def measure_overhead(spec: VMSpec, plugin: Path | str, outdir: Path | str, *, repeats: int = 1,
                     boot_timeout_s: float = 600, job_timeout_s: float = 600,
                     modes: Iterable[str] = ("plain", "plugin", "plugin+trace"),
                     log: Callable[[str], None] | None = None) -> dict[str, list[dict]]:
    """Run the same job untraced and with the plugin; {mode: [{wall_s, boot_s, job_s}]}.

    Modes run interleaved (plain, plugin, plugin+trace, plain, ...) so that a slow phase of
    the host hits all of them.  The ratio that matters is job_s(plugin) / job_s(plain).
    """
    outdir = Path(outdir)
    times: dict[str, list[dict]] = {m: [] for m in modes}
    for i in range(repeats):
        for mode in modes:
            d = outdir / f"{mode.replace('+', '-')}-{i}"
            if mode == "plain":
                res = run_vm(spec, d, boot_timeout_s=boot_timeout_s, job_timeout_s=job_timeout_s,
                             log=log)
            else:
                res = run_with_plugin(spec, d, plugin, trace=mode == "plugin+trace",
                                      boot_timeout_s=boot_timeout_s, job_timeout_s=job_timeout_s,
                                      log=log).result
            if not res.ok:
                raise TcgExitError(f"{mode} run {i} failed: {res.status}: {res.reason}")
            times[mode].append({"wall_s": res.wall_s, "boot_s": res.boot_s, "job_s": res.job_s})
    return times


# --------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m guestio.exits.tcg",
                                 description="Modelled VM exits of one plugin run -> exits CSV.")
    ap.add_argument("plugin_csv", type=Path, help="exitcount.csv written by the plugin")
    ap.add_argument("--system-map", type=Path, required=True)
    ap.add_argument("--workload", required=True)
    ap.add_argument("--variant", required=True)
    ap.add_argument("--qemu-log", type=Path, help="qemu.log of the same run (trace=True): "
                    "resolves DX ports exactly and runs the cross-check")
    ap.add_argument("--extra-columns", action="store_true",
                    help="add detail, size, caller_site, device, starts, space (not the schema)")
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args(argv)
    rows = read_plugin_csv(args.plugin_csv)
    ports = None
    if args.qemu_log:
        seq = parse_sequence(args.qemu_log)
        check = cross_check(rows, seq)
        print(check.summary(), file=sys.stderr)
        if not check.ok:
            return 1
        ports = seq.pio_by_site
    if args.extra_columns:
        write_exits_csv(to_exits(rows, args.system_map, workload=args.workload,
                                 variant=args.variant, pio_ports=ports, extra_columns=True),
                        args.output)
    else:
        from guestio.exits import schema as exits
        exits.write_csv(to_exits_frame(rows, args.system_map, workload=args.workload,
                                       variant=args.variant, pio_ports=ports), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
