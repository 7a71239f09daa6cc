"""The archival bundle (rule bundle, guestio.report.bundle) and its offline re-rendering.

The full test runs the real pipeline rules on recorded runs (tests/data/report/results: real
native and TCG runs of the test suite; an exit table of the recorded KVM scenario): the figure,
Table 3, the claims table and the bundle (``--allowed-rules``: nothing upstream is planned).  It
unpacks the archive into a clean directory and runs the ONE command there, ``python3
rerender.py``, in a network namespace of its own (``unshare --net``: no network; root, hence
the slow tier), and checks that every figure and table comes out byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from conftest import REPO, SNAKEMAKE
from guestio.report import bundle

DATA = REPO / "tests" / "data" / "report"


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# --- fast: what goes in, what is only named and hashed ------------------------------------------------

def test_big_and_binary_files_are_named_and_hashed_not_included(tmp_path):
    res = tmp_path / "results"
    (res / "kernels" / "baseline").mkdir(parents=True)
    (res / "disks").mkdir()
    (res / "tables").mkdir()
    (res / "kernels" / "baseline" / "bzImage").write_bytes(b"kernel image")
    (res / "kernels" / "baseline" / "config").write_text("CONFIG_HZ_1000=y\n")
    (res / "tables" / "disk.csv").write_text("a,b\n1,2\n")
    with open(res / "disks" / "data-3072M.img", "wb") as f:       # sparse, like the data disk
        f.truncate(64 << 20)
    (res / "kernels" / "baseline" / "build.json").write_text(json.dumps({
        "outputs": {"bzImage": "ab" * 32},
        "source": {"tarball": "/usr/src/linux-source-6.1.tar.xz", "sha256": "cd" * 32,
                   "debian_package": "linux-source-6.1", "debian_version": "6.1.192-3"}}))
    (res / "bundle").mkdir()
    (res / "bundle" / "old.tar.gz").write_bytes(b"x")
    included, external = bundle.results_files(res, exclude=[str(res / "bundle")])
    names = sorted(Path(p).name for p in included)
    assert names == ["build.json", "config", "disk.csv"]
    assert sorted(Path(p).name for p in external) == ["bzImage", "data-3072M.img"]
    record = {Path(r["path"]).name: r for r in bundle.external_record(external, res)}
    assert record["bzImage"]["sha256"] == "ab" * 32 and record["bzImage"]["hash"] == "recorded by its build"
    assert record["data-3072M.img"]["sha256"] == hashlib.sha256(b"\0" * (64 << 20)).hexdigest()
    assert record["linux-source-6.1.tar.xz"]["sha256"] == "cd" * 32


def test_patch_hashes_cover_every_kernel_and_qemu_layer_file():
    hashes = bundle.patch_hashes(REPO)
    on_disk = sorted(str(p.relative_to(REPO)) for root in ("workflow/kernel/layers", "workflow/qemu/layers")
                     for p in (REPO / root).rglob("*") if p.suffix == ".patch" or p.name == "fragment.config")
    assert sorted(h["path"] for h in hashes) == on_disk
    for h in hashes:
        assert h["sha256"] == _sha(REPO / h["path"])


def test_specs_of_jobs_whose_files_are_missing_are_left_out(tmp_path):
    have = tmp_path / "out.csv"
    have.write_text("x")
    spec = {"input": {"items": [str(have), "repo:workflow/Snakefile"], "names": {}},
            "output": {"items": [str(have)], "names": {}}}
    gone = {"input": {"items": [str(tmp_path / "runs.csv")], "names": {}},
            "output": {"items": [str(have)], "names": {}}}
    assert bundle.existing_specs([spec, gone]) == [spec]


# --- slow: the whole bundle, re-rendered offline --------------------------------------------------

def _unshare_net() -> list[str]:
    try:
        ok = subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        ok = False
    return ["unshare", "--net"] if ok else []


@pytest.fixture(scope="module")
def bundled_run():
    """Rendered figures, Table 3, the claims table and the bundle of the recorded runs."""
    rel = f"build/test-bundle/{uuid.uuid4().hex[:8]}"
    results = REPO / rel
    shutil.copytree(DATA / "results", results)
    try:
        proc = subprocess.run(
            [str(SNAKEMAKE), "--cores", "2", "--configfile", str(DATA / "config.yaml"),
             "--config", f"results_dir={rel}",
             "--allowed-rules", "figure", "table3", "claims_cost", "claims_table", "report_entry", "render_specs",
             "bundle", "--", f"{rel}/bundle/guestio-bundle.tar.gz"],
            cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        yield rel, results
    finally:
        shutil.rmtree(results, ignore_errors=True)


@pytest.mark.boot   # unshare --net needs root
def test_bundle_rerenders_every_figure_and_table_offline_byte_identically(bundled_run, tmp_path):
    rel, results = bundled_run
    clean = tmp_path / "clean"
    clean.mkdir()
    with tarfile.open(results / "bundle" / "guestio-bundle.tar.gz") as t:
        t.extractall(clean, filter="data")
    root = clean / "guestio-bundle"
    # The manifest holds every file and each hash is right.
    manifest = dict(reversed(line.split("  ", 1)) for line in (root / "manifest.sha256").read_text().splitlines())
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "manifest.sha256")
    assert sorted(manifest) == files
    assert all(_sha(root / f) == h for f, h in manifest.items())
    # The workflow at its commit, the config used, the pinned envs, data and provenance.
    meta = json.loads((root / "workflow.json").read_text())
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert meta["commit"] == head and (root / "workflow" / "Snakefile").is_file()
    assert (root / "envs" / "requirements.txt").read_text() == (REPO / "envs" / "requirements.txt").read_text()
    assert "results_dir: " + rel in (root / "config" / "used.yaml").read_text()
    for f in ("tables/disk.csv", "tables/disk.provenance.json", "exits/bonnie/baseline/stock/exits.csv",
              "figures/fig1.pdf", "figures/fig1.png", "figures/fig2-ratios.csv", "tables/table3.md", "claims.md",
              "claims.csv"):
        assert (root / "files" / rel / f).is_file(), f
    assert not list(root.rglob("guestio-bundle.tar.gz"))            # no bundle inside the bundle
    # RO-Crate: a workflow-run crate saying which job produced each file.
    from rocrate.rocrate import ROCrate
    crate = ROCrate(str(root))
    assert "https://w3id.org/ro/wfrun/workflow/0.5" in [p.id for p in crate.root_dataset["conformsTo"]]
    assert crate.mainEntity.id == "workflow/Snakefile"
    actions = {e.id: e for e in crate.get_entities() if e.type == "CreateAction"}
    made_by = {r.id: a["instrument"].id for a in actions.values() if a.id != "#run" for r in a["result"]}
    assert made_by[f"files/{rel}/figures/fig1.pdf"] == "#rule-figure"
    assert made_by[f"files/{rel}/tables/table3.md"] == "#rule-table3"
    assert made_by[f"files/{rel}/claims.md"] == "#rule-claims_table"
    # ONE command, in a clean directory, without network, VM or kernel build.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    proc = subprocess.run([*_unshare_net(), sys.executable, "rerender.py"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all byte-identical to the bundle" in proc.stdout
    rendered = sorted(str(p.relative_to(root / "rerendered")) for p in (root / "rerendered").rglob("*") if p.is_file())
    for f in ("figures/fig1.pdf", "figures/fig1.png", "figures/fig1-ratios.csv", "figures/fig2.pdf",
              "tables/table3.csv", "tables/table3.md", "tables/table3.tex", "claims.md", "claims.csv"):
        assert f"{rel}/{f}" in rendered, rendered
        assert _sha(root / "rerendered" / rel / f) == _sha(root / "files" / rel / f)
    # And a changed byte in the bundled data is caught.
    csv = root / "files" / rel / "tables" / "disk.csv"
    lines = csv.read_text().splitlines(keepends=True)
    i = next(i for i, line in enumerate(lines) if ",block_write_throughput," in line)
    head, value, unit = lines[i].rsplit(",", 2)
    lines[i] = f"{head},{float(value) * 1.5},{unit}"
    csv.write_text("".join(lines))
    proc = subprocess.run([sys.executable, "rerender.py", "--out", str(tmp_path / "again")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "DIFF" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.boot
def test_report_of_a_complete_run_shows_claims_first_and_captions(bundled_run, tmp_path):
    rel, results = bundled_run
    html = tmp_path / "report.html"
    proc = subprocess.run([str(SNAKEMAKE), "--cores", "1", "--configfile", str(DATA / "config.yaml"),
                           "--config", f"results_dir={rel}", "--report", str(html)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = html.read_text()
    assert "1. Claims" in text and "2. Figures" in text and "3. Tables" in text
    assert "Verdict here" in text and "from emulation, TCG" in text
    assert "block write throughput" in text and "QEMU stock" in text and "kernels baseline" in text
    assert "claims table has not been made yet" not in text
