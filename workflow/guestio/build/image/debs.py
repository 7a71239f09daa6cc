"""The image's Debian packages: their dependency closure (apt-cache), download (apt-get) and extraction (dpkg-deb)."""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from guestio.build.image import ImageError
from guestio.util import sha256_file

log = logging.getLogger("guestio.build.image")

APT_DEPENDS_OPTS = (
    "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks",
    "--no-replaces", "--no-enhances",
)


def _run(cmd: Sequence[str], **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, LC_ALL="C", LANG="C")
    try:
        return subprocess.run(list(cmd), check=True, capture_output=True, text=True, env=env, **kw)
    except FileNotFoundError as exc:
        raise ImageError(f"{cmd[0]} not found: {exc}") from exc
    except subprocess.CalledProcessError as exc:
        raise ImageError(f"{' '.join(cmd[:3])} ... failed (rc={exc.returncode}): {exc.stderr.strip()}") from exc


@dataclass(frozen=True)
class _Alt:
    name: str
    virtual: bool
    providers: tuple[str, ...] = ()


def _parse_depends(text: str) -> dict[str, list[list[_Alt]]]:
    """Parse ``apt-cache depends`` output into {package: [or-group, ...]}.

    A line starting with `` |`` is OR-ed with the next dependency line; a name in
    ``<...>`` is virtual and is followed by its providers indented by 4 spaces.
    """
    result: dict[str, list[list[_Alt]]] = {}
    cur: list[list[_Alt]] | None = None
    group: list[_Alt] = []
    pending_or = False
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            name = line.strip()
            cur = result.setdefault(name.strip("<>"), [])
            group, pending_or = [], False
            continue
        if cur is None:
            continue
        if line.startswith("    ") and group:  # provider of the last virtual alternative
            last = group[-1]
            group[-1] = _Alt(last.name, last.virtual, last.providers + (line.strip(),))
            continue
        body = line[2:] if len(line) > 2 else ""
        is_or = line[1] == "|"
        kind, _, dep = body.partition(":")
        if kind.strip() not in ("Depends", "PreDepends"):
            continue
        dep = dep.strip()
        alt = _Alt(dep.strip("<>"), dep.startswith("<"))
        if not pending_or:
            group = []
            cur.append(group)
        group.append(alt)
        pending_or = is_or
    return result


def _choose(group: list[_Alt], selected: set[str]) -> str:
    """Pick one real package for an OR-group: one already selected, else the first."""
    flat: list[str] = []
    for alt in group:
        flat.extend(alt.providers if alt.virtual else (alt.name,))
    if not flat:
        raise ImageError(f"no installable package for dependency {' | '.join(a.name for a in group)}")
    for name in flat:
        if name in selected:
            return name
    return flat[0]


def resolve_closure(packages: Iterable[str]) -> list[str]:
    """Sorted Depends/Pre-Depends closure of ``packages`` (recommends etc. excluded).

    Alternatives and virtual packages resolve to a package already in the
    closure if there is one, else to the first real candidate apt lists.
    """
    requested = sorted(set(packages))
    if not requested:
        raise ImageError("no packages requested")
    selected: set[str] = set(requested)
    queue = requested
    while queue:
        out = _run(["apt-cache", "depends", *APT_DEPENDS_OPTS, *queue]).stdout
        parsed = _parse_depends(out)
        new: set[str] = set()
        for pkg in queue:
            if pkg not in parsed:
                raise ImageError(f"apt-cache knows no package {pkg!r} (run apt-get update?)")
            for group in parsed[pkg]:
                choice = _choose(group, selected | new)
                if choice not in selected:
                    new.add(choice)
        selected |= new
        queue = sorted(new)
    return sorted(selected)


@dataclass(frozen=True)
class Deb:
    package: str
    version: str
    arch: str
    path: Path
    sha256: str

    def as_json(self) -> dict:
        return {"package": self.package, "version": self.version, "arch": self.arch,
                "file": self.path.name, "sha256": self.sha256}


def _candidates(packages: Sequence[str]) -> dict[str, dict[str, str]]:
    out = _run(["apt-cache", "show", "--no-all-versions", *packages]).stdout
    info: dict[str, dict[str, str]] = {}
    for stanza in out.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue
            k, _, v = line.partition(":")
            fields[k] = v.strip()
        if "Package" in fields and fields["Package"] not in info:
            info[fields["Package"]] = fields
    missing = [p for p in packages if p not in info]
    if missing:
        raise ImageError(f"no candidate version for: {', '.join(missing)}")
    return info


def deb_filename(package: str, version: str, arch: str) -> str:
    """The name apt gives a downloaded .deb (epoch colon escaped as %3a)."""
    return f"{package}_{version.replace(':', '%3a')}_{arch}.deb"


def download_debs(packages: Iterable[str], dest_dir: str | os.PathLike) -> list[Deb]:
    """Resolve the dependency closure of ``packages`` and download it into ``dest_dir``.

    Returns the closure as :class:`Deb` records sorted by package name.  A .deb
    already in ``dest_dir`` whose SHA256 matches the apt archive is reused;
    downloads go to a temporary directory and are checked before being moved in.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    closure = resolve_closure(packages)
    info = _candidates(closure)
    debs: list[Deb] = []
    todo: list[tuple[str, dict[str, str], Path]] = []
    for pkg in closure:
        f = info[pkg]
        path = dest / deb_filename(pkg, f["Version"], f["Architecture"])
        if path.is_file() and sha256_file(path) == f.get("SHA256"):
            continue
        todo.append((pkg, f, path))
    if todo:
        log.info("downloading %d of %d packages into %s", len(todo), len(closure), dest)
        with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
            os.chmod(tmp, 0o755)
            _run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root",
                  *[f"{pkg}={f['Version']}" for pkg, f, _ in todo]], cwd=tmp)
            for pkg, f, path in todo:
                got = Path(tmp) / path.name
                if not got.is_file():
                    found = sorted(Path(tmp).glob(f"{pkg}_*.deb"))
                    if len(found) != 1:
                        raise ImageError(f"apt-get download did not produce {path.name}")
                    got = found[0]
                digest = sha256_file(got)
                if f.get("SHA256") and digest != f["SHA256"]:
                    raise ImageError(f"{got.name}: sha256 {digest} != archive {f['SHA256']}")
                os.replace(got, path)
    for pkg in closure:
        f = info[pkg]
        path = dest / deb_filename(pkg, f["Version"], f["Architecture"])
        debs.append(Deb(pkg, f["Version"], f["Architecture"], path, sha256_file(path)))
    return debs


def extract_debs(debs: Sequence[Deb], root: str | os.PathLike) -> dict[str, str]:
    """Extract every deb into ``root`` (which must not exist yet or be empty).

    Returns {relative path: package} for every path a package ships (the last
    package in name order wins for shared directories).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise ImageError(f"staging root {root} is not empty")
    owner: dict[str, str] = {}
    for deb in sorted(debs, key=lambda d: d.package):
        out = _run(["dpkg-deb", "-X", str(deb.path), str(root)]).stdout
        for line in out.splitlines():
            rel = line.strip().removeprefix("./").rstrip("/")
            if rel:
                owner[rel] = deb.package
    return owner
