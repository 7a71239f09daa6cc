"""The tar of ``/guestio/out`` the guest sends back, extracted safely into the run's results/."""

from __future__ import annotations

import logging
import shutil
import tarfile
from pathlib import Path, PurePosixPath

logger = logging.getLogger(__name__)


class UnsafeTar(Exception):
    pass


def extract_results(tar_path: Path, dest: Path) -> list[str]:
    """Extract regular files and directories only; refuse absolute and '..' paths."""
    dest.mkdir(parents=True, exist_ok=True)
    extracted = []
    with tarfile.open(tar_path, mode="r:*") as tf:
        for member in tf:
            posix = PurePosixPath(member.name)
            if posix.is_absolute() or ".." in posix.parts:
                raise UnsafeTar(f"unsafe path in results tar: {member.name!r}")
            parts = [p for p in posix.parts if p not in ("", ".")]
            if not parts:
                continue
            target = dest.joinpath(*parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isreg():
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(member)
                assert src is not None
                with src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                target.chmod(0o755 if member.mode & 0o111 else 0o644)
                extracted.append("/".join(parts))
            else:
                logger.warning("results tar: skipping non-regular member %r", member.name)
    return extracted
