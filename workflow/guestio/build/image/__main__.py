"""Build the guest initramfs from Debian packages.

``python -m guestio.build.image --out FILE``: the image and its manifest, from the command line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from guestio.build.image import ImageError
from guestio.build.image.initramfs import DEFAULT_PACKAGES, DEFAULT_PROGRAMS, build_initramfs


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m guestio.build.image", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="initramfs (newc cpio) to write")
    ap.add_argument("--manifest", help="manifest JSON (default: OUT with .json suffix)")
    ap.add_argument("--deb-dir", default="build/debs", help=".deb download cache")
    ap.add_argument("--staging", default="build/staging", help="staging directory (wiped)")
    ap.add_argument("--package", action="append", dest="packages",
                    help=f"package to include (repeatable; default {' '.join(DEFAULT_PACKAGES)})")
    ap.add_argument("--program", action="append", dest="programs",
                    help=f"program to include (repeatable; default {' '.join(DEFAULT_PROGRAMS)})")
    ap.add_argument("--mtime", type=int, default=0)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    out = Path(a.out)
    try:
        m = build_initramfs(out, a.manifest or out.with_suffix(".json"), a.deb_dir, a.staging,
                            programs=tuple(a.programs or DEFAULT_PROGRAMS),
                            packages=tuple(a.packages or DEFAULT_PACKAGES), mtime=a.mtime)
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{out} {m['image']['size']} {m['image']['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
