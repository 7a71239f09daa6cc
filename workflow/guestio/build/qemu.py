"""QEMU as a built, pinned component.

The source is Debian's ``qemu`` source package of the installed
qemu-system-x86 (envs/setup.sh downloads its .dsc, orig and debian tarballs
into ``qemu.source_dir``; nothing else touches apt).  It is extracted once
into a pristine tree with Debian's own patch series applied (quilt order, each
patch dry-run first): that makes it the QEMU Debian ships, 7.2.22 with its
stable and security fixes, not the bare 7.2.0 of the orig tarball.

Each variant (``qemu.variants``: name -> ordered patch layers under
``workflow/qemu/layers/<layer>/*.patch``) gets a hard-linked copy of that tree
with its layers' patches applied (guestio.build.patches, as for the kernel),
is configured out of tree for the x86_64-softmmu target only, with only the
features and devices the experiments use (:data:`DEVICES`,
:func:`configure_args`), and is built with ninja through ccache
(:mod:`guestio.build.qemu_variant`).  The binary
is copied next to its ``build.json``; a pipeline run calls it as
``[binary, "-L", firmware_dir, ...]`` (:func:`load_build`).

Debian's tarball is "dfsg": it has no firmware blobs.  The build installs none
(``--disable-install-blobs``; Debian's patch series already keeps meson out
of pc-bios/) and looks for firmware where Debian's packages put it
(:data:`FIRMWARE_PATH`: qemu-system-data, seabios, ipxe-qemu), outside the
install prefix so that QEMU does not relocate those paths to the binary's
directory.

``qemu.binary: host`` keeps the distribution's binary instead: its
``build.json`` has the same keys (no layers, no patches of ours).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from guestio.build import hostdirs, patches
from guestio.util import exclusive, sha256_file

BINARY_NAME = "qemu-system-x86_64"
BINARY_PACKAGE = "qemu-system-x86"
HOST_BINARY = "/usr/bin/qemu-system-x86_64"
TARGET = "x86_64-softmmu"

#: Given to QEMU as -L: the data directory of the installed qemu-system-data (option ROMs such
#: as linuxboot_dma.bin and kvmvapic.bin, of the same upstream version).
FIRMWARE_DIR = "/usr/share/qemu"
#: Compiled in (--firmwarepath), as in Debian's own build: SeaBIOS and iPXE live in their packages' dirs.
FIRMWARE_PATH = ["/usr/share/qemu", "/usr/share/seabios", "/usr/lib/ipxe/qemu"]
FIRMWARE_PACKAGES = ["qemu-system-data", "seabios", "ipxe-qemu"]
#: What the pc machine loads to boot a guest with -kernel (checked at build time).
FIRMWARE_FILES = ["bios-256k.bin", "linuxboot_dma.bin", "kvmvapic.bin"]
#: Never installed; only keeps FIRMWARE_PATH outside the prefix (QEMU relocates paths under it).
PREFIX = "/opt/guestio-qemu"

#: Devices the experiments use, as a configs/devices file written into each variant's tree.
#: --without-default-devices starts from nothing (minikconf --allnoconfig: "default y" and
#: "imply" do not count), so every device is named; what they select (PIIX3, ISA serial,
#: i8254 PIT, MC146818 RTC, ACPI PIIX4 PM with its PM timer, fw_cfg DMA, APIC/IOAPIC) follows.
DEVICES_NAME = "guestio"
DEVICES = """\
# guestio: the devices of the pipeline's guests (written by guestio.build.qemu).
# pc machine: i440FX + PIIX3, IDE (ata_piix), ISA serial, PIT, RTC, ACPI, fw_cfg
CONFIG_I440FX=y
CONFIG_HPET=y
# virtio over PCI: the results port (virtio-serial), virtio-blk, virtio-net
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_BLK=y
CONFIG_VIRTIO_SERIAL=y
CONFIG_VIRTIO_NET=y
# the other NICs of the network experiments
CONFIG_E1000_PCI=y
CONFIG_RTL8139_PCI=y
"""
#: Devices the built binary must list in `-device help`.
REQUIRED_DEVICES = ["ide-hd", "virtio-blk-pci", "virtio-serial-pci", "virtserialport",
                    "virtio-net-pci", "e1000", "rtl8139"]
#: Trace events the exit cross-check enables with -trace.
REQUIRED_TRACE_EVENTS = ["memory_region_ops_read", "memory_region_ops_write"]


class QemuBuildError(Exception):
    pass


# --------------------------------------------------------------------------
# The pinned source


def dpkg_field(package: str, fmt: str) -> str | None:
    try:
        out = subprocess.run(["dpkg-query", "-W", f"-f={fmt}", package], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def installed_source(binary_package: str = BINARY_PACKAGE) -> dict:
    """Source package and version of the installed qemu-system-x86: the version that is built."""
    package = dpkg_field(binary_package, "${source:Package}")
    version = dpkg_field(binary_package, "${source:Version}")
    if not package or not version:
        raise QemuBuildError(f"{binary_package} is not installed: run envs/setup.sh")
    return {"package": package, "version": version,
            "binary_package": binary_package, "binary_version": dpkg_field(binary_package, "${Version}")}


def source_files(source_dir: Path, package: str, version: str, configfiles=None) -> dict[str, Path]:
    """The .dsc, orig and debian tarballs of *package* *version* in *source_dir* (set-up fetched them).

    *configfiles*: the --configfile files for the set-up command the error names (default:
    those of the Snakemake run in this process)."""
    source_dir = Path(source_dir).expanduser()
    noepoch = version.split(":", 1)[-1]
    upstream = noepoch.rsplit("-", 1)[0]
    found = {
        "dsc": source_dir / f"{package}_{noepoch}.dsc",
        "orig": next(iter(sorted(source_dir.glob(f"{package}_{upstream}.orig.tar.*"))), None),
        "debian": next(iter(sorted(source_dir.glob(f"{package}_{noepoch}.debian.tar.*"))), None),
    }
    missing = [k for k, v in found.items() if v is None or not Path(v).is_file()]
    if missing:
        raise QemuBuildError(
            f"QEMU source {package} {version} is not in {source_dir} (qemu.source_dir; missing: "
            f"{', '.join(missing)}): run `{hostdirs.setup_command(configfiles)}`, which downloads it "
            "there (it adds a deb-src entry to apt's sources)")
    return found


def dsc_checksums(dsc: Path) -> dict[str, str]:
    """File name -> sha256 from a .dsc's Checksums-Sha256 field."""
    sums, inside = {}, False
    for line in Path(dsc).read_text(errors="replace").splitlines():
        if line.startswith("Checksums-Sha256:"):
            inside = True
        elif inside and line.startswith(" "):
            digest, _size, name = line.split()
            sums[name] = digest
        elif inside:
            break
    return sums


