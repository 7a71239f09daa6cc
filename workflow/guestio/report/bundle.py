"""The archival bundle: one .tar.gz that holds what a reader needs to check and re-render a run.

Layout inside the archive (``guestio-bundle/``):

* ``workflow/``            the repository at its exact commit (``git archive HEAD``);
                           ``workflow.dirty.patch`` beside it when the tree had uncommitted changes
* ``config/used.yaml``     the config of the run; ``config/files/`` the config files given
* ``envs/``                the pinned environment files (requirements.txt, debian-packages.txt, ...)
* ``files/<path>``         every long-form CSV, provenance and other JSON, raw log, kernel config,
                           figure and table of the results dir, at its path relative to the working
                           directory (so ``files/results/figures/fig1.pdf``)
* ``patches.json``         the sha256 of every kernel and QEMU patch and config fragment
* ``external.json``        what is named and hashed but not included: kernel tarball, kernel images,
                           QEMU binaries, initramfs, data disks
* ``render.json``          how every figure and table was rendered (rule, script, inputs, outputs,
                           params), read by ``rerender.py``
* ``rerender.py``          ``python3 rerender.py``: re-renders every figure and table offline and
                           checks each against the bundled bytes
* ``ro-crate-metadata.json`` RO-Crate (Workflow Run Crate / Provenance Run Crate profiles): the
                           workflow, the run, and for each file the job (rule) that produced it
* ``manifest.sha256``      sha256 of every other file (``sha256sum -c`` format)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from guestio.report.cost import load_records

ROOT = "guestio-bundle"
#: Files larger than this that are not data (below) are named and hashed, not included.
MAX_INCLUDED = 16 << 20
#: Suffixes of what is included: data, provenance, logs, figures, tables, configs.
INCLUDED_SUFFIXES = (".csv", ".json", ".jsonl", ".log", ".txt", ".md", ".tex", ".pdf", ".png", ".tsv", ".yaml",
                     ".cmdline", ".diff", ".patch")
#: Names of included files without a suffix (kernel configs, bonnie++'s exit status, params files).
INCLUDED_NAMES = ("config", "exit_status", "params", "System.map")
#: What is never included, only named and hashed.
EXTERNAL_NAMES = ("bzImage", "vmlinux", "qemu-system-x86_64", "initramfs.cpio")
EXTERNAL_SUFFIXES = (".img", ".qcow2", ".cpio", ".so", ".tar", ".xz", ".gz")
ENV_FILES = ("envs/requirements.txt", "envs/debian-packages.txt", "envs/guestio.yaml", "envs/setup.sh",
             "pyproject.toml")
WORKFLOW_RUN_PROFILES = {
    "process": "https://w3id.org/ro/wfrun/process/0.5",
    "workflow": "https://w3id.org/ro/wfrun/workflow/0.5",
    "provenance": "https://w3id.org/ro/wfrun/provenance/0.5",
    "wfcrate": "https://w3id.org/workflowhub/workflow-ro-crate/1.0",
}


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- how each figure and table was rendered ---------------------------------------------------------

def _jsonable(value: Any) -> Any:
    """Params as JSON values: dataclasses as dicts, sets as sorted lists; anything else as its str."""
    import dataclasses
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _relative(path: str, repo: Path) -> str:
    """A path as the bundle holds it: repository files relative to the repository (``repo:``),
    everything else relative to the working directory."""
    p = Path(path)
    if p.is_absolute():
        try:
            return "repo:" + str(p.resolve().relative_to(repo.resolve()))
        except ValueError:
            return str(p)
    return str(p)


def render_spec(job: Mapping[str, Any], repo: Path) -> dict:
    """The concrete job of a rendering rule as the bundle records it: *job* as
    :meth:`guestio.report.workflow_view.WorkflowView.job` gives it, with repository paths marked
    (``repo:``) and params as JSON values."""
    def conv(named):
        return {"items": [_relative(x, repo) if isinstance(x, str) else [_relative(y, repo) for y in x]
                          for x in named["items"]],
                "names": named["names"]}

    output = conv(job["output"])
    return {"rule": job["rule"], "wildcards": job["wildcards"], "script": _relative(job["script"], repo),
            "input": conv(job["input"]), "output": output, "log": conv(job["log"]),
            "params": {name: _jsonable(value) for name, value in job["params"].items()},
            "volatile": volatile_keys(output["items"])}


#: Keys of a provenance record that name the checkout the run was made in (its git commit and
#: whether the tree was dirty): re-rendered from the bundle's ``git archive`` copy, which has no
#: history, they cannot come out the same, so rerender.py compares such a file without them (the
#: bundle's workflow.json records the commit).
CHECKOUT_KEYS = ("guestio",)


def volatile_keys(outputs: Iterable) -> dict[str, list[str]]:
    """{output: top-level JSON keys rerender.py leaves out of the comparison} for provenance outputs."""
    flat = [y for x in outputs for y in (x if isinstance(x, list) else [x])]
    return {o: list(CHECKOUT_KEYS) for o in flat if o.endswith("provenance.json")}


def existing_specs(specs: list[dict]) -> list[dict]:
    """The specs whose outputs and inputs all exist (a table given as data, without the runs it
    was combined from, is bundled as data and not re-rendered)."""
    def flat(record):
        return [y for x in record["items"] for y in (x if isinstance(x, list) else [x])]
    return [s for s in specs if all(os.path.exists(o) for o in flat(s["output"]))
            and all(os.path.exists(i) for i in flat(s["input"]) if not i.startswith("repo:"))]


# --- choosing the files -----------------------------------------------------------------------------

def classify(path: Path) -> str:
    """"include", "external" (named and hashed) or "skip" for a file of the results dir."""
    name = path.name
    if name.startswith(".") or name.endswith(".lock") or name.endswith(".tmp"):
        return "skip"
    if name in EXTERNAL_NAMES or path.suffix in EXTERNAL_SUFFIXES:
        return "external"
    if path.suffix in INCLUDED_SUFFIXES or name in INCLUDED_NAMES:
        try:
            size = path.stat().st_size
        except OSError:
            return "skip"
        return "include" if size <= MAX_INCLUDED else "external"
    try:
        return "external" if path.stat().st_size > MAX_INCLUDED else "include"
    except OSError:
        return "skip"


def _spec_paths(specs: Iterable[dict]) -> list[str]:
    """Every non-repository input and output a rendering job names (render.json)."""
    out = []
    for spec in specs:
        for key in ("input", "output", "log"):
            for item in (spec.get(key) or {}).get("items", []):
                out += [p for p in (item if isinstance(item, list) else [item]) if not p.startswith("repo:")]
    return out


def _job_key(record: Mapping) -> tuple:
    return record.get("rule"), record.get("job_hash"), record.get("starttime")


def produced_files(records: Mapping[str, dict], workdir: str | os.PathLike = ".") -> tuple[set[str], set[str]]:
    """(files, job directories) that Snakemake's records say this workflow wrote, as absolute paths.

    Files: every recorded output and the logs of its job.  Job directories: the directory of a
    recorded output when every recorded output in it belongs to that one job (a run's own
    directory: its undeclared raw files, serial log, guest results, are bundled with it); a
    directory that several jobs write into (tables/, figures/, the results dir) is not one."""
    base = Path(workdir).absolute()
    files: set[str] = set()
    jobs_in_dir: dict[str, set] = {}
    for path, record in records.items():
        full = os.path.normpath(base / path)
        files.add(full)
        if os.path.isdir(full):   # a directory() output: all of it is the job's
            jobs_in_dir.setdefault(full, set()).add(_job_key(record))
        files.update(os.path.normpath(base / log) for log in record.get("log") or [])
        jobs_in_dir.setdefault(os.path.dirname(full), set()).add(_job_key(record))
    dirs = {d for d, jobs in jobs_in_dir.items() if len(jobs) == 1}
    return files, dirs


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def results_files(results: str | os.PathLike, produced: Iterable[str] = (), job_dirs: Iterable[str] = (),
                  exclude: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """(included, external) files of the results dir that the workflow produced, sorted, spelt
    as ``results`` is (relative stays relative).

    Only ``produced`` files (absolute paths: recorded outputs and logs, the bundle rule's inputs,
    the rendering jobs' files) and the files of ``job_dirs`` below the results dir (not the
    results dir itself); never a symbolic link, nor a file whose real path leaves the results dir.
    Whatever else lies in the results dir (a stray file, or the host's own files when results_dir
    names a system directory) stays out."""
    root = os.path.normpath(os.path.abspath(results))
    real_root = os.path.realpath(root)
    excluded = [os.path.normpath(os.path.abspath(e)) for e in exclude]
    wanted = {os.path.normpath(os.path.abspath(p)) for p in produced}
    for d in job_dirs:
        d = os.path.normpath(os.path.abspath(d))
        if d == root or not _inside(d, root) or not os.path.isdir(d) or os.path.islink(d):
            continue
        for dirpath, dirs, names in os.walk(d):
            dirs[:] = [x for x in dirs if not x.startswith(".")]
            wanted.update(os.path.join(dirpath, n) for n in names)
    inc, ext = [], []
    for full in sorted(wanted):
        if not _inside(full, root) or full == root or any(_inside(full, e) for e in excluded):
            continue
        if os.path.islink(full) or not os.path.isfile(full) or not _inside(os.path.realpath(full), real_root):
            continue
        p = Path(os.path.join(str(results), os.path.relpath(full, root)))
        kind = classify(p)
        (inc if kind == "include" else ext if kind == "external" else []).append(str(p))
    return inc, ext


def _recorded_hashes(results: Path) -> dict[str, str]:
    """sha256s the build records already hold (kernel outputs, QEMU binary), so big files are
    not read again: {absolute path: sha256}."""
    out = {}
    for build in results.glob("kernels/*/build.json"):
        try:
            rec = json.loads(build.read_text())
        except ValueError:
            continue
        for name, digest in (rec.get("outputs") or {}).items():
            out[str((build.parent / name).resolve())] = digest
    for build in results.glob("qemu/*/build.json"):
        try:
            rec = json.loads(build.read_text())
        except ValueError:
            continue
        if rec.get("binary") and rec.get("sha256"):
            out[str(Path(rec["binary"]).resolve())] = rec["sha256"]
    return out


def external_record(paths: Iterable[str], results: Path) -> list[dict]:
    recorded = _recorded_hashes(results)
    out = []
    for p in paths:
        full = str(Path(p).resolve())
        digest = recorded.get(full)
        how = "recorded by its build"
        if digest is None:
            digest, how = sha256(p), "hashed by the bundle"
        out.append({"path": p, "sha256": digest, "bytes": os.path.getsize(p), "hash": how})
    # The kernel tarball every kernel was built from, as its build recorded it.
    seen = set()
    for build in sorted(results.glob("kernels/*/build.json")):
        try:
            src = json.loads(build.read_text()).get("source") or {}
        except ValueError:
            continue
        if src.get("tarball") and src.get("sha256") and src["tarball"] not in seen:
            seen.add(src["tarball"])
            out.append({"path": src["tarball"], "sha256": src["sha256"], "hash": "recorded by the kernel build",
                        "what": f"kernel source {src.get('debian_package', '')} {src.get('debian_version', '')}".strip()})
    return out


def patch_hashes(repo: Path) -> list[dict]:
    """Every kernel and QEMU patch layer file (patches and config fragments) with its sha256."""
    out = []
    for root in ("workflow/kernel/layers", "workflow/qemu/layers"):
        for p in sorted((repo / root).rglob("*")):
            if p.is_file() and (p.suffix in (".patch", ".diff") or p.name == "fragment.config"):
                out.append({"path": str(p.relative_to(repo)), "sha256": sha256(p),
                            "kind": "kernel" if "kernel" in root else "qemu"})
    return out


# --- RO-Crate -----------------------------------------------------------------------------------------

def write_crate(stage: Path, files: list[str], records: Mapping[str, dict], commit: str, config_path: str,
                started: float | None, ended: float | None) -> None:
    """ro-crate-metadata.json for the staged bundle: every file as a data entity, the workflow as
    the main entity, one CreateAction for the run and one per job (rule) saying what it produced."""
    from rocrate.model.contextentity import ContextEntity
    from rocrate.rocrate import ROCrate

    crate = ROCrate()
    crate.name = "guestio run bundle"
    crate.description = ("A run of guestio (a reproduction of Zhang et al. 2010, 'Modifying Guest OS to "
                         "Optimize I/O Virtualization in KVM'): data, provenance, figures and tables.")
    crate.license = "https://spdx.org/licenses/MIT"
    profiles = [crate.add(ContextEntity(crate, uri, properties={"@type": "CreativeWork", "name": name,
                                                                  "version": uri.rsplit("/", 1)[-1]}))
                for name, uri in WORKFLOW_RUN_PROFILES.items()]
    crate.root_dataset["conformsTo"] = profiles
    snakemake_lang = crate.add(ContextEntity(crate, "https://w3id.org/workflowhub/workflow-ro-crate#snakemake",
                                             properties={"@type": "ComputerLanguage", "name": "Snakemake",
                                                         "url": "https://snakemake.readthedocs.io"}))
    workflow = crate.add_file(str(stage / "workflow" / "Snakefile"), "workflow/Snakefile", properties={
        "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow"], "name": "guestio Snakefile",
        "programmingLanguage": {"@id": snakemake_lang.id}, "version": commit})
    crate.mainEntity = workflow
    entities = {}
    for rel in files:
        entities[rel] = crate.add_file(str(stage / rel), rel, properties={"name": Path(rel).name})
    config_entity = crate.add_file(str(stage / config_path), config_path,
                                   properties={"name": "config used", "encodingFormat": "text/yaml"})
    # Jobs: group the recorded outputs by job, attach each bundled file to the job that made it.
    jobs: dict[tuple, dict] = {}
    for rel, ent in entities.items():
        original = rel[len("files/"):] if rel.startswith("files/") else None
        rec = records.get(original) if original else None
        if rec is None:
            continue
        key = (rec.get("rule"), rec.get("job_hash"), rec.get("starttime"))
        job = jobs.setdefault(key, {"rule": rec.get("rule"), "start": rec.get("starttime"),
                                    "end": rec.get("endtime"), "results": [], "inputs": rec.get("input") or []})
        job["results"].append(ent)
    tools = {}
    run_results = []
    for i, ((rule, _, _), job) in enumerate(sorted(jobs.items(), key=lambda kv: (str(kv[0][2]), str(kv[0][0])))):
        if rule not in tools:
            tools[rule] = crate.add(ContextEntity(crate, f"#rule-{rule}", properties={
                "@type": "SoftwareApplication", "name": f"Snakemake rule {rule}"}))
        objects = [entities[f"files/{p}"] for p in job["inputs"] if f"files/{p}" in entities]
        props = {"name": f"job of rule {rule}"}
        if job["start"]:
            props["startTime"] = _iso(job["start"])
        if job["end"]:
            props["endTime"] = _iso(job["end"])
        crate.add_action(tools[rule], identifier=f"#job-{i}", object=objects, result=job["results"],
                         properties=props)
        run_results += job["results"]
    run_props = {"name": "guestio run (the Snakemake invocations that made these files)"}
    if started:
        run_props["startTime"] = _iso(started)
    if ended:
        run_props["endTime"] = _iso(ended)
    crate.add_action(workflow, identifier="#run", object=[config_entity],
                     result=list(entities.values()), properties=run_props)
    crate.metadata.write(str(stage))


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(float(t), tz=_dt.timezone.utc).isoformat()


# --- the bundle ---------------------------------------------------------------------------------------

def _git(repo: Path, *args: str, binary: bool = False):
    out = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    return out.stdout if binary else out.stdout.decode().strip()


def build(*, results: str, repo: str | os.PathLike, out: str | os.PathLike, config: Mapping,
          configfiles: Iterable[str], render: str | os.PathLike, workdir: str | os.PathLike = ".",
          declared: Iterable[str] = (), exclude: Iterable[str] = (), log=None) -> dict:
    """Write the bundle archive ``out``; returns a summary (counts, sizes).

    What goes in from the results dir is what the workflow produced there: the outputs and logs
    Snakemake recorded in ``workdir``'s metadata (with their jobs' own directories), the files
    ``declared`` (the bundle rule's inputs) and every file a rendering job of ``render`` names;
    nothing else that happens to lie in the results dir."""
    repo, out = Path(repo), Path(out)
    say = log or (lambda msg: None)
    import tempfile
    stage_parent = Path(tempfile.mkdtemp(prefix="guestio-bundle-"))
    stage = stage_parent / ROOT
    stage.mkdir(parents=True)
    try:
        # The workflow at its exact commit, and what the working tree had on top of it.
        commit = _git(repo, "rev-parse", "HEAD")
        archive = _git(repo, "archive", "--format=tar", "HEAD", binary=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as t:
            t.extractall(stage / "workflow", filter="data")
        dirty = _git(repo, "diff", "--binary", "HEAD", binary=True)
        if dirty:
            (stage / "workflow.dirty.patch").write_bytes(dirty)
        untracked = _git(repo, "ls-files", "--others", "--exclude-standard", "--", "workflow", "config", "envs",
                         "Snakefile", "profiles")
        (stage / "workflow.json").write_text(json.dumps(
            {"commit": commit, "dirty": bool(dirty), "untracked": untracked.splitlines()}, indent=1) + "\n")
        # Config used, the config files given, and the pinned environment.
        (stage / "config").mkdir()
        (stage / "config" / "used.yaml").write_text(yaml.safe_dump(_plain(config), sort_keys=True))
        (stage / "config" / "files").mkdir()
        for f in configfiles:
            if Path(f).is_file():
                shutil.copy2(f, stage / "config" / "files" / Path(f).name)
        (stage / "envs").mkdir()
        for f in ENV_FILES:
            if (repo / f).is_file():
                shutil.copy2(repo / f, stage / "envs" / Path(f).name)
        # Data, provenance, logs, figures, tables.
        # Not the bundle's own directory (earlier bundles, render.json: copied below).
        records = load_records(workdir)
        produced, job_dirs = produced_files(records, workdir)
        specs = json.loads(Path(render).read_text())
        wanted = produced | {os.path.abspath(Path(workdir) / p) for p in [*declared, *_spec_paths(specs)]}
        included, external = results_files(results, produced=wanted, job_dirs=job_dirs,
                                           exclude=[str(out.parent), *exclude])
        for f in included:
            dest = stage / "files" / os.path.normpath(f)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)
        (stage / "external.json").write_text(json.dumps(external_record(external, Path(results)), indent=1) + "\n")
        (stage / "patches.json").write_text(json.dumps(patch_hashes(repo), indent=1) + "\n")
        shutil.copy2(render, stage / "render.json")
        shutil.copy2(Path(__file__).with_name("rerender.py"), stage / "rerender.py")
        say(f"bundle: {len(included)} files included, {len(external)} named and hashed")
        # RO-Crate, then the manifest of everything else.
        staged = sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file())
        starts = [r["starttime"] for k, r in records.items() if r.get("starttime") and f"files/{k}" in staged]
        ends = [r["endtime"] for k, r in records.items() if r.get("endtime") and f"files/{k}" in staged]
        write_crate(stage, [s for s in staged if not s.startswith("workflow/")], records, commit,
                    "config/used.yaml", min(starts) if starts else None, max(ends) if ends else None)
        manifest = []
        for p in sorted(stage.rglob("*")):
            if p.is_file() and p.name != "manifest.sha256":
                manifest.append(f"{sha256(p)}  {p.relative_to(stage)}")
        (stage / "manifest.sha256").write_text("\n".join(manifest) + "\n")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        with tarfile.open(tmp, "w:gz") as t:
            t.add(stage, arcname=ROOT, filter=_normalise)
        os.replace(tmp, out)
        return {"included": len(included), "external": len(external), "bytes": out.stat().st_size,
                "files": len(manifest) + 1, "commit": commit, "dirty": bool(dirty)}
    finally:
        shutil.rmtree(stage_parent, ignore_errors=True)


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
