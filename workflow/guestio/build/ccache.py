"""The compiler cache that kernel and QEMU builds share: its environment, its compiler line
and its directory, in one place so that both builds hash alike and either may fill it first."""

import os
import shutil
import subprocess
from pathlib import Path

from guestio.build.hostdirs import expand, system_dir_problem

# Timestamps and the working directory left out of the hash, so that a rebuild in another
# work directory (a fresh clone, a bench's private tree) still hits.
_HIT_ANYWHERE = {
    "CCACHE_NOHASHDIR": "1",
    "CCACHE_SLOPPINESS": "time_macros,include_file_mtime,include_file_ctime,locale",
    "CCACHE_COMPILERCHECK": "content",
}


class CcacheDirError(ValueError):
    pass


def env(ccache_dir: Path | None, base: dict | None = None, *, tree: Path | None = None) -> dict:
    """base (default: this process's environment) with the cache at ccache_dir, or with ccache
    off when there is none (meson would pick ccache up by itself when it finds it).

    *tree* is the build's own work directory (source and objects both inside it): ccache's
    base directory.  Paths inside it are hashed relative to the compiler's working directory,
    the same in every clone; paths outside it (/usr/include, gcc's own headers) stay absolute,
    also the same everywhere.  A base directory of / would make those relative too
    (../../../../usr/include/...), so two trees at different depths would never share a hit.
    """
    out = dict(os.environ if base is None else base)
    # Inherited settings (a CCACHE_CONFIGPATH or CCACHE_BASEDIR of the user's) would change
    # where ccache writes or what it hashes: the build's own settings replace them all.
    for key in [k for k in out if k.startswith("CCACHE_")]:
        del out[key]
    if ccache_dir is None:
        out["CCACHE_DISABLE"] = "1"
        return out
    cache = expand(ccache_dir)
    # ccache.conf of the cache itself: `ccache --max-size` writes there and nowhere else.
    out.update(_HIT_ANYWHERE, CCACHE_DIR=str(cache), CCACHE_CONFIGPATH=str(cache / "ccache.conf"))
    if tree is not None:
        out["CCACHE_BASEDIR"] = os.path.realpath(tree)
    return out


def compiler(ccache_dir: Path | None) -> str:
    return "ccache gcc" if ccache_dir is not None and shutil.which("ccache") else "gcc"


def check_dir(ccache_dir: str | os.PathLike, key: str = "kernel.ccache_dir / qemu.ccache_dir") -> Path:
    """The cache directory, expanded; CcacheDirError when it is / or a system directory (ccache
    writes its ccache.conf and 16 subdirectories into it: with /etc, the system's ccache.conf)."""
    if problem := system_dir_problem(ccache_dir):
        raise CcacheDirError(f"{key}: {os.fspath(ccache_dir)!r} cannot hold the compiler cache: {problem}. "
                             "Set it to a directory of its own, e.g. ~/.cache/guestio/ccache, or null for no cache")
    return expand(ccache_dir)


def prepare(ccache_dir: str | None, max_size: str | None = None) -> Path | None:
    """The configured cache directory, checked and created, with its size limit set (in its own
    ccache.conf) when one is given; None when the config has no cache."""
    if not ccache_dir:
        return None
    path = check_dir(ccache_dir)
    path.mkdir(parents=True, exist_ok=True)
    if max_size and shutil.which("ccache"):
        subprocess.run(["ccache", "--max-size", max_size], env=env(path), check=False, capture_output=True)
    return path
