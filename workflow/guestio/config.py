"""Configuration checks with messages that name the key and what it may be."""

from __future__ import annotations

import os
from pathlib import Path

import jsonschema
import yaml

from guestio.build.hostdirs import home_directories, system_location


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


#: the kernel layer that makes a 32-bit x86 kernel (workflow/kernel/layers/i386)
I386_LAYER = "i386"
#: Fig 6's two sides, 32-bit kernels booted to the missing root (workflow/rules/exits.smk, claims.yaml)
PMTMR_VARIANTS = ("baseline-i386", "pmtmr-i386")


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
            elif I386_LAYER in config["variants"][variant]:
                problems.append(f"{section}.variants: {variant!r} is a 32-bit kernel (layer {I386_LAYER}), which cannot "
                                "run the image's x86_64 user space; it is for the boot-only runs (pmtmr)")
    for variant in PMTMR_VARIANTS:
        if variant not in config["variants"]:
            problems.append(f"variants: Fig 6's boot-only runs (pmtmr) need the kernel variant {variant!r} "
                            f"(claims.yaml names it); variants: {', '.join(config['variants'])}")
    problems += qemu_variant_problems(config)
    _refuse_invalid(problems)


def _refuse_invalid(problems: list[str]) -> None:
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def reference_problems(config: dict) -> list[str]:
    """The kernel and QEMU variants that the VM runs, the network stage and the timer stage name
    must be defined (under variants, qemu.variants).  On a config with the schema's defaults."""
    from guestio.plan.stages import timer_conditions   # the plan imports this module

    kernels, qemus = list(config["variants"]), list(config["qemu"]["variants"])
    vm_qemu = config["vm"]["qemu"]
    if vm_qemu not in qemus:   # the conditions below name it
        return [f"vm.qemu: {vm_qemu!r} is not a QEMU variant; qemu.variants defines: {', '.join(qemus)}"]
    problems = [f"network.{key}: {config['network'][key]!r} is not a kernel variant; "
                f"variants defines: {', '.join(kernels)}"
                for key in ("variant", "nonapi_variant") if config["network"][key] not in kernels]
    for name, (variant, _qemu) in timer_conditions(vm_qemu, qemus).items():
        if variant not in kernels:
            problems.append(f"the timer stage ({name}) needs the kernel variant {variant!r} under variants")
    return problems


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


# --------------------------------------------------------------------------
# Values that would harm the host or quietly spoil a long run: refused before the first job

#: Directories the pipeline writes into (or creates, or envs/setup.sh fills): a system
#: directory, a home directory itself or / are refused there.
WRITTEN_PATH_KEYS = ("results_dir", "disk.native_dir", "kernel.ccache_dir", "qemu.ccache_dir", "qemu.source_dir")
#: Paths only read (kernel.tarball is /usr/src/... by default, exits.tracefs /sys/kernel/tracing):
#: only ~ is expanded and the characters checked.
READ_PATH_KEYS = ("kernel.tarball", "exits.tracefs", "exits.kvm_recorded")

#: Characters a path may not hold: make cannot quote them ($ # % : ; \ and the wildcards
#: * ? [ ]) or they end a quoted shell word (quotes, backtick).  A space works (the
#: Makefile and the jobs quote every path).
UNQUOTABLE = set("$#%:;\\*?[]'\"`")

