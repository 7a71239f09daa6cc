"""The programs of the image and their shared-library closure, read from ELF headers inside the staging root."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Sequence

from guestio.build.image import ImageError, MissingLibraryError

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
