"""bonnie++ in a guest (the VM side of Fig 1, Fig 2 and Fig 6): the job on a fresh copy of the data
disk, and what the job recorded beside the benchmark."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from guestio.analysis.measurements import Measurement
from guestio.vm import QEMU_BINARY, DiskSpec, Hooks, RunResult, VMRunError, VMSpec, run_vm
from guestio.workloads.bonnie import (JOB_SCRIPT, REQUIRED_METRICS, bonnie_args, check_size, output_tail,
                                      parse_csv_file)


def guest_device(interface: str) -> str:
    """The guest's block device for the only data disk on *interface*."""
    devices = {"ide": "/dev/sda", "virtio": "/dev/vda"}
    try:
        return devices[interface]
    except KeyError:
        raise ValueError(f"disk interface must be one of {', '.join(devices)}, "
                         f"not {interface!r}") from None


@dataclass(frozen=True)
class GuestInfo:
    """What bonnie.sh recorded beside the benchmark."""
    scheduler: str                   # the effective I/O scheduler (the one in brackets)
    schedulers: tuple[str, ...]      # all the kernel offered for the device
    clocksource: str                 # before bonnie++ ran
    clocksource_after: str           # after it ran ("" if not recorded)
    interrupts_before: str = field(repr=False, default="")
    interrupts_after: str = field(repr=False, default="")


def read_guest_info(results_dir: os.PathLike | str) -> GuestInfo:
    """Read scheduler.txt, clocksource*.txt and the /proc/interrupts snapshots of a guest run."""
    results = Path(results_dir)
    line = (results / "scheduler.txt").read_text().strip()
    effective = re.search(r"\[([^\]]+)\]", line)
    # A device without a queue scheduler choice prints just "none".
    scheduler = effective.group(1) if effective else line
    schedulers = tuple(s.strip("[]") for s in line.split())

    def read(name: str) -> str:
        with contextlib.suppress(FileNotFoundError):
            return (results / name).read_text()
        return ""

    return GuestInfo(scheduler, schedulers, (results / "clocksource.txt").read_text().strip(),
                     read("clocksource-after.txt").strip(),
                     read("interrupts-before.txt"), read("interrupts-after.txt"))


def run_vm_bonnie(*, kernel: os.PathLike | str, initrd: os.PathLike | str, append: str,
                  accel: str, memory_mib: int, data_disk: os.PathLike | str,
                  interface: str = "ide", cache: str = "none", size_mib: int, ram_mib: int,
                  io_scheduler: str | None = None, outdir: os.PathLike | str,
                  boot_timeout_s: float, job_timeout_s: float,
                  log: Callable[[str], None] | None = None, cpus: int = 1,
                  label: str | None = None, mount_opts: str | None = None,
                  machine_opts: str = "", required: Iterable[str] = REQUIRED_METRICS,
                  hooks: Iterable[Hooks] = (), qemu: str = QEMU_BINARY,
                  firmware_dir: str | None = None, run_label: str | None = None,
                  host_disk: os.PathLike | str | None = None,
                  ) -> tuple[RunResult, list[Measurement]]:
    """Run bonnie++ in a guest on a fresh copy of *data_disk*; return (RunResult, measurements).

    *data_disk* is a raw image holding an ext4 file system (guestio.build.disk.make_data_disk);
    it is copied sparsely to OUTDIR/data-disk.img, which the guest gets as its only disk
    (*interface* ide -> /dev/sda, virtio -> /dev/vda; QEMU cache mode *cache*) and which
    is deleted when the run is over, however it ends.  OUTDIR/params holds the job's
    parameters; the VM lifecycle writes its files there and the guest's files go to OUTDIR/results
    (bonnie.csv, bonnie.log, job.log, scheduler.txt, clocksource.txt, interrupts-*.txt).

    Raises VMRunError (naming OUTDIR, the job's error and the serial tail) if the run does
    not end "ok", BonnieParseError (naming OUTDIR/results/bonnie.csv) if the guest's CSV is
    unusable (*required*: see :func:`parse_record`).  *hooks* act around the run (the
    exitcount plugin, a KVM tracer: :class:`guestio.vm.hooks.Hooks`).  *host_disk*: a block
    device already holding a copy of *data_disk* (a loop device with a host I/O scheduler,
    guestio.workloads.hostdisk) that the guest gets instead of a fresh copy.
    """
    device = guest_device(interface)
    # The same options as natively; the job script spells them out the same way.
    bonnie_args("/mnt/data", size_mib, ram_mib, label)
    if io_scheduler is not None and not re.match(r"^[a-z0-9-]+$", io_scheduler):
        raise ValueError(f"I/O scheduler name {io_scheduler!r} is not valid")
    data_disk = Path(data_disk)
    if not data_disk.is_file():
        raise FileNotFoundError(2, "data disk image not found", str(data_disk))
    outdir = Path(outdir).absolute()
    outdir.mkdir(parents=True, exist_ok=True)

    params = {"DEVICE": device, "SIZE_MIB": str(int(size_mib)), "RAM_MIB": str(int(ram_mib))}
    if io_scheduler:
        params["IO_SCHEDULER"] = io_scheduler
    if mount_opts:
        params["MOUNT_OPTS"] = mount_opts
    if label:
        params["LABEL"] = label
    params_path = outdir / "params"
    params_path.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in params.items()))

    copy = outdir / "data-disk.img"
    spec = VMSpec(kernel=Path(kernel), initrd=Path(initrd), append=append, accel=accel,
                  memory_mib=int(memory_mib), cpus=int(cpus), machine_opts=machine_opts,
                  job=JOB_SCRIPT, inputs={"params": params_path},
                  disks=[DiskSpec(path=copy, interface=interface, cache=cache, copy_of=data_disk)
                         if host_disk is None else DiskSpec(path=Path(host_disk), interface=interface, cache=cache)],
                  qemu=qemu, firmware_dir=firmware_dir)
    result = run_vm(spec, outdir, boot_timeout_s=boot_timeout_s, job_timeout_s=job_timeout_s,
                    log=log, hooks=hooks, label=run_label or f"bonnie++ in {outdir.name}")

    results = outdir / "results"
    if not result.ok:
        detail = ""
        job_log = results / "job.log"
        if job_log.is_file():
            errors = [ln for ln in job_log.read_text(errors="replace").splitlines()
                      if "error" in ln.lower()]
            detail = "; job log: " + (" | ".join(errors[-3:]) if errors else output_tail(job_log, 3))
        raise VMRunError(f"bonnie++ guest run in {outdir}", result, outdir, detail)
    record = parse_csv_file(results / "bonnie.csv", required=required)
    check_size(record, size_mib, str(results / "bonnie.csv"))
    return result, record.measurements
