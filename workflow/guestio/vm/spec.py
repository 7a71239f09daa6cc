"""What one VM run is: kernel, initrd, command line, accelerator, memory, disks, NICs, the job.

:class:`VMSpec` is checked (:meth:`VMSpec.validate`) before anything starts; the
job and its inputs reach the guest as fw_cfg entries ``opt/guestio/<name>``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

QEMU_BINARY = "qemu-system-x86_64"
FW_CFG_PREFIX = "opt/guestio/"
FW_CFG_NAME_MAX = 55  # QEMU: FW_CFG_MAX_FILE_PATH (56) including the NUL
# What every job sources (fail, load_params, the tick window): delivered beside each job as
# fw_cfg opt/guestio/lib.sh, so the guest finds it at $GUESTIO_IN/lib.sh.
JOB_LIB = Path(__file__).resolve().parents[2] / "jobs" / "lib.sh"
_RESERVED_INPUTS = ("job", JOB_LIB.name)

_FW_CFG_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_NIC_MODELS = ("e1000", "rtl8139", "virtio-net-pci")
_DISK_INTERFACES = ("ide", "virtio")


class VMSpecError(ValueError):
    """The VM specification is invalid (bad value, unknown model, ...)."""


@dataclass
class DiskSpec:
    path: Path
    interface: Literal["ide", "virtio"] = "virtio"
    cache: str = "none"  # none | writeback | writethrough | directsync | unsafe
    format: str = "raw"
    # A pristine image: the run gets a fresh sparse copy of it at *path*, deleted when it ends.
    copy_of: Path | None = None


@dataclass
class NicSpec:
    model: Literal["e1000", "rtl8139", "virtio-net-pci"] = "virtio-net-pci"
    netdev: str = "user"  # backend and its options, e.g. "user" or "user,restrict=on"


@dataclass
class VMSpec:
    kernel: Path
    initrd: Path
    append: str
    accel: Literal["tcg", "kvm"] = "tcg"
    memory_mib: int = 512
    machine: str = "pc"
    machine_opts: str = ""  # appended to -machine, e.g. "kernel_irqchip=on"
    cpus: int = 1
    job: Path | None = None  # shell script -> fw_cfg opt/guestio/job
    inputs: dict[str, Path] = field(default_factory=dict)  # -> fw_cfg opt/guestio/<name>
    disks: list[DiskSpec] = field(default_factory=list)
    nics: list[NicSpec] = field(default_factory=list)
    extra_args: list[str] = field(default_factory=list)
    qemu: str = QEMU_BINARY            # the QEMU binary (a built one: guestio.build.qemu)
    firmware_dir: str | None = None    # -L: where that QEMU finds SeaBIOS and option ROMs

    def validate(self) -> None:
        """Raise VMSpecError for bad values, FileNotFoundError for missing files."""
        if self.accel not in ("tcg", "kvm"):
            raise VMSpecError(f"accel must be 'tcg' or 'kvm', not {self.accel!r}")
        if int(self.memory_mib) <= 0:
            raise VMSpecError(f"memory_mib must be positive, not {self.memory_mib!r}")
        if int(self.cpus) < 1:
            raise VMSpecError(f"cpus must be >= 1, not {self.cpus!r}")
        for name in self.inputs:
            if name in _RESERVED_INPUTS or not _FW_CFG_NAME_RE.match(name):
                raise VMSpecError(
                    f"input name {name!r} is not usable as fw_cfg {FW_CFG_PREFIX}<name>"
                    " (letters, digits, '.', '_', '-'; 'job' and 'lib.sh' are reserved)")
            if len(FW_CFG_PREFIX + name) > FW_CFG_NAME_MAX:
                raise VMSpecError(f"input name {name!r} is too long for fw_cfg "
                                  f"(max {FW_CFG_NAME_MAX - len(FW_CFG_PREFIX)} chars)")
        for disk in self.disks:
            if disk.interface not in _DISK_INTERFACES:
                raise VMSpecError(f"disk interface must be one of {_DISK_INTERFACES}, "
                                  f"not {disk.interface!r} ({disk.path})")
        if sum(d.interface == "ide" for d in self.disks) > 4:
            raise VMSpecError("at most 4 IDE disks fit on the pc machine's two IDE buses")
        for nic in self.nics:
            if nic.model not in _NIC_MODELS:
                raise VMSpecError(f"NIC model must be one of {_NIC_MODELS}, not {nic.model!r}")

        files = [("kernel image", self.kernel), ("initrd", self.initrd)]
        if self.job is not None:
            files.append(("job script", self.job))
        files += [(f"input {name!r}", p) for name, p in self.inputs.items()]
        files += [("disk image", d.copy_of or d.path) for d in self.disks
                  if not (d.copy_of is None and Path(d.path).is_block_device())]  # a loop device (hostdisk)
        for what, path in files:
            if not Path(path).is_file():
                raise FileNotFoundError(2, f"VM {what} not found (or not a regular file)",
                                        str(path))

    def to_json(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))


def jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj
