"""What the DAG needs from this host, checked in about a second before any job runs.

Every item is a :class:`Finding` (capability, ok, detail, needed_by, remedy, substitute).
A capability the host lacks either has a stated substitute (the run goes on with it and
says so) or stops the run before any job with one message naming what is missing, the
artifacts (``claims.yaml`` ids) that need it and what to do.  Items whose artifacts the
configuration does not ask for (``report.artifacts``) are not probed.

The host I/O scheduler of §3.2.2 is resolved here once: the paper's host ran CFQ, whose
successor is bfq; a kernel that offers no bfq for loop devices gets
``diskmods.sched.host_fallback`` in its place (null: stop).  :attr:`Probe.host_schedulers`
is the list every rule uses, :attr:`Probe.cfq_standin` the one the §3.2.2 claim selects.

Every probe takes ``root`` (the file system root it reads ``/sys``, ``/dev``, ``/proc``
under) so the tests can give it a fake host.  Findings are recorded in
``<results_dir>/host/capabilities.json``, rewritten only when their content changes (the
file is read by provenance, never a rule's input, so it retriggers no job).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from guestio.build.hostdirs import setup_command

__all__ = ["Finding", "Probe", "HostCapabilityError", "probe", "record", "stop_message", "parse_scheduler_line",
           "resolve_host_schedulers", "loop_schedulers", "CAPABILITIES_FILE"]

ROOT = Path("/")
CAPABILITIES_FILE = "host/capabilities.json"   # under results_dir

# The artifacts (claims.yaml ids) each capability is needed by.
ALL_ARTIFACTS = ("fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "table1", "table2", "table3", "table4",
                 "sched")
SCHED_ARTIFACTS = ("sched", "sec3_2_2")
NATIVE_DISK_ARTIFACTS = ("fig1", "fig2", "fig6")   # native bonnie++ in a memory cgroup
NETWORK_ARTIFACTS = ("fig3", "fig4", "fig7", "table2")
EXIT_ARTIFACTS = ("table1", "table2", "table3", "table4")   # exit tables: kvm events on a KVM host

#: The paper's host scheduler was CFQ; bfq is its successor under blk-mq.
PAPER_HOST_SCHEDULER = "bfq"
FILE = "file"   # a run whose disk is a plain image file: no loop device, no host scheduler

#: Free space a cold default run writes (kernel and QEMU build trees, data disks, runs) and
#: the least a run with its builds already there needs (a data-disk copy, logs, tables).
COLD_RUN_GIB = 25
WARM_RUN_GIB = 4

LOOP_CTL_REMOVE = 0x4C81
LOOP_CTL_GET_FREE = 0x4C82


class HostCapabilityError(RuntimeError):
    """This host lacks something the configuration needs and nothing stands in for it."""


@dataclass(frozen=True)
class Finding:
    capability: str
    ok: bool
    detail: str
    needed_by: tuple[str, ...] = ()
    remedy: str = ""
    substitute: str = ""   # what stands in where not ok; "" = nothing: the run stops

    @property
    def stops(self) -> bool:
        return not self.ok and not self.substitute and bool(self.needed_by)

    def to_json(self) -> dict:
        d = asdict(self)
        d["needed_by"] = list(self.needed_by)
        return d


@dataclass
class Probe:
    findings: list[Finding] = field(default_factory=list)
    host_schedulers: list[str] = field(default_factory=list)      # diskmods.sched.host as it runs here
    substitutions: dict[str, str] = field(default_factory=dict)   # requested -> used instead
    cfq_standin: str = PAPER_HOST_SCHEDULER                       # the host scheduler §3.2.2's claim selects

    def stopping(self) -> list[Finding]:
        return [f for f in self.findings if f.stops]

    def to_json(self) -> dict:
        return {"findings": [f.to_json() for f in self.findings], "host_schedulers": self.host_schedulers,
                "substitutions": self.substitutions, "cfq_standin": self.cfq_standin}


# --- I/O schedulers of loop devices ----------------------------------------------------------------

def parse_scheduler_line(line: str) -> tuple[str, tuple[str, ...]]:
    """(effective, offered) of a sysfs queue/scheduler line such as ``[none] mq-deadline kyber``."""
    effective = re.search(r"\[([^\]]+)\]", line)
    offered = tuple(s.strip("[]") for s in line.split())
    return (effective.group(1) if effective else line.strip()), offered


def _read_loop_scheduler(root: Path) -> tuple[str, ...] | None:
    for path in sorted((root / "sys" / "block").glob("loop*/queue/scheduler")):
        try:
            return parse_scheduler_line(path.read_text())[1]
        except OSError:
            continue
    return None


def _with_a_new_loop_device(root: Path) -> tuple[str, ...] | None:
    """No loop device exists yet: make one (unbound), read its schedulers, remove it again."""
    if root != ROOT or not (root / "dev" / "loop-control").exists():
        return None
    try:
        ctl = os.open(root / "dev" / "loop-control", os.O_RDWR)
    except OSError:
        return None
    try:
        number = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
        try:
            return _read_loop_scheduler(root)
        finally:
            try:
                fcntl.ioctl(ctl, LOOP_CTL_REMOVE, number)
            except OSError:
                pass   # taken meanwhile by someone else: theirs now
    except OSError:
        return None
    finally:
        os.close(ctl)


def loop_schedulers(root: Path = ROOT) -> tuple[str, ...] | None:
    """The I/O schedulers this kernel offers a loop device, or None where it has no loop devices."""
    return _read_loop_scheduler(root) or _with_a_new_loop_device(root)


def resolve_host_schedulers(requested: Sequence[str], fallback: str | None,
                            offered: Sequence[str] | None) -> tuple[list[str], dict[str, str], Finding]:
    """(schedulers to run, substitutions, finding) for diskmods.sched.host on this host.

    A requested scheduler the kernel does not offer is replaced by *fallback*
    (diskmods.sched.host_fallback) where that is offered; otherwise the finding stops the run.
    """
    loops = [h for h in requested if h != FILE]
    offered_text = ", ".join(offered) if offered else "none: no loop devices"
    if not loops:
        return list(requested), {}, Finding("loop I/O schedulers", True, "not needed: diskmods.sched.host is file only")
    effective, substitutions, refused = [], {}, []
    for h in requested:
        if h == FILE or (offered and h in offered):
            used = h
        elif fallback and offered and fallback in offered:
            used = substitutions[h] = fallback
        else:
            refused.append(h)
            continue
        if used not in effective:
            effective.append(used)
    if refused:
        if not offered:
            remedy = ("load the loop module (modprobe loop) so /dev/loop-control exists, or set "
                      "diskmods.sched.host: [file]")
        elif fallback:
            remedy = (f"diskmods.sched.host_fallback {fallback!r} is not offered either: set it to one of "
                      f"{offered_text}")
        else:
            remedy = (f"use a kernel with {', '.join(refused)} (CONFIG_IOSCHED_BFQ for bfq), or set "
                      f"diskmods.sched.host_fallback to one of {offered_text} (it then stands in)")
        detail = f"host scheduler(s) {', '.join(refused)} of diskmods.sched.host not offered for loop devices " \
                 f"by this kernel (offered: {offered_text})"
        return effective, substitutions, Finding("loop I/O schedulers", False, detail, SCHED_ARTIFACTS, remedy)
    if substitutions:
        said = "; ".join(f"{h} -> {u}" for h, u in substitutions.items())
        detail = f"offered for loop devices: {offered_text}; not offered: {', '.join(substitutions)}"
        return effective, substitutions, Finding(
            "loop I/O schedulers", False, detail, SCHED_ARTIFACTS,
            "a kernel with CONFIG_IOSCHED_BFQ runs the paper's scheduler (bfq, CFQ's successor)",
            substitute=f"{said} (diskmods.sched.host_fallback)")
    return effective, {}, Finding("loop I/O schedulers", True, f"offered for loop devices: {offered_text}",
                                  SCHED_ARTIFACTS)


def cfq_standin(requested: Sequence[str], effective: Sequence[str], substitutions: Mapping[str, str]) -> str:
    """The host scheduler standing in for the paper's CFQ: bfq, or what replaced it, else the first used."""
    if PAPER_HOST_SCHEDULER in requested:
        return substitutions.get(PAPER_HOST_SCHEDULER, PAPER_HOST_SCHEDULER)
    return effective[0] if effective else PAPER_HOST_SCHEDULER


