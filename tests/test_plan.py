"""The plan (guestio.plan): what a config makes, read by every rule file, whatever their order."""

from __future__ import annotations

import os
import re
import subprocess

import yaml

from conftest import REPO, SNAKEMAKE, job_counts
from guestio.plan import Plan
from guestio.plan.tables import FIGURES

DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


class HostProbe:
    """The two findings of guestio.hostprobe that the plan reads."""
    cfq_standin = "mq-deadline"
    host_schedulers = ["none", "mq-deadline"]


def dry_run_jobs(snakefile, results) -> dict[str, int]:
    done = subprocess.run([str(SNAKEMAKE), "-n", "--forceall", "--cores", "2", "--snakefile", str(snakefile),
                           "all", "bundle", "--config", f"results_dir={results}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return job_counts(done.stdout)


def test_the_order_of_the_rule_files_does_not_change_the_dag(tmp_path):
    text = (REPO / "Snakefile").read_text()
    lines = text.splitlines(keepends=True)
    stages = [i for i, line in enumerate(lines) if re.match(r'include: "workflow/rules/(?!common)', line)]
    assert len(stages) >= 10
    for i, line in zip(stages, reversed([lines[i] for i in stages])):
        lines[i] = line
    reordered = "".join(lines)
    assert reordered != text
    results = tmp_path / "results"   # the host probe writes its findings there, even in a dry run
    jobs = dry_run_jobs(REPO / "Snakefile", results)
    assert jobs["total"] > 100 and jobs["measurement_table"] == len(Plan(DEFAULT, REPO, HostProbe).tables)
    # beside the real one: the workflow's base directory is the Snakefile's
    snakefile = REPO / f".Snakefile-reordered-{os.getpid()}"
    try:
        snakefile.write_text(reordered)
        assert dry_run_jobs(snakefile, results) == jobs
    finally:
        snakefile.unlink(missing_ok=True)


def test_every_table_and_figure_is_declared_with_its_runs_and_builds():
    plan = Plan(DEFAULT, REPO, HostProbe)
    assert set(plan.figures) == set(FIGURES) and set(FIGURES.values()) <= set(plan.tables)
    for name, table in plan.tables.items():
        assert table["runs"] and len(set(table["runs"])) == len(table["runs"]), name
        assert DEFAULT["vm"]["qemu"] in table["qemus"], name
    # Fig 5's vHZ1000 runs are Fig 1's: one run, shared between the two tables.
    assert set(plan.tables["timer"]["runs"]) & set(plan.tables["disk"]["runs"])
    # the host schedulers the probe found are the §3.2.2 runs' paths
    assert {r.split("/host-")[1].split("/")[0] for r in plan.tables["sched"]["runs"]} == {"none", "mq-deadline"}
    assert plan.tables["boot"]["variants"] == ["baseline-i386", "pmtmr-i386"]
