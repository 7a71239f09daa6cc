"""The network benchmarks (Fig 3, Fig 4, Fig 7, Table 2): ping, netperf, iperf3.

The paper's direction: in experiment 2 (section 2.2) netperf's server ran on HostA and its
client -- the sender of TCP_STREAM -- in HostB natively and in GuestB in the VM runs.  So here:

* ping RTT on three paths: HostA->HostB, HostB->GuestB, HostA->GuestB (iputils ping from
  the hosts, one sample per echo reply), as the paper's Fig 3;
* netperf 2.7.0 TCP_STREAM (throughput) and TCP_RR (1-byte request/response: transactions/s
  and mean latency), run in GuestB (a VM run) or in HostB (the native run) against the
  netserver the pipeline starts on HostA; netperf's key=value output;
* iperf3 (a second, independent throughput figure), the same way: client in GuestB or HostB,
  ``iperf3 -s`` on HostA, its JSON output;
* one labelled extra in the other direction, ``netperf-tcp_stream_rx``: HostA sends to a
  netserver in GuestB / HostB (metrics ``netperf_tcp_stream_rx_*``, never the paper's).

Every step records its ``sender`` and ``receiver`` (guestb, hostb, hosta), the TCP counters
(/proc/net/snmp, RetransSegs among them) of every end before and after it, and the softnet
drops (/proc/net/softnet_stat, second column, summed over CPUs) of the guest and of the
machine the two host namespaces share.  The guest NIC's GRO is turned off and read back
(:data:`GUEST_GRO`): the paper's 2.6.27 guest had no GRO, and the nonapi drivers bypass it.

A VM run (:func:`run_vm_net`) boots GuestB with one NIC (rtl8139, e1000 or virtio-net-pci)
on HostB's tap; the guest job (workflow/jobs/net.sh) runs the guest's steps when the host
asks and marks each step as a named window on the console (``GUESTIO: phase NAME`` and
``NAME.end``), so that the exit backends count each benchmark separately.
:class:`NetSession` is the host side: a :class:`guestio.vm.hooks.Hooks` that drives the
plan once the guest is ready; the guest's outputs come back in its results and are parsed
after the run with the same parsers.  A native run (:func:`run_native_net`) runs the same
plan with HostB in GuestB's place.

The parsers take the tools' own output (real captures in tests/data/net).
"""

from __future__ import annotations

import json
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

__all__ = ["Measurement", "NetBenchError", "Step", "PATHS", "NIC_MODELS", "TESTS", "GUEST_GRO", "parse_ping",
           "parse_netperf", "parse_iperf3", "parse_snmp_tcp", "parse_softnet_dropped", "plan", "step_measurements",
           "counter_measurements", "nic_interrupt_measurements", "parse_interrupts", "NetSession", "run_vm_net", "run_native_net", "JOB_SCRIPT", "nic_model",
           "mitigation_args", "read_guest_gro"]

JOB_SCRIPT = Path(__file__).resolve().parents[2] / "jobs" / "net.sh"
CONTROL_PORT = 5999
NETPERF_PORT = 12865
IPERF3_PORT = 5201
READY_PHASE = "net-ready"
DONE_PHASE = "net-done"
END = ".end"  # a step's window closes with "GUESTIO: phase NAME.end"
#: The guest NIC's GRO in every VM run: off, as in the paper's 2.6.27 guest (GRO came in 2.6.29),
#: so that Fig 7's two kernels differ only in NAPI (the nonapi drivers' netif_rx never merges).
GUEST_GRO = "off"
#: Config NIC names -> QEMU device models (NicSpec.model).
NIC_MODELS = {"rtl8139": "rtl8139", "e1000": "e1000", "virtio-net": "virtio-net-pci"}
#: The three ping paths of Fig 3: name -> (the host that pings, the address role it pings).
PATHS = {
    "hosta-hostb": ("hosta", "hostb"),
    "hostb-guestb": ("hostb", "guest"),
    "hosta-guestb": ("hosta", "guest"),
}
#: The tests a plan can hold (plan(tests=...)); tcp_stream_rx is the reverse extra.
TESTS = ("ping", "tcp_stream", "tcp_rr", "iperf3", "tcp_stream_rx")
#: The ends of a measurement: the address role of the plan -> the name in sender/receiver.
END_NAMES = {"guest": "guestb", "hostb": "hostb", "hosta": "hosta"}
#: /proc/net/snmp's TCP counters a step records (deltas), RetransSegs the sender's retransmits.
TCP_COUNTERS = ("ActiveOpens", "PassiveOpens", "InSegs", "OutSegs", "RetransSegs", "InErrs", "OutRsts")


