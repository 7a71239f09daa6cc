"""The archival bundle (rule bundle, guestio.report.bundle) and its offline re-rendering.

The full test runs the real pipeline rules on recorded runs (tests/data/report/results: real
native and TCG runs of the test suite; an exit table of the recorded KVM scenario): the figure,
Table 3, the claims table, the beyond summary and the bundle (``--allowed-rules``: nothing
upstream is planned).  It unpacks the archive into a clean directory and runs the ONE command
there, ``python3 rerender.py``, in a network namespace of its own (``unshare --net``: no network;
root, hence the slow tier), and checks that every figure and table comes out byte-identical.
"""

from __future__ import annotations

import csv
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
import yaml

from conftest import REPO, SNAKEMAKE
from guestio import paths
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
    produced = [str(p) for p in res.rglob("*") if p.is_file()]
    included, external = bundle.results_files(res, produced=produced, exclude=[str(res / "bundle")])
    names = sorted(Path(p).name for p in included)
    assert names == ["build.json", "config", "disk.csv"]
    assert sorted(Path(p).name for p in external) == ["bzImage", "data-3072M.img"]
    record = {Path(r["path"]).name: r for r in bundle.external_record(external, res)}
    assert record["bzImage"]["sha256"] == "ab" * 32 and record["bzImage"]["hash"] == "recorded by its build"
    assert record["data-3072M.img"]["sha256"] == hashlib.sha256(b"\0" * (64 << 20)).hexdigest()
    assert record["linux-source-6.1.tar.xz"]["sha256"] == "cd" * 32


def _record(rule: str, job: int, start: float = 1.0, log=()) -> dict:
    return {"rule": rule, "job_hash": job, "starttime": start, "endtime": start + 1, "log": list(log)}


def test_only_what_the_workflow_produced_is_bundled_never_a_stray_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = Path("results")
    run = res / "runs" / "disk" / "vm" / "rep0"
    for f in (run / "measurements.csv", run / "serial.log", run / "results" / "bonnie.csv", run / "runner.log",
              res / "tables" / "disk.csv", res / "tables" / "net.csv", res / "claims.md",
              res / "secret.txt", res / "tables" / "secret.txt"):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("x\n")
    (res / "runs" / "shadow").symlink_to("/etc/shadow")
    records = {str(run / "measurements.csv"): _record("disk_vm", 1, log=[str(run / "runner.log")]),
               str(res / "tables" / "disk.csv"): _record("measurement_table", 2),
               str(res / "tables" / "net.csv"): _record("measurement_table", 3),
               str(res / "claims.md"): _record("claims_table", 4),
               str(res / "runs" / "shadow"): _record("evil", 5)}
    files, dirs = bundle.produced_files(records, ".")
    # A run's own directory comes whole (raw logs, guest results); tables/ is shared by jobs.
    assert str((tmp_path / run).resolve()) in dirs and str(tmp_path / res / "tables") not in dirs
    included, _ = bundle.results_files(res, produced=files, job_dirs=dirs)
    assert sorted(included) == sorted(str(p) for p in (
        run / "measurements.csv", run / "results" / "bonnie.csv", run / "runner.log", run / "serial.log",
        res / "tables" / "disk.csv", res / "tables" / "net.csv", res / "claims.md"))


def test_a_results_dir_that_is_a_system_directory_gives_none_of_its_files(tmp_path):
    system = tmp_path / "etc"
    (system / "ssh").mkdir(parents=True)
    (system / "shadow").write_text("root:$6$...\n")
    (system / "ssh" / "ssh_host_ed25519_key").write_text("PRIVATE\n")
    (system / "host").mkdir()
    (system / "host" / "host.json").write_text("{}\n")
    records = {str(system / "host" / "host.json"): _record("host_snapshot", 1),
               str(system / "shadow.csv"): _record("gone", 2)}    # recorded, since removed
    files, dirs = bundle.produced_files(records, "/")
    included, external = bundle.results_files(system, produced=files, job_dirs=dirs)
    assert included == [str(system / "host" / "host.json")] and external == []


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


