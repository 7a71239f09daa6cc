"""An offline pack: what a bare host (no apt, no network, little room) needs to run the KVM
acceptance profile from prebuilt artifacts, in one tarball.

The pack (``guestio-offline/``, made by rule ``offline_pack``) holds:

* the repository's tracked files (``git ls-files``) and, unless left out, its ``.venv``;
* ``prebuilt/kernels/<variant>/``: each kernel's bzImage, System.map, vmlinux, config, build.json;
* ``prebuilt/image/``: the initramfs, xz-compressed (unpacked once on the host), and its manifest;
* ``prebuilt/qemu/<variant>/``: each QEMU variant's build.json and a launcher; the binary itself
  in ``prebuilt/libexec/``, the shared libraries ``ldd`` names for it (the dynamic loader among
  them) in ``prebuilt/lib/``, the firmware its machine loads in ``prebuilt/firmware/``;
* ``prebuilt/bin/``: launchers of the host-side tools of the benchmarks (bonnie++ for the native
  runs, netserver/netperf/iperf3 for the network servers), their libraries in ``prebuilt/lib/``;
* ``prebuilt/pack.json`` (what is in it, with sha256) and ``prebuilt/offline.yaml`` (the config
  that points the pipeline at it), and ``run-offline.sh``.

A launcher runs its binary through the carried dynamic loader with ``--library-path`` set to the
carried libraries, so the host's own libraries (or their absence) do not matter, and ``exec``s, so
the process that runs is the binary's (the KVM tracer follows QEMU's pid).  A QEMU built with
modules (the distribution's: accel-tcg is one) gets its module directory through
``QEMU_MODULE_DIR``.
"""

from __future__ import annotations

import json
import lzma
import os
import platform
import re
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from guestio.util import sha256_file, write_json_atomic, write_text_atomic

__all__ = ["OfflinePackError", "Library", "shared_libraries", "pack_binary", "pack_firmware", "make_pack",
           "install_kernel", "install_qemu", "install_image", "read_pack", "qemu_module_dir", "HOST_TOOLS",
           "PACK_FILE"]

#: The host-side programs the acceptance run's benchmarks start (by name, from PATH).
HOST_TOOLS = ("bonnie++", "netserver", "netperf", "iperf3")
PACK_FILE = "pack.json"
TOP = "guestio-offline"

_LDD_LINE = re.compile(r"^\s*(?:(\S+)\s+=>\s+)?(\S+)?\s*(?:\(0x[0-9a-f]+\))?\s*$")


class OfflinePackError(RuntimeError):
    pass


@dataclass(frozen=True)
class Library:
    soname: str       # the name the binary asks for (the file name in lib/)
    path: Path        # the file ldd resolved it to (symlinks followed)
    loader: bool = False


def shared_libraries(binary: Path | str) -> list[Library]:
    """The shared libraries *binary* loads, as ``ldd`` resolves them on this host, and its dynamic
    loader; OfflinePackError if one is not found or the binary is not dynamic."""
    binary = Path(binary)
    done = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    text = done.stdout + done.stderr
    if done.returncode != 0 or "not a dynamic executable" in text:
        raise OfflinePackError(f"ldd {binary}: {text.strip() or 'failed'}")
    libs, missing = [], []
    for line in done.stdout.splitlines():
        line = line.strip()
        if not line or line.startswith("linux-vdso") or line.startswith("linux-gate"):
            continue
        if "=> not found" in line:
            missing.append(line.split()[0])
            continue
        if "=>" in line:
            soname, rest = (s.strip() for s in line.split("=>", 1))
            path = rest.split(" (0x")[0].strip()
            if path:
                libs.append(Library(soname, Path(path).resolve()))
        else:   # the loader: "/lib64/ld-linux-x86-64.so.2 (0x...)"
            path = line.split(" (0x")[0].strip()
            libs.append(Library(Path(path).name, Path(path).resolve(), loader=True))
    if missing:
        raise OfflinePackError(f"{binary}: ldd finds no {', '.join(missing)} on this host")
    if not any(lib.loader for lib in libs):
        raise OfflinePackError(f"{binary}: ldd names no dynamic loader")
    return libs


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(src).resolve(), dest)


