"""Running a network plan: a step's results, the host side of a VM run, the native run."""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from guestio.analysis.measurements import Measurement
from guestio.net.testbed import Testbed
from guestio.vm import Hooks, NicSpec, RunResult, VMSpec, run_vm
from guestio.workloads.netbench import (
    DONE_PHASE, END, GUEST_GRO, IPERF3_PORT, NETPERF_PORT, READY_PHASE, NetBenchError, Step, mitigation_args,
    nic_model, plan)
from guestio.workloads.netbench_counters import (
    counter_measurements, guest_counters, host_counters, host_snapshot, nic_interrupt_measurements)
from guestio.workloads.netbench_parsers import step_measurements
from guestio.workloads.netbench_records import read_guest_nic

JOB_SCRIPT = Path(__file__).resolve().parents[2] / "jobs" / "net.sh"
CONTROL_PORT = 5999


def _check_rc(step: Step, rc: int, stdout: str, stderr: str) -> None:
    if rc != 0 and not (step.kind == "ping" and rc == 1 and "received" in stdout):
        where = "GuestB" if step.in_guest else step.role
        raise NetBenchError(f"{step.name}: `{shlex.join(step.argv)}` in {where} exited {rc}: "
                            f"{(stderr or stdout).strip()[-500:]}")


def _run_host_step(tb: Testbed, step: Step, hostdir: Path) -> tuple[list[Measurement], dict]:
    result = tb.run(step.role, list(step.argv), timeout=step.timeout_s)
    (hostdir / f"{step.name}.txt").write_text(result.stdout)
    if result.stderr.strip():
        (hostdir / f"{step.name}.stderr").write_text(result.stderr)
    _check_rc(step, result.returncode, result.stdout, result.stderr)
    return step_measurements(step, result.stdout)


def guest_step_result(step: Step, results: Path) -> tuple[list[Measurement], dict]:
    """A step GuestB ran: its output, stderr and exit status from the guest's results."""
    d = Path(results) / "steps"
    try:
        rc = int((d / f"{step.name}.rc").read_text().strip())
    except (FileNotFoundError, ValueError):
        raise NetBenchError(f"{step.name}: the guest's exit status ({d / (step.name + '.rc')}) is missing: "
                            "the guest never finished the step") from None
    out = (d / f"{step.name}.txt").read_text(errors="replace")
    err = (d / f"{step.name}.stderr").read_text(errors="replace") if (d / f"{step.name}.stderr").exists() else ""
    _check_rc(step, rc, out, err)
    return step_measurements(step, out)


def _record(step: Step, summary: dict, counters: dict, seconds: float) -> dict:
    """What steps.json and the provenance keep of one step."""
    record = {"step": step.name, "kind": step.kind, "role": "guestb" if step.in_guest else step.role,
              "sender": step.sender, "receiver": step.receiver, "argv": list(step.argv), **summary,
              "counters": counters, "seconds": round(seconds, 3)}
    if step.kind != "ping":
        record["sender_retrans_segs"] = counters[step.sender]["tcp"]["RetransSegs"]
    return record


# --------------------------------------------------------------------------------------------
# The host side of a VM run


@dataclass
class _Done:
    """A step the host has finished driving; a guest step's results come after the run."""
    step: Step
    host: dict
    seconds: float
    measurements: list[Measurement] | None = None
    summary: dict | None = None


