"""The guest's serial console log: the contract's marker lines, following the log, its last lines.

Also the tail of QEMU's stderr log, read the same way.
"""

from __future__ import annotations

import re
from pathlib import Path

INIT_MARKER = "GUESTIO: init started"
GUEST_ERROR_MARKER = "GUESTIO: error:"  # the guest init reports setup failures like this
JOB_STARTED_MARKER = "GUESTIO: job started"
JOB_FINISHED_RE = re.compile(r"GUESTIO: job finished status=(-?\d+)")
# A job names a window of itself: echo "GUESTIO: phase NAME" >/dev/kmsg (the plugin's phases too).
PHASE_RE = re.compile(r"GUESTIO: phase ([A-Za-z0-9_.:-]{1,63})\s*$")
# Kernel messages start with "[    1.234567] " (and "[    T1] " with PRINTK_CALLER).
PANIC_RE = re.compile(r"^(?:\[[^\]]*\]\s*)*(?:Kernel panic - not syncing|Oops:|BUG:)")

STDERR_TAIL_CHARS = 2000


def tail_text(path: Path, chars: int = STDERR_TAIL_CHARS) -> str:
    try:
        data = path.read_bytes()[-chars * 4:]
    except OSError:
        return ""
    return data.decode("utf-8", "replace").strip()[-chars:]


ANSI_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b.|[\x00-\x08\x0b-\x1f\x7f]")


def last_serial_line(path: Path) -> str:
    """Last non-empty serial line, without terminal escapes (SeaBIOS clears the screen)."""
    for line in reversed(tail_text(path, 4000).splitlines()):
        line = ANSI_ESCAPES.sub("", line).strip()
        if line:
            return line
    return "(none)"


class SerialFollower:
    """Incrementally read complete lines from the growing serial log."""

    def __init__(self, path: Path):
        self.path = path
        self._f = None
        self._partial = b""

    def lines(self, final: bool = False) -> list[str]:
        if self._f is None:
            try:
                self._f = open(self.path, "rb")
            except FileNotFoundError:
                return []
        data = self._partial + self._f.read()
        *complete, self._partial = data.split(b"\n")
        if final and self._partial:
            complete.append(self._partial)
            self._partial = b""
        return [c.decode("utf-8", "replace").rstrip("\r") for c in complete]

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


def serial_tail(path: Path, lines: int = 8) -> list[str]:
    """The last non-empty serial lines, without terminal escapes."""
    out = [ANSI_ESCAPES.sub("", ln).strip() for ln in tail_text(path, 8000).splitlines()]
    return [ln for ln in out if ln][-lines:] or ["(none)"]
