"""The QEMU command line of a :class:`~guestio.vm.spec.VMSpec`.

QEMU starts paused (``-S``) and connects to our QMP server socket; the serial
console goes to a file; the guest's results come back through the
virtio-serial port ``org.guestio.results`` into a file.
"""

from __future__ import annotations

import os
from pathlib import Path

from guestio.vm.spec import FW_CFG_PREFIX, JOB_LIB, VMSpec

RESULTS_PORT = "org.guestio.results"


def qemu_opt(value: Path | str) -> str:
    """Escape a value for a QEMU 'key=value,...' option list (',' -> ',,')."""
    return os.fspath(value).replace(",", ",,")


def build_qemu_argv(spec: VMSpec, serial_log: Path, qmp_socket: Path,
                    results_tar: Path) -> list[str]:
    """The QEMU command line for *spec* (QMP: QEMU connects to our server socket)."""
    machine = f"{spec.machine},accel={spec.accel}"
    if spec.machine_opts:
        machine += f",{spec.machine_opts}"
    argv = [spec.qemu, *(["-L", spec.firmware_dir] if spec.firmware_dir else []),
        "-nodefaults", "-no-user-config", "-nographic", "-display", "none",
        "-no-reboot", "-S",
        "-machine", machine,
        "-m", str(int(spec.memory_mib)),
        "-smp", str(int(spec.cpus)),
        "-kernel", os.fspath(spec.kernel),
        "-initrd", os.fspath(spec.initrd),
        "-append", spec.append,
        "-chardev", f"socket,id=qmp0,path={qemu_opt(qmp_socket)}",
        "-mon", "chardev=qmp0,mode=control",
        "-chardev", f"file,id=serial0,path={qemu_opt(serial_log)}",
        "-serial", "chardev:serial0",
        "-device", "virtio-serial-pci,id=vser0",
        "-chardev", f"file,id=results,path={qemu_opt(results_tar)}",
        "-device", f"virtserialport,bus=vser0.0,chardev=results,name={RESULTS_PORT}",
    ]
    if spec.job is not None:
        argv += ["-fw_cfg", f"name={FW_CFG_PREFIX}job,file={qemu_opt(spec.job)}",
                 "-fw_cfg", f"name={FW_CFG_PREFIX}{JOB_LIB.name},file={qemu_opt(JOB_LIB)}"]
    for name, path in spec.inputs.items():
        argv += ["-fw_cfg", f"name={FW_CFG_PREFIX}{name},file={qemu_opt(path)}"]
    n_ide = 0
    for i, disk in enumerate(spec.disks):
        argv += ["-drive", f"file={qemu_opt(disk.path)},format={disk.format},if=none,"
                           f"id=disk{i},cache={disk.cache}"]
        if disk.interface == "ide":
            bus, unit = divmod(n_ide, 2)
            n_ide += 1
            argv += ["-device", f"ide-hd,drive=disk{i},bus=ide.{bus},unit={unit}"]
        else:
            argv += ["-device", f"virtio-blk-pci,drive=disk{i}"]
    for i, nic in enumerate(spec.nics):
        # romfile= : direct kernel boot needs no PXE option ROM.
        argv += ["-netdev", f"{nic.netdev},id=net{i}",
                 "-device", f"{nic.model},netdev=net{i},romfile="]
    argv += list(spec.extra_args)
    return argv
