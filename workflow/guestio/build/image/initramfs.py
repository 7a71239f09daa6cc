"""The initramfs itself: the image's entries (programs, libraries, busybox applets, generated files), the archive and its manifest."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Sequence

from guestio.build import cpio
from guestio.build.image import ImageError
from guestio.build.image.debs import download_debs, extract_debs
from guestio.build.image.elf import Closure, library_closure, resolve_in_root
from guestio.util import write_json_atomic

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
MANIFEST_FORMAT = "guestio-initramfs-manifest/1"


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
