"""Reproducible data disk images for the guest.

``make_data_disk`` creates a raw image and (optionally) formats it so that two
runs give byte-identical files:

* the UUID and the directory hash seed are derived from the label (UUIDv5),
* ``E2FSPROGS_FAKE_TIME`` (honoured by e2fsprogs' libext2fs) and
  ``SOURCE_DATE_EPOCH`` (honoured from e2fsprogs 1.47.1 on) fix every timestamp,
* lazy inode table / journal initialisation is off, so the whole metadata is
  written now (not by the guest kernel's ext4lazyinit thread during a benchmark),
* the mke2fs configuration is ours (``MKE2FS_CONFIG``), not the host's
  /etc/mke2fs.conf, so the feature set does not depend on the host.

The image is built in a temporary file next to the destination and renamed into
place, so an error never leaves a half-written image behind.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

FILESYSTEMS = ("ext4", "ext3", "ext2", "none")

# The feature set of Debian 12's /etc/mke2fs.conf, pinned here.  All of it is
# supported by Linux 6.1.
MKE2FS_CONF = """\
[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384

[fs_types]
	ext3 = {
		features = has_journal
	}
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
	small = {
		blocksize = 1024
		inode_ratio = 4096
	}
	floppy = {
		blocksize = 1024
		inode_ratio = 8192
	}
"""

# A fixed namespace so that the same label always gives the same UUIDs.
_NAMESPACE = uuid.UUID("6b1f3c1e-4d2a-5a8e-9c57-2f0e8d9a7b41")
FAKE_TIME = 1262304000  # 2010-01-01T00:00:00Z; any fixed non-zero value (0 means "unset" to e2fsprogs)


class DiskError(RuntimeError):
    pass


def label_uuids(label: str) -> tuple[str, str]:
    """(filesystem UUID, hash seed UUID) derived deterministically from ``label``."""
    return (str(uuid.uuid5(_NAMESPACE, f"fs-uuid:{label}")),
            str(uuid.uuid5(_NAMESPACE, f"hash-seed:{label}")))


def make_data_disk(path: str | os.PathLike, size_mib: int, fs: str = "ext4",
                   label: str = "guestio-data") -> Path:
    """Create the raw disk image ``path`` of ``size_mib`` MiB and return its path.

    ``fs`` is ``"ext4"`` (default), ``"ext3"``, ``"ext2"`` or ``"none"`` (a sparse,
    zero-filled raw image).  Deterministic: the same arguments give the same bytes.
    """
    if fs not in FILESYSTEMS:
        raise DiskError(f"unsupported fs {fs!r} (one of {', '.join(FILESYSTEMS)})")
    if int(size_mib) != size_mib or size_mib <= 0:
        raise DiskError(f"size_mib must be a positive integer, not {size_mib!r}")
    if fs != "none" and size_mib < 8:
        raise DiskError(f"{fs} needs at least 8 MiB, not {size_mib}")
    if len(label.encode()) > 16:
        raise DiskError(f"ext label {label!r} is longer than 16 bytes")
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    conf = None
    try:
        with os.fdopen(fd, "wb") as f:
            f.truncate(int(size_mib) * 1024 * 1024)  # sparse: all zeros
        if fs != "none":
            fs_uuid, hash_seed = label_uuids(label)
            cfd, conf_name = tempfile.mkstemp(prefix="guestio-mke2fs-", suffix=".conf")
            conf = Path(conf_name)
            with os.fdopen(cfd, "w") as cf:
                cf.write(MKE2FS_CONF)
            env = {
                "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                "LC_ALL": "C",
                "MKE2FS_CONFIG": str(conf),
                "E2FSPROGS_FAKE_TIME": str(FAKE_TIME),
                "SOURCE_DATE_EPOCH": str(FAKE_TIME),
                "MKE2FS_SYNC": "0",
                "E2FSPROGS_SKIP_PROGRESS": "1",
            }
            cmd = [
                "mke2fs", "-t", fs, "-F", "-q",
                "-L", label,
                "-U", fs_uuid,
                "-E", f"hash_seed={hash_seed},lazy_itable_init=0,lazy_journal_init=0,"
                      "root_owner=0:0,nodiscard",
                "-m", "0",
                str(tmp),
            ]
            try:
                subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
            except FileNotFoundError as exc:
                raise DiskError("mke2fs not found (install e2fsprogs)") from exc
            except subprocess.CalledProcessError as exc:
                raise DiskError(f"mke2fs failed (rc={exc.returncode}): "
                                f"{(exc.stderr or exc.stdout).strip()}") from exc
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
        if conf is not None and conf.exists():
            conf.unlink()
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m guestio.build.disk", description=__doc__.split("\n\n")[0])
    ap.add_argument("path")
    ap.add_argument("size_mib", type=int)
    ap.add_argument("--fs", default="ext4", choices=FILESYSTEMS)
    ap.add_argument("--label", default="guestio-data")
    a = ap.parse_args(argv)
    try:
        make_data_disk(a.path, a.size_mib, fs=a.fs, label=a.label)
    except DiskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
