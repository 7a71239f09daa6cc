"""One line of tracefs text output: an event line, a lost-events marker, a header comment.

Event lines look like ``CPU 0/KVM-4121 [001] ..... 12.345678: kvm_exit: reason ...``
(the ``(tgid)`` column and the flags column are optional).  Timestamps of the
text output have microsecond resolution (``%5lu.%06lu``); counter clocks
(``x86-tsc``, ``counter``) print integers, converted with ``ticks_per_second``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

EVENT_LINE = re.compile(
    r"^\s*(?P<comm>.+?)-(?P<pid>\d+)\s+"
    r"(?:\(\s*(?P<tgid>[-\d]+)\)\s+)?"
    r"\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[^\s\d]\S{3,5})\s+)?"
    r"(?P<ts>\d+(?:\.\d+)?):\s+"
    r"(?P<event>\w+):\s?(?P<body>.*)$")
LOST_LINE = re.compile(r"^\s*CPU:\s*(?P<cpu>\d+)\s+\[LOST\s+(?P<n>\d+)\s+EVENTS\]\s*$")
LOST_LINE_NO_COUNT = re.compile(r"^\s*CPU:\s*(?P<cpu>\d+)\s+\[LOST EVENTS\]\s*$")
BUFFER_STARTED_LINE = re.compile(r"^#{5}\s+CPU\s+(?P<cpu>\d+)\s+buffer started\s+#{4}\s*$")
ENTRIES_HEADER = re.compile(r"^#\s*entries-in-buffer/entries-written:\s*(?P<inbuf>\d+)/(?P<written>\d+)"
                            r"(?:\s+#P:(?P<ncpu>\d+))?")
PHASE_MARK = re.compile(r"guestio\s+phase=(?P<phase>[\w.\-]+)")


@dataclass(frozen=True)
class TraceLine:
    comm: str
    pid: int
    cpu: int
    ts: str
    event: str
    body: str
    tgid: int | None = None


def parse_line(line: str) -> TraceLine | None:
    m = EVENT_LINE.match(line.rstrip("\n"))
    if not m:
        return None
    tgid = m.group("tgid")
    return TraceLine(comm=m.group("comm").strip(), pid=int(m.group("pid")), cpu=int(m.group("cpu")),
                     ts=m.group("ts"), event=m.group("event"), body=m.group("body"),
                     tgid=int(tgid) if tgid and tgid.strip("-") else None)


def ts_to_ns(ts: str, ticks_per_second: float | None) -> tuple[int, int]:
    """(timestamp in ns, resolution in ns) of a printed timestamp."""
    if "." in ts:
        sec, frac = ts.split(".", 1)
        return int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")[:9]), 10 ** max(0, 9 - len(frac))
    if ticks_per_second is None:
        raise ValueError(f"timestamp {ts!r} is a raw counter (trace_clock counter/x86-tsc): "
                         "pass ticks_per_second to convert it")
    ns = int(ts) * 1e9 / ticks_per_second
    return int(round(ns)), max(1, int(round(1e9 / ticks_per_second)))
