"""Build the guest initramfs from Debian packages.

Pipeline (:func:`~.initramfs.build_initramfs`), one step per module:

1. :mod:`.debs`: :func:`~.debs.download_debs` resolves the ``Depends``/``Pre-Depends`` closure of the
   requested packages with ``apt-cache depends`` and fetches the candidate
   ``.deb`` files with ``apt-get download`` into a cache directory (a file that
   is already there with the archive's SHA256 is not fetched again).
2. :mod:`.debs`: every ``.deb`` of the closure is extracted into a fresh staging root with
   ``dpkg-deb -X`` (the listing tells which package owns which path).
3. :mod:`.elf`: the wanted programs are located in the staging root, and their shared
   library closure is computed from the ELF ``PT_INTERP`` and ``DT_NEEDED``
   entries (parsed here in Python), resolved ONLY inside the staging root.
   A library that cannot be found is a :class:`MissingLibraryError`.
4. :mod:`.initramfs`: only those files (plus the symlinks on the way to them), busybox applet
   symlinks (from ``busybox --list-full`` run on the extracted static busybox),
   a few generated ``/etc`` files, ``/dev/console`` and ``/init`` go into a
   deterministic newc cpio archive (:mod:`guestio.build.cpio`).
5. A JSON manifest (debs with SHA256, every image entry with its SHA256, the
   image SHA256) is written beside the image.

Nothing from the host's installed binaries ends up in the image; the host only
provides apt, dpkg-deb and the CPU to run the (static) busybox for its applet
list.  ``python -m guestio.build.image`` builds one from the command line.
"""

from __future__ import annotations

from typing import Sequence


class ImageError(RuntimeError):
    """The image cannot be built (package resolution, download, missing program ...)."""


class MissingLibraryError(ImageError):
    """A program needs a shared library (or loader) that is not in the staging root."""

    def __init__(self, program: str, library: str, needed_by: str, searched: Sequence[str]):
        self.program = program
        self.library = library
        self.needed_by = needed_by
        self.searched = list(searched)
        via = "" if needed_by == program else f" (needed by {needed_by})"
        super().__init__(
            f"program {program}: library {library}{via} not found in the staging root "
            f"(searched: {', '.join(searched) or 'nothing'})"
        )
