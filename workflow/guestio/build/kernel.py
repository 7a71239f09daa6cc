"""Guest kernel source, patching and building.

The pristine source is extracted once.  Each variant gets a hard-linked copy
of it (files a patch touches are copied first, so the pristine tree never
changes), is patched there (guestio.build.patches, shared with the QEMU
build), and is built out of tree in ``<tree>/.build`` so that kbuild uses
relative paths; with ccache's base directory set, objects are
shared between variants and between checkouts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from guestio.build import ccache, kconfig
from guestio.build import patches
from guestio import progress
from guestio.util import atomic_path, exclusive, sha256_file, write_json_atomic

# Fixed build identity, so that two builds of the same input differ only where
# the compiler makes them, and ccache hits across variants.
REPRODUCIBLE_ENV = {
    "KBUILD_BUILD_TIMESTAMP": "Thu Jan  1 00:00:00 UTC 1970",
    "KBUILD_BUILD_USER": "guestio",
    "KBUILD_BUILD_HOST": "guestio",
    "KBUILD_BUILD_VERSION": "1",
    "LC_ALL": "C",
}

OUTPUT_FILES = {
    "bzImage": "arch/x86/boot/bzImage",
    "System.map": "System.map",
    "vmlinux": "vmlinux",
    "config": ".config",
}


class KernelBuildError(Exception):
    pass


def debian_package_version(package: str) -> str | None:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package],
            capture_output=True, text=True, check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def extract_source(tarball: Path, dest: Path) -> dict:
    """Extract a kernel tarball into dest (replacing it) and describe it."""
    tarball = Path(tarball)
    if not tarball.is_file():
        raise KernelBuildError(f"kernel source tarball {tarball} does not exist (is linux-source-6.1 installed?)")
    dest = Path(dest)
    # Another invocation (another results dir) may be copying its variant tree from dest.
    with exclusive(dest):
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        subprocess.run(["tar", "-xf", str(tarball), "-C", str(tmp), "--strip-components=1"], check=True)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    return {"tarball": str(tarball), "sha256": sha256_file(tarball), "kernelversion": kernel_version(dest)}


def kernel_version(tree: Path) -> str:
    fields = {}
    for line in (Path(tree) / "Makefile").read_text().splitlines()[:8]:
        if m := re.match(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)\s*=\s*(.*)$", line):
            fields[m.group(1)] = m.group(2).strip()
    return "{VERSION}.{PATCHLEVEL}.{SUBLEVEL}{EXTRAVERSION}".format(**{"EXTRAVERSION": "", **fields})


def patched_files(patch: Path) -> list[str]:
    return patches.patched_files(patch)


def apply_patches(tree: Path, patch_files: list[Path]) -> None:
    """Apply patches in order, each dry-run first (guestio.build.patches)."""
    patches.apply_patches(tree, patch_files, KernelBuildError)


def prepare_tree(pristine: Path, tree: Path, patch_files: list[Path]) -> None:
    """A hard-linked copy of the pristine source with the variant's patches applied."""
    patches.prepare_tree(pristine, tree, patch_files, KernelBuildError)


def build_env(ccache_dir: Path | None, workdir: Path | None = None) -> dict:
    """The build's environment; *workdir* (source and objects inside it) is ccache's base
    directory, so the same build in another clone, at any depth, hits (guestio.build.ccache)."""
    return ccache.env(ccache_dir, dict(os.environ, **REPRODUCIBLE_ENV), tree=workdir)


def arch_of(reqs: list[kconfig.Request]) -> str:
    """kbuild's ARCH for the layers: i386 when they turn CONFIG_64BIT off.  On an x86_64 host kbuild
    defaults to ARCH=x86_64, where Kconfig forces 64BIT on whatever a layer asks; ARCH=i386 is
    where a 32-bit x86 kernel (the paper's guest) is configured and built."""
    wanted = kconfig.effective(reqs).get("CONFIG_64BIT")
    return "i386" if wanted is not None and wanted.value is kconfig.NOT_SET else "x86_64"


def make(tree: Path, objdir: Path, args: list[str], env: dict, log, cc: str, arch: str = "x86_64") -> None:
    cmd = ["make", "-C", str(tree), f"O={objdir}", f"ARCH={arch}", f"CC={cc}", f"HOSTCC={cc}", *args]
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    result = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise KernelBuildError(f"`make {' '.join(args)}` failed in {tree} (exit {result.returncode}); see {log.name}")


def configure(tree: Path, objdir: Path, layers_root: Path, layers: list[str], env: dict, log, cc: str) -> str:
    """tinyconfig, then the layers, then olddefconfig; every request must survive.  Returns the
    kbuild ARCH the layers ask for."""
    reqs = kconfig.requests(layers_root, layers)
    arch = arch_of(reqs)
    make(tree, objdir, ["tinyconfig"], env, log, cc, arch)
    config_path = Path(objdir) / ".config"
    config_path.write_text(kconfig.apply(config_path.read_text(), reqs))
    make(tree, objdir, ["olddefconfig"], env, log, cc, arch)
    lost = kconfig.missing(config_path.read_text(), reqs)
    if lost:
        raise KernelBuildError(kconfig.describe_missing(lost))
    return arch


def collect(objdir: Path, outdir: Path) -> dict[str, str]:
    """Copy the build's products into outdir; return their sha256."""
    hashes = {}
    outdir.mkdir(parents=True, exist_ok=True)
    for name, rel in OUTPUT_FILES.items():
        with atomic_path(outdir / name) as tmp:
            shutil.copyfile(Path(objdir) / rel, tmp)
        hashes[name] = sha256_file(outdir / name)
    return hashes


def compiler_version(cc: str) -> str:
    compiler = cc.split()[-1]
    out = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0]


def build_variant(
    *,
    variant: str,
    layers: list[str],
    layers_root: Path,
    pristine: Path,
    source: dict,
    workdir: Path,
    outdir: Path,
    jobs: int,
    ccache_dir: Path | None,
    log_path: Path,
) -> dict:
    """Patch, configure and build one variant; write its products and build.json to outdir."""
    import time

    tree = Path(workdir).resolve() / "src"
    objdir = tree / ".build"
    patch_files = [p for layer in layers for p in kconfig.layer_patches(layers_root, layer)]
    cc = ccache.compiler(ccache_dir)
    env = build_env(ccache_dir, tree.parent)
    with open(log_path, "w") as log, exclusive(workdir, log=lambda msg: print(msg, file=log, flush=True)):
        started = time.monotonic()
        prepare_tree(Path(pristine).resolve(), tree, patch_files)
        arch = configure(tree, objdir, layers_root, layers, env, log, cc)
        # A cold build takes minutes: a line a minute, in the log and on stderr.
        with progress.heartbeat(lambda: f"kernel {variant}: {progress.compiled_objects(log_path)} objects compiled", log):
            make(tree, objdir, [f"-j{jobs}", "bzImage"], env, log, cc, arch)
        seconds = time.monotonic() - started
        outputs = collect(objdir, Path(outdir))
    record = {
        "variant": variant,
        "arch": arch,
        "layers": layers,
        "patches": patches.describe(patch_files),
        "fragments": [
            {"file": str(f), "sha256": sha256_file(f)}
            for f in (kconfig.layer_fragment(layers_root, name) for name in layers)
            if f is not None
        ],
        "source": source,
        "compiler": compiler_version(cc),
        "ccache": cc.startswith("ccache"),
        "jobs": jobs,
        "build_seconds": round(seconds, 1),
        "outputs": outputs,
    }
    write_json_atomic(Path(outdir) / "build.json", record)
    return record
