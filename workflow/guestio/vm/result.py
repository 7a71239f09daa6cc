"""How a VM run ended: :class:`RunResult`, its statuses, run.json, and the error for a failed run."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guestio.vm.console import serial_tail
from guestio.vm.spec import jsonable

#: Statuses a returned :class:`RunResult` can have.
STATUSES = (
    "ok",               # job ran, exit_status 0, results collected
    "job-failed",       # job ran and exited non-zero
    "boot-timeout",     # no "GUESTIO: init started" within boot_timeout_s
    "job-timeout",      # no "GUESTIO: job finished" within job_timeout_s after init
    "panic",            # kernel panic / Oops / BUG on the serial console
    "qemu-failed",      # QEMU did not start, crashed, or the guest died before init
    "results-missing",  # guest stopped without delivering a readable results tar
)
#: Extra statuses that only appear in run.json, when run_vm raises instead of returning.
RAISED_STATUSES = ("interrupted", "runner-error")


class VMRunError(RuntimeError):
    """A VM run did not end "ok": the one error for every way a guest job can fail.

    The message names the run, its status and reason, the last serial lines and
    where the run's files are; ``result`` and ``outdir`` carry the same.
    """

    def __init__(self, label: str, result: "RunResult", outdir: Path, detail: str = ""):
        self.label, self.result, self.outdir = label, result, Path(outdir)
        tail = "\n    ".join(serial_tail(self.outdir / "serial.log", 8))
        super().__init__(f"{label}: {result.status}: {result.reason}{detail}\n"
                         f"  run files: {self.outdir} (serial.log, qemu-stderr.log, run.json)\n"
                         f"  last serial lines:\n    {tail}")


@dataclass
class RunResult:
    status: str          # one of STATUSES
    reason: str          # human-readable explanation ("" for ok)
    exit_status: int | None = None  # the job's exit status, when known
    boot_s: float | None = None     # cont -> "GUESTIO: init started"
    job_s: float | None = None      # init started -> "GUESTIO: job finished"
    wall_s: float | None = None     # QEMU start -> QEMU reaped
    qemu_returncode: int | None = None  # negative: killed by that signal

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))


def load_run(path: Path | str) -> tuple[RunResult, dict[str, Any]]:
    """Read a run.json written by run_vm: (RunResult, spec as a JSON dict)."""
    data = json.loads(Path(path).read_text())
    names = {f.name for f in dataclasses.fields(RunResult)}
    return RunResult(**{k: v for k, v in data["result"].items() if k in names}), data["spec"]
