"""The Slurm profile (profiles/slurm), without a cluster: fake sbatch/sacct/squeue/scontrol/sinfo on
PATH record every call; Snakemake runs with the profile on a tiny target and really submits.

The target: two repetitions of the default disk VM run (placeholders stand in for the kernel,
image, data disk and builds, so only disk_vm is planned: --allowed-rules) and a report entry,
which must run on the submitting host.  The fake sbatch runs nothing: it records its argv and
stdin and prints a job id; the fake squeue and sacct say every job completed, so Snakemake then
misses the outputs and fails, which is expected here (nothing ran).  Which of them Snakemake
asks is the profile's status command (squeue), or sacct where the command line says so (a
cluster with an accounting database, docs/slurm.md).  tests/test_slurm_cluster.py runs the
profile on a real cluster.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SNAKEMAKE
from guestio import paths

FAKE = r'''#!/usr/bin/env python3
import json, os, sys
tool = os.path.basename(sys.argv[0])
stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
log = os.environ["FAKE_SLURM_LOG"]
with open(log, "a") as f:
    f.write(json.dumps({"tool": tool, "argv": sys.argv[1:], "stdin": stdin}) + "\n")
calls = [json.loads(l) for l in open(log)]
if tool == "sbatch":
    n = sum(1 for c in calls if c["tool"] == "sbatch")
    print(str(4242000 + n))
elif tool in ("sacct", "squeue"):
    ids = [str(4242000 + i) for i in range(1, 1 + sum(1 for c in calls if c["tool"] == "sbatch"))]
    print("\n".join(f"{i}|COMPLETED" for i in ids))
elif tool == "scontrol":
    print("MinJobAge=300")
elif tool == "sinfo":
    print("debug*")
'''

TOOLS = ("sbatch", "sacct", "squeue", "scontrol", "sinfo", "sacctmgr", "sshare", "scancel")


def _placeholders(results: Path, cfg: dict) -> list[str]:
    """Empty files where disk_vm's inputs go, so that only disk_vm is planned."""
    files = [f"kernels/baseline/{n}" for n in ("bzImage", "System.map", "vmlinux", "config", "build.json")]
    files += ["image/initramfs.cpio", "image/initramfs.json", f"disks/data-{cfg['image']['data_disk_mib']}M.img",
              "host/accelerator.json", "host/host.json", f"qemu/{cfg['vm']['qemu']}/build.json",
              "tables/disk.csv", "tables/disk.provenance.json"]
    for f in files:
        (results / f).parent.mkdir(parents=True, exist_ok=True)
        (results / f).write_text("")
    return files


def status_queries(calls: list[dict]) -> dict[str, int]:
    """How often each status tool was asked about the run's jobs (the plugin names them by run)."""
    return {tool: sum(1 for c in calls if c["tool"] == tool and "--name" in c["argv"]) for tool in ("sacct", "squeue")}


@pytest.mark.parametrize("status", ["profile", "sacct"])
def test_slurm_submissions_are_captured(tmp_path, status):
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    rel = f"build/test-slurm/{uuid.uuid4().hex[:8]}"
    results = REPO / rel
    _placeholders(results, cfg)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        p = bin_dir / tool
        p.write_text(FAKE.replace("/usr/bin/env python3", sys.executable))
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "calls.jsonl"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_SLURM_LOG=str(log))
    gsched = cfg["disk"].get("guest_scheduler", "mq-deadline")
    runs = [f"{paths.run_dir('disk_vm', rel, variant='baseline', qemu=cfg['vm']['qemu'], disk='ide', gsched=gsched, hsched='file', rep=r)}/measurements.csv"
            for r in (0, 1)]
    entry = f"{rel}/report/entries/data-disk.txt"
    # The profile's status command, or the one a cluster with an accounting database may take.
    status_args = [] if status == "profile" else ["--slurm-status-command", status]
    try:
        proc = subprocess.run(
            [str(SNAKEMAKE), "--workflow-profile", "profiles/slurm", *status_args,
             "--allowed-rules", "disk_vm", "report_entry",
             "--latency-wait", "0", "--slurm-init-seconds-before-status-checks", "1",
             "--seconds-between-status-checks", "1", "--default-resources", "slurm_account=guestio", "slurm_partition=debug",
             "runtime=60", "mem_mb=4000", "cpus_per_task=1", "vm=0",
             "--config", f"results_dir={rel}", "--", *runs, entry],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
        calls = [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []
        sbatch = [c for c in calls if c["tool"] == "sbatch"]
        out = proc.stdout + proc.stderr
        assert len(sbatch) == 2, f"expected two submissions, got {len(sbatch)}:\n{calls}\n{out[-4000:]}"
        for call in sbatch:
            argv = " ".join(call["argv"])
            words = shlex.split(argv)
            assert "--parsable" in words
            assert "--exclusive" in argv, argv                       # a whole node per VM run
            assert "--comment" in words and any(w.startswith("rule_disk_vm") for w in words), argv
            assert "-A" in words and words[words.index("-A") + 1] == "guestio"
            assert "-p" in words and words[words.index("-p") + 1] == "debug"
            assert "-t" in words and words[words.index("-t") + 1] == "240"   # set-resources: disk_vm runtime
            assert "--mem" in words and words[words.index("--mem") + 1] == "8000"
            assert "--cpus-per-task=4" in words or ("--cpus-per-task" in words and
                                                    words[words.index("--cpus-per-task") + 1] == "4"), argv
            decoded = [base64.b64decode(w[len("base64//"):]).decode() for w in words if w.startswith("base64//")]
            assert "disk_vm:vm=1" in decoded, decoded                 # the vm resource travels with the job
            assert "--cores" in words and words[words.index("--cores") + 1] == "16"
        comments = sorted(next(w for w in shlex.split(" ".join(c["argv"])) if w.startswith("rule_disk_vm"))
                          for c in sbatch)
        assert comments == [f"rule_disk_vm_wildcards_baseline_{cfg['vm']['qemu']}_ide_{gsched}_file_{r}" for r in (0, 1)]
        # The report entry ran here, not on a node: its output exists and no submission names it.
        assert (results / "report" / "entries" / "data-disk.txt").is_file(), out[-4000:]
        assert not any("report_entry" in " ".join(c["argv"]) for c in sbatch)
        assert "4242001" in out and "4242002" in out                # Snakemake took the fake job ids
        # Both jobs were seen to end (then their outputs were missing) by the status command asked.
        assert out.count("MissingOutputException in rule disk_vm") == 2, out[-4000:]
        queries = status_queries(calls)
        asked = "squeue" if status == "profile" else "sacct"
        assert queries[asked] >= 1 and queries[({"sacct", "squeue"} - {asked}).pop()] == 0, queries
    finally:
        import shutil
        shutil.rmtree(results, ignore_errors=True)