# --- the other capabilities ------------------------------------------------------------------------

def memory_cgroup(root: Path, needed_by: tuple[str, ...]) -> Finding:
    """A memory controller the native disk runs can limit page cache with (guestio.workloads.memlimit)."""
    cgroup = root / "sys" / "fs" / "cgroup"
    controllers = cgroup / "cgroup.controllers"
    try:
        v2 = "memory" in controllers.read_text().split()
    except OSError:
        v2 = False
    if v2:
        return Finding("memory cgroup", True, "cgroup v2 with the memory controller", needed_by)
    if (cgroup / "memory" / "memory.limit_in_bytes").is_file():
        return Finding("memory cgroup", True, "cgroup v1 memory controller (no cgroup v2 memory controller)",
                       needed_by)
    return Finding("memory cgroup", False, f"no memory controller under {cgroup} (neither cgroup v2 nor v1)",
                   needed_by, "mount cgroup2 with the memory controller, or set disk.native_memory_limit: false "
                              "(native runs then have the host's whole page cache)")


def device(root: Path, path: str, capability: str, needed_by: tuple[str, ...], remedy: str) -> Finding:
    present = (root / path.lstrip("/")).exists()
    return Finding(capability, present, f"{path} {'present' if present else 'missing'}", needed_by,
                   "" if present else remedy)