@dataclass
class NetSession(Hooks):
    """Drives *steps* once the guest says it is ready; then tells it "done".

    A host step is announced to the guest ("phase NAME": its window opens), run from its
    namespace, and closed ("end NAME").  A guest step is one command, "run NAME SECS ARGV...":
    the guest opens the window, runs it and closes the window itself.  The steps run in a
    thread of their own, so the VM's supervision (panics, timeouts) goes on meanwhile.
    Whatever happens, the guest is told "done" (so it powers off), and after QEMU is gone the
    thread is stopped and joined.  :meth:`collect` then reads the guest's outputs and counters.
    """

    testbed: Testbed
    steps: list[Step]
    hostdir: Path
    log: Callable[[str], None] = print
    phase_timeout_s: float = 30.0
    measurements: list[tuple[Step, list[Measurement]]] = field(default_factory=list)
    summaries: list[dict] = field(default_factory=list)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        # Each command waits for the guest's answer on the console (its window opened or closed,
        # or the job finished) before the next is sent: the guest's nc for one command may still
        # hold its listening socket, and a connection queued there would be lost when it exits.
        names = [s.name for s in self.steps]
        self._seen: dict[str, threading.Event] = {n: threading.Event()
                                                  for n in names + [n + END for n in names] + [DONE_PHASE]}
        self._job_finished = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._done: list[_Done] = []
        self.finished = False
        Path(self.hostdir).mkdir(parents=True, exist_ok=True)

    def phase(self, machine, name: str) -> None:
        if name == READY_PHASE and self._thread is None:
            self._thread = threading.Thread(target=self._work, name="guestio-net-host", daemon=True)
            self._thread.start()
        elif name in self._seen:
            self._seen[name].set()

    def job_finished(self, machine, status: int) -> None:
        self._job_finished.set()

    def _command(self, command: str, answered: threading.Event, timeout_s: float) -> None:
        """Send until the guest answers (a lost connection is sent again; the guest ignores a
        repeated run, and refuses connections while it runs one)."""
        deadline = time.monotonic() + timeout_s
        while not self._stop.is_set():
            try:
                self._send(command, answered, timeout_s=max(1.0, deadline - time.monotonic()))
            except NetBenchError:
                if not answered.is_set() and time.monotonic() > deadline:
                    raise
            if answered.wait(3.0):
                return
            if time.monotonic() > deadline:
                raise NetBenchError(f"the guest did not answer {command!r} within {timeout_s:g} s")

    def _send(self, command: str, answered: threading.Event, timeout_s: float = 20.0) -> None:
        """One command, one connection to the guest's control port (from HostB: this thread's namespace)."""
        deadline = time.monotonic() + timeout_s
        while not answered.is_set():
            try:
                with socket.create_connection((self.testbed.addresses.guest, CONTROL_PORT), timeout=2) as s:
                    s.sendall(command.encode() + b"\n")
                return
            except OSError as exc:  # the guest's nc is between two connections, or not up yet
                if time.monotonic() > deadline or self._stop.is_set():
                    raise NetBenchError(f"sending {command!r} to the guest: {exc}") from None
                time.sleep(0.05)

    def _wait(self, event: threading.Event, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not event.wait(1.0):
            if self._stop.is_set() or self._job_finished.is_set():
                raise NetBenchError(f"the guest stopped before {what}")
            if time.monotonic() > deadline:
                raise NetBenchError(f"no {what} within {timeout_s:g} s")

    def _guest_step(self, step: Step) -> None:
        if any(re.search(r"\s", a) for a in step.argv):
            raise NetBenchError(f"{step.name}: an argument with white space cannot go to the guest: {step.argv}")
        self._command(f"run {step.name} {int(step.timeout_s)} {' '.join(step.argv)}", self._seen[step.name],
                      self.phase_timeout_s)
        self._wait(self._seen[step.name + END], f"end of {step.name} in the guest", step.timeout_s + 30)

    def _host_step(self, step: Step) -> tuple[list[Measurement], dict]:
        self._command(f"phase {step.name}", self._seen[step.name], self.phase_timeout_s)
        ms, summary = _run_host_step(self.testbed, step, Path(self.hostdir))
        self._command(f"end {step.name}", self._seen[step.name + END], self.phase_timeout_s)
        return ms, summary

    def _work(self) -> None:
        try:
            self.testbed.enter_thread("hostb")
            for step in self.steps:
                if self._stop.is_set():
                    return
                before, t0 = host_snapshot(self.testbed), time.monotonic()
                if step.in_guest:
                    self._guest_step(step)
                    done = _Done(step, {}, time.monotonic() - t0)
                    self.log(f"{step.name}: ran in the guest ({done.seconds:.1f} s)")
                else:
                    ms, summary = self._host_step(step)
                    done = _Done(step, {}, time.monotonic() - t0, ms, summary)
                    self.log(f"{step.name}: {_brief(ms)}")
                done.host = host_counters(before, host_snapshot(self.testbed))
                self._done.append(done)
            self._command(f"phase {DONE_PHASE}", self._seen[DONE_PHASE], self.phase_timeout_s)
            self.finished = True
        except BaseException as exc:  # reported after the run
            self.error = exc
            self.log(f"host side failed: {exc}")
        finally:
            if not self._stop.is_set():
                try:
                    self._command("done", self._job_finished, self.phase_timeout_s)
                except Exception as exc:
                    self.log(f"could not tell the guest to finish: {exc}")

    def after_shutdown(self, machine, result) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            # QEMU is gone: a benchmark still running has nobody to talk to.
            self.testbed.stop_processes()
            self._thread.join(60)

    def collect(self, results: Path) -> None:
        """Every step's measurements and record, with the guest's outputs and counters (*results*:
        the guest's results directory); a guest step's output goes through the same parsers."""
        nic = read_guest_nic(results)
        nic_names = [n for n in (nic.get("interface"), nic.get("device")) if n]
        for done in self._done:
            step = done.step
            if step.in_guest:
                done.measurements, done.summary = guest_step_result(step, results)
                self.log(f"{step.name}: {_brief(done.measurements)}")
            counters = {**done.host, "guestb": guest_counters(results, step.name, nic_names)}
            self.measurements.append((step, done.measurements + counter_measurements(step, counters)
                                      + nic_interrupt_measurements(step, counters, done.summary)))
            self.summaries.append(_record(step, done.summary, counters, done.seconds))


def _brief(ms: Sequence[Measurement]) -> str:
    if not ms:
        return "no measurements"
    if ms[0].metric == "ping_rtt":
        vals = sorted(m.value for m in ms)
        return f"{len(vals)} samples, median {vals[len(vals) // 2]:.3f} ms"
    return ", ".join(f"{m.metric} {m.value:.1f} {m.unit}" for m in ms)


def _start_servers(tb: Testbed, hostdir: Path, servers: Mapping[str, Sequence[str]]) -> None:
    """netserver / iperf3 -s in the namespaces named; each listening before the run goes on."""
    ports: dict[str, list[int]] = {}
    for role, kinds in servers.items():
        for kind in kinds:
            argv, port = ((["netserver", "-D", "-4", "-p", str(NETPERF_PORT)], NETPERF_PORT) if kind == "netserver"
                          else (["iperf3", "-s", "-4", "-p", str(IPERF3_PORT)], IPERF3_PORT))
            tb.popen(role, argv, stdout=open(hostdir / f"{kind}-{role}.log", "w"), stderr=subprocess.STDOUT)
            ports.setdefault(role, []).append(port)
    for role, role_ports in ports.items():
        _wait_listening(tb, role, role_ports)


def run_vm_net(*, testbed: Testbed, kernel, initrd, append: str, accel: str, memory_mib: int, nic: str,
               mitigation: bool, net: dict, outdir, boot_timeout_s: float, job_timeout_s: float,
               log: Callable[[str], None] = print, cpus: int = 1, hooks: Iterable[Hooks] = (),
               tests: Iterable[str] | None = None, qemu: str = "qemu-system-x86_64",
               firmware_dir: str | None = None, run_label: str | None = None, gro: str = GUEST_GRO,
               ) -> tuple[RunResult, NetSession]:
    """GuestB with one *nic* on HostB's tap, sending to the servers on HostA (the paper's way).

    Raises VMRunError when the run does not end "ok", NetBenchError when the host side
    failed (its message names the step).
    """
    outdir = Path(outdir).absolute()
    outdir.mkdir(parents=True, exist_ok=True)
    ad = testbed.addresses
    steps = plan(net, ad, target="guest", tests=tests)
    params = {"GUEST_IP": ad.guest, "PREFIXLEN": str(ad.prefixlen), "CONTROL_PORT": str(CONTROL_PORT),
              "NETPERF_PORT": str(NETPERF_PORT), "GRO": gro}
    params_path = outdir / "params"
    params_path.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in params.items()))
    session = NetSession(testbed, steps, outdir / "host", log=log)
    kinds = {s.kind for s in steps if s.in_guest}
    servers = [k for k, used in (("netserver", "netperf" in kinds), ("iperf3", "iperf3" in kinds)) if used]
    if servers:
        _start_servers(testbed, Path(session.hostdir), {"hosta": servers})
    spec = VMSpec(kernel=Path(kernel), initrd=Path(initrd), append=append, accel=accel,
                  memory_mib=int(memory_mib), cpus=int(cpus), job=JOB_SCRIPT, inputs={"params": params_path},
                  nics=[NicSpec(model=nic_model(nic), netdev=testbed.netdev())],
                  extra_args=mitigation_args(nic, mitigation),
                  qemu=testbed.qemu_wrapper(qemu), firmware_dir=firmware_dir)
    result = run_vm(spec, outdir, boot_timeout_s=boot_timeout_s, job_timeout_s=job_timeout_s, log=log,
                    hooks=[session, *hooks], check=True, label=run_label or f"net {nic} in {outdir.name}")
    if session.error is not None:
        raise NetBenchError(f"{run_label or outdir}: the host side failed: {session.error}") from session.error
    if not session.finished:
        raise NetBenchError(f"{run_label or outdir}: the guest finished before the host's plan did")
    session.collect(outdir / "results")
    return result, session


