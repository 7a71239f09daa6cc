"""Deterministic writer (and reader) for newc ("070701") cpio archives.

The Linux kernel unpacks an uncompressed newc archive given as initrd into its
rootfs.  Writing the archive ourselves (instead of running ``cpio`` over a
staging tree) gives two things:

* determinism: entries are sorted by path, every mtime is the same fixed value,
  uid/gid are 0, inode numbers are assigned 1, 2, 3 ... in sorted order and file
  modes are normalised, so equal inputs give byte-identical archives;
* device nodes without root: ``/dev/console`` is just a header in the archive.

Format (see the kernel's Documentation/driver-api/early-userspace/buffer-format.rst):
each entry is a 110-byte ASCII header ("070701" + 13 eight-digit hex fields),
the NUL-terminated name padded so that header+name is a multiple of 4 bytes,
then the data padded to a multiple of 4 bytes.  The archive ends with an entry
named ``TRAILER!!!``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

from guestio.util import write_bytes_atomic

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
HEADER_LEN = 110

FILE = "file"
DIR = "dir"
SYMLINK = "symlink"
CHARDEV = "chardev"

_TYPE_BITS = {
    FILE: stat.S_IFREG,
    DIR: stat.S_IFDIR,
    SYMLINK: stat.S_IFLNK,
    CHARDEV: stat.S_IFCHR,
}
_BITS_TYPE = {v: k for k, v in _TYPE_BITS.items()}


class CpioError(ValueError):
    """An entry that cannot be archived, or an archive that cannot be parsed."""


@dataclass(frozen=True)
class Entry:
    """One archive member.

    ``path`` is relative to the archive root, without a leading ``/`` or ``./``
    (e.g. ``"bin/busybox"``).  ``mode`` holds only the permission bits; the type
    bits come from ``kind``.  ``data`` is the content of a regular file,
    ``target`` the target of a symlink, ``rdev`` the (major, minor) of a device.
    """

    path: str
    kind: str
    mode: int
    data: bytes = b""
    target: str = ""
    rdev: tuple[int, int] = (0, 0)

    @property
    def payload(self) -> bytes:
        """The bytes stored after the header: file data or symlink target."""
        if self.kind == FILE:
            return self.data
        if self.kind == SYMLINK:
            return self.target.encode()
        return b""


def normalise_path(path: str) -> str:
    """Archive form of ``path``: no leading ``/`` or ``./``, no ``.``/empty parts."""
    parts = [p for p in str(path).split("/") if p not in ("", ".")]
    if not parts:
        raise CpioError(f"empty archive path: {path!r}")
    if ".." in parts:
        raise CpioError(f"'..' not allowed in archive path: {path!r}")
    return "/".join(parts)


def file_entry(path: str, data: bytes, executable: bool = False) -> Entry:
    """A regular file, mode 0755 if ``executable`` else 0644."""
    return Entry(normalise_path(path), FILE, 0o755 if executable else 0o644, data=bytes(data))


def dir_entry(path: str) -> Entry:
    """A directory, mode 0755."""
    return Entry(normalise_path(path), DIR, 0o755)


def symlink_entry(path: str, target: str) -> Entry:
    """A symlink to ``target`` (kept verbatim, absolute or relative)."""
    if not target:
        raise CpioError(f"symlink {path!r} has an empty target")
    return Entry(normalise_path(path), SYMLINK, 0o777, target=target)


def chardev_entry(path: str, major: int, minor: int, mode: int = 0o600) -> Entry:
    """A character device node, e.g. ``chardev_entry("dev/console", 5, 1)``."""
    return Entry(normalise_path(path), CHARDEV, mode & 0o7777, rdev=(major, minor))


def entry_from_fs(src: str | os.PathLike, path: str) -> Entry:
    """Entry for the file system object ``src`` (not followed if a symlink), stored as ``path``.

    Regular files get 0755 if any execute bit is set in the source, else 0644;
    directories get 0755.  Other types (sockets, fifos, block devices) are refused.
    """
    st = os.lstat(src)
    if stat.S_ISLNK(st.st_mode):
        return symlink_entry(path, os.readlink(src))
    if stat.S_ISDIR(st.st_mode):
        return dir_entry(path)
    if stat.S_ISREG(st.st_mode):
        return file_entry(path, Path(src).read_bytes(), executable=bool(st.st_mode & 0o111))
    if stat.S_ISCHR(st.st_mode):
        return chardev_entry(path, os.major(st.st_rdev), os.minor(st.st_rdev), st.st_mode & 0o7777)
    raise CpioError(f"unsupported file type for {src}: {stat.filemode(st.st_mode)}")


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(ino: int, mode: int, nlink: int, mtime: int, filesize: int,
            rdev: tuple[int, int], namesize: int) -> bytes:
    fields = (ino, mode, 0, 0, nlink, mtime, filesize, 0, 0, rdev[0], rdev[1], namesize, 0)
    for f in fields:
        if not 0 <= f <= 0xFFFFFFFF:
            raise CpioError(f"header field out of range: {f}")
    return MAGIC + b"".join(b"%08X" % f for f in fields)


def _member(ino: int, mode: int, nlink: int, mtime: int, name: str, payload: bytes,
            rdev: tuple[int, int] = (0, 0)) -> bytes:
    bname = name.encode() + b"\0"
    head = _header(ino, mode, nlink, mtime, len(payload), rdev, len(bname)) + bname
    return head + _pad4(len(head)) + payload + _pad4(len(payload))


def sorted_entries(entries: Iterable[Entry]) -> list[Entry]:
    """Entries sorted by path (bytewise); duplicate paths are an error.

    Bytewise order puts every directory before its contents, which is what the
    kernel's unpacker needs (it does not create missing parents).
    """
    by_path: dict[str, Entry] = {}
    for e in entries:
        if e.kind not in _TYPE_BITS:
            raise CpioError(f"unknown entry kind {e.kind!r} for {e.path!r}")
        if e.path in by_path:
            if by_path[e.path] == e:
                continue
            raise CpioError(f"duplicate archive path with different content: {e.path!r}")
        by_path[e.path] = e
    return [by_path[p] for p in sorted(by_path, key=lambda p: p.encode())]


def archive_bytes(entries: Iterable[Entry], mtime: int = 0) -> bytes:
    """The complete archive for ``entries`` as bytes (see :func:`write_cpio`)."""
    out = bytearray()
    for ino, e in enumerate(sorted_entries(entries), start=1):
        nlink = 2 if e.kind == DIR else 1
        out += _member(ino, _TYPE_BITS[e.kind] | (e.mode & 0o7777), nlink, mtime,
                       e.path, e.payload, e.rdev)
    out += _member(0, 0, 1, 0, TRAILER, b"")
    return bytes(out)


def write_cpio(entries: Iterable[Entry], out: str | os.PathLike | BinaryIO, mtime: int = 0) -> None:
    """Write ``entries`` as a newc archive to a path or a binary file object.

    Deterministic: sorted by path, ``mtime`` for every entry, uid/gid 0,
    sequential inode numbers, nlink 2 for directories and 1 otherwise.
    A path is written via a temporary file and renamed into place.
    """
    data = archive_bytes(entries, mtime=mtime)
    if hasattr(out, "write"):
        out.write(data)  # type: ignore[union-attr]
        return
    write_bytes_atomic(Path(out), data, fsync=True)


@dataclass(frozen=True)
class Member:
    """A parsed archive member with all header fields (used for checks and tests)."""

    name: str
    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    devmajor: int
    devminor: int
    rdevmajor: int
    rdevminor: int
    data: bytes

    @property
    def kind(self) -> str:
        return _BITS_TYPE.get(stat.S_IFMT(self.mode), "other")

    def to_entry(self) -> Entry:
        kind = self.kind
        if kind == SYMLINK:
            return Entry(self.name, kind, self.mode & 0o7777, target=self.data.decode())
        if kind == FILE:
            return Entry(self.name, kind, self.mode & 0o7777, data=self.data)
        return Entry(self.name, kind, self.mode & 0o7777, rdev=(self.rdevmajor, self.rdevminor))


def read_cpio(data: bytes) -> list[Member]:
    """Parse a newc archive (up to and excluding the trailer)."""
    members: list[Member] = []
    pos = 0
    while True:
        head = data[pos:pos + HEADER_LEN]
        if len(head) < HEADER_LEN:
            raise CpioError(f"truncated header at offset {pos}")
        if head[:6] != MAGIC:
            raise CpioError(f"bad magic {head[:6]!r} at offset {pos}")
        try:
            f = [int(head[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        except ValueError as exc:
            raise CpioError(f"bad header field at offset {pos}") from exc
        ino, mode, uid, gid, nlink, mtime, size, dmaj, dmin, rmaj, rmin, namesize, _check = f
        name_end = pos + HEADER_LEN + namesize
        raw_name = data[pos + HEADER_LEN:name_end]
        if len(raw_name) != namesize or not raw_name.endswith(b"\0"):
            raise CpioError(f"bad name at offset {pos}")
        name = raw_name[:-1].decode()
        dstart = name_end + (-(name_end) % 4)
        body = data[dstart:dstart + size]
        if len(body) != size:
            raise CpioError(f"truncated data for {name!r}")
        pos = dstart + size + (-(dstart + size) % 4)
        if name == TRAILER:
            return members
        members.append(Member(name, ino, mode, uid, gid, nlink, mtime, dmaj, dmin, rmaj, rmin, body))
