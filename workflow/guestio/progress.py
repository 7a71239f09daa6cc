"""What the main job tells its user while it runs: how long it will take, and how long is left.

At the start (Snakemake's ``onstart``, so real runs only: Snakemake calls no hooks on a dry run)
the run's estimated time, in all and by stage, is the sum of the bench's cost of each job the DAG
will run.  Those costs are the per-rule times of a cold main job that workflow/bench/pipeline.json
keeps for the bench machine ("time by rule (jobs)", a rule's time divided by its job count),
scaled by a CPU probe: a fixed small workload timed here and compared with its time recorded
there ("cpu_probe").  As jobs finish, a logging handler on Snakemake's logger sees each
"Finished jobid" record and, after Snakemake's "N of M steps" line, logs the time left.

Nothing here may stop a run: a missing or malformed bench file gives "no estimate", and any
other problem gives one warning line (see ``start``).

Long jobs say what they are doing with ``heartbeat``: a line every minute, in the job's log and
on stderr (the kernel build counts the objects compiled so far).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

BENCH = Path(__file__).resolve().parents[1] / "bench" / "pipeline.json"

# Stages in the order the run goes through them; a rule not named here is a figure, table or report.
STAGES = {
    "kernels": ("kernel_source", "kernel"),
    "QEMU": ("qemu_source", "qemu", "exit_plugin"),
    "image": ("initramfs", "data_disk", "host_snapshot", "accelerator", "smoke_boot"),
    "disk VM runs": ("disk_vm",),
    "native runs": ("disk_native", "net_native"),
    "exit runs": ("exit_sites", "net_exits"),
    "network runs": ("net_vm",),
    "timer runs": ("timer_exits",),
}
OTHER_STAGE = "figures, tables, report"
# A probe far off the reference is more likely a busy host than a machine 5x faster or slower.
FACTOR_RANGE = (0.25, 4.0)
# The pace of the run so far corrects the time left only once enough of it has been seen.
PACE_AFTER_FRACTION = 0.10
PACE_RANGE = (0.33, 3.0)

_RULE_COST = re.compile(r"(\w+) ([\d.]+) min \((\d+)\)")


def stage_of(rule: str) -> str:
    return next((stage for stage, rules in STAGES.items() if rule in rules), OTHER_STAGE)


# ---------------------------------------------------------------- the bench's per-job costs

@dataclass
class Costs:
    """Seconds one job of each rule took on the bench machine (cold main job of one profile)."""
    per_rule_s: dict[str, float]
    other_s: float          # a job of a rule the bench's top rules do not list
    source: str             # "default profile, 2026-12-01": which bench row this is

    def of(self, rule: str) -> float:
        return self.per_rule_s.get(rule, self.other_s)


def _minutes(text: str) -> float | None:
    m = re.match(r"\s*([\d.]+) min", text)
    return float(m.group(1)) if m else None


def costs_from_bench(store: dict, profile: str) -> Costs | None:
    """The per-job costs of the main job of *profile* ("default", "quick"), or None when the
    bench has no usable rows for it (then there is no estimate)."""
    part = store.get("parts", {}).get(f"mainjob {profile}")
    if not part:
        return None
    rows = part.get("rows", [])
    by_rule = next((r for r in rows if r[0].startswith("time by rule")), None)
    whole = next((r for r in rows if r[0].startswith("main job")), None)
    if by_rule is None:
        return None
    listed = {name: (float(mins) * 60, int(jobs)) for name, mins, jobs in _RULE_COST.findall(by_rule[2])}
    if not listed:
        return None
    per_rule = {name: total / max(jobs, 1) for name, (total, jobs) in listed.items()}
    # The rules the bench leaves out share what the run's elapsed time leaves over.
    other = 0.0
    if whole is not None:
        elapsed_min = _minutes(whole[1])
        jobs = re.match(r"(\d+) jobs", whole[2])
        if elapsed_min is not None and jobs:
            rest_jobs = int(jobs.group(1)) - sum(n for _, n in listed.values())
            rest_s = elapsed_min * 60 - sum(t for t, _ in listed.values())
            other = max(rest_s, 0.0) / rest_jobs if rest_jobs > 0 else 0.0
    return Costs(per_rule, other, f"{profile} profile, {part.get('date', 'undated')}")


def profile_of(configfiles: Iterable[str], store: dict) -> str:
    """The bench profile whose costs fit this run: config/NAME.yaml among --configfile, else default."""
    for path in configfiles:
        name = Path(str(path)).stem
        if f"mainjob {name}" in store.get("parts", {}):
            return name
    return "default"


def load_bench(path: Path = BENCH) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------- the host probe

def probe_seconds(repeats: int = 5) -> float:
    """A fixed CPU-bound workload (interpreter loop and hashing, as the pipeline's Python and
    C work), best of *repeats* so that a moment's load counts little; about 0.15 s in all."""
    data = bytes(range(256)) * 32768  # 8 MiB
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        total = 0
        for i in range(250_000):
            total += i * i % 7
        hashlib.sha256(data).digest()
        best = min(best, time.perf_counter() - started)
    return best


