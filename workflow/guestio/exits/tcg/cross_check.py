"""Cross-check: the plugin's counts against QEMU's own view of the same run."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from guestio.exits.tcg.plugin_csv import PluginRow
from guestio.exits.tcg.sequence import SequenceResult


def _untraced_ok(device: str, write: bool) -> bool:
    """MMIO that QEMU legitimately has no memory_region_ops event for.

    * no region at all ("unassigned": QEMU answers without calling any region's ops);
    * a write that matches an ioeventfd (virtio "...-notify-..." regions): QEMU signals the
      eventfd instead of calling the region's ops (under KVM the same write exits to KVM).
    """
    return device == "unassigned" or (write and "notify" in device)


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
