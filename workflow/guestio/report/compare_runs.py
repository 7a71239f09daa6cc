"""The two runs of a comparison: where a run's files are, and its provenance flattened to dotted keys."""

from __future__ import annotations

import contextlib
import json
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

BUNDLE_ROOT = "guestio-bundle"
CLAIMS_QUANTITIES = "claims-quantities.csv"
#: Provenance keys that differ between any two checkouts or builds without saying anything about
#: the result: where a file lay, how long a build took, how many jobs built it.
VOLATILE_KEYS = {"binary", "probe_kernel", "probe_qemu", "tarball", "dsc", "orig_tarball", "debian_tarball",
                 "file", "build_seconds", "build_cpu_seconds", "jobs", "recorded_from", "runs", "firmware_dir"}
SECTION_TITLES = {"accelerator": "accelerator", "host": "host", "kernel": "kernel builds", "qemu": "QEMU builds",
                  "image": "guest image", "guestio": "guestio checkout", "config": "config", "tables": "tables"}


# --- where a run's files are -------------------------------------------------------------------------

@dataclass
class Run:
    given: str           # as the user named it
    root: Path           # the results directory (inside a bundle: files/<results_dir>)
    bundle: Path | None  # the bundle's root, when it is one


def _bundle_results(bundle: Path) -> Path:
    """The results directory inside an unpacked bundle: files/<results_dir of config/used.yaml>."""
    used = bundle / "config" / "used.yaml"
    name = "results"
    if used.is_file():
        name = str((yaml.safe_load(used.read_text(encoding="utf-8")) or {}).get("results_dir") or name)
    candidate = bundle / "files" / name.lstrip("/")
    if candidate.is_dir():
        return candidate
    # A results dir named otherwise: the first directory under files/ that holds tables or claims.
    for d in sorted(p for p in (bundle / "files").rglob("*") if p.is_dir()):
        if (d / "tables").is_dir() or (d / CLAIMS_QUANTITIES).is_file():
            return d
    return candidate


def locate(path: str | Path, scratch: contextlib.ExitStack) -> Run:
    """A run from a results dir, an unpacked bundle or a bundle archive (unpacked into a temporary
    directory that ``scratch`` removes)."""
    p = Path(path)
    if p.is_file() and tarfile.is_tarfile(p):
        tmp = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="guestio-compare-")))
        with tarfile.open(p) as t:
            t.extractall(tmp, filter="data")
        p = tmp
    if not p.is_dir():
        raise SystemExit(f"compare: {path}: not a results directory, an unpacked bundle or a bundle archive; "
                         "give a results dir (e.g. results) or a guestio-bundle")
    if (p / BUNDLE_ROOT / "files").is_dir():
        p = p / BUNDLE_ROOT
    if (p / "files").is_dir() and ((p / "manifest.sha256").is_file() or (p / "config" / "used.yaml").is_file()):
        return Run(str(path), _bundle_results(p), p)
    return Run(str(path), p, None)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- provenance: what each run was made of, flattened to dotted keys ----------------------------------

def _item_name(item: Mapping) -> str | None:
    """A patch or fragment record's name that does not depend on the checkout's location."""
    name = item.get("name") or item.get("file") or item.get("package")
    if not name:
        return None
    name = str(name)
    return name.split("layers/", 1)[1] if "layers/" in name else Path(name).name


def flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    """Dotted keys with text values; lists of records (patches, fragments, debs) keyed by name."""
    if isinstance(value, Mapping):
        for k in sorted(value, key=str):
            if str(k) not in VOLATILE_KEYS:
                flatten(value[k], f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and value and all(isinstance(v, Mapping) and _item_name(v) for v in value):
        for item in value:
            rest = {k: v for k, v in item.items() if k not in ("name", "file", "package")}
            key = f"{prefix}[{_item_name(item)}]"
            if set(rest) == {"sha256"}:
                out[key] = str(rest["sha256"])
            else:
                flatten(rest, key, out)
    elif isinstance(value, list):
        out[prefix] = ", ".join(str(v) for v in value) if value else "(none)"
    else:
        out[prefix] = json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def _put(sections: dict[str, dict[str, str]], section: str, value: Any, prefix: str = "") -> None:
    """Adds a source to a section; a key already there (from a more direct source) is kept."""
    if value is None:
        return
    flat: dict[str, str] = {}
    flatten(value, prefix, flat)
    target = sections.setdefault(section, {})
    for k, v in flat.items():
        target.setdefault(k, v)


def provenance(run: Run) -> dict[str, dict[str, str]]:
    """{section: {key: value}} from the files a results dir may hold; a missing file leaves its
    keys out (a bundle of a KVM run, a results dir from a partial run).  The host's own records
    (host/, kernels/, qemu/) come first; the tables' provenance fills in what they lack."""
    root = run.root
    sections: dict[str, dict[str, str]] = {}
    _put(sections, "accelerator", _read_json(root / "host" / "accelerator.json"))
    host = _read_json(root / "host" / "host.json")
    if host is not None:
        _put(sections, "host", {("host_qemu" if k == "qemu" else k): v for k, v in host.items()})
    for build in sorted(root.glob("kernels/*/build.json")):
        _put(sections, "kernel", _read_json(build), build.parent.name)
    for build in sorted(root.glob("qemu/*/build.json")):
        _put(sections, "qemu", _read_json(build), build.parent.name)
    tables = sorted((root / "tables").glob("*.provenance.json")) if (root / "tables").is_dir() else []
    for path in tables:
        prov = _read_json(path) or {}
        name = path.name[: -len(".provenance.json")]
        _put(sections, "accelerator", prov.get("accelerator"))
        _put(sections, "host", {k: prov[k] for k in ("host", "host_qemu", "debian_packages", "python",
                                                      "python_packages") if k in prov})
        for variant, record in sorted((prov.get("kernels") or {}).items()):
            _put(sections, "kernel", record, variant)
        qemus = prov.get("qemus") or ({prov["qemu"].get("variant", "default"): prov["qemu"]}
                                      if isinstance(prov.get("qemu"), Mapping) else {})
        for variant, record in sorted(qemus.items()):
            _put(sections, "qemu", record, variant)
        _put(sections, "image", prov.get("image"))
        _put(sections, "guestio", prov.get("guestio"))
        _put(sections, "config", prov.get("config"))
        _put(sections, "tables", {name: {"run_count": len(prov.get("runs") or [])}})
    if "config" not in sections and run.bundle is not None:
        used = run.bundle / "config" / "used.yaml"
        if used.is_file():
            _put(sections, "config", yaml.safe_load(used.read_text(encoding="utf-8")))
    return sections


@dataclass
class ProvenanceDiff:
    rows: list[tuple[str, str, str, str]]       # (section, key, value in A, value in B)
    missing: list[tuple[str, str]]              # (section, "A" / "B"): a section one run does not record
    same: int                                   # keys both record with the same value


NOT_RECORDED = "(not recorded)"


def diff_provenance(a: Mapping[str, Mapping[str, str]], b: Mapping[str, Mapping[str, str]]) -> ProvenanceDiff:
    rows, missing, same = [], [], 0
    for section in sorted(set(a) | set(b), key=lambda s: (list(SECTION_TITLES).index(s)
                                                          if s in SECTION_TITLES else 99, s)):
        sa, sb = a.get(section), b.get(section)
        if not sa and not sb:
            continue
        if not sa or not sb:
            missing.append((section, "A" if not sa else "B"))
            continue
        for key in sorted(set(sa) | set(sb)):
            va, vb = sa.get(key, NOT_RECORDED), sb.get(key, NOT_RECORDED)
            if va == vb:
                same += 1
            else:
                rows.append((section, key, va, vb))
    return ProvenanceDiff(rows, missing, same)