def probe_factor(store: dict, measure: Callable[[], float] = probe_seconds) -> float:
    """How much slower this host is than the bench machine (1.0 when the bench has no probe)."""
    reference = store.get("cpu_probe", {}).get("seconds")
    if not reference:
        return 1.0
    low, high = FACTOR_RANGE
    return min(max(measure() / reference, low), high)


# ---------------------------------------------------------------- estimate and time left

@dataclass
class Estimate:
    costs: Costs
    factor: float
    jobs: dict[int, str]                       # job id -> rule, the jobs this run will run
    finished: set[int] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)

    def cost(self, rule: str) -> float:
        return self.costs.of(rule) * self.factor

    def by_stage(self) -> dict[str, tuple[float, int]]:
        """Stage -> (estimated seconds, jobs), in run order, stages with no job left out."""
        stages: dict[str, tuple[float, int]] = {}
        for rule in self.jobs.values():
            seconds, count = stages.get(stage_of(rule), (0.0, 0))
            stages[stage_of(rule)] = (seconds + self.cost(rule), count + 1)
        order = [*STAGES, OTHER_STAGE]
        return {s: stages[s] for s in order if s in stages}

    def total_s(self) -> float:
        return sum(self.cost(rule) for rule in self.jobs.values())

    def job_finished(self, job_id: int | None) -> None:
        """A job of this run ended; one the DAG added later (a checkpoint's) counts for nothing."""
        if job_id in self.jobs:
            self.finished.add(job_id)

    def done_s(self) -> float:
        return sum(self.cost(self.jobs[j]) for j in self.finished)

    def left_s(self, now: float | None = None) -> float:
        """Estimated seconds left: the unfinished jobs' cost, times the pace so far once enough
        of the run has been seen (this host may be busier than the probe said)."""
        left = sum(self.cost(rule) for j, rule in self.jobs.items() if j not in self.finished)
        done, total = self.done_s(), self.total_s()
        if now is not None and total > 0 and done >= PACE_AFTER_FRACTION * total:
            low, high = PACE_RANGE
            left *= min(max((now - self.started) / done, low), high)
        return left


def _fmt(seconds: float) -> str:
    minutes = seconds / 60
    return f"~{minutes:.0f} min" if minutes >= 1.5 else f"~{seconds:.0f} s" if seconds < 90 else "~1 min"


def start_lines(estimate: Estimate) -> list[str]:
    lines = [f"Estimated time of this run: {_fmt(estimate.total_s())} for {len(estimate.jobs)} jobs "
             f"(bench: {estimate.costs.source}; this host x{estimate.factor:.2f} by its CPU probe)"]
    lines += [f"    {stage}: {_fmt(seconds)} ({jobs} jobs)" for stage, (seconds, jobs) in estimate.by_stage().items()]
    return lines


