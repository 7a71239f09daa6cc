"""A KVM trace -> its exits table and summary: from text, or from a saved trace directory.

A saved directory is what :meth:`guestio.exits.kvm.recorder.KvmTracer.save` writes
(or a fixture laid out the same way): ``trace``, ``events/<system>/<event>/format``,
optional ``per_cpu/cpu*/stats``, whose overrun counts join the summary's lost events.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from guestio.exits.kvm.formats import EventFormat, load_formats
from guestio.exits.kvm.parser import KvmTraceParser
from guestio.exits.kvm.sites import sites_frame


def _read_lines(source) -> Iterable[str]:
    """A path (Path, or str without a newline), trace text (str with newlines), or lines."""
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source):
        return Path(source).read_text(errors="replace").splitlines()
    if isinstance(source, str):
        return source.splitlines()
    return source


def parse_trace(source, formats, *, workload: str, variant: str, phase: str = "benchmark",
                symbols=None, ticks_per_second: float | None = None) -> tuple[pd.DataFrame, dict]:
    """Exits table and summary of one tracefs text trace.

    ``source``: path of a ``trace``/``trace_pipe`` capture, its text, or lines.
    ``formats``: :func:`load_formats` result, or anything it accepts.
    ``symbols``: a :class:`guestio.exits.symbols.SymbolTable` for function/offset (optional).
    """
    if not (isinstance(formats, Mapping) and all(isinstance(v, EventFormat) for v in formats.values())):
        formats = load_formats(formats)
    parser = KvmTraceParser(formats, phase=phase, ticks_per_second=ticks_per_second)
    parser.feed_lines(_read_lines(source)).finish()
    return sites_frame(parser.records, workload, variant, symbols), parser.summary()


def read_cpu_stats(root: Path | str) -> dict[str, dict[str, float]]:
    """``per_cpu/cpu*/stats`` under ``root`` -> {'0': {'overrun': 0, 'dropped events': 0, ...}}."""
    out: dict[str, dict[str, float]] = {}
    for d in sorted(Path(root).glob("per_cpu/cpu*")):
        st = d / "stats"
        if not st.is_file():
            continue
        vals: dict[str, float] = {}
        for line in st.read_text().splitlines():
            k, sep, v = line.partition(":")
            if not sep:
                continue
            try:
                num = float(v.strip())
            except ValueError:
                continue
            key = k.strip()
            vals[key] = num if key.endswith(" ts") or not num.is_integer() else int(num)
        out[d.name[3:]] = vals
    return out


def parse_trace_dir(path: Path | str, *, workload: str, variant: str, phase: str = "benchmark",
                    symbols=None, ticks_per_second: float | None = None) -> tuple[pd.DataFrame, dict]:
    """A directory saved by :meth:`KvmTracer.save` (or a fixture laid out the same way):
    ``trace``, ``events/<system>/<event>/format``, optional ``per_cpu/cpu*/stats``."""
    path = Path(path)
    trace = path / "trace"
    if not trace.is_file():
        raise FileNotFoundError(f"{path}: no 'trace' file")
    df, summary = parse_trace(trace, load_formats(path), workload=workload, variant=variant, phase=phase,
                              symbols=symbols, ticks_per_second=ticks_per_second)
    stats = read_cpu_stats(path)
    if stats:
        summary["cpu_stats"] = stats
        summary["overrun"] = sum(int(v.get("overrun", 0)) for v in stats.values())
        summary["dropped_events_stats"] = sum(int(v.get("dropped events", 0)) for v in stats.values())
        summary["events_lost_lower_bound"] = max(summary["events_lost_lower_bound"], summary["overrun"],
                                                 summary["dropped_events_stats"])
    return df, summary
