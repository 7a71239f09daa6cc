"""The KVM acceptance verdict: did a run of config/kvm-acceptance.yaml take the KVM branch end to end?

Read from what the runs wrote, never from the config alone:

* the accelerator decision: the probe chose ``kvm``, and ``kvm`` was what the config asked for
  (so a broken KVM stopped the run instead of falling back to TCG);
* every exit run: its backend is ``kvm`` (tracepoints, not the TCG plugin), its trace holds
  ``kvm_exit`` events, its exit sites have handling times; over the runs, ``kvm_pio`` (the IDE
  disk's port I/O) and ``kvm_mmio`` (the e1000's registers) were recorded;
* the PIT route: the pit-scale run's QEMU command line has ``kernel_irqchip=split`` (the PIT is
  QEMU's, so its period-scale applies) and its measured tick is HZ / pit_scale within the
  tolerance; the vHZ1000 run's tick is HZ;
* the bonnie++ and netperf pair: the disk runs' measurements (natively and in the guest, the
  guest's under KVM) and the netperf exit run's windows with data sent.

:func:`evaluate` returns the checks; :func:`write` writes them as JSON and Markdown.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from guestio.util import write_json_atomic, write_text_atomic

__all__ = ["Check", "ExitRun", "evaluate", "write", "AcceptanceFailed"]

#: The tracepoints the acceptance run must have recorded (over all its exit runs).
REQUIRED_EVENTS = ("kvm_exit", "kvm_pio", "kvm_mmio")


class AcceptanceFailed(RuntimeError):
    """A run of the acceptance profile did not show the KVM branch."""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class ExitRun:
    """One exit run: its directory (summary.json, exits.csv, qemu-cmdline.json) and its label."""
    label: str
    directory: Path
    pit_scale: int = 1          # what its QEMU does to the PIT (1: nothing)


def _json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def accelerator_check(accelerator_json: Path) -> Check:
    decision = _json(accelerator_json)
    ok = decision.get("accelerator") == "kvm" and decision.get("requested") == "kvm"
    return Check("probe chose KVM", ok,
                 f"accelerator {decision.get('accelerator')!r} (requested {decision.get('requested')!r}): "
                 f"{decision.get('reason', '')}")


def exit_run_checks(run: ExitRun) -> tuple[list[Check], dict[str, int]]:
    """The checks of one exit run, and its trace's event counts."""
    summary = _json(run.directory / "summary.json")
    events = {k: int(v) for k, v in ((summary.get("trace") or {}).get("events_by_name") or {}).items()}
    checks = [Check(f"{run.label}: KVM tracepoints", summary.get("backend") == "kvm" and events.get("kvm_exit", 0) > 0,
                    f"backend {summary.get('backend')!r}; events " +
                    (", ".join(f"{k} {v}" for k, v in sorted(events.items())) or "none"))]
    sites = pd.read_csv(run.directory / "exits.csv")
    timed = sites["handling_ns"].notna() if "handling_ns" in sites else pd.Series(False, index=sites.index)
    accelerators = sorted(set(sites["accelerator"].astype(str))) if "accelerator" in sites else []
    checks.append(Check(f"{run.label}: handling times", accelerators == ["kvm"] and bool(timed.any()),
                        f"{int(timed.sum())} of {len(sites)} exit sites timed; accelerator column {accelerators}; "
                        f"at least {summary.get('events_lost_lower_bound', '?')} events lost"))
    return checks, events


def _argv(run_dir: Path) -> list[str]:
    try:
        return [str(a) for a in _json(run_dir / "qemu-cmdline.json")]
    except (OSError, ValueError):
        return []