class NetBenchError(RuntimeError):
    pass


def nic_model(nic: str) -> str:
    try:
        return NIC_MODELS[nic]
    except KeyError:
        raise NetBenchError(f"unknown NIC {nic!r}; known: {', '.join(NIC_MODELS)}") from None


def mitigation_args(nic: str, mitigation: bool) -> list[str]:
    """QEMU's e1000 interrupt mitigation (the model's ``mitigation`` property), set explicitly."""
    return ["-global", f"e1000.mitigation={'on' if mitigation else 'off'}"] if nic == "e1000" else []


# --------------------------------------------------------------------------------------------
# Parsers

_PING_REPLY = re.compile(r"^\d+ bytes from [^:]+: icmp_seq=(\d+) ttl=\d+ time=([0-9.]+) ms")
_PING_SUMMARY = re.compile(r"^(\d+) packets transmitted, (\d+) received")


def parse_ping(text: str, warmup: int = 0) -> dict:
    """iputils ping output -> {"rtt_ms": [per reply, in order], "transmitted", "received"}.

    Replies with icmp_seq <= *warmup* are dropped (the first one includes ARP resolution).
    """
    rtts, transmitted, received = [], None, None
    for line in text.splitlines():
        if m := _PING_REPLY.match(line.strip()):
            if int(m.group(1)) > warmup:
                rtts.append(float(m.group(2)))
        elif m := _PING_SUMMARY.match(line.strip()):
            transmitted, received = int(m.group(1)), int(m.group(2))
    if transmitted is None:
        raise NetBenchError("ping output has no summary line ('N packets transmitted, M received')")
    if not rtts:
        raise NetBenchError(f"ping: no replies after the first {warmup} ({received} of {transmitted} received)")
    return {"rtt_ms": rtts, "transmitted": transmitted, "received": received}


def parse_netperf(text: str) -> dict[str, str]:
    """netperf ``-- -k KEYS`` output: KEY=VALUE lines -> dict (values as text)."""
    values = {}
    for line in text.splitlines():
        if "=" in line and re.match(r"^[A-Z_0-9]+=", line):
            key, value = line.split("=", 1)
            values[key] = value.strip()
    if "THROUGHPUT" not in values:
        raise NetBenchError("netperf output has no THROUGHPUT= line (was it run with -- -k ...?): "
                            + text.strip()[-300:])
    return values


