#!/usr/bin/env python3
"""Re-render every figure and table of a guestio bundle, offline, and check the bytes.

Run inside an unpacked bundle (``tar xzf guestio-bundle.tar.gz && cd guestio-bundle``)::

    python3 rerender.py            # re-renders into ./rerendered/, compares with files/
    python3 rerender.py --out DIR  # elsewhere

No VM, no kernel build, no network, no Snakemake: each rendering job of the run (recorded in
``render.json``: rule, script, inputs, outputs, params) runs its script from the bundled
workflow (``workflow/``, with ``workflow.dirty.patch`` applied when the run's tree had one)
in a scratch directory that holds only that job's inputs, from ``files/``.  Every output is
compared with the bundled one by sha256; the exit status is 0 only if all are identical.
The Python packages are those of ``envs/requirements.txt`` (the figures' bytes depend on
matplotlib's version).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Runs one rendering script with the `snakemake` object it expects, built from its job record.
RUNNER = r'''
import json, runpy, sys

class Namedlist(list):
    def __init__(self, record):
        super().__init__()
        flat = []
        for item in record["items"]:
            flat.extend(item if isinstance(item, list) else [item])
        self.extend(flat)
        for name, (start, end) in record["names"].items():
            setattr(self, name, self[start] if end is None else Namedlist({"items": self[start:end], "names": {}}))

    def get(self, key, default=None):
        return getattr(self, key, default)

class Params:
    def __init__(self, params):
        self._params = params
        for k, v in params.items():
            setattr(self, k, v)
    def __getitem__(self, i):
        return list(self._params.values())[i]
    def get(self, key, default=None):
        return self._params.get(key, default)

class Snakemake:
    pass

job = json.load(open(sys.argv[1]))
sm = Snakemake()
sm.input, sm.output, sm.log = Namedlist(job["input"]), Namedlist(job["output"]), Namedlist(job["log"])
sm.params = Params(job["params"])
sm.wildcards = Params(job["wildcards"])
sm.config = job.get("config", {})
sm.threads, sm.rule = 1, job["rule"]
sm.scriptdir = job["scriptdir"]
sm.resources = Params({})
sys.argv = [job["script"]]
runpy.run_path(job["script"], init_globals={"snakemake": sm}, run_name="__main__")
'''


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _text_diff(a: Path, b: Path, limit: int = 40) -> str:
    """The first lines of a unified diff for text files; nothing for binary ones."""
    import difflib
    try:
        old, new = a.read_text().splitlines(), b.read_text().splitlines()
    except UnicodeDecodeError:
        return "      (binary)"
    lines = list(difflib.unified_diff(old, new, "bundled", "re-rendered", lineterm="", n=1))
    return "\n".join("      " + line for line in lines[:limit])


def _json_without(path: Path, keys: list[str]):
    """A JSON record without the keys an offline re-render cannot reproduce; None if not JSON."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return {k: v for k, v in record.items() if k not in keys} if isinstance(record, dict) else record


def _flat(record: dict) -> list[str]:
    out = []
    for item in record["items"]:
        out.extend(item if isinstance(item, list) else [item])
    return out


def _local(path: str) -> str:
    """Where a recorded path lies in a job's scratch directory (repository files under repo/)."""
    return "repo/" + path[len("repo:"):] if path.startswith("repo:") else path


def workflow_tree(bundle: Path, scratch: Path) -> Path:
    """The bundled workflow, with the run's uncommitted changes applied where it had any."""
    tree = bundle / "workflow"
    patch = bundle / "workflow.dirty.patch"
    if not patch.is_file():
        return tree
    copy = scratch / "workflow"
    shutil.copytree(tree, copy, symlinks=True)
    subprocess.run(["git", "init", "-q", str(copy)], check=True)
    subprocess.run(["git", "-C", str(copy), "apply", "--whitespace=nowarn", str(patch)], check=True)
    return copy