def network_namespaces(root: Path, needed_by: tuple[str, ...], which: Callable[[str], str | None]) -> Finding:
    ip = which("ip")
    netns = (root / "proc" / "self" / "ns" / "net").exists()
    ok = bool(ip) and netns
    detail = f"ip: {ip or 'not found'}; network namespaces: {'yes' if netns else 'no (/proc/self/ns/net missing)'}"
    return Finding("network namespaces", ok, detail, needed_by,
                   "" if ok else "install iproute2 (envs/setup.sh) on a kernel with CONFIG_NET_NS")


def running_as_root(euid: int, needed_by: tuple[str, ...]) -> Finding:
    ok = euid == 0
    return Finding("root", ok, "running as root" if ok else f"running as uid {euid}", needed_by,
                   "" if ok else "run as root (loop devices, cgroups and network namespaces need it), or leave "
                                 "those artifacts out (report.artifacts)")


def kvm(root: Path, accel: str, needed_by: tuple[str, ...] = ALL_ARTIFACTS) -> Finding:
    present = (root / "dev" / "kvm").exists()
    if present:
        return Finding("kvm", True, "/dev/kvm present (whether KVM works is the probe boot's decision)",
                       needed_by)
    if accel == "kvm":
        return Finding("kvm", False, "/dev/kvm missing and vm.accel is kvm", needed_by,
                       "load kvm_intel or kvm_amd, or set vm.accel: auto (TCG where KVM does not work)")
    return Finding("kvm", False, "/dev/kvm missing", needed_by, "load kvm_intel or kvm_amd for KVM",
                   substitute="TCG emulation (vm.accel: auto)")


def kvm_events(root: Path, kvm_host: bool, needed_by: tuple[str, ...]) -> Finding:
    """Tracefs kvm events: the exit tables' backend on a KVM host; report only, never a stop."""
    if not kvm_host:
        return Finding("tracefs kvm events", True, "not a KVM host: exits come from the TCG exit model", needed_by)
    for tracing in (root / "sys" / "kernel" / "tracing", root / "sys" / "kernel" / "debug" / "tracing"):
        if (tracing / "events" / "kvm" / "kvm_exit").is_dir():
            return Finding("tracefs kvm events", True, f"{tracing}/events/kvm present", needed_by)
    return Finding("tracefs kvm events", False, "no tracefs with kvm events (/sys/kernel/tracing)", needed_by,
                   "mount tracefs (mount -t tracefs nodev /sys/kernel/tracing)",
                   substitute="the TCG exit model (exit tables from emulation)")


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_space(paths: Iterable[Path], cold: bool, needed_by: tuple[str, ...] = ALL_ARTIFACTS,
               statvfs: Callable[[Path], os.statvfs_result] = os.statvfs) -> Finding:
    """Enough free space where results_dir and build/ write (both on one file system counts once)."""
    need = COLD_RUN_GIB if cold else WARM_RUN_GIB
    seen, short = set(), []
    for path in paths:
        where = _existing(Path(path))
        st = statvfs(where)
        if st.f_fsid in seen:
            continue
        seen.add(st.f_fsid)
        free_gib = st.f_bavail * st.f_frsize / 2**30
        if free_gib < need:
            short.append(f"{path}: {free_gib:.1f} GiB free")
    names = ", ".join(map(str, paths))
    kind = "a cold run (no build/ yet)" if cold else "a run whose builds exist"
    if short:
        return Finding("free disk space", False, f"{'; '.join(short)}; {kind} needs {need} GiB", needed_by,
                       "free space there, or point results_dir at a larger file system")
    return Finding("free disk space", True, f"at least {need} GiB free for {kind} at {names}", needed_by)