def left_line(estimate: Estimate, now: float | None = None) -> str:
    return f"Time left: {_fmt(estimate.left_s(now))} (estimate)"


class ProgressHandler(logging.Handler):
    """On Snakemake's logger: counts finished jobs, and logs the time left after each
    "N of M steps" line.  Its own line goes through the same logger (terminal and log file)."""

    def __init__(self, estimate: Estimate, logger: logging.Logger):
        super().__init__(level=logging.INFO)
        self.estimate = estimate
        self.logger = logger
        self._inside = False

    def emit(self, record: logging.LogRecord) -> None:
        if self._inside:
            return
        try:
            event = str(getattr(record, "event", ""))
            if event == "job_finished":
                self.estimate.job_finished(getattr(record, "job_id", None))
            elif event == "progress":
                self._inside = True
                try:
                    self.logger.info(left_line(self.estimate, time.monotonic()))
                finally:
                    self._inside = False
        except Exception:  # a progress line is never worth a failed run
            pass


def estimate_for(jobs: dict[int, str], configfiles: Iterable[str], bench: Path = BENCH,
                 measure: Callable[[], float] | None = None) -> Estimate | None:
    """The estimate of a run of *jobs* (id -> rule), or None when the bench has no costs."""
    store = load_bench(bench)
    if store is None:
        return None
    costs = costs_from_bench(store, profile_of(configfiles, store))
    if costs is None:
        return None
    return Estimate(costs, probe_factor(store, measure or probe_seconds), dict(jobs))


def start(workflow, logger: logging.Logger | None = None, bench: Path = BENCH) -> Estimate | None:
    """From Snakemake's onstart: log the estimate and attach the time-left handler.  Never raises."""
    # Snakemake logs through snakemake.logging.logger, named after its module.
    logger = logger or logging.getLogger("snakemake.logging")
    try:
        jobs = {job.jobid: job.rule.name for job in workflow.dag.needrun_jobs()}
        estimate = estimate_for(jobs, workflow.overwrite_configfiles or [], bench)
        if estimate is None:
            logger.info(f"No estimate of this run's time: {bench} has no main-job costs by rule "
                        "(workflow/bench/pipeline.py --parts mainjob records them)")
            return None
        for line in start_lines(estimate):
            logger.info(line)
        logger.addHandler(ProgressHandler(estimate, logger))
        return estimate
    except Exception as error:
        logger.warning(f"No estimate of this run's time (the run goes on): {type(error).__name__}: {error}")
        return None


# ---------------------------------------------------------------- heartbeat of long jobs

def compiled_objects(log_path: Path) -> int:
    """Objects a kernel build has compiled so far: kbuild's "  CC  path.o" lines in its log."""
    try:
        with open(log_path, errors="replace") as log:
            return sum(1 for line in log if line.startswith("  CC "))
    except OSError:
        return 0


_NINJA_STEP = re.compile(r"^\[(\d+)/(\d+)\] ", re.M)


def ninja_steps(log_path: Path) -> str:
    """How far a ninja build is: its last "[n/m]" line in the log ("1200/2345"), or "0"."""
    try:
        steps = _NINJA_STEP.findall(Path(log_path).read_text(errors="replace"))
    except OSError:
        steps = []
    return f"{steps[-1][0]}/{steps[-1][1]}" if steps else "0"


class heartbeat:
    """While the block runs, every *every_s* seconds: *say()*'s line in *log* and on stderr."""

    def __init__(self, say: Callable[[], str], log=None, every_s: float = 60.0):
        self.say, self.log, self.every_s = say, log, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                line = self.say()
                if self.log is not None:
                    self.log.write(line + "\n")
                    self.log.flush()
                print(line, file=sys.stderr, flush=True)
            except Exception:  # a progress line is never worth a failed build
                pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
