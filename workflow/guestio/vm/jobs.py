"""Running one guest job from the pipeline: spec from config, run, check, provenance."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Callable

from guestio.provenance import run_provenance
from guestio.vm.machine import DiskSpec, NicSpec, RunResult, VMSpec, run_vm
from guestio.util import write_json_atomic


class GuestRunError(Exception):
    pass


def accelerator_of(accelerator_json: Path) -> str:
    return json.loads(Path(accelerator_json).read_text())["accelerator"]


def guest_append(vm: dict, extra: str = "") -> str:
    """The kernel command line every guest of a config gets."""
    return " ".join(filter(None, [vm["append"], f"clocksource={vm['clocksource']}", extra]))


@contextlib.contextmanager
def say_to(log_path, label: str):
    """A progress printer: to the terminal with the run's label, and to the run's log."""
    with open(log_path, "w") as log:
        def say(msg: str) -> None:
            print(f"[{label}] {msg}", flush=True)
            print(msg, file=log, flush=True)

        yield say


def spec_from_config(*, kernel: Path, initrd: Path, accelerator_json: Path, vm: dict, job: Path,
                     disks: list[DiskSpec] = (), nics: list[NicSpec] = (),
                     inputs: dict[str, Path] | None = None, append_extra: str = "") -> VMSpec:
    return VMSpec(
        kernel=Path(kernel), initrd=Path(initrd),
        append=guest_append(vm, append_extra),
        accel=accelerator_of(accelerator_json), memory_mib=vm["memory_mib"], cpus=vm["cpus"],
        job=Path(job), inputs=dict(inputs or {}), disks=list(disks), nics=list(nics),
    )


def run_checked(spec: VMSpec, outdir: Path, vm: dict, label: str, log: Callable[[str], None]) -> RunResult:
    """Run the job; anything but a clean exit 0 is an error naming what happened and where to look."""
    result = run_vm(spec, Path(outdir), boot_timeout_s=vm["boot_timeout_s"], job_timeout_s=vm["job_timeout_s"], log=log)
    if not result.ok:
        raise GuestRunError(f"{label}: {result.status}: {result.reason} (serial log: {Path(outdir) / 'serial.log'})")
    return result


def write_provenance(path: Path, *, repo: Path, inputs, job: Path, vm: dict, run_json: Path) -> None:
    """inputs: the rule's input with host, accelerator, build and image_manifest entries."""
    write_json_atomic(Path(path), run_provenance(
        repo=repo, host=Path(inputs.host), accelerator=Path(inputs.accelerator),
        kernel_build=Path(inputs.build), image_manifest=Path(inputs.image_manifest),
        run=run_json, job=job, vm=vm,
    ))