def parse_iperf3(text: str) -> dict:
    """iperf3 ``-J`` output -> {"received_bps", "sent_bps", "retransmits", "seconds"}."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NetBenchError(f"iperf3 output is not JSON ({exc}): {text.strip()[:200]}") from None
    if "error" in data:
        raise NetBenchError(f"iperf3: {data['error']}")
    end = data.get("end", {})
    try:
        received, sent = end["sum_received"], end["sum_sent"]
    except KeyError:
        raise NetBenchError("iperf3 JSON has no end.sum_received/sum_sent") from None
    return {"received_bps": float(received["bits_per_second"]), "sent_bps": float(sent["bits_per_second"]),
            "retransmits": sent.get("retransmits"), "seconds": float(received["seconds"])}


def parse_snmp_tcp(text: str) -> dict[str, int]:
    """/proc/net/snmp -> its TCP counters ({"RetransSegs": n, ...}): the two "Tcp:" lines."""
    lines = [ln.split()[1:] for ln in text.splitlines() if ln.startswith("Tcp:")]
    if len(lines) != 2 or len(lines[0]) != len(lines[1]):
        raise NetBenchError("/proc/net/snmp has no Tcp: header and value lines")
    return {k: int(v) for k, v in zip(*lines)}


def parse_interrupts(text: str, names: Iterable[str]) -> int:
    """/proc/interrupts -> the interrupts (all CPUs) of the lines whose device names contain one of *names*."""
    lines = text.splitlines()
    if not lines or not lines[0].split() or not all(c.startswith("CPU") for c in lines[0].split()):
        raise NetBenchError("/proc/interrupts has no CPU header line")
    cpus, names = len(lines[0].split()), [n for n in names if n]
    total = 0
    for line in lines[1:]:
        fields = line.split()
        counts = fields[1:1 + cpus]
        if len(counts) == cpus and all(c.isdigit() for c in counts) and any(n in fields[-1] for n in names):
            total += sum(int(c) for c in counts)
    return total


def parse_softnet_dropped(text: str) -> int:
    """/proc/net/softnet_stat -> packets dropped (second column, hex, one line per CPU), summed."""
    rows = [ln.split() for ln in text.splitlines() if ln.strip()]
    if not rows or any(len(r) < 2 for r in rows):
        raise NetBenchError("/proc/net/softnet_stat has no per-CPU rows with a dropped column")
    return sum(int(r[1], 16) for r in rows)


# --------------------------------------------------------------------------------------------
# The plan: the steps of one run, in order


@dataclass(frozen=True)
class Step:
    name: str            # also the guest's window name ("GUESTIO: phase NAME")
    kind: str            # ping | netperf | iperf3
    role: str            # where it runs: hosta | hostb (a namespace) or guest (GuestB's job)
    argv: tuple[str, ...]
    timeout_s: float
    peer: str            # the "peer" column of its measurements
    sender: str          # the end whose data the step measures going out (ping: the end that pings)
    receiver: str
    warmup: int = 0

    @property
    def in_guest(self) -> bool:
        return self.role == "guest"

    @property
    def metric_prefix(self) -> str:
        """Every metric of the step starts so (netperf-tcp_stream_rx -> netperf_tcp_stream_rx)."""
        return self.name.replace("-", "_")


NETPERF_KEYS = {
    "TCP_STREAM": "THROUGHPUT,THROUGHPUT_UNITS,ELAPSED_TIME,LOCAL_SEND_SIZE,REMOTE_RECV_SIZE,PROTOCOL,DIRECTION,"
                  "LOCAL_BYTES_SENT,REMOTE_BYTES_RECVD,LOCAL_TRANSPORT_RETRANS",
    "TCP_RR": "THROUGHPUT,THROUGHPUT_UNITS,MEAN_LATENCY,STDDEV_LATENCY,P50_LATENCY,P99_LATENCY,ELAPSED_TIME,"
              "REQUEST_SIZE,RESPONSE_SIZE",
}
# A guest step has this long beyond its own seconds (TCG is slow to set up a connection).
GUEST_SLACK_S = 90


def _netperf_argv(server: str, test: str, seconds: int) -> tuple[str, ...]:
    return ("netperf", "-H", server, "-p", str(NETPERF_PORT), "-t", test, "-l", str(seconds), "-P", "0",
            "--", "-k", NETPERF_KEYS[test])


def plan(cfg: dict, addresses, *, target: str, tests: Iterable[str] | None = None) -> list[Step]:
    """The steps of one run.  *target*: "guest" (a VM run) or "hostb" (the native run).

    The benchmarks go the paper's way: the client (the sender) in *target*, the servers on
    HostA; ``tcp_stream_rx`` is the reverse extra (HostA sends to *target*).  *cfg* is config
    ``network``: ping (count, interval_s, warmup), netperf.seconds, iperf3.seconds.  *tests*
    limits the steps (names: :data:`TESTS`).
    """
    wanted = set(tests) if tests is not None else set(TESTS)
    unknown = wanted - set(TESTS)
    if unknown:
        raise NetBenchError(f"unknown network tests {sorted(unknown)}; known: {', '.join(TESTS)}")
    ip = {"hosta": addresses.hosta, "hostb": addresses.hostb, "guest": addresses.guest}
    near, slack = END_NAMES[target], (GUEST_SLACK_S if target == "guest" else 60)
    steps = []
    if "ping" in wanted:
        p = cfg["ping"]
        count = int(p["count"]) + int(p["warmup"])
        for path, (src, dst) in PATHS.items():
            if target == "hostb" and dst == "guest":
                continue
            timeout = 10 + count * (float(p["interval_s"]) + 0.05)
            steps.append(Step(f"ping-{path}", "ping", src,
                              ("ping", "-n", "-c", str(count), "-i", f"{float(p['interval_s']):g}", "-W", "2",
                               "-s", str(int(p.get("size", 56))), ip[dst]),
                              timeout, path, END_NAMES[src], END_NAMES[dst], warmup=int(p["warmup"])))
    seconds = int(cfg["netperf"]["seconds"])
    for test in ("TCP_STREAM", "TCP_RR"):
        if test.lower() in wanted:
            steps.append(Step(f"netperf-{test.lower()}", "netperf", target,
                              _netperf_argv(addresses.hosta, test, seconds), seconds + slack, "hosta", near, "hosta"))
    if "iperf3" in wanted:
        s = int(cfg["iperf3"]["seconds"])
        steps.append(Step("iperf3", "iperf3", target,
                          ("iperf3", "-4", "-c", addresses.hosta, "-p", str(IPERF3_PORT), "-t", str(s), "-J"),
                          s + slack, "hosta", near, "hosta"))
    if "tcp_stream_rx" in wanted:
        steps.append(Step("netperf-tcp_stream_rx", "netperf", "hosta", _netperf_argv(ip[target], "TCP_STREAM", seconds),
                          seconds + 60, "hosta", "hosta", near))
    return steps


def step_measurements(step: Step, output: str) -> tuple[list[Measurement], dict]:
    """A step's measurements and a summary of it, from the tool's output."""
    if step.kind == "ping":
        r = parse_ping(output, warmup=step.warmup)
        ms = [Measurement("ping_rtt", v, "ms") for v in r["rtt_ms"]]
        lost = r["transmitted"] - r["received"]
        return ms, {"samples": len(ms), "transmitted": r["transmitted"], "received": r["received"], "lost": lost}
    prefix = step.metric_prefix
    if step.kind == "netperf":
        v = parse_netperf(output)
        if step.argv[step.argv.index("-t") + 1] == "TCP_STREAM":
            if v.get("THROUGHPUT_UNITS") != "10^6bits/s":
                raise NetBenchError(f"netperf TCP_STREAM: unexpected unit {v.get('THROUGHPUT_UNITS')!r}")
            return [Measurement(f"{prefix}_throughput", float(v["THROUGHPUT"]), "Mbit/s")], v
        return [Measurement(f"{prefix}_rate", float(v["THROUGHPUT"]), "trans/s"),
                Measurement(f"{prefix}_latency", float(v["MEAN_LATENCY"]), "us")], v
    if step.kind == "iperf3":
        r = parse_iperf3(output)
        return [Measurement(f"{prefix}_throughput", r["received_bps"] / 1e6, "Mbit/s")], r
    raise NetBenchError(f"unknown step kind {step.kind!r}")


# --------------------------------------------------------------------------------------------
# The counters of a step's ends


def _delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in TCP_COUNTERS if k in before and k in after}


def host_snapshot(tb: Testbed) -> dict:
    """HostA's and HostB's TCP counters (their own, per namespace) and the machine's softnet
    drops (/proc/net/softnet_stat is per CPU: both namespaces, and the rest of the machine, share it)."""
    snap = {}
    for role in ("hosta", "hostb"):
        r = tb.run(role, ["cat", "/proc/net/snmp"], timeout=30, check=True)
        snap[role] = parse_snmp_tcp(r.stdout)
    snap["machine_softnet_dropped"] = parse_softnet_dropped(Path("/proc/net/softnet_stat").read_text())
    return snap


def host_counters(before: Mapping, after: Mapping) -> dict:
    return {"hosta": {"tcp": _delta(before["hosta"], after["hosta"])},
            "hostb": {"tcp": _delta(before["hostb"], after["hostb"])},
            "machine": {"softnet_dropped": after["machine_softnet_dropped"] - before["machine_softnet_dropped"]}}


def guest_counters(results: Path, step: str, nic_names: Sequence[str] = ()) -> dict:
    """GuestB's TCP counters, softnet drops and NIC interrupts (the /proc/interrupts lines named
    after *nic_names*: its interface and device) over a step, from the guest job's snapshots."""
    d = Path(results) / "steps"
    try:
        snmp = [parse_snmp_tcp((d / f"{step}.snmp-{w}").read_text()) for w in ("before", "after")]
        softnet = [parse_softnet_dropped((d / f"{step}.softnet-{w}").read_text()) for w in ("before", "after")]
        irqs = [parse_interrupts((d / f"{step}.interrupts-{w}").read_text(), nic_names) if nic_names else 0
                for w in ("before", "after")]
    except FileNotFoundError as exc:
        raise NetBenchError(f"the guest's counters of {step} are missing ({exc.filename}): "
                            "is workflow/jobs/net.sh the one that ran?") from None
    counters = {"tcp": _delta(*snmp), "softnet_dropped": softnet[1] - softnet[0]}
    if nic_names:
        counters["nic_interrupts"] = irqs[1] - irqs[0]
    return counters


