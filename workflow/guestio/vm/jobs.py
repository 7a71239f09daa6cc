"""VM runs as pipeline jobs: the spec from config and the rule's inputs, one run, provenance.

Every VM run of a rule goes through :func:`run_job` (or, for workloads that build
their own spec, through :func:`qemu_of` and the lifecycle in guestio.vm.machine),
so each one runs on the QEMU build named by the rule's ``qemu`` input and every
provenance names it.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Callable, Iterable

from guestio.provenance import run_provenance
from guestio.util import write_json_atomic
from guestio.vm import DiskSpec, Hooks, NicSpec, RunResult, VMRunError, VMSpec, run_vm

__all__ = ["VMRunError", "accelerator_of", "guest_append", "qemu_of", "say_to", "spec_from_config",
           "run_job", "write_provenance"]


def accelerator_of(accelerator_json: Path) -> str:
    return json.loads(Path(accelerator_json).read_text())["accelerator"]


def qemu_of(inputs) -> dict:
    """{"qemu": binary, "firmware_dir": ...} for VMSpec, from the rule's ``qemu`` input (build.json)."""
    from guestio.build.qemu import load_build

    build = load_build(Path(inputs.qemu))
    return {"qemu": build["binary"], "firmware_dir": build.get("firmware_dir")}


def guest_append(vm: dict, extra: str = "") -> str:
    """The kernel command line every guest of a config gets (vm.tick: where its tick comes from)."""
    from guestio.workloads.tick import kernel_params

    return " ".join(filter(None, [vm["append"], f"clocksource={vm['clocksource']}",
                                  kernel_params(vm.get("tick", "pit")), extra]))


@contextlib.contextmanager
def say_to(log_path, label: str):
    """A progress printer: to the terminal with the run's label, and to the run's log.

    A failure inside is written to the log as well, so that the classification of a
    failed run (status, reason, serial tail) survives in the log Snakemake keeps.
    """
    with open(log_path, "w") as log:
        def say(msg: str) -> None:
            print(f"[{label}] {msg}", flush=True)
            print(msg, file=log, flush=True)

        try:
            yield say
        except Exception as exc:
            print(f"FAILED: {exc}", file=log, flush=True)
            raise


def spec_from_config(*, inputs, vm: dict, job: Path, memory_mib: int | None = None,
                     disks: Iterable[DiskSpec] = (), nics: Iterable[NicSpec] = (),
                     files: dict[str, Path] | None = None, append_extra: str = "") -> VMSpec:
    """The VM of a rule: its kernel, image, accelerator and QEMU inputs, sized by config."""
    return VMSpec(
        kernel=Path(inputs.bzimage), initrd=Path(inputs.initrd),
        append=guest_append(vm, append_extra),
        accel=accelerator_of(inputs.accelerator), memory_mib=memory_mib or vm["memory_mib"],
        cpus=vm["cpus"], job=Path(job), inputs=dict(files or {}), disks=list(disks), nics=list(nics),
        **qemu_of(inputs),
    )


def run_job(spec: VMSpec, outdir: Path, vm: dict, label: str, log: Callable[[str], None],
            hooks: Iterable[Hooks] = ()) -> RunResult:
    """Run the job; anything but a clean exit 0 raises VMRunError naming what happened and where."""
    return run_vm(spec, Path(outdir), boot_timeout_s=vm["boot_timeout_s"], job_timeout_s=vm["job_timeout_s"],
                  log=log, hooks=hooks, check=True, label=label)


def write_provenance(path: Path, *, repo: Path, inputs, job: Path, vm: dict, run_json: Path,
                     extra: dict | None = None) -> None:
    """inputs: the rule's input with host, accelerator, build, qemu and image_manifest entries;
    extra: more top-level entries (the run's measured tick: guestio.workloads.tick)."""
    write_json_atomic(Path(path), {**run_provenance(
        repo=repo, host=Path(inputs.host), accelerator=Path(inputs.accelerator),
        kernel_build=Path(inputs.build), image_manifest=Path(inputs.image_manifest),
        qemu_build=Path(inputs.qemu),
        run=run_json, job=job, vm=vm,
    ), **(extra or {})})
