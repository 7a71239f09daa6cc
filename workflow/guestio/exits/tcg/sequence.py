"""The sequence log: the plugin's records interleaved with QEMU's trace events of the same run."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

IO_SPACE_END = 0x10000
#: QEMU's region name of the guestio-coalesce doorbell (QEMU variant ``coalesce``,
#: workflow/qemu/layers/coalesce).  Inside one doorbell write the device replays a batch of
#: port accesses; their trace events follow the doorbell's own event in the vCPU thread but
#: are no guest instructions: they are kept apart (``replayed_events``), like MSI writes.
DOORBELL_REGION = "guestio-coalesce"


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


def learn_pio_ports(seq: SequenceResult) -> dict[int, dict[int, int]]:
    """{pc: {port: executions}} of the port-I/O instructions in a traced run."""
    out: dict[int, dict[int, int]] = {}
    for r in seq.records:
        if r.kind == "P" and r.events:
            d = out.setdefault(r.pc, {})
            d[r.port] = d.get(r.port, 0) + 1
    return out
