"""guestio.report.compare: two runs side by side, made here from the recorded run with seeded noise."""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from guestio.analysis import measurements
from guestio.report import compare as cmp
from guestio.report import compare_output, compare_rows, compare_runs, compare_stats
from guestio.util import write_json_atomic

REPO = Path(__file__).resolve().parents[1]
RECORDED = REPO / "tests" / "data" / "report" / "results" / "tables"
CLAIMS = REPO / "tests" / "data" / "compare" / "claims-quantities.csv"
METRICS = ["block_read_throughput", "block_write_throughput", "block_write_cpu"]
REPS = 8
NOISE = 0.02
# Seeds of the two noise-only runs: with them no row of the six is marked at p < 0.05 (checked by
# test_noise_only_marks_nothing; another pair may mark one by chance, one row in twenty does).
SEED_A, SEED_B = 1, 2


def _templates() -> pd.DataFrame:
    """One recorded row per (target, metric), its value the recorded mean over repetitions."""
    df = measurements.read_csv(RECORDED / "disk.csv")
    df = df[df.metric.isin(METRICS)]
    means = df.groupby(["target", "metric"])["value"].mean()
    first = df.drop_duplicates(["target", "metric"]).copy()
    first["value"] = [means[(t, m)] for t, m in zip(first.target, first.metric)]
    return first.reset_index(drop=True)


def make_run(root: Path, *, seed: int, accelerator: str = "tcg", scale: dict | None = None,
             kernel_patch_sha: str | None = None, qemu_binary: str | None = None, records: bool = True,
             claims: pd.DataFrame | None = None) -> Path:
    """A results dir: tables/disk.csv (REPS runs of native and VM, noise NOISE) and the provenance
    a run writes (tables/disk.provenance.json, host/accelerator.json, kernels/, qemu/)."""
    rng = np.random.default_rng(seed)
    scale = scale or {}
    rows = []
    for rep in range(REPS):
        for t in _templates().itertuples(index=False):
            row = t._asdict()
            row["repetition"] = rep
            row["accelerator"] = "native" if t.target == "native" else accelerator
            row["value"] = t.value * scale.get((t.target, t.metric), 1.0) * (1 + NOISE * rng.standard_normal())
            rows.append(row)
    (root / "tables").mkdir(parents=True)
    measurements.write_csv(pd.DataFrame(rows), root / "tables" / "disk.csv")
    prov = json.loads((RECORDED / "disk.provenance.json").read_text())
    prov["accelerator"]["accelerator"] = accelerator
    if kernel_patch_sha:
        prov["kernels"]["baseline"]["patches"] = [
            {"file": f"/checkout-{seed}/workflow/kernel/layers/coalesce/0001-coalesce.patch", "sha256": kernel_patch_sha}]
    if qemu_binary:
        prov["qemu"]["binary"] = qemu_binary
    write_json_atomic(root / "tables" / "disk.provenance.json", prov)
    if records:
        write_json_atomic(root / "host" / "accelerator.json", prov["accelerator"])
        write_json_atomic(root / "kernels" / "baseline" / "build.json", prov["kernels"]["baseline"])
        write_json_atomic(root / "qemu" / "stock" / "build.json", prov["qemu"])
    if claims is not None:
        claims.to_csv(root / compare_runs.CLAIMS_QUANTITIES, index=False)
    return root


def run_compare(a: Path, b: Path, **opts) -> cmp.Comparison:
    with contextlib.ExitStack() as scratch:
        return cmp.compare(compare_runs.locate(a, scratch), compare_runs.locate(b, scratch), compare_stats.Options(n_resamples=2000, **opts))


def _row(c: cmp.Comparison, target: str, metric: str) -> compare_rows.Row:
    [row] = [r for r in c.measurements if r.condition["target"] == target and r.quantity == metric]
    return row


