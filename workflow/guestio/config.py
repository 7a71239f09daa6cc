"""Configuration checks with messages that name the key and what it may be."""

from __future__ import annotations

import os
from pathlib import Path

import jsonschema
import yaml


class ConfigError(Exception):
    pass


def load_schema(path: Path) -> dict:
    return yaml.safe_load(Path(path).read_text())


def _where(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _subschema_keys(error: jsonschema.ValidationError) -> list[str]:
    return sorted(error.schema.get("properties", {}))


def describe(error: jsonschema.ValidationError) -> str:
    where = _where(error)
    if error.validator == "additionalProperties" and error.schema.get("additionalProperties") is False:
        allowed = set(_subschema_keys(error))
        unknown = sorted(set(error.instance) - allowed)
        return f"{'.'.join([where, *unknown]) if where != '(top level)' else ', '.join(unknown)}: unknown key; allowed keys here: {', '.join(sorted(allowed))}"
    if error.validator == "enum":
        return f"{where}: {error.instance!r} is not allowed; allowed values: {', '.join(map(str, error.validator_value))}"
    if error.validator == "required":
        return f"{where}: {error.message}"
    if error.validator == "pattern":
        return f"{where}: {error.instance!r} does not match the pattern {error.validator_value!r}"
    description = error.schema.get("description")
    hint = f" ({description})" if description else ""
    return f"{where}: {error.message}{hint}"


def check(config: dict, schema_path: Path) -> None:
    """Raise ConfigError listing every problem, each naming its key."""
    schema = load_schema(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = "\n".join(f"  - {describe(e)}" for e in errors)
        raise ConfigError(f"invalid configuration ({len(errors)} problem{'s' if len(errors) > 1 else ''}):\n{lines}")


def check_variants(config: dict, layers_root: Path) -> None:
    """Every layer a variant names must exist; every smoke variant must be a variant."""
    problems = []
    known = sorted(p.name for p in Path(layers_root).iterdir() if p.is_dir())
    for variant, layers in config["variants"].items():
        for layer in layers:
            if layer not in known:
                problems.append(f"variants.{variant}: layer {layer!r} does not exist; known layers: {', '.join(known)}")
    for section in ("smoke", "disk", "exits"):
        for variant in config.get(section, {}).get("variants", []):
            if variant not in config["variants"]:
                problems.append(f"{section}.variants: {variant!r} is not a variant; variants: {', '.join(config['variants'])}")
    problems += qemu_variant_problems(config)
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


#: QEMU patch layers: workflow/qemu/layers/<layer>/*.patch.
QEMU_LAYERS_ROOT = Path(__file__).resolve().parents[1] / "qemu" / "layers"


def qemu_variant_problems(config: dict, layers_root: Path = QEMU_LAYERS_ROOT) -> list[str]:
    """Every layer a QEMU variant names must exist and hold patches; none with qemu.binary: host."""
    qemu = config.get("qemu") or {}
    variants = qemu.get("variants") or {"stock": []}
    root = Path(layers_root)
    known = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    problems = []
    for variant, layers in variants.items():
        if qemu.get("binary", "build") == "host" and layers:
            problems.append(f"qemu.variants.{variant}: patch layers {', '.join(map(str, layers))} need qemu.binary: "
                            "build (qemu.binary: host runs the distribution's binary, which cannot be patched)")
            continue
        for layer in layers or []:
            if layer not in known:
                problems.append(f"qemu.variants.{variant}: layer {layer!r} does not exist under {root}; "
                                f"known layers: {', '.join(known) or 'none'}")
            elif not any((root / layer).glob("*.patch")):
                problems.append(f"qemu.variants.{variant}: layer {layer!r} has no *.patch files ({root / layer})")
    return problems


# --------------------------------------------------------------------------
# Values that pass the schema one by one but cannot work together

#: bonnie++'s file needs this much room beyond its size (extent blocks, the directory).
BONNIE_FILE_SLACK_MIB = 8
KVM_DEVICE = Path("/dev/kvm")


def _ext4_free_mib(size_mib: int) -> float:
    """Free space of the pipeline's data disk of *size_mib* MiB, formatted exactly as the rule does."""
    import struct
    import tempfile

    from guestio.build.disk import make_data_disk

    with tempfile.TemporaryDirectory(prefix="guestio-config-") as tmp:
        image = make_data_disk(Path(tmp) / "probe.img", int(size_mib))
        with open(image, "rb") as f:
            f.seek(1024)
            sb = f.read(1024)
    log_block_size = struct.unpack_from("<I", sb, 24)[0]
    free_lo = struct.unpack_from("<I", sb, 12)[0]
    feature_incompat = struct.unpack_from("<I", sb, 0x60)[0]
    free_hi = struct.unpack_from("<I", sb, 0x158)[0] if feature_incompat & 0x80 else 0  # 64bit
    return ((free_hi << 32) | free_lo) * (1024 << log_block_size) / (1024 * 1024)


def data_disk_capacity_mib(disk_mib: int) -> float:
    """MiB a file may take on the data disk of *disk_mib* MiB (after ext4's own overhead).

    ext4 takes 3-15 % (journal, inode tables; more on small disks).  The exact
    figure comes from formatting a sparse copy in a temporary directory
    (about 0.2 s), done only when the answer is not obvious.
    """
    return _ext4_free_mib(disk_mib)


def _fits(file_mib: int, disk_mib: int) -> tuple[bool, float | None]:
    need = file_mib + BONNIE_FILE_SLACK_MIB
    if need <= 0.84 * disk_mib - 16:  # well inside even the worst overhead measured
        return True, None
    if need > disk_mib:
        return False, None
    free = data_disk_capacity_mib(disk_mib)
    return need <= free, free


#: Size of the initramfs of the default package set (config/config.yaml), for a first run.
DEFAULT_IMAGE_MIB = 86


def min_guest_memory_mib(image_mib: float | None = None) -> int:
    """The least guest memory that boots an initramfs of *image_mib* MiB into a ramfs root.

    The compressed-free cpio and its unpacked copy are both in guest memory
    while the kernel unpacks it, plus the kernel itself: measured with the
    86 MiB default image under TCG, 192 MiB panics ("System is deadlocked on
    memory") and 224 MiB boots.  Twice the image plus 40 MiB covers that.
    """
    image = DEFAULT_IMAGE_MIB if image_mib is None else image_mib
    return int(2 * image + 40)


def image_size_mib(results_dir: os.PathLike | str) -> float | None:
    """Size of the initramfs already built into *results_dir*, or None before the first build."""
    try:
        return (Path(results_dir) / "image" / "initramfs.cpio").stat().st_size / (1024 * 1024)
    except OSError:
        return None


def consistency_problems(config: dict, *, kvm_device: Path = KVM_DEVICE,
                         image_mib: float | None = None) -> list[str]:
    """Problems of values that are each valid but cannot work together, each naming its keys.

    * a bonnie++ file (disk.size_mib, exits.size_mib) that does not fit on the
      data disk (image.data_disk_mib less ext4's overhead);
    * a bonnie++ file smaller than twice its RAM size (disk.ram_mib,
      exits.ram_mib): bonnie++ refuses, and the file would not exceed the
      page cache of the guest, which gets that much memory;
    * guest memory (disk.ram_mib and exits.ram_mib, which the benchmark
      guests get, and vm.memory_mib) too small to boot the image
      (:func:`min_guest_memory_mib`; *image_mib*: the built image's size,
      if known);
    * vm.accel: kvm on a host whose /dev/kvm is missing or not readable and
      writable (whether KVM really works is decided by the probe boot, the
      first VM job).
    """
    problems = []
    disk_mib = config["image"]["data_disk_mib"]
    for section in ("disk", "exits"):
        cfg = config.get(section, {})
        size, ram = cfg.get("size_mib"), cfg.get("ram_mib")
        if size is None:
            continue
        ok, free = _fits(size, disk_mib)
        if not ok:
            why = (f"ext4 leaves {free:.0f} MiB of it free" if free is not None
                   else "it is not even as large as the file")
            problems.append(
                f"{section}.size_mib ({size}) does not fit on the data disk (image.data_disk_mib: {disk_mib}): "
                f"{why}, bonnie++ needs {size} + {BONNIE_FILE_SLACK_MIB} MiB; raise image.data_disk_mib "
                f"or lower {section}.size_mib")
        if ram is not None and size < 2 * ram:
            problems.append(
                f"{section}.size_mib ({size}) must be at least twice {section}.ram_mib ({ram}): bonnie++ "
                "needs a file of twice the RAM so that it cannot be served from the page cache")
    need = min_guest_memory_mib(image_mib)
    image_note = (f"{image_mib:.0f} MiB image" if image_mib is not None
                  else f"the default image, about {DEFAULT_IMAGE_MIB} MiB")
    for key, mib in (("disk.ram_mib", config.get("disk", {}).get("ram_mib")),
                     ("exits.ram_mib", config.get("exits", {}).get("ram_mib")),
                     ("vm.memory_mib", config.get("vm", {}).get("memory_mib"))):
        if mib is not None and mib < need:
            what = "the benchmark guest's memory" if key != "vm.memory_mib" else "the memory of smoke and probe guests"
            problems.append(
                f"{key} ({mib}) is {what} and too little to boot: the initramfs unpacks into a ramfs root "
                f"({image_note}), which needs at least {need} MiB; raise {key}")
    accel = config.get("vm", {}).get("accel")
    if accel == "kvm":
        if not kvm_device.exists():
            problems.append(f"vm.accel (kvm): {kvm_device} does not exist on this host, so KVM cannot work; "
                            "use vm.accel: auto (KVM if it works, else TCG) or tcg")
        elif not os.access(kvm_device, os.R_OK | os.W_OK):
            problems.append(f"vm.accel (kvm): {kvm_device} is not readable and writable by this user, so KVM "
                            "cannot work; use vm.accel: auto or tcg, or get access to it (group kvm)")
    return problems


def check_consistency(config: dict, **kw) -> None:
    """Raise ConfigError listing every problem of :func:`consistency_problems`."""
    problems = consistency_problems(config, **kw)
    if problems:
        raise ConfigError(f"impossible configuration ({len(problems)} problem{'s' if len(problems) > 1 else ''}):\n"
                          + "\n".join(f"  - {p}" for p in problems))