def read_package_list(path: Path) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in Path(path).read_text().splitlines()
            if line.split("#", 1)[0].strip()]


def installed_packages(packages: Sequence[str]) -> set[str] | None:
    """The packages dpkg says are installed (one dpkg-query), or None without dpkg."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\n", *packages],
                             capture_output=True, text=True)
    except OSError:
        return None
    return {line.split()[0] for line in out.stdout.splitlines() if len(line.split()) > 1 and line.split()[1] == "ii"}


def debian_packages(package_list: Path, installed: Callable[[Sequence[str]], set[str] | None],
                    needed_by: tuple[str, ...] = ALL_ARTIFACTS) -> Finding:
    wanted = read_package_list(package_list)
    have = installed(wanted)
    if have is None:
        return Finding("Debian packages", False, "dpkg-query not found: not a Debian host", needed_by,
                       f"run on Debian 12 and run envs/setup.sh (it installs {package_list.name})")
    missing = [p for p in wanted if p not in have]
    if missing:
        return Finding("Debian packages", False, f"not installed: {', '.join(missing)}", needed_by,
                       f"run envs/setup.sh (it installs envs/{package_list.name})")
    return Finding("Debian packages", True, f"all {len(wanted)} of envs/{package_list.name} installed", needed_by)


def _has_deb_src(root: Path) -> bool:
    apt = root / "etc" / "apt"
    for f in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*"))]:
        try:
            text = f.read_text()
        except OSError:
            continue
        if re.search(r"^\s*deb-src\s|^\s*Types:.*\bdeb-src\b", text, re.M):
            return True
    return False


def qemu_source(root: Path, source_dir: str, locate: Callable[[str], object],
                needed_by: tuple[str, ...] = ALL_ARTIFACTS) -> Finding:
    """Debian's qemu source package in qemu.source_dir (qemu.binary: build builds from it)."""
    try:
        locate(source_dir)
    except Exception as error:   # the build module's own message names what is missing
        src = "a deb-src entry exists" if _has_deb_src(root) else "no deb-src entry in apt's sources"
        return Finding("QEMU source", False, f"{error} ({src})", needed_by,
                       f"run `{setup_command()}` (adds deb-src and downloads the source), or set qemu.binary: host")
    return Finding("QEMU source", True, f"Debian's qemu source package in {source_dir}", needed_by)


def _locate_qemu_source(source_dir: str) -> object:
    from guestio.build.qemu import source_files, source_pin
    return source_files(Path(source_dir), *source_pin())


# --- all of it -------------------------------------------------------------------------------------

def requested_artifacts(config: Mapping) -> set[str]:
    chosen = (config.get("report") or {}).get("artifacts")
    return set(ALL_ARTIFACTS) | set(SCHED_ARTIFACTS) if chosen is None else set(chosen)


def _wanted(needed_by: Sequence[str], requested: set[str]) -> tuple[str, ...]:
    return tuple(a for a in needed_by if a in requested)


