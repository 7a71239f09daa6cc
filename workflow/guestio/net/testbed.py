"""The paper's two-host network testbed, in network namespaces of the pipeline's own.

The paper had two physical hosts, HostA and HostB, on one gigabit link, and a
guest, GuestB, under KVM on HostB.  :class:`Testbed` builds the same on one
machine::

    namespace guestio-net-<tag>-a (HostA)        namespace guestio-net-<tag>-b (HostB)
      link0 10.210.0.1/24  <== veth pair ==>     link0 --+
      (tc: rate, delay)        "the link"        tap0  --+-- br0 10.210.0.2/24
                                                  |
                                                QEMU (started in HostB's namespace)
                                                  |
                                                GuestB eth0 10.210.0.3/24

* Nothing is created in the machine's own (default) namespace: the veth pair is
  created with both ends already in their namespaces, the tap inside HostB, and
  QEMU is started inside HostB's namespace (:meth:`Testbed.qemu_wrapper`:
  ``nsenter --net`` then exec, so the pid QEMU's lifecycle watches stays QEMU's).
  The addresses come from a private range (``network.subnet``) and exist only
  inside the two namespaces; the machine's interfaces and routes are never touched.
* The link is shaped on both veth ends by tc: ``tbf`` at ``rate``, and ``netem``
  with ``delay`` when a delay is asked for (the kernel must have sch_netem; if it
  has not, the testbed refuses, naming the key).  :meth:`Testbed.describe` records
  what was applied (``tc qdisc show`` of both ends).
* :meth:`Testbed.close` (the context manager's exit) stops every process the
  testbed started, every process still inside its namespaces, and deletes both
  namespaces, which removes the veth pair, the bridge and the tap with them.  It
  runs on errors and on SIGTERM/SIGINT (which guestio.lifetime turns into an
  exception).  A run killed outright (SIGKILL) cannot tidy up: each testbed holds
  an flock on ``/run/guestio-net/<tag>.lock`` while it lives, and the next testbed
  (or :func:`guestio.net.namespaces.cleanup_stale`) removes every ``guestio-net-*`` namespace whose lock
  is free before it builds its own.
* What the testbeds leave in /run and /tmp goes with them: the lock files, the QEMU wrapper's
  directory (``/tmp/guestio-net-<tag>-*``), and, when the last testbed closes, ``/run/netns``
  and ``/run/guestio-net`` as they were before the first one (``ip netns add`` creates
  /run/netns and bind-mounts it on itself; that mount is undone).  Whether /run/netns was
  there, and mounted, is noted in ``/run/guestio-net/netns-dir.json`` by the first testbed;
  ``flock`` on /run itself keeps two testbeds' set-up and tear-down of these apart.
* Namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN): :func:`require_root` refuses
  with a clear message otherwise.

What the machine has, and the leftovers of killed runs, are :mod:`guestio.net.namespaces`.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import ipaddress
import os
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from guestio.net import NotRootError, TestbedError
from guestio.net.namespaces import (LOCK_DIR, NETNS_DIR, NS_PREFIX, TERM_WAIT_S, TMP_PREFIX, cleanup_stale,
                                    delete_namespace, note_netns_dir, restore_shared_dirs, run_command,
                                    shared_dirs_lock)

LINK = "link0"      # the veth end in each namespace
BRIDGE = "br0"      # HostB's bridge: its veth end and the guest's tap
TAP = "tap0"        # the guest's tap, in HostB
ROLES = ("hosta", "hostb")
CLONE_NEWNET = 0x40000000


def require_root(what: str = "the network testbed") -> None:
    if os.geteuid() != 0:
        raise NotRootError(
            f"{what} needs root: it creates network namespaces, a veth pair, a bridge and a tap "
            f"(CAP_SYS_ADMIN and CAP_NET_ADMIN); run the pipeline as root (uid is {os.geteuid()})")


@dataclass(frozen=True)
class Shape:
    """How the HostA<->HostB link is shaped (each direction): tc rate and optional delay."""

    rate: str | None = "1gbit"  # tc rate (e.g. 1gbit, 100mbit); None: not shaped
    delay: str | None = None    # one-way delay (e.g. 0.1ms); needs sch_netem
    burst: str = "256kb"        # tbf bucket
    latency: str = "10ms"       # tbf queue limit as latency

    @classmethod
    def from_config(cls, cfg: dict) -> "Shape":
        return cls(rate=cfg.get("rate") or None, delay=cfg.get("delay") or None,
                   burst=cfg.get("burst", "256kb"), latency=cfg.get("queue_latency", "10ms"))


@dataclass(frozen=True)
class Addresses:
    hosta: str
    hostb: str
    guest: str
    prefixlen: int

    @classmethod
    def from_subnet(cls, subnet: str) -> "Addresses":
        try:
            net = ipaddress.ip_network(subnet, strict=True)
        except ValueError as exc:
            raise TestbedError(f"network.subnet {subnet!r}: {exc}") from None
        if net.version != 4 or not net.is_private:
            raise TestbedError(f"network.subnet {subnet!r} must be a private IPv4 range "
                               "(its addresses exist only inside the testbed's namespaces)")
        hosts = []
        for h in net.hosts():
            hosts.append(str(h))
            if len(hosts) == 3:
                break
        if len(hosts) < 3:
            raise TestbedError(f"network.subnet {subnet!r} has room for fewer than 3 hosts")
        return cls(hosts[0], hosts[1], hosts[2], net.prefixlen)


# --------------------------------------------------------------------------------------------
# The testbed


def _pdeathsig() -> Callable[[], None]:
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return preexec


@dataclass
class Testbed:
    """HostA and HostB in namespaces, joined by a shaped veth pair; a tap for the guest.

    Use as a context manager: ``with Testbed(...) as tb:`` builds it (after removing
    what killed runs left) and tears it down however the block ends.
    """

    __test__ = False  # not a pytest class (its name starts with "Test")

    subnet: str = "10.210.0.0/24"
    shape: Shape = field(default_factory=Shape)
    log: Callable[[str], None] = print
    tag: str = field(default_factory=lambda: f"{os.getpid()}-{secrets.token_hex(3)}")

    def __post_init__(self) -> None:
        self.addresses = Addresses.from_subnet(self.subnet)
        self.namespaces = {"hosta": f"{NS_PREFIX}{self.tag}-a", "hostb": f"{NS_PREFIX}{self.tag}-b"}
        self._lock_fd: int | None = None
        self._procs: list[subprocess.Popen] = []
        self._tmp: Path | None = None
        self._built = False
        self._qdiscs: dict[str, str] = {}

    # -- life ---------------------------------------------------------------------------------

    def __enter__(self) -> "Testbed":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        require_root()
        for tool in ("ip", "tc", "nsenter"):
            if not any(Path(d, tool).is_file() for d in os.environ.get("PATH", "/usr/sbin:/usr/bin").split(":")
                       + ["/usr/sbin", "/sbin", "/usr/bin"]):
                raise TestbedError(f"{tool} not found (iproute2 / util-linux; see envs/debian-packages.txt)")
        cleanup_stale(self.log, restore=False)
        with shared_dirs_lock():
            LOCK_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
            note_netns_dir()
            self._lock_fd = os.open(LOCK_DIR / f"{self.tag}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            os.write(self._lock_fd, f"{os.getpid()}\n".encode())
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _ip(self, role: str | None, *args: str) -> None:
        run_command(["ip", *(["-n", self.namespaces[role]] if role else []), *args])

    def _build(self) -> None:
        a, b = self.namespaces["hosta"], self.namespaces["hostb"]
        ad = self.addresses
        for ns in (a, b):
            run_command(["ip", "netns", "add", ns])
        self._built = True
        # Both ends are created inside their namespaces: nothing appears in the machine's own.
        self._ip("hosta", "link", "add", LINK, "type", "veth", "peer", "name", LINK, "netns", b)
        self._ip("hostb", "link", "add", BRIDGE, "type", "bridge", "forward_delay", "0", "stp_state", "0")
        self._ip("hostb", "tuntap", "add", "dev", TAP, "mode", "tap")
        self._ip("hostb", "link", "set", LINK, "master", BRIDGE)
        self._ip("hostb", "link", "set", TAP, "master", BRIDGE)
        for role, links in (("hosta", ("lo", LINK)), ("hostb", ("lo", LINK, TAP, BRIDGE))):
            for link in links:
                self._ip(role, "link", "set", link, "up")
        self._ip("hosta", "addr", "add", f"{ad.hosta}/{ad.prefixlen}", "dev", LINK)
        self._ip("hostb", "addr", "add", f"{ad.hostb}/{ad.prefixlen}", "dev", BRIDGE)
        for role in ROLES:
            self._shape(role)
        self._wait_link()
        self.log(f"testbed {self.tag}: HostA {ad.hosta} ({a}) <-> HostB {ad.hostb} ({b}), guest {ad.guest} on "
                 f"{TAP}/{BRIDGE}; link {self.shape_text()}")

    def _wait_link(self, timeout_s: float = 15.0) -> None:
        """Until HostA reaches HostB: the bridge port must have left the learning state."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = run_command(["bridge", "-n", self.namespaces["hostb"], "link", "show", "dev", LINK],
                                check=False).stdout
            if "forwarding" in state and run_command([*self.enter("hosta"), "ping", "-c", "1", "-W", "1", "-q",
                                                self.addresses.hostb], check=False).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise TestbedError(f"HostA cannot reach HostB over the veth pair within {timeout_s:g} s "
                                   f"(bridge port: {state.strip() or 'unknown'})")
            time.sleep(0.1)

    def _shape(self, role: str) -> None:
        ns, s = self.namespaces[role], self.shape
        tc = ["tc", "-n", ns, "qdisc", "add", "dev", LINK]
        if s.delay:
            r = run_command([*tc, "root", "handle", "1:", "netem", "delay", s.delay], check=False)
            if r.returncode != 0:
                raise TestbedError(f"network.link.delay {s.delay!r}: tc netem failed on this kernel "
                                   f"({r.stderr.strip()}); sch_netem is needed for a delay, or set no delay")
            if s.rate:
                run_command([*tc, "parent", "1:1", "handle", "10:", "tbf", "rate", s.rate, "burst", s.burst,
                      "latency", s.latency])
        elif s.rate:
            r = run_command([*tc, "root", "tbf", "rate", s.rate, "burst", s.burst, "latency", s.latency], check=False)
            if r.returncode != 0:
                raise TestbedError(f"network.link.rate {s.rate!r}: tc tbf failed ({r.stderr.strip()})")
        self._qdiscs[role] = run_command(["tc", "-n", ns, "qdisc", "show", "dev", LINK]).stdout.strip()

    def shape_text(self) -> str:
        parts = [f"rate {self.shape.rate}" if self.shape.rate else "not rate-limited"]
        if self.shape.delay:
            parts.append(f"delay {self.shape.delay} each way")
        return ", ".join(parts)

    def close(self) -> None:
        """Stop everything in the testbed and delete it; safe to call twice."""
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
        try:
            for proc in self._procs:
                self._stop(proc)
            self._procs.clear()
            errors = []
            if self._built:
                for ns in self.namespaces.values():
                    try:
                        if (NETNS_DIR / ns).exists():
                            delete_namespace(ns)
                    except TestbedError as exc:
                        errors.append(str(exc))
                self._built = False
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None
            if self._lock_fd is not None:
                with shared_dirs_lock():
                    with contextlib.suppress(FileNotFoundError):
                        (LOCK_DIR / f"{self.tag}.lock").unlink()
                    os.close(self._lock_fd)
                    self._lock_fd = None
                    restore_shared_dirs(self.log)
            if errors:
                raise TestbedError("; ".join(errors))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def stop_processes(self) -> None:
        """Stop every process the testbed started (a run that is over stops its benchmarks)."""
        for proc in list(self._procs):
            self._stop(proc)

    @staticmethod
    def _stop(proc: subprocess.Popen) -> None:
        if proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, TERM_WAIT_S), (signal.SIGKILL, 30)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    # -- use ----------------------------------------------------------------------------------

    def enter(self, role: str) -> list[str]:
        """The argv prefix that runs a command inside a host's namespace."""
        return ["nsenter", f"--net={NETNS_DIR / self.namespaces[role]}", "--"]

    def enter_thread(self, role: str) -> None:
        """Move the calling thread (only it) into a host's namespace: its sockets are that host's.

        For a thread of its own (the host side of a run): the namespace of a thread is its own,
        and the machine's namespace stays the one of every other thread and of the process.
        """
        if threading.current_thread() is threading.main_thread():
            raise TestbedError("enter_thread: not in the main thread (it would move the whole job)")
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(NETNS_DIR / self.namespaces[role], os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise TestbedError(f"setns into {self.namespaces[role]}: {os.strerror(err)}")
        finally:
            os.close(fd)

    def run(self, role: str, argv: Sequence[str], *, timeout: float, check: bool = False) -> subprocess.CompletedProcess:
        """Run a command in HostA's or HostB's namespace (own process group, killed on timeout)."""
        proc = self.popen(role, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._stop(proc)
            out, err = proc.communicate()
            raise TestbedError(f"`{shlex.join(argv)}` in {role} did not finish within {timeout:g} s: "
                               f"{err.decode(errors='replace').strip()[-500:]}") from None
        finally:
            with contextlib.suppress(ValueError):
                self._procs.remove(proc)
        result = subprocess.CompletedProcess(list(argv), proc.returncode, out.decode(errors="replace"),
                                             err.decode(errors="replace"))
        if check and result.returncode != 0:
            raise TestbedError(f"`{shlex.join(argv)}` in {role} failed (exit {result.returncode}): "
                               f"{(result.stderr or result.stdout).strip()[-1000:]}")
        return result

    def popen(self, role: str, argv: Sequence[str], **kw) -> subprocess.Popen:
        """Start a process in a host's namespace; it is stopped when the testbed closes."""
        if not self._built:
            raise TestbedError("the testbed is not built (use it inside `with Testbed(...)`)")
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen([*self.enter(role), *argv], start_new_session=True,
                                preexec_fn=_pdeathsig(), **kw)
        self._procs.append(proc)
        return proc

    def qemu_wrapper(self, qemu: str) -> str:
        """A path to give VMSpec.qemu: runs *qemu* inside HostB's namespace (nsenter, then exec)."""
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{self.tag}-"))
        wrapper = self._tmp / "qemu-system-x86_64"
        wrapper.write_text("#!/bin/sh\n# guestio.net.testbed: QEMU inside HostB's network namespace\n"
                           f"exec {shlex.join(self.enter('hostb'))} {shlex.quote(str(qemu))} \"$@\"\n")
        wrapper.chmod(stat.S_IRWXU)
        return str(wrapper)

    @staticmethod
    def netdev() -> str:
        """The -netdev of the guest's NIC: HostB's tap (QEMU runs in HostB's namespace)."""
        return f"tap,ifname={TAP},script=no,downscript=no"

    def describe(self) -> dict:
        """What the testbed was: names, addresses, the link's shaping as tc shows it."""
        ad = self.addresses
        return {
            "namespaces": dict(self.namespaces),
            "subnet": self.subnet,
            "addresses": {"hosta": ad.hosta, "hostb": ad.hostb, "guest": ad.guest, "prefixlen": ad.prefixlen},
            "link": {"kind": "veth pair", "rate": self.shape.rate, "delay": self.shape.delay,
                     "tbf_burst": self.shape.burst if self.shape.rate else None,
                     "tbf_latency": self.shape.latency if self.shape.rate else None,
                     "qdiscs": dict(self._qdiscs)},
            "guest_attachment": f"{TAP} on bridge {BRIDGE} in HostB with HostB's veth end",
            "iproute2": run_command(["ip", "-V"], check=False).stdout.strip(),
        }