LAUNCHER = """\
#!/bin/sh
# guestio offline pack: {name}, run with the libraries it was packed with (ldd on the build host),
# through the dynamic loader packed with them; whatever this host has does not count.
here=$(dirname "$(readlink -f "$0")")
pack="$here/{up}"
{env}exec "$pack/lib/{loader}" --library-path "$pack/lib" "$pack/libexec/{name}" "$@"
"""


def pack_binary(binary: Path | str, prebuilt: Path, name: str, *, launcher: Path | None = None,
                modules_dir: Path | str | None = None) -> dict:
    """Copy *binary* to prebuilt/libexec/<name> and its libraries to prebuilt/lib/, and write its
    launcher (default prebuilt/bin/<name>).  *modules_dir*: a QEMU's module directory, packed as
    prebuilt/lib/qemu-modules/<name>/ with the modules' own libraries.  Returns what was packed."""
    prebuilt = Path(prebuilt)
    binary = Path(binary).resolve()
    libs = shared_libraries(binary)
    modules = []
    if modules_dir is not None and Path(modules_dir).is_dir():
        for module in sorted(Path(modules_dir).glob("*.so")):
            try:
                libs += [lib for lib in shared_libraries(module) if not lib.loader]
            except OfflinePackError:
                continue   # a module whose libraries this host lacks: QEMU loads it only on demand
            _copy(module, prebuilt / "lib" / "qemu-modules" / name / module.name)
            modules.append(module.name)
    _copy(binary, prebuilt / "libexec" / name)
    seen = {}
    for lib in libs:
        if seen.setdefault(lib.soname, lib.path) != lib.path:
            raise OfflinePackError(f"{lib.soname} resolves to both {seen[lib.soname]} and {lib.path}")
        if not (prebuilt / "lib" / lib.soname).exists():
            _copy(lib.path, prebuilt / "lib" / lib.soname)
    loader = next(lib.soname for lib in libs if lib.loader)
    launcher = Path(launcher) if launcher is not None else prebuilt / "bin" / name
    up = os.path.relpath(prebuilt, launcher.parent)
    env = f'QEMU_MODULE_DIR="$pack/lib/qemu-modules/{name}" ' if modules else ""
    launcher.parent.mkdir(parents=True, exist_ok=True)
    launcher.write_text(LAUNCHER.format(name=name, up=up, loader=loader, env=env))
    launcher.chmod(0o755)
    return {"name": name, "from": str(binary), "sha256": sha256_file(binary), "size_bytes": binary.stat().st_size,
            "launcher": os.path.relpath(launcher, prebuilt), "libraries": sorted({lib.soname for lib in libs}),
            "modules": modules}


def pack_firmware(dirs: Iterable[Path | str], dest: Path) -> list[str]:
    """Every file of the firmware directories a QEMU searches, in its search order (the first of a
    name wins), flattened into *dest* (given to QEMU as -L)."""
    dest = Path(dest)
    names = []
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            if f.name in names or not f.resolve().is_file():
                continue
            _copy(f, dest / f.name)
            names.append(f.name)
    return names


def qemu_module_dir() -> Path | None:
    """Where the distribution's QEMU keeps its modules (Debian: /usr/lib/<multiarch>/qemu)."""
    for d in (Path("/usr/lib") / f"{platform.machine()}-linux-gnu" / "qemu", Path("/usr/lib64/qemu"),
              Path("/usr/lib/qemu")):
        if d.is_dir() and any(d.glob("*.so")):
            return d
    return None


