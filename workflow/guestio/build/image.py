"""Build the guest initramfs from Debian packages.

Pipeline (:func:`build_initramfs`):

1. :func:`download_debs` resolves the ``Depends``/``Pre-Depends`` closure of the
   requested packages with ``apt-cache depends`` and fetches the candidate
   ``.deb`` files with ``apt-get download`` into a cache directory (a file that
   is already there with the archive's SHA256 is not fetched again).
2. Every ``.deb`` of the closure is extracted into a fresh staging root with
   ``dpkg-deb -X`` (the listing tells which package owns which path).
3. The wanted programs are located in the staging root, and their shared
   library closure is computed from the ELF ``PT_INTERP`` and ``DT_NEEDED``
   entries (parsed here in Python), resolved ONLY inside the staging root.
   A library that cannot be found is a :class:`MissingLibraryError`.
4. Only those files (plus the symlinks on the way to them), busybox applet
   symlinks (from ``busybox --list-full`` run on the extracted static busybox),
   a few generated ``/etc`` files, ``/dev/console`` and ``/init`` go into a
   deterministic newc cpio archive (:mod:`guestio.build.cpio`).
5. A JSON manifest (debs with SHA256, every image entry with its SHA256, the
   image SHA256) is written beside the image.

Nothing from the host's installed binaries ends up in the image; the host only
provides apt, dpkg-deb and the CPU to run the (static) busybox for its applet
list.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from guestio.build import cpio
from guestio.util import sha256_file, write_json_atomic

log = logging.getLogger("guestio.build.image")

DEFAULT_PACKAGES: tuple[str, ...] = (
    "busybox-static",
    "bonnie++",
    "iperf3",
    "fio",
    "sysbench",
    "iputils-ping",
)
DEFAULT_PROGRAMS: tuple[str, ...] = ("busybox", "bonnie++", "iperf3", "fio", "sysbench", "ping")

# Where programs are looked up in the staging root, in this order.
PROGRAM_DIRS: tuple[str, ...] = ("usr/sbin", "usr/bin", "sbin", "bin")
# Default library directories (what Debian's x86_64 ld.so searches without a cache).
LIBRARY_DIRS: tuple[str, ...] = (
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "lib64",
    "usr/lib64",
    "lib",
    "usr/lib",
)
GUEST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# Files generated into the image (not from any package).
ETC_FILES: dict[str, bytes] = {
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
    "etc/group": b"root:x:0:\n",
    "etc/hosts": b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    "etc/nsswitch.conf": b"passwd: files\ngroup: files\nshadow: files\nhosts: files\n",
    "etc/hostname": b"guestio\n",
}
EXTRA_DIRS: tuple[str, ...] = (
    "dev", "proc", "sys", "tmp", "run", "mnt", "root", "var", "var/tmp",
    "guestio", "guestio/in", "guestio/out",
)
DEVICES: tuple[tuple[str, int, int, int], ...] = (
    ("dev/console", 5, 1, 0o600),
    ("dev/null", 1, 3, 0o666),
)

APT_DEPENDS_OPTS = (
    "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks",
    "--no-replaces", "--no-enhances",
)
MANIFEST_FORMAT = "guestio-initramfs-manifest/1"


class ImageError(RuntimeError):
    """The image cannot be built (package resolution, download, missing program ...)."""


class MissingLibraryError(ImageError):
    """A program needs a shared library (or loader) that is not in the staging root."""

    def __init__(self, program: str, library: str, needed_by: str, searched: Sequence[str]):
        self.program = program
        self.library = library
        self.needed_by = needed_by
        self.searched = list(searched)
        via = "" if needed_by == program else f" (needed by {needed_by})"
        super().__init__(
            f"program {program}: library {library}{via} not found in the staging root "
            f"(searched: {', '.join(searched) or 'nothing'})"
        )


# --------------------------------------------------------------------------- apt

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


# --------------------------------------------------------------------------- ELF

PT_DYNAMIC, PT_INTERP, PT_LOAD = 2, 3, 1
DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_RPATH, DT_RUNPATH = 0, 1, 5, 10, 15, 29
EM_X86_64 = 62


@dataclass(frozen=True)
class ElfInfo:
    interp: str | None
    needed: tuple[str, ...]
    runpath: tuple[str, ...]
    machine: int


def is_elf(path: str | os.PathLike) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def read_elf(path: str | os.PathLike) -> ElfInfo:
    """PT_INTERP, DT_NEEDED and DT_RUNPATH/DT_RPATH of a 64-bit little-endian ELF file."""
    with open(path, "rb") as f:
        ident = f.read(64)
        if ident[:4] != b"\x7fELF":
            raise ImageError(f"{path}: not an ELF file")
        if ident[4] != 2 or ident[5] != 1:
            raise ImageError(f"{path}: only 64-bit little-endian ELF is supported")
        (e_machine,) = struct.unpack_from("<H", ident, 18)
        e_phoff, = struct.unpack_from("<Q", ident, 32)
        e_phentsize, e_phnum = struct.unpack_from("<HH", ident, 54)
        f.seek(e_phoff)
        ph = f.read(e_phentsize * e_phnum)
        loads: list[tuple[int, int, int]] = []  # vaddr, offset, filesz
        interp = None
        dyn: tuple[int, int] | None = None
        for i in range(e_phnum):
            p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz, _memsz, _align = struct.unpack_from(
                "<IIQQQQQQ", ph, i * e_phentsize)
            if p_type == PT_LOAD:
                loads.append((p_vaddr, p_offset, p_filesz))
            elif p_type == PT_INTERP:
                f.seek(p_offset)
                interp = f.read(p_filesz).split(b"\0", 1)[0].decode()
            elif p_type == PT_DYNAMIC:
                dyn = (p_offset, p_filesz)
        if dyn is None:
            return ElfInfo(interp, (), (), e_machine)
        f.seek(dyn[0])
        raw = f.read(dyn[1])
        entries = [struct.unpack_from("<qQ", raw, o) for o in range(0, len(raw) - 15, 16)]
        strtab = strsz = None
        for tag, val in entries:
            if tag == DT_NULL:
                break
            if tag == DT_STRTAB:
                strtab = val
            elif tag == DT_STRSZ:
                strsz = val
        if strtab is None:
            return ElfInfo(interp, (), (), e_machine)

        def vaddr_to_offset(addr: int) -> int:
            for vaddr, off, filesz in loads:
                if vaddr <= addr < vaddr + filesz:
                    return off + addr - vaddr
            return addr  # unrelocated objects: addresses are offsets

        f.seek(vaddr_to_offset(strtab))
        strings = f.read(strsz or 1 << 20)

        def s(off: int) -> str:
            return strings[off:strings.index(b"\0", off)].decode()

        needed: list[str] = []
        runpath: list[str] = []
        rpath: list[str] = []
        for tag, val in entries:
            if tag == DT_NULL:
                break
            if tag == DT_NEEDED:
                needed.append(s(val))
            elif tag == DT_RUNPATH:
                runpath.extend(p for p in s(val).split(":") if p)
            elif tag == DT_RPATH:
                rpath.extend(p for p in s(val).split(":") if p)
    return ElfInfo(interp, tuple(needed), tuple(runpath or rpath), e_machine)


def resolve_in_root(root: str | os.PathLike, rel: str) -> tuple[str, list[tuple[str, str]]] | None:
    """Follow ``rel`` inside ``root`` like the kernel would if ``root`` were ``/``.

    Returns (final relative path, [(symlink relative path, target), ...] passed
    on the way), or None if something along the way does not exist.  Absolute
    symlink targets are taken relative to ``root``; nothing outside is looked at.
    """
    root = Path(root)
    todo = [p for p in PurePosixPath(rel).parts if p not in ("/", ".", "")]
    done: list[str] = []
    links: list[tuple[str, str]] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        cur = "/".join(done + [part])
        full = root / cur
        if full.is_symlink():
            hops += 1
            if hops > 40:
                return None
            target = os.readlink(full)
            links.append((cur, target))
            tparts = [p for p in PurePosixPath(target).parts if p not in ("/", ".", "")]
            if target.startswith("/"):
                done = []
            todo = tparts + todo
            continue
        if not full.exists():
            return None
        done.append(part)
    return "/".join(done), links


@dataclass
class Closure:
    """Files (relative paths in the staging root) needed to run some programs."""

    files: set[str] = field(default_factory=set)  # regular files
    symlinks: dict[str, str] = field(default_factory=dict)  # path -> target
    programs: dict[str, str] = field(default_factory=dict)  # name -> real path
    libraries: dict[str, str] = field(default_factory=dict)  # soname/interp -> real path


def find_program(root: str | os.PathLike, name: str) -> str | None:
    """Relative path of program ``name`` in the staging root (first of PROGRAM_DIRS)."""
    for d in PROGRAM_DIRS:
        rel = f"{d}/{name}"
        if os.path.lexists(Path(root) / rel):
            return rel
    return None


def library_closure(root: str | os.PathLike, programs: Sequence[str],
                    library_dirs: Sequence[str] = LIBRARY_DIRS) -> Closure:
    """Programs (names or relative paths) plus everything their dynamic loading needs.

    Raises :class:`MissingLibraryError` naming the program and library when a
    DT_NEEDED entry or PT_INTERP cannot be found in ``root``.
    """
    root = Path(root)
    cl = Closure()

    def add_path(rel: str) -> str | None:
        res = resolve_in_root(root, rel)
        if res is None:
            return None
        final, links = res
        for link, target in links:
            cl.symlinks[link] = target
        if not (root / final).is_file():
            return None
        cl.files.add(final)
        return final

    for prog in programs:
        rel = prog.lstrip("/") if "/" in prog else find_program(root, prog)
        real = add_path(rel) if rel is not None else None
        if rel is None or real is None:
            raise ImageError(f"program {prog!r} not found in the staging root "
                             f"(looked in {', '.join(PROGRAM_DIRS)})")
        cl.programs[PurePosixPath(prog).name] = rel
        seen: set[str] = set()
        todo = [real]
        while todo:
            obj = todo.pop(0)
            if obj in seen:
                continue
            seen.add(obj)
            info = read_elf(root / obj) if is_elf(root / obj) else None
            if info is None:
                continue
            if info.interp:
                got = add_path(info.interp)
                if got is None:
                    raise MissingLibraryError(prog, info.interp, obj, [info.interp])
                cl.libraries[info.interp] = got
                todo.append(got)
            obj_dir = str(PurePosixPath(obj).parent)
            dirs = [d.replace("$ORIGIN", "/" + obj_dir).replace("${ORIGIN}", "/" + obj_dir).lstrip("/")
                    for d in info.runpath] + list(library_dirs)
            for lib in info.needed:
                cands = [lib.lstrip("/")] if "/" in lib else [f"{d}/{lib}" for d in dirs]
                got = None
                for cand in cands:
                    res = resolve_in_root(root, cand)
                    if res is None or not (root / res[0]).is_file():
                        continue
                    if is_elf(root / res[0]) and read_elf(root / res[0]).machine != info.machine:
                        continue  # like ld.so: skip objects for another machine
                    got = add_path(cand)
                    break
                if got is None:
                    raise MissingLibraryError(prog, lib, obj, cands)
                cl.libraries.setdefault(lib, got)
                todo.append(got)
    return cl


# --------------------------------------------------------------------------- image

def busybox_applets(busybox: str | os.PathLike) -> list[str]:
    """Applet paths (e.g. ``bin/sh``) as listed by ``busybox --list-full``.

    The busybox from busybox-static is a static binary, so running the extracted
    copy on the host is fine.
    """
    out = subprocess.run([str(busybox), "--list-full"], check=True, capture_output=True,
                         text=True, env={"PATH": "/nonexistent", "LC_ALL": "C"}).stdout
    apps = sorted({line.strip().lstrip("/") for line in out.splitlines() if line.strip()})
    if not apps:
        raise ImageError(f"{busybox} --list-full listed no applets")
    return apps


def init_script() -> bytes:
    """The guest /init shipped with this package (guestio/guest/init)."""
    return resources.files("guestio").joinpath("guest/init").read_bytes()


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")[:-1]
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def image_entries(root: str | os.PathLike, programs: Sequence[str] = DEFAULT_PROGRAMS,
                  init: bytes | None = None
                  ) -> tuple[list[cpio.Entry], Closure, dict[str, str | None]]:
    """All archive entries for an image built from the staging ``root``.

    Returns (sorted entries, library closure, origin) where ``origin`` maps the
    path of every entry copied from the staging root to that same path, and
    every busybox applet symlink to the busybox path; generated entries are absent.
    """
    root = Path(root)
    cl = library_closure(root, programs)
    entries: dict[str, cpio.Entry] = {}
    origin: dict[str, str | None] = {}

    def put(e: cpio.Entry, src: str | None = None) -> None:
        if e.path in entries and entries[e.path] != e:
            raise ImageError(f"two different entries for {e.path}")
        entries[e.path] = e
        if src is not None:
            origin[e.path] = src

    for rel in sorted(cl.files):
        put(cpio.entry_from_fs(root / rel, rel), rel)
    for rel, target in sorted(cl.symlinks.items()):
        put(cpio.symlink_entry(rel, target), rel)

    busybox = cl.programs.get("busybox")
    if busybox is not None:
        taken = {PurePosixPath(p).name for p in cl.programs.values()}
        real = resolve_in_root(root, busybox)
        assert real is not None
        for app in busybox_applets(root / real[0]):
            if PurePosixPath(app).name in taken or app in entries or app == busybox:
                continue
            put(cpio.symlink_entry(app, "/" + busybox), busybox)

    for rel, data in ETC_FILES.items():
        put(cpio.file_entry(rel, data))
    put(cpio.file_entry("etc/guestio/path", (GUEST_PATH + "\n").encode()))
    put(cpio.file_entry("init", init if init is not None else init_script(), executable=True))
    for d in EXTRA_DIRS:
        put(cpio.dir_entry(d))
    for path, major, minor, mode in DEVICES:
        put(cpio.chardev_entry(path, major, minor, mode))
    for rel in list(entries):
        for parent in _parents(rel):
            if parent not in entries:
                put(cpio.dir_entry(parent))
            elif entries[parent].kind != cpio.DIR:
                raise ImageError(f"{parent} is a {entries[parent].kind} but {rel} needs it as a directory")
    return cpio.sorted_entries(entries.values()), cl, origin


def build_initramfs(out_cpio: str | os.PathLike, manifest_json: str | os.PathLike,
                    deb_dir: str | os.PathLike, staging_dir: str | os.PathLike,
                    programs: Sequence[str] = DEFAULT_PROGRAMS,
                    packages: Sequence[str] = DEFAULT_PACKAGES,
                    init: bytes | None = None, mtime: int = 0) -> dict:
    """Build the initramfs ``out_cpio`` and its manifest; return the manifest.

    ``deb_dir`` is the .deb cache (see :func:`download_debs`); ``staging_dir``
    is wiped and refilled (the debs are extracted into ``staging_dir/root``).
    Deterministic: the same debs give a byte-identical archive.
    """
    out_cpio, manifest_json, staging = Path(out_cpio), Path(manifest_json), Path(staging_dir)
    debs = download_debs(packages, deb_dir)
    root = staging / "root"
    if root.exists():
        shutil.rmtree(root)
    log.info("extracting %d debs into %s", len(debs), root)
    owner = extract_debs(debs, root)
    entries, cl, origin = image_entries(root, programs, init)

    data = cpio.archive_bytes(entries, mtime=mtime)
    out_cpio.parent.mkdir(parents=True, exist_ok=True)
    cpio.write_cpio(entries, out_cpio, mtime=mtime)

    package_of = {path: owner.get(src) for path, src in origin.items()}
    used = {p for p in package_of.values() if p}
    files = []
    for e in entries:
        rec: dict = {"path": "/" + e.path, "type": e.kind, "mode": f"{e.mode:04o}"}
        if e.kind == cpio.FILE:
            rec["size"] = len(e.data)
            rec["sha256"] = hashlib.sha256(e.data).hexdigest()
        elif e.kind == cpio.SYMLINK:
            rec["target"] = e.target
        elif e.kind == cpio.CHARDEV:
            rec["rdev"] = list(e.rdev)
        if e.kind != cpio.DIR:
            # the package the content comes from; null: generated by guestio
            rec["package"] = package_of.get(e.path)
        files.append(rec)
    manifest = {
        "format": MANIFEST_FORMAT,
        "image": {"file": out_cpio.name, "sha256": hashlib.sha256(data).hexdigest(),
                  "size": len(data), "mtime": mtime, "format": "newc"},
        "requested_packages": sorted(packages),
        "programs": dict(sorted(cl.programs.items())),
        # what each program needs (itself, loader, libraries, symlinks on the way)
        "program_closures": {
            name: sorted("/" + p for p in (c.files | set(c.symlinks)))
            for name, rel in sorted(cl.programs.items())
            for c in [library_closure(root, [rel])]
        },
        "debs": [dict(d.as_json(), used=d.package in used) for d in debs],
        "files": files,
    }
    write_json_atomic(manifest_json, manifest)
    log.info("image %s: %d entries, %d bytes, sha256 %s", out_cpio, len(entries), len(data),
             manifest["image"]["sha256"])
    return manifest


def build_from_snakemake(smk) -> dict:  # pragma: no cover - thin glue
    """Entry point for a Snakemake ``script:``: ``build_from_snakemake(snakemake)``.

    Output: named ``cpio`` (or ``image``) and ``manifest``, else the first two
    positional outputs.  Params: ``deb_dir``, ``staging_dir`` and optionally
    ``programs``/``packages``.  Log: the first ``log:`` file, if any.
    """
    out = smk.output
    image = getattr(out, "cpio", None) or getattr(out, "image", None) or out[0]
    manifest = getattr(out, "manifest", None) or out[1]
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if len(smk.log):
        handlers.append(logging.FileHandler(smk.log[0], mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", handlers=handlers)
    p = smk.params
    return build_initramfs(
        image, manifest, p.deb_dir, p.staging_dir,
        programs=tuple(getattr(p, "programs", None) or DEFAULT_PROGRAMS),
        packages=tuple(getattr(p, "packages", None) or DEFAULT_PACKAGES),
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m guestio.build.image", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="initramfs (newc cpio) to write")
    ap.add_argument("--manifest", help="manifest JSON (default: OUT with .json suffix)")
    ap.add_argument("--deb-dir", default="build/debs", help=".deb download cache")
    ap.add_argument("--staging", default="build/staging", help="staging directory (wiped)")
    ap.add_argument("--package", action="append", dest="packages",
                    help=f"package to include (repeatable; default {' '.join(DEFAULT_PACKAGES)})")
    ap.add_argument("--program", action="append", dest="programs",
                    help=f"program to include (repeatable; default {' '.join(DEFAULT_PROGRAMS)})")
    ap.add_argument("--mtime", type=int, default=0)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    out = Path(a.out)
    try:
        m = build_initramfs(out, a.manifest or out.with_suffix(".json"), a.deb_dir, a.staging,
                            programs=tuple(a.programs or DEFAULT_PROGRAMS),
                            packages=tuple(a.packages or DEFAULT_PACKAGES), mtime=a.mtime)
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{out} {m['image']['size']} {m['image']['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
