"""Scratch files of one VM run: its private temp dir (the QMP socket) and sparse disk copies."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

_UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the NUL


def private_tmpdir() -> Path:
    """A 0700 temp dir short enough to hold the QMP unix socket path."""
    tmp = Path(tempfile.mkdtemp(prefix="guestio-"))
    if len(os.fsencode(tmp / "qmp.sock")) > _UNIX_PATH_MAX:
        shutil.rmtree(tmp)
        tmp = Path(tempfile.mkdtemp(prefix="guestio-", dir="/tmp"))
    return tmp


def copy_sparse(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    try:
        subprocess.run(["cp", "--sparse=always", "--", os.fspath(src), os.fspath(tmp)],
                       check=True, capture_output=True, text=True)
        os.replace(tmp, dest)
    except subprocess.CalledProcessError as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise OSError(f"cannot copy disk image {src} to {dest}: {exc.stderr.strip()}") from None
