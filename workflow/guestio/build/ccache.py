"""The compiler cache that kernel and QEMU builds share: its environment, its compiler line
and its directory, in one place so that both builds hash alike and either may fill it first."""

import os
import shutil
import subprocess
from pathlib import Path

# Paths and timestamps left out of the hash, so that a rebuild in another work directory
# (a fresh clone, a bench's private tree) still hits.
_HIT_ANYWHERE = {
    "CCACHE_BASEDIR": "/",
    "CCACHE_NOHASHDIR": "1",
    "CCACHE_SLOPPINESS": "time_macros,include_file_mtime,include_file_ctime,locale",
    "CCACHE_COMPILERCHECK": "content",
}


def env(ccache_dir: Path | None, base: dict | None = None) -> dict:
    """base (default: this process's environment) with the cache at ccache_dir, or with ccache
    off when there is none (meson would pick ccache up by itself when it finds it)."""
    out = dict(os.environ if base is None else base)
    if ccache_dir is None:
        out["CCACHE_DISABLE"] = "1"
    else:
        out.update(_HIT_ANYWHERE, CCACHE_DIR=str(Path(ccache_dir).expanduser()))
        out.pop("CCACHE_DISABLE", None)
    return out


def compiler(ccache_dir: Path | None) -> str:
    return "ccache gcc" if ccache_dir is not None and shutil.which("ccache") else "gcc"


def prepare(ccache_dir: str | None, max_size: str | None = None) -> Path | None:
    """The configured cache directory, created, with its size limit set when one is given;
    None when the config has no cache."""
    if not ccache_dir:
        return None
    path = Path(ccache_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    if max_size and shutil.which("ccache"):
        subprocess.run(["ccache", "--max-size", max_size], env=env(path), check=False, capture_output=True)
    return path
