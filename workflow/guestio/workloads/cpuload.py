"""A CPU-bound guest workload with the timer running: Table 1's stand-in for SPECjbb2005.

SPECjbb2005 (the paper's workload for Table 1) is proprietary and needs a JVM.  What
Table 1 shows is which exits a guest takes while it computes and its timer ticks:
the timer's own sites (the PIT's interrupt, its acknowledgement at the IO-APIC and
the local APIC, the clocksource read of every tick).  ``sysbench cpu`` (in the guest
image) computes primes in one thread and does no I/O; ``workflow/jobs/cpu.sh`` runs
a fixed number of its events (a fixed amount of work, whatever the tick costs), with
the tick window of :mod:`guestio.workloads.tick` around it.

Measurements: ``cpu_events_per_second`` (sysbench's "events per second", guest
clock), ``cpu_total_time`` (its "total time", s, guest clock), ``cpu_events``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from guestio.analysis.measurements import Measurement

__all__ = ["JOB_SCRIPT", "CpuLoadError", "job_params", "write_params", "parse_sysbench", "read_result"]

JOB_SCRIPT = Path(__file__).resolve().parents[2] / "jobs" / "cpu.sh"


class CpuLoadError(ValueError):
    """sysbench's report is missing or not a complete run of the requested events."""


def job_params(events: int, max_prime: int) -> dict[str, str]:
    events, max_prime = int(events), int(max_prime)
    if events < 1:
        raise ValueError(f"sysbench events must be >= 1, not {events}")
    if max_prime < 3:
        raise ValueError(f"sysbench cpu-max-prime must be >= 3, not {max_prime}")
    return {"EVENTS": str(events), "MAX_PRIME": str(max_prime)}


def write_params(path: Path | str, events: int, max_prime: int) -> Path:
    """The job's parameters file (fw_cfg opt/guestio/params)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in job_params(events, max_prime).items()))
    return path


_EPS = re.compile(r"^\s*events per second:\s*([0-9.]+)\s*$", re.M)
_TOTAL = re.compile(r"^\s*total time:\s*([0-9.]+)s\s*$", re.M)
_EVENTS = re.compile(r"^\s*total number of events:\s*([0-9]+)\s*$", re.M)


def parse_sysbench(text: str, source: str = "<sysbench output>", *, events: int | None = None) -> list[Measurement]:
    """sysbench 1.0 cpu's report -> measurements; *events*: the count it must have run."""
    found = {}
    for name, pattern in (("eps", _EPS), ("total", _TOTAL), ("events", _EVENTS)):
        m = pattern.findall(text)
        if len(m) != 1:
            raise CpuLoadError(f"{source}: {len(m)} lines of {pattern.pattern!r}, expected one "
                               "(sysbench killed, failed or of another version?)")
        found[name] = float(m[0])
    if events is not None and int(found["events"]) != int(events):
        raise CpuLoadError(f"{source}: sysbench ran {int(found['events'])} events, not {events}")
    return [Measurement("cpu_events_per_second", found["eps"], "events/s"),
            Measurement("cpu_total_time", found["total"], "s"),
            Measurement("cpu_events", found["events"], "events")]


def read_result(results_dir: Path | str, events: int) -> list[Measurement]:
    path = Path(results_dir) / "sysbench.txt"
    if not path.is_file():
        raise CpuLoadError(f"{path} missing: the cpu job wrote no report")
    return parse_sysbench(path.read_text(), str(path), events=events)