def _xz(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as i, lzma.open(dest, "wb", preset=6) as o:
        shutil.copyfileobj(i, o, 1 << 20)


def _tracked_files(repo: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and (repo / p).is_file()]


def _commit(repo: Path) -> dict:
    def git(*args):
        r = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


RUN_OFFLINE = """\
#!/bin/sh
# Run the KVM acceptance profile from this pack (docs/kvm-acceptance.md), on a host without apt
# or network: the kernels, image, QEMU and host tools are the pack's (prebuilt/).
#   ./run-offline.sh                 # the acceptance run (target kvm_acceptance)
#   ./run-offline.sh -n              # what would run
set -eu
root=$(cd "$(dirname "$0")" && pwd)
cd "$root"
if [ ! -x .venv/bin/python3 ] || ! .venv/bin/python3 -c '' 2>/dev/null; then
    # The packed environment's interpreter is the build host's: use this host's python{python}.
    host=$(command -v python{python}) || {{
        echo "run-offline.sh: needs python{python} (the pack's .venv was made with it)" >&2; exit 1; }}
    ln -sf "$host" .venv/bin/python3
    sed -i "s|^home = .*|home = $(dirname "$host")|" .venv/pyvenv.cfg
fi
export PATH="$root/prebuilt/bin:$PATH" PYTHONPATH="$root/workflow"
exec .venv/bin/python3 -m snakemake --cores all kvm_acceptance "$@" \\
    --configfile config/kvm-acceptance.yaml prebuilt/offline.yaml
"""


def make_pack(*, out: Path, repo: Path, kernels: dict[str, dict[str, Path]], qemus: dict[str, Path],
              image: Path, image_manifest: Path, host_tools: Iterable[str] = HOST_TOOLS,
              firmware_dirs: Iterable[str] = (), venv: Path | None = None, work: Path, log=print) -> dict:
    """Write the pack tarball *out* (gzip) from the built artifacts; *work* is a scratch directory.

    *kernels*: variant -> {output name: file} (kernel_outputs); *qemus*: variant -> build.json.
    """
    from guestio.build.qemu import load_build

    repo, work = Path(repo), Path(work)
    shutil.rmtree(work, ignore_errors=True)
    prebuilt = work / TOP / "prebuilt"
    record = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "build_host": platform.node(),
              "machine": platform.machine(), "guestio": _commit(repo),
              "python": ".".join(platform.python_version_tuple()[:2]), "kernels": {}, "qemu": {}, "tools": {}}
    for variant, files in kernels.items():
        for name, path in files.items():
            _copy(Path(path), prebuilt / "kernels" / variant / Path(path).name)
        record["kernels"][variant] = sorted(Path(p).name for p in files.values())
    _xz(Path(image), prebuilt / "image" / "initramfs.cpio.xz")
    _copy(Path(image_manifest), prebuilt / "image" / "initramfs.json")
    record["image"] = {"sha256": sha256_file(image), "size_bytes": Path(image).stat().st_size}
    firmware = set()
    for variant, build_json in qemus.items():
        build = load_build(build_json)
        # The distribution's QEMU loads modules (accel-tcg among them); a guestio build has none.
        modules = qemu_module_dir() if build.get("kind") == "host" else None
        packed = pack_binary(build["binary"], prebuilt, f"qemu-{variant}",
                             launcher=prebuilt / "qemu" / variant / "qemu-system-x86_64", modules_dir=modules)
        _copy(Path(build_json), prebuilt / "qemu" / variant / "build.json")
        record["qemu"][variant] = packed
        firmware.update(d for d in (build.get("firmware_path") or []) if d)
        if build.get("firmware_dir"):
            firmware.add(build["firmware_dir"])
    from guestio.build.qemu import FIRMWARE_PATH
    record["firmware"] = pack_firmware([*FIRMWARE_PATH, *sorted(firmware - set(FIRMWARE_PATH)), *firmware_dirs],
                                       prebuilt / "firmware")
    for tool in host_tools:
        found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
        if found is None:
            raise OfflinePackError(f"the benchmarks' host tool {tool} is not installed here (run envs/setup.sh)")
        record["tools"][tool] = pack_binary(found, prebuilt, tool)
    top = work / TOP
    for rel in _tracked_files(repo):
        _copy(repo / rel, top / rel)
    write_text_atomic(prebuilt / "offline.yaml",
                      "# The pipeline reads the pack's prebuilt artifacts (guestio.build.offline).\n"
                      "offline:\n  prebuilt: prebuilt\n")
    write_text_atomic(top / "run-offline.sh", RUN_OFFLINE.format(python=record["python"]))
    (top / "run-offline.sh").chmod(0o755)
    record["files"] = {str(p.relative_to(prebuilt)): sha256_file(p)
                       for p in sorted(prebuilt.rglob("*")) if p.is_file() and p.name != PACK_FILE}
    write_json_atomic(prebuilt / PACK_FILE, record)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        tar.add(top, arcname=TOP)
        if venv is not None and Path(venv).is_dir():
            log(f"adding {venv} (the Python environment; leave it out with offline.venv: false)")
            tar.add(venv, arcname=f"{TOP}/.venv",
                    filter=lambda ti: None if "__pycache__" in ti.name.split("/") else ti)
    tmp.replace(out)
    shutil.rmtree(work, ignore_errors=True)
    return record