def test_noise_only_marks_nothing(tmp_path):
    a = make_run(tmp_path / "a", seed=SEED_A)
    b = make_run(tmp_path / "b", seed=SEED_B)
    c = run_compare(a, b)
    assert len(c.measurements) == 2 * len(METRICS)
    assert all(r.n_a == r.n_b == str(REPS) for r in c.measurements)
    assert [r for r in c.measurements if r.mark] == []
    assert all(0.95 < r.ratio < 1.05 for r in c.measurements)
    gm, n = compare_rows.geometric_mean_ratio(c.measurements)
    assert n == 6 and abs(gm - 1) < 0.02
    assert c.provenance.rows == [] and c.provenance.missing == []


def test_thirty_percent_more_throughput_is_marked_higher(tmp_path):
    a = make_run(tmp_path / "a", seed=SEED_A)
    b = make_run(tmp_path / "b", seed=SEED_B, scale={("vm", "block_read_throughput"): 1.3})
    c = run_compare(a, b)
    row = _row(c, "vm", "block_read_throughput")
    assert row.mark == "*" and row.direction == "higher"
    assert row.p < 1e-6 and 1.25 < row.ratio < 1.35
    assert row.a[1] < row.a[0] < row.a[2] < row.b[1] < row.b[0] < row.b[2]   # CIs apart, B above
    assert [r for r in c.measurements if r.mark] == [row]
    md = compare_output.markdown(c)
    assert "1 of 6 rows marked significant (1 higher in B, 0 lower)" in md
    line = next(x for x in md.splitlines() if "vm baseline" in x and "block_read_throughput" in x)
    assert line.rstrip().endswith("| * |  |") and f"({row.change_pct:+.1f}%)" in line and row.change_pct > 20


def test_lower_throughput_is_marked_lower(tmp_path):
    a = make_run(tmp_path / "a", seed=SEED_A)
    b = make_run(tmp_path / "b", seed=SEED_B, scale={("native", "block_write_throughput"): 0.7})
    row = _row(run_compare(a, b), "native", "block_write_throughput")
    assert row.mark == "*" and row.direction == "lower" and 0.65 < row.ratio < 0.75


def test_robust_uses_median_and_mann_whitney(tmp_path):
    a = make_run(tmp_path / "a", seed=SEED_A)
    b = make_run(tmp_path / "b", seed=SEED_B, scale={("vm", "block_read_throughput"): 1.3})
    c = run_compare(a, b, robust=True)
    row = _row(c, "vm", "block_read_throughput")
    assert row.test == "mann-whitney" and row.mark == "*" and row.direction == "higher"
    # All 8 B runs above all 8 A runs: the exact two-sided p is 2 / C(16, 8).
    assert row.p == pytest.approx(2 / 12870)
    values = pd.read_csv(a / "tables" / "disk.csv")
    vm = values[(values.target == "vm") & (values.metric == "block_read_throughput")].value
    assert row.a[0] == pytest.approx(float(np.median(vm)))
    assert "median" in compare_output.markdown(c)


def test_one_value_each_side_is_not_tested(tmp_path):
    a = make_run(tmp_path / "a", seed=SEED_A)
    b = make_run(tmp_path / "b", seed=SEED_B, scale={("vm", "block_write_cpu"): 2.0})
    for root in (a, b):   # keep one VM run of the doubled metric
        df = measurements.read_csv(root / "tables" / "disk.csv")
        keep = ~((df.target == "vm") & (df.metric == "block_write_cpu") & (df.repetition > 0))
        measurements.write_csv(df[keep], root / "tables" / "disk.csv")
    row = _row(run_compare(a, b), "vm", "block_write_cpu")
    assert row.n_a == row.n_b == "1" and row.mark == "" and np.isnan(row.p)
    assert row.ratio == pytest.approx(2.0, rel=0.1) and "no test" in row.note