def nic_interrupt_measurements(step: Step, counters: Mapping, summary: Mapping) -> list[Measurement]:
    """GuestB's NIC interrupts per MiB over a TCP_STREAM step (its sender's LOCAL_BYTES_SENT):
    the mechanism of Fig 7 (NAPI polls with the NIC's interrupt off)."""
    sent = summary.get("LOCAL_BYTES_SENT")
    if step.kind != "netperf" or "nic_interrupts" not in counters.get("guestb", {}) or not sent:
        return []
    mib = float(sent) / 2**20
    return [Measurement(f"{step.metric_prefix}_nic_interrupts_per_mib",
                        counters["guestb"]["nic_interrupts"] / mib, "interrupts/MiB")] if mib > 0 else []


def counter_measurements(step: Step, counters: Mapping) -> list[Measurement]:
    """The sender's TCP retransmits and the softnet drops of both sides over a benchmark step.

    The sender's retransmits are RetransSegs of its own /proc/net/snmp (GuestB's, or HostA's or
    HostB's namespace); softnet drops: GuestB's (VM runs) and the host machine's (both namespaces).
    """
    if step.kind == "ping":
        return []
    prefix = step.metric_prefix
    ms = [Measurement(f"{prefix}_retransmits", float(counters[step.sender]["tcp"]["RetransSegs"]), "segments")]
    if "guestb" in counters:
        ms.append(Measurement(f"{prefix}_softnet_dropped_guestb", float(counters["guestb"]["softnet_dropped"]),
                              "packets"))
    ms.append(Measurement(f"{prefix}_softnet_dropped_hosts", float(counters["machine"]["softnet_dropped"]),
                          "packets"))
    return ms


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