def _write_rows(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _complete_run(results: Path) -> None:
    """What a complete run of DATA's config leaves before its tables: each run's long-form CSV
    (split from the recorded disk table; the VM's second repetition derived from its first),
    the build, host, accelerator and image records (from the recorded provenance), and the
    recorded exit table.  measurement_table then writes the long-form table from the runs, as
    in a real run, so the bundle holds every rendering job's inputs."""
    prov = json.loads((DATA / "results" / "tables" / "disk.provenance.json").read_text())
    with open(DATA / "results" / "tables" / "disk.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    col = {name: i for i, name in enumerate(header)}
    runs: dict[Path, list[list[str]]] = {}
    for row in rows:
        if row[col["target"]] == "native":
            runs.setdefault(Path(paths.run_dir("disk_native", str(results), rep=row[col["repetition"]])), []).append(row)
            continue
        row[col["qemu"]], row[col["guest_scheduler"]], row[col["host_scheduler"]] = "stock", "mq-deadline", "file"
        again = list(row)
        again[col["repetition"]], again[col["value"]] = "1", repr(float(row[col["value"]]) * 1.02)
        condition = dict(variant="baseline", qemu="stock", disk="ide", gsched="mq-deadline", hsched="file")
        runs.setdefault(Path(paths.run_dir("disk_vm", str(results), rep=0, **condition)), []).append(row)
        runs.setdefault(Path(paths.run_dir("disk_vm", str(results), rep=1, **condition)), []).append(again)
    for run, run_rows in runs.items():
        _write_rows(run / "measurements.csv", header, run_rows)
        (run / "provenance.json").write_text(json.dumps({"run": run.name}) + "\n")
    records = {"kernels/baseline/build.json": prov["kernels"]["baseline"], "qemu/stock/build.json": prov["qemu"],
               "host/host.json": {"host": prov["host"], "qemu": prov.get("host_qemu")},
               "host/accelerator.json": prov["accelerator"],
               "image/initramfs.json": {"image": {"sha256": "ef" * 32}, "debs": []}}
    for rel, record in records.items():
        (results / rel).parent.mkdir(parents=True, exist_ok=True)
        (results / rel).write_text(json.dumps(record, indent=1) + "\n")
    shutil.copytree(DATA / "results" / "exits", results / "exits")


#: Files a run's results dir may hold that the workflow did not write: never bundled.
STRAYS = ("secret.txt", "tables/secret.txt", "figures/notes.md", "runs/secret.json")


@pytest.fixture(scope="module")
def bundled_run(tmp_path_factory):
    """The long-form table, figures, Table 3, the claims table and the bundle of a complete run of
    DATA's config (every rendering job's inputs), with stray files in its results dir."""
    rel = f"build/test-bundle/{uuid.uuid4().hex[:8]}"
    results = REPO / rel
    _complete_run(results)
    for stray in STRAYS:
        (results / stray).parent.mkdir(parents=True, exist_ok=True)
        (results / stray).write_text("not the workflow's\n")
    configfile = tmp_path_factory.mktemp("bundle-config") / "config.yaml"
    config = yaml.safe_load((DATA / "config.yaml").read_text())
    config["disk"]["repetitions"] = 2
    configfile.write_text(yaml.safe_dump(config))
    try:
        proc = subprocess.run(
            [str(SNAKEMAKE), "--cores", "2", "--configfile", str(configfile),
             "--config", f"results_dir={rel}",
             "--allowed-rules", "measurement_table", "figure", "table3", "claims_cost", "claims_table", "beyond",
             "report_entry", "render_specs", "bundle", "--", f"{rel}/bundle/guestio-bundle.tar.gz"],
            cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        yield rel, results, configfile
    finally:
        shutil.rmtree(results, ignore_errors=True)


@pytest.mark.boot   # unshare --net needs root
def test_bundle_rerenders_every_figure_and_table_offline_byte_identically(bundled_run, tmp_path):
    rel, results, _ = bundled_run
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
    for f in ("tables/disk.csv", "tables/disk.provenance.json", "exits/bonnie/baseline/stock/rep0/exits.csv",
              "figures/fig1.pdf", "figures/fig1.png", "figures/fig2-ratios.csv", "tables/table3.md", "claims.md",
              "claims.csv"):
        assert (root / "files" / rel / f).is_file(), f
    assert not list(root.rglob("guestio-bundle.tar.gz"))            # no bundle inside the bundle
    # Only what the workflow produced: the stray files of the results dir stay out.
    bundled = {str(p.relative_to(root / "files" / rel)) for p in (root / "files" / rel).rglob("*") if p.is_file()}
    assert not bundled & set(STRAYS), bundled & set(STRAYS)
    assert {f"{paths.run_dir('disk_native', rep=0)}/measurements.csv", "kernels/baseline/build.json",
            "host/host.json", "image/initramfs.json"} <= bundled
    # Every rendering job of the run is recorded, the long-form table's too, with all its inputs.
    specs = json.loads((root / "render.json").read_text())
    assert sorted(s["rule"] for s in specs) == ["beyond", "claims_table", "figure", "figure", "measurement_table",
                                                "table3"]
    for spec in specs:
        for f in [y for x in spec["input"]["items"] for y in (x if isinstance(x, list) else [x])]:
            assert f.startswith("repo:") or (root / "files" / f).is_file(), (spec["rule"], f)
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
    assert f"outputs of {len(specs)} rendering jobs" in proc.stdout
    rendered = sorted(str(p.relative_to(root / "rerendered")) for p in (root / "rerendered").rglob("*") if p.is_file())
    for f in ("figures/fig1.pdf", "figures/fig1.png", "figures/fig1-ratios.csv", "figures/fig2.pdf",
              "tables/table3.csv", "tables/table3.md", "tables/table3.tex", "claims.md", "claims.csv",
              "tables/disk.csv"):
        assert f"{rel}/{f}" in rendered, rendered
        assert _sha(root / "rerendered" / rel / f) == _sha(root / "files" / rel / f)
    # The table's provenance is re-made from the bundled runs and records; only the checkout differs.
    again = json.loads((root / "rerendered" / rel / "tables/disk.provenance.json").read_text())
    kept = json.loads((root / "files" / rel / "tables/disk.provenance.json").read_text())
    assert again.pop("guestio") != kept.pop("guestio") and again == kept
    # And a changed byte in the bundled data is caught.
    table = root / "files" / rel / "tables" / "disk.csv"
    lines = table.read_text().splitlines(keepends=True)
    i = next(i for i, line in enumerate(lines) if ",block_write_throughput," in line)
    head, value, unit = lines[i].rsplit(",", 2)
    lines[i] = f"{head},{float(value) * 1.5},{unit}"
    table.write_text("".join(lines))
    proc = subprocess.run([sys.executable, "rerender.py", "--out", str(tmp_path / "again")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "DIFF" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.boot
def test_report_of_a_complete_run_shows_claims_first_and_captions(bundled_run, tmp_path):
    rel, results, configfile = bundled_run
    html = tmp_path / "report.html"
    proc = subprocess.run([str(SNAKEMAKE), "--cores", "1", "--configfile", str(configfile),
                           "--config", f"results_dir={rel}", "--report", str(html)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = html.read_text()
    assert "1. Claims" in text and "2. Figures" in text and "3. Tables" in text
    assert "Verdict here" in text and "from emulation, TCG" in text
    assert "block write throughput" in text and "QEMU stock" in text and "kernels baseline" in text
    assert "claims table has not been made yet" not in text