def probe(config: Mapping, *, repo: Path, root: Path = ROOT, euid: int | None = None,
          which: Callable[[str], str | None] = shutil.which,
          installed: Callable[[Sequence[str]], set[str] | None] = installed_packages,
          locate_qemu_source: Callable[[str], object] = _locate_qemu_source,
          statvfs: Callable[[Path], os.statvfs_result] = os.statvfs) -> Probe:
    """Every finding for *config* on this host (or the fake one under *root*)."""
    requested = requested_artifacts(config)
    sched = config["diskmods"]["sched"]
    result = Probe()
    findings = result.findings
    needs_root: set[str] = set()

    sched_by = _wanted(SCHED_ARTIFACTS, requested)
    loops = sched_by and any(h != FILE for h in sched["host"])
    offered = loop_schedulers(root) if loops else None
    if sched_by:
        effective, subs, finding = resolve_host_schedulers(sched["host"], sched.get("host_fallback"), offered)
        findings.append(finding)
        result.host_schedulers, result.substitutions = effective, subs
    else:
        result.host_schedulers = list(sched["host"])
    result.cfq_standin = cfq_standin(sched["host"], result.host_schedulers, result.substitutions)
    if loops:
        findings.append(device(root, "/dev/loop-control", "loop devices", sched_by,
                               "load the loop module (modprobe loop), or set diskmods.sched.host: [file]"))
        needs_root.update(sched_by)

    native_by = _wanted(NATIVE_DISK_ARTIFACTS, requested) if config["disk"].get("native_memory_limit") else ()
    if native_by:
        findings.append(memory_cgroup(root, native_by))
        needs_root.update(native_by)

    net_by = _wanted(NETWORK_ARTIFACTS, requested)
    if net_by:
        findings.append(device(root, "/dev/net/tun", "tun/tap", net_by, "load the tun module (modprobe tun)"))
        findings.append(network_namespaces(root, net_by, which))
        needs_root.update(net_by)

    if needs_root:
        findings.append(running_as_root(os.geteuid() if euid is None else euid,
                                        tuple(dict.fromkeys(a for a in ALL_ARTIFACTS + SCHED_ARTIFACTS
                                                            if a in needs_root))))

    every = _wanted(ALL_ARTIFACTS, requested)
    kvm_finding = kvm(root, config["vm"].get("accel", "auto"), every)
    findings.append(kvm_finding)
    exits_by = _wanted(EXIT_ARTIFACTS, requested)
    if exits_by:
        findings.append(kvm_events(root, kvm_finding.ok, exits_by))

    results_dir, build = Path(config["results_dir"]), Path(repo) / "build"
    # An offline pack (offline.prebuilt) carries the kernels, image, QEMU and host tools built
    # elsewhere: nothing is built here, so no build trees, packages or QEMU source are needed.
    prebuilt = bool((config.get("offline") or {}).get("prebuilt"))
    findings.append(free_space([results_dir, build], cold=not build.exists() and not prebuilt, needed_by=every,
                               statvfs=statvfs))
    if prebuilt:
        return result
    findings.append(debian_packages(Path(repo) / "envs" / "debian-packages.txt", installed, every))
    if (config.get("qemu") or {}).get("binary", "build") == "build":
        findings.append(qemu_source(root, str(Path(config["qemu"]["source_dir"]).expanduser()), locate_qemu_source,
                                    every))
    return result


def stop_message(stopping: Sequence[Finding]) -> str:
    lines = [f"this host lacks what the configuration needs ({len(stopping)} problem"
             f"{'s' if len(stopping) > 1 else ''}); nothing ran:"]
    for f in stopping:
        lines.append(f"  - {f.capability}: {f.detail}; needed by {', '.join(f.needed_by)}. To do: {f.remedy}")
    return "\n".join(lines)


def record(result: Probe, path: Path) -> bool:
    """Write the findings to *path* atomically, only when they differ from what is there."""
    from guestio.util import write_text_atomic

    text = json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n"
    try:
        if Path(path).read_text() == text:
            return False
    except OSError:
        pass
    write_text_atomic(Path(path), text)
    return True


def check(config: Mapping, *, repo: Path, **kw) -> Probe:
    """Probe, record in <results_dir>/host/capabilities.json, and raise HostCapabilityError on a stop."""
    result = probe(config, repo=repo, **kw)
    record(result, Path(config["results_dir"]) / CAPABILITIES_FILE)
    stopping = result.stopping()
    if stopping:
        raise HostCapabilityError(stop_message(stopping))
    return result


def summary(capabilities: Path) -> dict | None:
    """What provenance keeps of a capabilities.json: each capability's ok, and what stood in for what."""
    try:
        data = json.loads(Path(capabilities).read_text())
    except (OSError, ValueError):
        return None
    return {"ok": {f["capability"]: f["ok"] for f in data.get("findings", [])},
            "substitutes": {f["capability"]: f["substitute"] for f in data.get("findings", []) if f.get("substitute")},
            "host_schedulers": data.get("host_schedulers"), "host_scheduler_substitutions": data.get("substitutions"),
            "cfq_standin": data.get("cfq_standin")}