def _series(tree: Path) -> list[Path]:
    series = tree / "debian" / "patches" / "series"
    if not series.is_file():
        return []
    names = [line.split("#", 1)[0].strip() for line in series.read_text().splitlines()]
    return [tree / "debian" / "patches" / n.split()[0] for n in names if n]


def extract_source(source_dir: Path, dest: Path, *, package: str | None = None, version: str | None = None,
                   log=None) -> dict:
    """Extract the orig tarball into *dest* (replacing it), apply Debian's series; describe it.

    The tarballs' sha256 must match the .dsc (apt checked the .dsc against the signed
    Sources index when it downloaded them).  Everything happens in ``<dest>.partial``, so an
    interrupted or failed extraction leaves no tree that looks complete.
    """
    if package is None or version is None:
        inst = installed_source()
        package, version = package or inst["package"], version or inst["version"]
    files = source_files(source_dir, package, version)
    expected = dsc_checksums(files["dsc"])
    record = {"package": package, "version": version, "dsc": str(files["dsc"]), "dsc_sha256": sha256_file(files["dsc"])}
    for key in ("orig", "debian"):
        digest = sha256_file(files[key])
        want = expected.get(files[key].name)
        if want != digest:
            raise QemuBuildError(f"{files[key]}: sha256 {digest} does not match its .dsc ({want}); "
                                 f"remove it and run envs/setup.sh again")
        record[f"{key}_tarball"] = str(files[key])
        record[f"{key}_sha256"] = digest
    record["tarball"], record["sha256"] = record["orig_tarball"], record["orig_sha256"]
    dest = Path(dest)
    with exclusive(dest):
        have = source_record(dest)
        if have is not None and all(have.get(k) == record[k] for k in ("package", "version", "orig_sha256",
                                                                        "debian_sha256")):
            # Already this source (another results directory extracted it): keep it, so that
            # builds reading it are not disturbed.
            if log is not None:
                log.write(f"{dest} is already {package} {version} (orig sha256 {record['orig_sha256']})\n")
            return {**have, **record, "debian_patches": have["debian_patches"],
                    "upstream_version": have["upstream_version"]}
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        subprocess.run(["tar", "-xf", str(files["orig"]), "-C", str(tmp), "--strip-components=1"], check=True)
        subprocess.run(["tar", "-xf", str(files["debian"]), "-C", str(tmp)], check=True)
        series = _series(tmp)
        patches.apply_patches(tmp, series, QemuBuildError)
        record["debian_patches"] = [{"name": p.name, "sha256": sha256_file(p)} for p in series]
        record["upstream_version"] = (tmp / "VERSION").read_text().strip()
        (tmp / ".guestio-source.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        if log is not None:
            log.write(f"extracted {files['orig'].name} into {dest}, applied {len(series)} Debian patches "
                      f"({files['debian'].name}): QEMU {record['upstream_version']}\n")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    return record


def source_record(tree: Path) -> dict | None:
    """The source record a pristine tree was extracted with (None if it is missing or incomplete)."""
    try:
        return json.loads((Path(tree) / ".guestio-source.json").read_text())
    except (OSError, ValueError):
        return None


def ensure_source(source: dict, pristine: Path, source_dir: Path | None = None, log=None) -> Path:
    """The pristine tree described by *source* (a source.json); extracted again if build/ lost it."""
    pristine = Path(pristine)
    stamp = source_record(pristine)
    if stamp is None or stamp.get("orig_sha256") != source["orig_sha256"] or stamp.get("version") != source["version"]:
        where = source_dir or Path(source["orig_tarball"]).parent
        again = extract_source(where, pristine, package=source["package"], version=source["version"], log=log)
        if again["orig_sha256"] != source["orig_sha256"]:
            raise QemuBuildError(f"QEMU source in {where} is not the one {source['orig_tarball']} recorded")
    return pristine


def plugin_header(source: dict, pristine: Path, dest: Path) -> dict:
    """Copy include/qemu/qemu-plugin.h of the pinned tree to *dest*; describe it."""
    tree = ensure_source(source, pristine).absolute()
    header = tree / "include" / "qemu" / "qemu-plugin.h"
    text = header.read_text()
    api = re.search(r"^#define QEMU_PLUGIN_VERSION (\d+)", text, re.M)
    touching = [p["name"] for p in source.get("debian_patches", [])
                if "include/qemu/qemu-plugin.h" in patches.patched_files(tree / "debian" / "patches" / p["name"])]
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.copyfile(header, tmp)
    tmp.replace(dest)
    return {"header": str(dest), "sha256": sha256_file(dest), "from": str(header),
            "plugin_api_version": int(api.group(1)) if api else None,
            "source": {k: source[k] for k in ("package", "version", "orig_sha256", "upstream_version") if k in source},
            "debian_patches_touching_header": touching}


# --------------------------------------------------------------------------
# Building a variant


def configure_args(variant: str) -> list[str]:
    """Arguments of QEMU's configure: the x86_64 system target with only what the pipeline uses."""
    return [
        f"--prefix={PREFIX}",
        f"--target-list={TARGET}",
        f"--with-pkgversion=guestio-{variant}",
        # Features: none unless named.  KVM and TCG, plugins (the exit model), slirp for
        # -netdev user, libfdt (the x86_64 target needs it), the "log" trace backend that the
        # exit cross-check's -trace memory_region_ops_* events go through.
        "--without-default-features",
        "--enable-kvm", "--enable-tcg", "--enable-plugins", "--enable-slirp", "--enable-fdt=system",
        "--enable-trace-backends=log",
        "--disable-docs", "--disable-werror", "--disable-tools", "--disable-guest-agent",
        "--disable-debug-info",
        # Devices: only those of DEVICES.
        "--without-default-devices", f"--with-devices-x86_64={DEVICES_NAME}",
        # No firmware of our own: the tarball has none (dfsg), so no edk2 or other blobs are
        # unpacked or installed; the installed packages' firmware is found at run time.
        "--disable-install-blobs", f"--firmwarepath={':'.join(FIRMWARE_PATH)}",
        "--with-git-submodules=ignore",
    ]


def configuration(variant: str, qemu_config: dict) -> dict | None:
    """What a variant's build is configured with (None for the host's binary): a rule's rerun trigger."""
    if qemu_config.get("binary", "build") == "host":
        return None
    return {"configure_args": configure_args(variant), "devices": DEVICES, "firmware_path": FIRMWARE_PATH}


# --------------------------------------------------------------------------
# What the rest of the pipeline uses


def source_pin() -> tuple[str, str]:
    """(source package, version) that is built: that of the installed qemu-system-x86."""
    inst = installed_source()
    return inst["package"], inst["version"]


def rule_outputs(results: str, variant: str, qemu_config: dict) -> dict[str, str]:
    """What the qemu rule writes: the binary and build.json, or only build.json for the host's binary."""
    out = outputs(results, variant, qemu_config)
    return {"build": out["build"]} if qemu_config.get("binary", "build") == "host" else out


def outputs(results: str, variant: str, qemu_config: dict) -> dict[str, str]:
    """The binary a variant's runs use and its build record (``guestio.plan.Plan.qemu_outputs``)."""
    base = f"{results}/qemu/{variant}"
    binary = HOST_BINARY if qemu_config.get("binary", "build") == "host" else f"{base}/{BINARY_NAME}"
    return {"binary": binary, "build": f"{base}/build.json"}


def load_build(build_json: os.PathLike | str) -> dict:
    """A variant's build.json, with ``binary`` an absolute path that exists and matches the record.

    Keys: binary, firmware_dir (None: call the binary without -L), version, sha256, variant,
    patches, and the rest of the record.  A built binary is looked up beside build.json, so
    a moved checkout still finds it; its size must match (a cheap guard against a binary
    replaced after its record was written).
    """
    build_json = Path(build_json)
    record = json.loads(build_json.read_text())
    missing = [k for k in ("binary", "firmware_dir", "version", "sha256", "variant", "patches") if k not in record]
    if missing:
        raise QemuBuildError(f"{build_json}: not a QEMU build record (missing {', '.join(missing)})")
    if record.get("kind") == "build":
        binary = (build_json.parent / BINARY_NAME).absolute()
    else:
        binary = Path(record["binary"])
    if not binary.is_file():
        raise QemuBuildError(f"{build_json}: its QEMU binary {binary} does not exist")
    if record.get("size_bytes") is not None and binary.stat().st_size != record["size_bytes"]:
        raise QemuBuildError(f"{build_json}: {binary} is not the binary it records (size differs); rebuild it")
    record["binary"] = str(binary)
    return record


def argv_prefix(build: dict) -> list[str]:
    """How to call a loaded build: the binary, and -L firmware_dir when it has one."""
    return [build["binary"], *(["-L", build["firmware_dir"]] if build.get("firmware_dir") else [])]