def run_native_net(*, testbed: Testbed, net: dict, outdir, log: Callable[[str], None] = print,
                   tests: Iterable[str] | None = None) -> tuple[list[tuple[Step, list[Measurement]]], list[dict]]:
    """The same plan natively: HostB sends to HostA (netserver and iperf3 -s on HostA; a
    netserver on HostB for the reverse extra)."""
    hostdir = Path(outdir).absolute() / "host"
    hostdir.mkdir(parents=True, exist_ok=True)
    steps = plan(net, testbed.addresses, target="hostb", tests=tests)
    servers: dict[str, list[str]] = {}
    for s in steps:
        if s.kind == "ping":
            continue
        server_role = {"hosta": "hosta", "hostb": "hostb"}[s.receiver]
        kind = "netserver" if s.kind == "netperf" else "iperf3"
        if kind not in servers.setdefault(server_role, []):
            servers[server_role].append(kind)
    _start_servers(testbed, hostdir, servers)
    results, summaries = [], []
    for step in steps:
        before, t0 = host_snapshot(testbed), time.monotonic()
        ms, summary = _run_host_step(testbed, step, hostdir)
        counters = host_counters(before, host_snapshot(testbed))
        results.append((step, ms + counter_measurements(step, counters)))
        summaries.append(_record(step, summary, counters, time.monotonic() - t0))
        log(f"{step.name}: {_brief(ms)}")
    return results, summaries


def _wait_listening(tb: Testbed, role: str, ports: Sequence[int], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        out = tb.run(role, ["ss", "-Htln"], timeout=10).stdout
        missing = [p for p in ports if not re.search(rf":{p}\b", out)]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise NetBenchError(f"servers in {role} not listening on {missing} after {timeout_s:g} s")
        time.sleep(0.05)