def test_provenance_diff_names_the_differing_keys(tmp_path):
    a = make_run(tmp_path / "a", seed=SEED_A, accelerator="kvm", kernel_patch_sha="aa" * 32,
                 qemu_binary="/somewhere/qemu-system-x86_64")
    b = make_run(tmp_path / "b", seed=SEED_B, accelerator="tcg", kernel_patch_sha="bb" * 32,
                 qemu_binary="/elsewhere/qemu-system-x86_64")
    c = run_compare(a, b)
    diff = {(s, k): (va, vb) for s, k, va, vb in c.provenance.rows}
    assert diff[("accelerator", "accelerator")] == ("kvm", "tcg")
    assert diff[("kernel", "baseline.patches[coalesce/0001-coalesce.patch]")] == ("aa" * 32, "bb" * 32)
    # Where a file lay is not a difference of the runs.
    assert not [k for _, k in diff if "binary" in k or "file" in k]
    assert len(diff) == 2
    # kvm against tcg: the same conditions are compared, each side's accelerator shown.
    vm = [r for r in c.measurements if r.condition["target"] == "vm"]
    assert len(vm) == len(METRICS) and all((r.accelerator_a, r.accelerator_b) == ("kvm", "tcg") for r in vm)
    md = compare_output.markdown(c)
    assert "| accelerator | accelerator | kvm | tcg |" in md
    assert "kvm / tcg" in md


def test_missing_provenance_is_said_not_fatal(tmp_path):
    a = make_run(tmp_path / "a", seed=SEED_A)
    b = make_run(tmp_path / "b", seed=SEED_B, records=False)
    (b / "tables" / "disk.provenance.json").unlink()
    (b / "tables" / "table3.csv").write_text("rank,function,caller\n1,ide_ioport_write,x\n")
    c = run_compare(a, b)
    assert ("kernel", "B") in c.provenance.missing and ("accelerator", "B") in c.provenance.missing
    assert len(c.measurements) == 6 and c.skipped["B"] == ["table3.csv"]
    md = compare_output.markdown(c)
    assert "| kernel builds | (whole section) | recorded | (not recorded) |" in md
    assert "not compared: table3.csv" in md


def test_claims_quantities_compared_by_their_cis(tmp_path):
    claims_a = pd.read_csv(CLAIMS, dtype=str, keep_default_na=False)
    claims_b = claims_a.copy()
    i = claims_b.index[claims_b.quantity == "write_throughput"][0]
    for col in ("value", "ci_low", "ci_high"):
        claims_b.loc[i, col] = str(float(claims_a.loc[i, col]) * 1.5)
    claims_b.loc[i, "verdict"] = "reproduces"
    a = make_run(tmp_path / "a", seed=SEED_A, claims=claims_a)
    b = make_run(tmp_path / "b", seed=SEED_B, claims=claims_b)
    c = run_compare(a, b)
    by = {r.condition["quantity"]: r for r in c.claims}
    assert set(by) == set(claims_a.quantity)
    wt = by["write_throughput"]
    assert wt.mark == "*" and wt.direction == "higher" and wt.ratio == pytest.approx(1.5)
    assert (wt.verdict_a, wt.verdict_b) == ("does not reproduce", "reproduces") and wt.n_a == "3/3"
    assert by["write_cpu"].mark == "" and by["write_cpu"].p == pytest.approx(1.0)
    assert np.isnan(by["read_cpu"].p) and by["read_cpu"].mark == ""       # no CI: no test
    assert by["top_sites"].p == 1.0 and by["top_sites"].mark == ""         # exact and equal