def _get(config: dict, key: str):
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(config: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[last] = value


def _character_problem(key: str, raw: str) -> str | None:
    control = sorted({repr(c) for c in raw if ord(c) < 32 or ord(c) == 127})
    if control:
        return f"{key}: {raw!r} holds control characters ({', '.join(control)}); give a plain path"
    bad = sorted(set(raw) & UNQUOTABLE)
    if bad:
        return (f"{key}: {raw!r} holds {' '.join(bad)}, which make or the shell cannot quote; "
                "rename the directory (letters, digits, spaces, . _ - + , @ = are fine; ~ is expanded)")
    if raw.startswith("-"):
        return f"{key}: {raw!r} starts with '-', which a command reads as an option; write ./{raw}"
    return None


def path_problem(key: str, raw: str, *, written: bool, homes: set[str]) -> tuple[str | None, str]:
    """(the problem of path *raw* of *key* or None, the path the pipeline uses: ~ expanded, normalised)."""
    problem = _character_problem(key, raw)
    if problem:
        return problem, raw
    expanded = os.path.expanduser(raw)
    if expanded.startswith("~"):
        return f"{key}: {raw!r}: no such user for ~ (write the home directory out)", raw
    if ".." in expanded.split("/"):
        if written:
            return (f"{key}: {raw!r} has a '..' component; give the directory without it "
                    "(absolute, or below the working directory)"), raw
        return None, expanded
    expanded = os.path.normpath(expanded)
    if expanded.startswith("-"):  # "./-x" stays "./-x": "-x" would read as an option
        expanded = "./" + expanded
    if not written:
        return None, expanded
    absolute = os.path.abspath(expanded)
    real = os.path.realpath(absolute)
    for candidate in dict.fromkeys((absolute, real)):
        what = system_location(candidate, homes)
        if what:
            via = f" (it resolves to {candidate})" if candidate != expanded else ""
            return (f"{key}: {raw!r}{via} is {what}, where the pipeline must not write; "
                    "give a directory of its own, e.g. ~/guestio/... or /var/tmp/guestio"), expanded
    return None, expanded


def normalise_paths(config: dict) -> list[str]:
    """Expand ~ in every path key of *config*, in place, and return the problems of the paths.

    The expanded, normalised path is what every rule then reads from the config
    (a ~ left as it is would become a directory named ~ in the working directory).
    """
    homes = home_directories()
    problems = []
    for keys, written in ((WRITTEN_PATH_KEYS, True), (READ_PATH_KEYS, False)):
        for key in keys:
            raw = _get(config, key)
            if not isinstance(raw, str) or raw == "":
                continue
            problem, path = path_problem(key, raw, written=written, homes=homes)
            if problem:
                problems.append(problem)
            else:
                _set(config, key, path)
    return problems


def subnet_problems(config: dict) -> list[str]:
    """network.subnet must be a private IPv4 network address with room for the testbed's 3 hosts.

    Its addresses are given to HostA, HostB and the guest inside the testbed's own
    namespaces: a public range would shadow real hosts for them, host bits set or
    too small a range stop the network jobs only after every disk job has run.
    """
    import ipaddress

    subnet = _get(config, "network.subnet")
    if subnet is None:
        return []
    try:
        net = ipaddress.ip_network(subnet, strict=False)
    except ValueError as exc:
        return [f"network.subnet: {subnet!r} is not an IPv4 network ({exc})"]
    if ipaddress.ip_interface(subnet).ip != net.network_address:
        return [f"network.subnet: {subnet!r} has host bits set; write its network address, {net}"]
    special = next((what for what, flag in (("loopback", net.is_loopback), ("link-local", net.is_link_local),
                                             ("multicast", net.is_multicast), ("reserved", net.is_reserved),
                                             ("unspecified", net.is_unspecified)) if flag), None)
    if net.version != 4 or not net.is_private or special:
        kind = f"a {special} range" if special else "not a private IPv4 range"
        return [f"network.subnet: {subnet!r} is {kind}; use one inside 10.0.0.0/8, 172.16.0.0/12 "
                "or 192.168.0.0/16 (the default is 10.210.0.0/24)"]
    if net.num_addresses - 2 < 3:
        return [f"network.subnet: {subnet!r} has room for fewer than the testbed's 3 hosts; use a /29 or larger"]
    return []


#: Kernel patch layers: workflow/kernel/layers/<layer>/*.patch.
KERNEL_LAYERS_ROOT = Path(__file__).resolve().parents[1] / "kernel" / "layers"


def patch_problems(config: dict, kernel_layers_root: Path = KERNEL_LAYERS_ROOT,
                   qemu_layers_root: Path = QEMU_LAYERS_ROOT) -> list[str]:
    """Every .patch of a layer a kernel or QEMU variant uses must be a unified diff.

    patch(1) would say so only when the variant is built, possibly hours into a run.
    """
    from guestio.build.patches import unified_diff_problem

    uses = [(f"variants.{v}", Path(kernel_layers_root), layers) for v, layers in config.get("variants", {}).items()]
    qemu = config.get("qemu") or {}
    if qemu.get("binary", "build") == "build":
        uses += [(f"qemu.variants.{v}", Path(qemu_layers_root), layers or [])
                 for v, layers in (qemu.get("variants") or {}).items()]
    problems, seen = [], set()
    for key, root, layers in uses:
        for layer in layers:
            for patch in sorted((root / layer).glob("*.patch")):
                if patch in seen:
                    continue
                seen.add(patch)
                why = unified_diff_problem(patch)
                if why:
                    problems.append(f"{key}: layer {layer!r}: {patch} is not a usable patch: {why}")
    return problems


def artifact_problems(config: dict) -> list[str]:
    """report.artifacts may name only artifacts of the claims file."""
    wanted = _get(config, "report.artifacts")
    if not wanted:
        return []
    from guestio.analysis.claims import load_artifacts

    known = list(load_artifacts())
    return [f"report.artifacts: {a!r} is not an artifact of workflow/guestio/analysis/claims.yaml; "
            f"artifacts: {', '.join(known)}" for a in wanted if a not in known]


def exit_window_problems(config: dict) -> list[str]:
    """network.exits.window must be a window the exit run's guest opens (one per test it runs).

    Otherwise Table 2's ranked table would be empty, found only after the run.
    """
    net = config.get("network") or {}
    window = _get(config, "network.exits.window")
    if window is None or not all(k in net for k in ("ping", "netperf", "iperf3")):
        return []
    from guestio.workloads.netbench import plan

    class _Anywhere:  # plan() only puts the addresses into command lines
        hosta = hostb = guest = "0.0.0.0"

    windows = [s.name for s in plan(net, _Anywhere, target="guest", tests=net["exits"].get("tests"))]
    if window in windows:
        return []
    return [f"network.exits.window: {window!r} is not a window of the exit run; the guest opens one per test "
            f"of network.exits.tests: {', '.join(windows)}"]


def input_problems(config: dict, **layer_roots) -> list[str]:
    """Every problem of the paths (normalised in place), the subnet, the patches, the report's
    artifacts and the exit window, each naming its key."""
    return (normalise_paths(config) + subnet_problems(config) + patch_problems(config, **layer_roots)
            + artifact_problems(config) + exit_window_problems(config))


def check_inputs(config: dict, **layer_roots) -> None:
    """Raise ConfigError listing every problem of :func:`input_problems` (after the schema's defaults)."""
    problems = input_problems(config, **layer_roots)
    if problems:
        raise ConfigError(f"refused configuration ({len(problems)} problem{'s' if len(problems) > 1 else ''}):\n"
                          + "\n".join(f"  - {p}" for p in problems))


#: The config's schema (workflow/schemas), with a description and a default for every key.
SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


def check_all(config: dict) -> None:
    """Every check, in order, before any job; fills in the schema's defaults and expands ~ in the
    config itself, so every rule gets the checked values.  Raises ConfigError naming each problem."""
    from snakemake.utils import validate   # only where a workflow runs

    check(config, SCHEMA)
    check_variants(config, KERNEL_LAYERS_ROOT)
    validate(config, str(SCHEMA))
    _refuse_invalid(reference_problems(config))
    # Paths, the subnet, the patches, the report's artifacts, the exit window: refused before
    # anything is written.
    check_inputs(config)
    # Values that are each valid but cannot work together.
    check_consistency(config, image_mib=image_size_mib(config["results_dir"]))
