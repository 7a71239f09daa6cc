"""The result-path grammar (guestio.paths): one module builds and parses every run path."""

from __future__ import annotations

import subprocess

import pytest

from guestio import paths

from conftest import REPO


def test_a_run_path_is_built_and_parsed_back():
    cond = dict(variant="baseline", qemu="stock", disk="ide", gsched="mq-deadline", hsched="file", rep=3)
    d = paths.run_dir("disk_vm", "results", **cond)
    assert d == "results/runs/disk/vm/baseline/stock/ide/guest-mq-deadline/host-file/rep3"
    assert paths.parse(d + "/measurements.csv") == paths.RunPath("disk_vm", cond)
    assert paths.parse(paths.run_dir("exits", "r", workload="boot", variant="pmtmr-i386", qemu="stock", rep=0)) == \
        paths.RunPath("exits", dict(workload="boot", variant="pmtmr-i386", qemu="stock", rep=0))
    assert paths.parse("results/runs/net/native/veth/rep1/x.csv").condition == {"rep": 1}
    assert paths.parse("results/tables/disk.csv") is None
    assert paths.fields("net_vm") == ["variant", "qemu", "nic", "rep"]


def test_a_path_missing_a_field_or_with_an_unknown_one_is_refused():
    with pytest.raises(ValueError, match="needs variant, qemu, nic, rep"):
        paths.run_dir("net_vm", "results", variant="baseline", qemu="stock", rep=0)
    with pytest.raises(ValueError, match="needs rep"):
        paths.run_dir("disk_native", "results", rep=0, disk="ide")


def test_no_run_path_is_spelled_outside_the_path_module():
    """git grep: the run paths' literal parts appear only in guestio/paths.py (docs and the fixtures
    recorded from real runs aside)."""
    needles = ["runs/disk/", "runs/net/", "runs/smoke", "/guest-{", "host-fs/rep", "veth/rep"]
    found = []
    for needle in needles:
        out = subprocess.run(["git", "grep", "-n", "-F", needle, "--", "workflow", "tests", ":!*.md", ":!tests/data"],
                             cwd=REPO, capture_output=True, text=True).stdout.splitlines()
        found += [line for line in out if not line.startswith(("workflow/guestio/paths.py:", "tests/test_paths.py:"))]
    assert found == [], "\n".join(found)
