"""The KVM branch of the exit rules: the tracer hook on the VM lifecycle, and Table 3 through Snakemake.

These machines cannot run a KVM guest (the host's kvm_pvm module never emits kvm_exit), so
the KVM side is tested on recorded traces: tests/data/kvmtrace (see its README: the format
files are Linux 6.1's own, the trace lines are a hand-made scenario at real instruction
addresses of the baseline guest kernel).  The tracer hook runs against a fake tracefs; the
end-to-end test gives Snakemake a recorded KVM run (config exits.kvm_recorded), so the rule
picks the KVM backend from that run's accelerator decision, symbolises against the variant's
System.map built here, and writes Table 3 with handling times and the lost events.  The
recording's addresses are first moved into the kernel built here (same function, same offset):
the fixture's were taken from an older baseline build, and a configuration change moves them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from guestio.exits import schema
from guestio.exits.kvm.hook import KvmExitTracer
from guestio.exits.kvm.recorder import DEFAULT_EVENTS
from guestio.exits.kvm.trace_reader import parse_trace_dir
from guestio.exits.symbols import SymbolTable

from conftest import REPO, SNAKEMAKE, TEST_RESULTS, build_or_fail, job_counts
from test_exits_kvm import _fake_tracefs as fake_tracefs

DATA = REPO / "tests" / "data" / "kvmtrace"
# The kernels the other tests use; this test adds only exits/ and tables/ there.
RESULTS = TEST_RESULTS


def test_tracer_hook_records_the_job_window_only(tmp_path):
    root = tmp_path / "tracing"
    base = fake_tracefs(root, instance="guestio-test")
    messages: list[str] = []
    machine = SimpleNamespace(spec=SimpleNamespace(accel="kvm"), outdir=tmp_path / "run", pid=1,
                              say=messages.append)
    hook = KvmExitTracer(root=root, instance="guestio-test", buffer_size_kb=4096)
    hook.after_launch(machine)
    assert (base / "tracing_on").read_text() == "0"          # set up, not yet tracing: boot is not traced
    assert (base / "buffer_size_kb").read_text() == "4096"
    assert all((base / "events" / ev / "enable").read_text() == "1" for ev in DEFAULT_EVENTS)
    hook.job_started(machine)
    assert (base / "tracing_on").read_text() == "1"
    assert (base / "trace_marker").read_text() == "guestio phase=benchmark\n"
    hook.phase(machine, "read")
    assert (base / "trace_marker").read_text() == "guestio phase=read\n"
    (base / "trace").write_text((DATA / "linux-6.1" / "trace").read_text())  # what the kernel would hold
    hook.job_finished(machine, 0)
    assert (base / "tracing_on").read_text() == "0"
    saved = tmp_path / "run" / "kvm-trace"
    assert (saved / "trace").read_text() == (DATA / "linux-6.1" / "trace").read_text()
    assert hook.saved["overrun"] == 3 and any("window saved" in m for m in messages)
    hook.after_shutdown(machine, None)
    assert all((base / "events" / ev / "enable").read_text() == "0" for ev in DEFAULT_EVENTS)
    df, summary = parse_trace_dir(saved, workload="bonnie++", variant="baseline")
    assert df["count"].sum() == 21 and summary["events_lost_lower_bound"] >= 17


def test_tracer_hook_refuses_a_tcg_run_and_tears_down_after_a_failed_run(tmp_path):
    root = tmp_path / "tracing"
    base = fake_tracefs(root, instance="guestio-test")
    hook = KvmExitTracer(root=root, instance="guestio-test")
    with pytest.raises(ValueError, match="needs accel kvm"):
        hook.after_launch(SimpleNamespace(spec=SimpleNamespace(accel="tcg"), outdir=tmp_path, pid=1,
                                          say=print))
    machine = SimpleNamespace(spec=SimpleNamespace(accel="kvm"), outdir=tmp_path / "run", pid=1, say=print)
    hook.after_launch(machine)
    hook.job_started(machine)
    hook.after_shutdown(machine, None)  # the job never finished: tracing is still switched off
    assert (base / "tracing_on").read_text() == "0"
    assert (base / "set_event_pid").read_text() == ""
    assert not (tmp_path / "run" / "kvm-trace").exists()


def _moved_to(kernel_map: Path, trace: Path) -> None:
    """Rewrite the trace's guest addresses, symbol + offset of the fixture's System.map, to the
    same function in the kernel built here: a recording of that kernel.  A change to the
    baseline's configuration moves its functions and may change their code (frame pointers add a
    prologue), so the offset is kept where the function built here is long enough, else its last
    byte: the table symbolises by function, and the exits' ports come from the trace events."""
    recorded, built = SymbolTable.from_system_map(DATA / "System.map"), SymbolTable.from_system_map(kernel_map)

    def size(table: SymbolTable, start: int, name: str) -> int:
        n = 1
        while table.lookup(start + n) == (name, n):
            n += 1
        return n

    def move(m: re.Match) -> str:
        pc = int(m.group(1), 16)
        found = recorded.lookup(pc)
        if found is None:
            return m.group(0)
        name, offset = found
        want = size(recorded, pc - offset, name)
        # a name defined twice (a static inline's copies): the copy of the recorded size if there
        # is one, else the first
        starts = sorted(built.addresses_of(name), key=lambda a: (size(built, a, name) != want, a))
        assert starts, f"{name} is not in the kernel built here"
        return f"0x{starts[0] + min(offset, size(built, starts[0], name) - 1):x}"

    trace.write_text(re.sub(r"0x(ffffffff8[0-9a-f]{7})\b", move, trace.read_text()))


def recorded_run(root: Path, variant: str = "baseline", kernel_map: Path | None = None) -> Path:
    """A KVM run as the exit rule leaves it: the accelerator decision, run.json, the trace window
    (its addresses moved into the kernel built here when kernel_map is given)."""
    run = root / variant
    shutil.copytree(DATA / "linux-6.1", run / "kvm-trace")
    if kernel_map is not None:
        _moved_to(kernel_map, run / "kvm-trace" / "trace")
    (run / "accelerator.json").write_text(json.dumps(
        {"accelerator": "kvm", "requested": "auto", "reason": "recorded fixture (tests/data/kvmtrace)"}))
    (run / "run.json").write_text(json.dumps(
        {"result": {"status": "ok", "reason": "recorded fixture"}, "spec": {"accel": "kvm"}}))
    return run


@pytest.mark.boot  # builds the baseline kernel if the other tests have not
def test_table3_from_a_recorded_kvm_run_through_snakemake(tmp_path):
    build_or_fail("the baseline kernel", f"{RESULTS.relative_to(REPO)}/kernels/baseline/build.json")
    recording = recorded_run(tmp_path / "recorded", kernel_map=RESULTS / "kernels" / "baseline" / "System.map")
    profile = tmp_path / "kvm.yaml"
    profile.write_text(yaml.safe_dump({
        "results_dir": str(RESULTS.relative_to(REPO)),
        "exits": {"variants": ["baseline"], "kvm_recorded": str(tmp_path / "recorded")},
    }))
    shutil.rmtree(RESULTS / "exits", ignore_errors=True)
    shutil.rmtree(RESULTS / "tables", ignore_errors=True)
    cli = [str(SNAKEMAKE), "table3", "--cores", "all", "--configfile", str(profile)]
    plan = subprocess.run([*cli, "-n"], cwd=REPO, capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr[-3000:]
    counts = job_counts(plan.stdout)
    # The recorded run replaces the boot: no probe, data disk or plugin is needed (the image's
    # manifest still is: provenance names it).
    assert counts.get("exit_sites") == 1 and counts.get("table3") == 1, counts
    for rule in ("accelerator", "data_disk", "exit_plugin"):
        assert rule not in counts, (rule, counts)
    run = subprocess.run(cli, cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]

    sites = schema.read_csv(RESULTS / "exits" / "bonnie" / "baseline" / "stock" / "rep0" / "exits.csv")
    assert set(sites.accelerator) == {"kvm"} and sites["handling_ns"].notna().any()
    expected = parse_trace_dir(recording / "kvm-trace", workload="bonnie++", variant="baseline", phase="boot",
                               symbols=SymbolTable.from_system_map(
                                   RESULTS / "kernels" / "baseline" / "System.map"))[0]
    assert int(sites["count"].sum()) == int(expected["count"].sum()) == 21
    # The recording's addresses are the baseline kernel's: symbolised against the System.map built here.
    benchmark = sites[sites.phase == "benchmark"]
    assert {"iowrite8", "ioread8", "acpi_pm_read"} <= set(sites.function), sorted(set(sites.function))
    assert not benchmark.empty
    summary = json.loads((RESULTS / "exits" / "bonnie" / "baseline" / "stock" / "rep0" / "summary.json").read_text())
    assert summary["backend"] == "kvm" and summary["events_lost_lower_bound"] >= 17
    provenance = json.loads((RESULTS / "exits" / "bonnie" / "baseline" / "stock" / "rep0" / "provenance.json").read_text())
    assert provenance["accelerator"]["accelerator"] == "kvm"

    table = (RESULTS / "tables" / "table3.md").read_text()
    assert "VM exits measured under KVM" in table and "modelled exits (TCG)" not in table
    assert "at least 17" in table and "not traced: under KVM only the job's window" not in table
    ranked = pd.read_csv(RESULTS / "tables" / "table3.csv")
    assert set(ranked.accelerator) == {"kvm"} and ranked["handling_ns"].notna().all()