def run(bundle: Path, out: Path, keep: bool = False) -> int:
    specs = json.loads((bundle / "render.json").read_text())
    files = bundle / "files"
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="guestio-rerender-"))
    failures, checked = 0, 0
    try:
        tree = workflow_tree(bundle, scratch)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MPLCONFIGDIR")}
        env["PYTHONPATH"] = str(tree / "workflow")
        env["MPLBACKEND"] = "Agg"
        env["MPLCONFIGDIR"] = str(scratch / "mpl")
        for i, spec in enumerate(specs):
            job_dir = scratch / f"job{i}"
            job_dir.mkdir()
            missing = []
            for path in _flat(spec["input"]):
                if path.startswith("repo:"):
                    src = tree / path[len("repo:"):]
                else:
                    src = files / os.path.normpath(path)
                dest = job_dir / _local(path)
                if not src.exists():
                    missing.append(path)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                if src.is_dir():
                    shutil.copytree(src, dest)
                else:
                    shutil.copy2(src, dest)
            outputs = _flat(spec["output"])
            for path in outputs + _flat(spec["log"]):
                (job_dir / _local(path)).parent.mkdir(parents=True, exist_ok=True)
            name = f"{spec['rule']}" + "".join(f" {k}={v}" for k, v in spec["wildcards"].items())
            if missing:
                print(f"FAIL  {name}: inputs not in the bundle: {', '.join(missing)}")
                failures += 1
                continue
            job = dict(spec)
            job["script"] = str(tree / spec["script"][len("repo:"):]) if spec["script"].startswith("repo:") \
                else spec["script"]
            job["scriptdir"] = str(Path(job["script"]).parent)
            for key in ("input", "output", "log"):
                job[key] = {"items": [[_local(y) for y in x] if isinstance(x, list) else _local(x)
                                      for x in spec[key]["items"]], "names": spec[key]["names"]}
            (scratch / f"job{i}.json").write_text(json.dumps(job))
            proc = subprocess.run([sys.executable, "-c", RUNNER, str(scratch / f"job{i}.json")], cwd=job_dir,
                                  env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"FAIL  {name}: the script failed:\n{proc.stderr[-4000:]}")
                failures += 1
                continue
            for path in outputs:
                made, bundled = job_dir / _local(path), files / os.path.normpath(path)
                dest = out / os.path.normpath(path)
                dest.parent.mkdir(parents=True, exist_ok=True)
                checked += 1
                if not made.is_file():
                    print(f"FAIL  {path}: not written by {name}")
                    failures += 1
                    continue
                shutil.copy2(made, dest)
                if not bundled.is_file():
                    print(f"FAIL  {path}: re-rendered, but the bundle has no such file to compare with")
                    failures += 1
                elif path in (spec.get("volatile") or {}):
                    keys = spec["volatile"][path]
                    again = _json_without(made, keys)
                    if again is None or again != _json_without(bundled, keys):
                        print(f"DIFF  {path}: re-rendered record differs from the bundled one (beyond {', '.join(keys)})")
                        print(_text_diff(bundled, made))
                        failures += 1
                    else:
                        print(f"same  {path} (but {', '.join(keys)}: the run's checkout, see workflow.json)")
                elif sha256(made) != sha256(bundled):
                    print(f"DIFF  {path}: re-rendered bytes differ from the bundled file")
                    print(_text_diff(bundled, made))
                    failures += 1
                else:
                    print(f"same  {path}")
    finally:
        if keep:
            print(f"scratch kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"{checked} outputs of {len(specs)} rendering jobs re-rendered into {out}; "
          + ("all byte-identical to the bundle (provenance records: but for the run's checkout)."
             if not failures else f"{failures} problem(s)."))
    return 0 if failures == 0 else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, default=HERE, help="the unpacked bundle (default: this file's directory)")
    ap.add_argument("--out", type=Path, default=Path("rerendered"), help="where re-rendered files go")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args(argv)
    return run(args.bundle.resolve(), args.out.resolve(), args.keep)


if __name__ == "__main__":
    sys.exit(main())
