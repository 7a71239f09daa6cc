"""Tracefs text -> exit records: each ``kvm_exit`` paired with its ``kvm_entry``.

Per vCPU thread (the task pid of the line), each ``kvm_exit`` is paired with
the next ``kvm_entry`` of that thread: handling time = entry timestamp - exit
timestamp (it includes any time QEMU spends in user space and, for HLT, the
time the vCPU was blocked).  The I/O event between them says what the exit was
(:mod:`guestio.exits.kvm.exit_kinds`).  An exit with no entry before the trace
ends, or whose thread's CPU lost events before its entry, is counted with an
unknown handling time and reported.  ``CPU:N [LOST M EVENTS]`` markers,
``##### CPU N buffer started ####`` annotations and the
``# entries-in-buffer/entries-written: N/M`` header are counted and reported.
Phases: a ``trace_marker`` line ``guestio phase=<name>`` (written by
:meth:`guestio.exits.kvm.recorder.KvmTracer.mark`) starts phase ``<name>`` for
every exit after it; before any marker the ``phase`` argument applies.

Timestamps of the text output have microsecond resolution, so each handling
time is quantised to 1 us; the summary says so (``timestamp_resolution_ns``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Iterable, Mapping

from guestio.exits.kvm.exit_kinds import IO_EVENTS, classify_exit
from guestio.exits.kvm.formats import EventFormat
from guestio.exits.kvm.trace_lines import (BUFFER_STARTED_LINE, ENTRIES_HEADER, LOST_LINE, LOST_LINE_NO_COUNT,
                                           PHASE_MARK, TraceLine, parse_line, ts_to_ns)


@dataclass
class ExitRecord:
    pid: int
    cpu: int
    vcpu: int | None
    ts_ns: int
    guest_pc: int
    reason: str
    exit_kind: str
    port_or_address: int | None
    handling_ns: float            # NaN: unknown
    phase: str
    status: str                   # 'matched', 'no-entry' (trace ended), 'lost' (events lost before entry)
    source: str                   # 'event', 'exit-info', 'reason'


@dataclass
class _Open:
    line: TraceLine
    ts_ns: int
    fields: dict
    phase: str
    io: tuple[str, dict] | None = None
    extra_io: int = 0


class KvmTraceParser:
    """Feed tracefs text lines; collect exit records and a summary."""

    def __init__(self, formats: Mapping[str, EventFormat], phase: str = "benchmark",
                 ticks_per_second: float | None = None, max_examples: int = 5):
        missing = [e for e in ("kvm_exit", "kvm_entry") if e not in formats]
        if missing:
            raise ValueError(f"no format for {', '.join(missing)}: the trace cannot be read without them")
        self.formats = dict(formats)
        self.phase = phase
        self.ticks_per_second = ticks_per_second
        self.max_examples = max_examples
        self.records: list[ExitRecord] = []
        self._open: dict[int, _Open] = {}
        self.s = {
            "lines": 0, "comment_lines": 0, "unrecognised_lines": 0,
            "events_parsed": 0, "events_by_name": {}, "events_unknown": 0, "events_unknown_names": {},
            "events_unmatched_format": 0, "unmatched_format_examples": [],
            "exits": 0, "exits_matched": 0, "unmatched_exits": 0, "unmatched_no_entry": 0,
            "unmatched_lost": 0, "unmatched_examples": [], "entries_without_exit": 0,
            "io_events_without_exit": 0, "extra_io_events": 0, "negative_handling": 0,
            "lost_events": 0, "lost_markers": 0, "lost_by_cpu": {}, "lost_unknown_markers": 0,
            "buffer_started_cpus": [], "entries_in_buffer": None, "entries_written": None,
            "dropped_by_header": None, "cpus": None, "timestamp_resolution_ns": None,
            "phases": [], "exit_reasons": {}, "exits_by_kind": {}, "kind_source": {},
        }

    # -- feeding -----------------------------------------------------------------------------
    def feed_lines(self, lines: Iterable[str]) -> "KvmTraceParser":
        for line in lines:
            self.feed(line)
        return self

    def feed(self, line: str) -> None:
        s = self.s
        s["lines"] += 1
        raw = line.rstrip("\n")
        if not raw.strip():
            return
        if raw.lstrip().startswith("#"):
            s["comment_lines"] += 1
            m = ENTRIES_HEADER.match(raw.strip())
            if m:
                s["entries_in_buffer"] = int(m.group("inbuf"))
                s["entries_written"] = int(m.group("written"))
                s["dropped_by_header"] = s["entries_written"] - s["entries_in_buffer"]
                if m.group("ncpu"):
                    s["cpus"] = int(m.group("ncpu"))
                return
            m = BUFFER_STARTED_LINE.match(raw.strip())
            if m:
                s["buffer_started_cpus"].append(int(m.group("cpu")))
            return
        m = LOST_LINE.match(raw)
        if m or LOST_LINE_NO_COUNT.match(raw):
            cpu = int((m or LOST_LINE_NO_COUNT.match(raw)).group("cpu"))
            n = int(m.group("n")) if m else 0
            s["lost_markers"] += 1
            s["lost_events"] += n
            if not m:
                s["lost_unknown_markers"] += 1
            s["lost_by_cpu"][str(cpu)] = s["lost_by_cpu"].get(str(cpu), 0) + n
            self._lose(cpu)
            return
        tl = parse_line(raw)
        if tl is None:
            s["unrecognised_lines"] += 1
            return
        self._event(tl)

    def _lose(self, cpu: int) -> None:
        """Events were lost on ``cpu``: an exit recorded there may have lost its entry."""
        for pid, op in list(self._open.items()):
            if op.line.cpu == cpu:
                self._close(op, None, "lost")
                del self._open[pid]

    def _event(self, tl: TraceLine) -> None:
        s = self.s
        if tl.event in ("tracing_mark_write", "print"):
            m = PHASE_MARK.search(tl.body)
            if m:
                self.phase = m.group("phase")
                if self.phase not in s["phases"]:
                    s["phases"].append(self.phase)
            return
        fmt = self.formats.get(tl.event)
        if fmt is None:
            s["events_unknown"] += 1
            s["events_unknown_names"][tl.event] = s["events_unknown_names"].get(tl.event, 0) + 1
            return
        fields = fmt.printer.match(tl.body)
        if fields is None:
            s["events_unmatched_format"] += 1
            if len(s["unmatched_format_examples"]) < self.max_examples:
                s["unmatched_format_examples"].append(f"{tl.event}: {tl.body}")
            return
        s["events_parsed"] += 1
        s["events_by_name"][tl.event] = s["events_by_name"].get(tl.event, 0) + 1
        ts_ns, res = ts_to_ns(tl.ts, self.ticks_per_second)
        if s["timestamp_resolution_ns"] is None or res < s["timestamp_resolution_ns"]:
            s["timestamp_resolution_ns"] = res
        if tl.event == "kvm_exit":
            prev = self._open.pop(tl.pid, None)
            if prev is not None:  # two exits without an entry between them: the entry was lost
                self._close(prev, None, "lost")
            self._open[tl.pid] = _Open(tl, ts_ns, fields, self.phase)
            if self.phase not in s["phases"]:
                s["phases"].append(self.phase)
        elif tl.event == "kvm_entry":
            op = self._open.pop(tl.pid, None)
            if op is None:
                s["entries_without_exit"] += 1
            else:
                self._close(op, ts_ns, "matched")
        elif tl.event in IO_EVENTS:
            op = self._open.get(tl.pid)
            if op is None:
                s["io_events_without_exit"] += 1
            elif op.io is None:
                op.io = (tl.event, fields)
            else:
                op.extra_io += 1
                s["extra_io_events"] += 1

    def _close(self, op: _Open, entry_ns: int | None, status: str) -> None:
        s = self.s
        f = op.fields
        reason = str(f.get("exit_reason:sym", f.get("exit_reason", "?")))
        kind, addr, source = classify_exit(reason, f.get("info1"), f.get("info2"), f.get("intr_info"),
                                           op.io, f.get("isa"))
        handling = math.nan
        if entry_ns is not None:
            d = entry_ns - op.ts_ns
            if d < 0:
                s["negative_handling"] += 1
            else:
                handling = float(d)
        rec = ExitRecord(pid=op.line.pid, cpu=op.line.cpu, vcpu=f.get("vcpu_id"), ts_ns=op.ts_ns,
                         guest_pc=int(f.get("guest_rip", 0)), reason=reason, exit_kind=kind,
                         port_or_address=None if addr is None else int(addr), handling_ns=handling,
                         phase=op.phase, status=status, source=source)
        self.records.append(rec)
        s["exits"] += 1
        s["exit_reasons"][reason] = s["exit_reasons"].get(reason, 0) + 1
        s["exits_by_kind"][kind] = s["exits_by_kind"].get(kind, 0) + 1
        s["kind_source"][source] = s["kind_source"].get(source, 0) + 1
        if status == "matched":
            s["exits_matched"] += 1
        else:
            s["unmatched_exits"] += 1
            s["unmatched_no_entry" if status == "no-entry" else "unmatched_lost"] += 1
            if len(s["unmatched_examples"]) < self.max_examples:
                s["unmatched_examples"].append({"pid": rec.pid, "cpu": rec.cpu, "ts": op.line.ts,
                                                "guest_pc": f"0x{rec.guest_pc:016x}", "reason": reason,
                                                "status": status})

    def finish(self) -> "KvmTraceParser":
        """The trace ended: exits still waiting for their entry are counted as unmatched."""
        for pid in sorted(self._open):
            self._close(self._open[pid], None, "no-entry")
        self._open.clear()
        return self

    # -- results -----------------------------------------------------------------------------
    def summary(self) -> dict:
        s = json.loads(json.dumps(self.s))  # a plain, JSON-serialisable copy
        s["handling_time_unknown"] = s["unmatched_exits"] + s["negative_handling"]
        # LOST markers, the header and the per-CPU overrun count can describe the same loss:
        # the largest of them is a lower bound on the events the trace is missing.
        s["events_lost_lower_bound"] = max(s["lost_events"], s["dropped_by_header"] or 0)
        return s