def tick_check(run: ExitRun) -> list[Check]:
    """The run's measured tick (its summary's ``tick``) against HZ / its PIT scale; for a scaled
    PIT also the split irqchip on its command line."""
    tick = _json(run.directory / "summary.json").get("tick")
    checks = []
    if run.pit_scale != 1:
        argv = _argv(run.directory)
        split = any("kernel_irqchip=split" in a for a in argv)
        checks.append(Check(f"{run.label}: PIT in QEMU (kernel_irqchip=split)", split,
                            "on the QEMU command line" if split else
                            f"not on the QEMU command line ({run.directory / 'qemu-cmdline.json'})"))
    if not tick:
        return checks + [Check(f"{run.label}: tick", False, "no tick measured in summary.json")]
    ok = bool(tick.get("ok")) and int(tick.get("pit_scale", 0)) == run.pit_scale
    checks.append(Check(f"{run.label}: tick at HZ / {run.pit_scale}", ok,
                        f"{tick['rate_hz']:.1f} Hz measured, {tick['intended_hz']:g} Hz intended "
                        f"(HZ {tick['hz']} / PIT scale {tick['pit_scale']}, tolerance {tick['tolerance']:.0%})"))
    return checks


def pair_checks(disk_runs: Iterable[Path], net_run: Path) -> list[Check]:
    """bonnie++ natively and in the guest (under KVM), and netperf's windows in the guest."""
    frames = [pd.read_csv(p) for p in disk_runs]
    disk = pd.concat(frames) if frames else pd.DataFrame(columns=["accelerator", "metric"])
    native = disk[disk["accelerator"].astype(str).isin(["-", "native"])] if not disk.empty else disk
    guest = disk[disk["accelerator"].astype(str) == "kvm"] if not disk.empty else disk
    other = sorted(set(disk["accelerator"].astype(str)) - {"-", "native", "kvm"}) if not disk.empty else []
    checks = [Check("bonnie++ natively and under KVM", not native.empty and not guest.empty and not other,
                    f"{len(native)} native and {len(guest)} KVM measurements from {len(frames)} runs"
                    + (f"; other accelerators: {other}" if other else ""))]
    windows = _json(net_run / "summary.json").get("windows") or {}
    sent = {name: w.get("sent_mib") for name, w in windows.items() if w.get("sent_mib")}
    checks.append(Check("netperf in the guest under KVM", bool(sent),
                        ", ".join(f"{name}: {w.get('exits', 0)} exits" + (f", {w['sent_mib']} MiB sent"
                                                                          if w.get("sent_mib") else "")
                                  for name, w in sorted(windows.items())) or "no windows"))
    return checks


def evaluate(*, accelerator_json: Path, exit_runs: Iterable[ExitRun], tick_runs: Iterable[ExitRun],
             disk_runs: Iterable[Path], net_run: Path) -> list[Check]:
    checks = [accelerator_check(Path(accelerator_json))]
    totals: dict[str, int] = {}
    for run in exit_runs:
        run_checks, events = exit_run_checks(run)
        checks += run_checks
        for name, n in events.items():
            totals[name] = totals.get(name, 0) + n
    missing = [e for e in REQUIRED_EVENTS if not totals.get(e)]
    checks.append(Check("kvm_exit, kvm_pio and kvm_mmio recorded", not missing,
                        ", ".join(f"{e} {totals.get(e, 0)}" for e in REQUIRED_EVENTS) + " over the exit runs"
                        + (f"; none of {', '.join(missing)}" if missing else "")))
    for run in tick_runs:
        checks += tick_check(run)
    checks += pair_checks([Path(p) for p in disk_runs], Path(net_run))
    return checks


def markdown(checks: list[Check]) -> str:
    passed = all(c.ok for c in checks)
    lines = ["# KVM acceptance", "",
             f"**{'PASSED' if passed else 'FAILED'}**: {sum(c.ok for c in checks)} of {len(checks)} checks hold.",
             "", "| check | | what the runs show |", "|---|---|---|"]
    lines += [f"| {c.name} | {'ok' if c.ok else 'FAILED'} | {c.detail.replace('|', '/')} |" for c in checks]
    return "\n".join(lines) + "\n"


def write(checks: list[Check], json_path: Path, markdown_path: Path) -> None:
    write_json_atomic(Path(json_path), {"passed": all(c.ok for c in checks), "checks": [asdict(c) for c in checks]})
    write_text_atomic(Path(markdown_path), markdown(checks))