# --------------------------------------------------------------------------------------------
# Long-form rows and what a run records


def measurement_frame(results: Sequence[tuple[Step, list[Measurement]]], run_measurements: Sequence[Measurement] = (),
                      **condition):
    """One long-form table for a run: every step's measurements with its peer (the ping path,
    or HostA, the server of the benchmarks), then *run_measurements* (peer "-", e.g. guest_gro);
    *condition*: guestio.analysis.measurements.frame's."""
    import pandas as pd

    from guestio.analysis.measurements import frame

    parts = [frame(measurements=ms, peer=step.peer, **condition) for step, ms in results if ms]
    if run_measurements:
        parts.append(frame(measurements=run_measurements, **condition))
    return pd.concat(parts, ignore_index=True)


def direction(steps: Sequence[Step]) -> dict:
    """The run's sender and receiver (of its paper benchmarks) and its extras, for the provenance."""
    paper = [s for s in steps if s.kind != "ping" and s.sender != "hosta"]
    extras = [s for s in steps if s.kind != "ping" and s.sender == "hosta"]
    ends = {(s.sender, s.receiver) for s in paper}
    if len(ends) > 1:
        raise NetBenchError(f"the benchmarks of one run go different ways: {sorted(ends)}")
    sender, receiver = next(iter(ends), ("-", "-"))
    return {"sender": sender, "receiver": receiver,
            "benchmarks": {s.name: {"sender": s.sender, "receiver": s.receiver} for s in paper},
            "extras": {s.name: {"sender": s.sender, "receiver": s.receiver,
                                "note": "the reverse of the paper's direction; not one of the paper's measurements"}
                       for s in extras}}


def tool_versions() -> dict:
    """The host side's benchmark programs, as they report themselves."""
    def first_line(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unavailable: {exc}"
        return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr).strip() else ""
    return {"netperf": first_line(["netperf", "-V"]), "iperf3": first_line(["iperf3", "--version"]),
            "ping": first_line(["ping", "-V"])}


def read_guest_nic(results: Path) -> dict:
    """The guest's nic.txt: interface, driver, mac."""
    text = (Path(results) / "nic.txt").read_text()
    return dict(kv.split("=", 1) for kv in text.split())


def read_guest_gro(results: Path) -> dict:
    """The guest NIC's GRO as the job set it and read it back, with its other offloads (ethtool -k)."""
    results = Path(results)
    try:
        gro = dict(ln.split("=", 1) for ln in (results / "gro.txt").read_text().split())
    except FileNotFoundError:
        raise NetBenchError(f"{results / 'gro.txt'} is missing: the guest job did not set GRO") from None
    offloads = {}
    for line in (results / "offloads.txt").read_text().splitlines():
        if m := re.match(r"^([a-z0-9-]+): (on|off)\b(.*)$", line.strip()):
            offloads[m.group(1)] = m.group(2) + (" [fixed]" if "[fixed]" in m.group(3) else "")
    if gro.get("readback") != gro.get("requested"):
        raise NetBenchError(f"the guest NIC's GRO reads {gro.get('readback')!r}, not {gro.get('requested')!r}")
    return {"requested": gro["requested"], "readback": gro["readback"], "offloads": offloads}


def gro_measurement(gro: Mapping) -> Measurement:
    """guest_gro: 1 when the guest NIC's GRO was on during the run, 0 when off."""
    return Measurement("guest_gro", 1.0 if gro["readback"] == "on" else 0.0, "on=1")