def test_claims_columns_read_by_name(tmp_path):
    """The claims table's columns change: extra ones are ignored, missing ones leave their cells empty."""
    claims = pd.read_csv(CLAIMS, dtype=str, keep_default_na=False)
    reordered = claims.drop(columns=["ci_low", "ci_high", "verdict", "outcome"]).assign(reason="new column")
    reordered = reordered[list(reversed(reordered.columns))]
    a = make_run(tmp_path / "a", seed=SEED_A, claims=claims)
    b = make_run(tmp_path / "b", seed=SEED_B, claims=reordered)
    c = run_compare(a, b)
    assert len(c.claims) == len(claims)
    assert all(np.isnan(r.p) and r.mark == "" for r in c.claims if r.condition["quantity"] != "top_sites")
    assert all(r.verdict_b == "" for r in c.claims)
    compare_output.markdown(c)


def _bundle(run: Path, into: Path) -> Path:
    """The layout of an unpacked bundle (guestio.report.bundle) around a results dir."""
    root = into / compare_runs.BUNDLE_ROOT
    import shutil
    shutil.copytree(run, root / "files" / "results")
    (root / "config").mkdir()
    (root / "config" / "used.yaml").write_text("results_dir: results\n")
    (root / "manifest.sha256").write_text("")
    return root


def test_bundle_and_archive_read_as_the_results_dir(tmp_path):
    a = make_run(tmp_path / "a", seed=SEED_A, claims=pd.read_csv(CLAIMS))
    b = make_run(tmp_path / "b", seed=SEED_B, scale={("vm", "block_read_throughput"): 1.3})
    direct = compare_output.frame(run_compare(a, b)).to_csv(index=False)
    unpacked = _bundle(b, tmp_path / "unpacked")
    assert compare_output.frame(run_compare(a, unpacked.parent)).to_csv(index=False) == direct
    archive = tmp_path / "guestio-bundle.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(unpacked, arcname=compare_runs.BUNDLE_ROOT)
    assert compare_output.frame(run_compare(a, archive)).to_csv(index=False) == direct


def test_outputs_are_written_and_byte_identical_on_rerun(tmp_path):
    a = make_run(tmp_path / "a", seed=SEED_A, accelerator="kvm", claims=pd.read_csv(CLAIMS))
    b = make_run(tmp_path / "b", seed=SEED_B, scale={("vm", "block_read_throughput"): 1.3})
    args = [str(a), str(b), "--resamples", "2000"]
    assert cmp.main([*args, "--out", str(tmp_path / "one")]) == 0
    assert cmp.main([*args, "--out", str(tmp_path / "two")]) == 0
    for name in compare_output.OUTPUTS.values():
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    table = pd.read_csv(tmp_path / "one" / "compare.csv", keep_default_na=False)
    assert list(table.columns) == compare_output.CSV_COLUMNS
    assert table["mark"].tolist().count("*") == 1
    page = (tmp_path / "one" / "compare.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count('<tr class="sig">') == 1
    prov = pd.read_csv(tmp_path / "one" / "compare-provenance.csv")
    assert ("accelerator", "kvm", "tcg") in set(zip(prov.key, prov.a, prov.b))
    assert not list(tmp_path.glob("one/*.tmp*"))


def test_command_line_and_thin_script(tmp_path):
    a = make_run(tmp_path / "a", seed=SEED_A)
    b = make_run(tmp_path / "b", seed=SEED_B, scale={("vm", "block_read_throughput"): 1.3})
    for cmd in ([sys.executable, "-m", "guestio.report.compare"], [sys.executable, str(REPO / "workflow/scripts/compare.py")]):
        out = tmp_path / Path(cmd[-1]).stem
        done = subprocess.run([*cmd, str(a), str(b), "--out", str(out), "--resamples", "500"],
                              capture_output=True, text=True, cwd=REPO)
        assert done.returncode == 0, done.stderr
        assert "1 of 6 rows marked significant (1 higher in B, 0 lower)" in done.stdout
        assert (out / "compare.md").is_file()
    bad = subprocess.run([sys.executable, "-m", "guestio.report.compare", str(a), str(tmp_path / "nope"),
                          "--out", str(tmp_path / "x")], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode != 0 and "nope" in bad.stderr and "results dir" in bad.stderr