# --------------------------------------------------------------------------
# On the offline host: the pipeline's build outputs from the pack


def read_pack(prebuilt: Path | str) -> dict:
    path = Path(prebuilt) / PACK_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise OfflinePackError(f"{path}: not an offline pack's record ({error}); unpack the pack made by "
                               "rule offline_pack and set prebuilt to its prebuilt/ directory") from None


def _verified(prebuilt: Path, rel: str, pack: dict) -> Path:
    path = Path(prebuilt) / rel
    want = pack["files"].get(rel)
    if want is None or not path.is_file() or sha256_file(path) != want:
        raise OfflinePackError(f"{path}: missing or not the file the pack recorded (unpack the pack again)")
    return path


def _link_or_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)   # no second copy where the pack and results share a file system
    except OSError:
        shutil.copy2(src, tmp)
    tmp.replace(dest)


def install_kernel(prebuilt: Path, variant: str, outputs: dict[str, str]) -> None:
    """The kernel rule's outputs from the pack's kernel of *variant* (checked against pack.json)."""
    pack = read_pack(prebuilt)
    if variant not in pack["kernels"]:
        raise OfflinePackError(f"the pack has no kernel {variant} (it has {', '.join(pack['kernels'])})")
    for dest in outputs.values():
        _link_or_copy(_verified(prebuilt, f"kernels/{variant}/{Path(dest).name}", pack), Path(dest))


def install_image(prebuilt: Path, cpio: Path, manifest: Path) -> None:
    pack = read_pack(prebuilt)
    src = _verified(prebuilt, "image/initramfs.cpio.xz", pack)
    cpio = Path(cpio)
    cpio.parent.mkdir(parents=True, exist_ok=True)
    tmp = cpio.with_name(f".{cpio.name}.{os.getpid()}.tmp")
    with lzma.open(src, "rb") as i, open(tmp, "wb") as o:
        shutil.copyfileobj(i, o, 1 << 20)
    if sha256_file(tmp) != pack["image"]["sha256"]:
        tmp.unlink()
        raise OfflinePackError(f"{src}: unpacks to another image than the one packed")
    tmp.replace(cpio)
    _link_or_copy(_verified(prebuilt, "image/initramfs.json", pack), Path(manifest))


def install_qemu(prebuilt: Path, variant: str, binary: Path | None, build_json: Path) -> dict:
    """build.json for a packed QEMU variant: its launcher and firmware by absolute path, the packed
    binary's sha256 and size kept under ``packed`` (the launcher's size is not the binary's);
    *binary* (the qemu rule's binary output, if it has one) becomes a link to the launcher."""
    prebuilt = Path(prebuilt).absolute()
    pack = read_pack(prebuilt)
    packed = pack["qemu"].get(variant)
    if packed is None:
        raise OfflinePackError(f"the pack has no QEMU {variant} (it has {', '.join(pack['qemu'])})")
    _verified(prebuilt, f"libexec/{packed['name']}", pack)
    launcher = _verified(prebuilt, packed["launcher"], pack)
    record = json.loads(_verified(prebuilt, f"qemu/{variant}/build.json", pack).read_text())
    record.update(kind="packed", binary=str(launcher), size_bytes=None, firmware_dir=str(prebuilt / "firmware"),
                  packed={**packed, "pack": str(prebuilt), "built_kind": record.get("kind")})
    if binary is not None:
        binary = Path(binary)
        binary.parent.mkdir(parents=True, exist_ok=True)
        binary.unlink(missing_ok=True)
        binary.symlink_to(launcher)
    write_json_atomic(Path(build_json), record)
    return record
