"""The network benchmarks (Fig 3, Fig 4, Fig 7, Table 2): ping, netperf, iperf3.

Everything is driven from the host side of the testbed (guestio.net.testbed), as in
the paper, where HostA measured against HostB and GuestB:

* ping RTT on three paths: HostA->HostB, HostB->GuestB, HostA->GuestB (iputils ping,
  one sample per echo reply);
* netperf 2.7.0 TCP_STREAM (throughput, HostA sends, the far end receives) and TCP_RR
  (1-byte request/response: transactions/s and mean latency), netperf's key=value output;
* iperf3 (a second, independent throughput figure; HostA sends), its JSON output.

A VM run (:func:`run_vm_net`) boots GuestB with one NIC (rtl8139, e1000 or
virtio-net-pci) on HostB's tap; the guest job (workflow/jobs/net.sh) serves netperf
and iperf3 and marks each step as a named window on the console (``GUESTIO: phase
NAME``) when the host asks for it, so that the exit backends count each benchmark
separately.  :class:`NetSession` is the host side: a :class:`guestio.vm.machine.Hooks`
that starts the plan once the guest is ready and tells the guest when it is done.  A
native run (:func:`run_native_net`) runs the same plan against HostB.

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
from typing import Callable, Iterable, NamedTuple, Sequence

from guestio.net.testbed import Testbed, TestbedError
from guestio.vm.machine import Hooks, NicSpec, RunResult, VMRunError, VMSpec, run_vm

__all__ = ["Measurement", "NetBenchError", "Step", "PATHS", "NIC_MODELS", "parse_ping", "parse_netperf",
           "parse_iperf3", "plan", "step_measurements", "NetSession", "run_vm_net", "run_native_net",
           "JOB_SCRIPT", "nic_model", "mitigation_args"]

JOB_SCRIPT = Path(__file__).resolve().parents[2] / "jobs" / "net.sh"
CONTROL_PORT = 5999
NETPERF_PORT = 12865
IPERF3_PORT = 5201
READY_PHASE = "net-ready"
DONE_PHASE = "net-done"
#: Config NIC names -> QEMU device models (NicSpec.model).
NIC_MODELS = {"rtl8139": "rtl8139", "e1000": "e1000", "virtio-net": "virtio-net-pci"}
#: The three ping paths of Fig 3: name -> (the host that pings, the address role it pings).
PATHS = {
    "hosta-hostb": ("hosta", "hostb"),
    "hostb-guestb": ("hostb", "guest"),
    "hosta-guestb": ("hosta", "guest"),
}


class Measurement(NamedTuple):
    metric: str
    value: float
    unit: str


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


# --------------------------------------------------------------------------------------------
# The plan: what the host runs, in order


@dataclass(frozen=True)
class Step:
    name: str            # also the guest's window name ("GUESTIO: phase NAME")
    kind: str            # ping | netperf | iperf3
    role: str            # the namespace it runs in: hosta | hostb
    argv: tuple[str, ...]
    timeout_s: float
    peer: str            # the "peer" column of its measurements
    warmup: int = 0


NETPERF_KEYS = {
    "TCP_STREAM": "THROUGHPUT,THROUGHPUT_UNITS,ELAPSED_TIME,LOCAL_SEND_SIZE,REMOTE_RECV_SIZE,PROTOCOL,DIRECTION",
    "TCP_RR": "THROUGHPUT,THROUGHPUT_UNITS,MEAN_LATENCY,STDDEV_LATENCY,P50_LATENCY,P99_LATENCY,ELAPSED_TIME,"
              "REQUEST_SIZE,RESPONSE_SIZE",
}


def plan(cfg: dict, addresses, *, target: str, tests: Iterable[str] | None = None) -> list[Step]:
    """The steps of one run.  *target*: "guest" (a VM run) or "hostb" (the native run).

    *cfg* is config ``network``: ping (count, interval_s, warmup), netperf.seconds,
    iperf3.seconds.  *tests* limits the steps (names: ping, tcp_stream, tcp_rr, iperf3).
    """
    wanted = set(tests) if tests is not None else {"ping", "tcp_stream", "tcp_rr", "iperf3"}
    ip = {"hosta": addresses.hosta, "hostb": addresses.hostb, "guest": addresses.guest}
    far = ip[target]
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
                              timeout, path, warmup=int(p["warmup"])))
    seconds = int(cfg["netperf"]["seconds"])
    for test in ("TCP_STREAM", "TCP_RR"):
        if test.lower() in wanted:
            steps.append(Step(f"netperf-{test.lower()}", "netperf", "hosta",
                              ("netperf", "-H", far, "-p", str(NETPERF_PORT), "-t", test, "-l", str(seconds),
                               "-P", "0", "--", "-k", NETPERF_KEYS[test]),
                              seconds + 60, "hosta"))
    if "iperf3" in wanted:
        s = int(cfg["iperf3"]["seconds"])
        steps.append(Step("iperf3", "iperf3", "hosta",
                          ("iperf3", "-4", "-c", far, "-p", str(IPERF3_PORT), "-t", str(s), "-J"),
                          s + 60, "hosta"))
    return steps


def step_measurements(step: Step, output: str) -> tuple[list[Measurement], dict]:
    """A step's measurements and a summary of it, from the tool's output."""
    if step.kind == "ping":
        r = parse_ping(output, warmup=step.warmup)
        ms = [Measurement("ping_rtt", v, "ms") for v in r["rtt_ms"]]
        lost = r["transmitted"] - r["received"]
        return ms, {"samples": len(ms), "transmitted": r["transmitted"], "received": r["received"], "lost": lost}
    if step.kind == "netperf":
        v = parse_netperf(output)
        if step.name.endswith("tcp_stream"):
            if v.get("THROUGHPUT_UNITS") != "10^6bits/s":
                raise NetBenchError(f"netperf TCP_STREAM: unexpected unit {v.get('THROUGHPUT_UNITS')!r}")
            return [Measurement("netperf_tcp_stream_throughput", float(v["THROUGHPUT"]), "Mbit/s")], v
        return [Measurement("netperf_tcp_rr_rate", float(v["THROUGHPUT"]), "trans/s"),
                Measurement("netperf_tcp_rr_latency", float(v["MEAN_LATENCY"]), "us")], v
    if step.kind == "iperf3":
        r = parse_iperf3(output)
        return [Measurement("iperf3_throughput", r["received_bps"] / 1e6, "Mbit/s")], r
    raise NetBenchError(f"unknown step kind {step.kind!r}")


def _run_step(tb: Testbed, step: Step, hostdir: Path) -> tuple[list[Measurement], dict]:
    result = tb.run(step.role, list(step.argv), timeout=step.timeout_s)
    (hostdir / f"{step.name}.txt").write_text(result.stdout)
    if result.stderr.strip():
        (hostdir / f"{step.name}.stderr").write_text(result.stderr)
    if result.returncode != 0 and not (step.kind == "ping" and result.returncode == 1 and "received" in result.stdout):
        raise NetBenchError(f"{step.name}: `{shlex.join(step.argv)}` in {step.role} exited {result.returncode}: "
                            f"{(result.stderr or result.stdout).strip()[-500:]}")
    ms, summary = step_measurements(step, result.stdout)
    summary = {"step": step.name, "role": step.role, "argv": list(step.argv), **summary}
    return ms, summary


# --------------------------------------------------------------------------------------------
# The host side of a VM run


@dataclass
class NetSession(Hooks):
    """Runs *steps* from the host once the guest says it is ready; then tells it "done".

    The steps run in a thread of their own, so the VM's supervision (panics, timeouts)
    goes on meanwhile; each step is announced to the guest first and starts once its
    window is seen on the console.  Whatever happens, the guest is told "done" (so it
    powers off), and after QEMU is gone the thread is stopped and joined.
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
        # Each command waits for the guest's answer on the console (its window opened, or the job
        # finished) before the next is sent: the guest's nc for one command may still hold its
        # listening socket, and a connection queued there would be lost when it exits.
        self._seen: dict[str, threading.Event] = {n: threading.Event() for n in [s.name for s in self.steps]
                                                  + [DONE_PHASE]}
        self._job_finished = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
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
        """Send until the guest answers (a lost connection is sent again)."""
        deadline = time.monotonic() + timeout_s
        while not self._stop.is_set():
            self._send(command)
            if answered.wait(3.0):
                return
            if time.monotonic() > deadline:
                raise NetBenchError(f"the guest did not answer {command!r} within {timeout_s:g} s")

    def _send(self, command: str, timeout_s: float = 20.0) -> None:
        """One command, one connection to the guest's control port (from HostB: this thread's namespace)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with socket.create_connection((self.testbed.addresses.guest, CONTROL_PORT), timeout=2) as s:
                    s.sendall(command.encode() + b"\n")
                return
            except OSError as exc:  # the guest's nc is between two connections, or not up yet
                if time.monotonic() > deadline or self._stop.is_set():
                    raise NetBenchError(f"sending {command!r} to the guest: {exc}") from None
                time.sleep(0.05)

    def _work(self) -> None:
        try:
            self.testbed.enter_thread("hostb")
            for step in self.steps:
                if self._stop.is_set():
                    return
                self._command(f"phase {step.name}", self._seen[step.name], self.phase_timeout_s)
                t0 = time.monotonic()
                ms, summary = _run_step(self.testbed, step, Path(self.hostdir))
                self.measurements.append((step, ms))
                self.summaries.append({**summary, "seconds": round(time.monotonic() - t0, 3)})
                self.log(f"{step.name}: {_brief(ms)}")
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


def _brief(ms: Sequence[Measurement]) -> str:
    if not ms:
        return "no measurements"
    if ms[0].metric == "ping_rtt":
        vals = sorted(m.value for m in ms)
        return f"{len(vals)} samples, median {vals[len(vals) // 2]:.3f} ms"
    return ", ".join(f"{m.metric} {m.value:.1f} {m.unit}" for m in ms)


def run_vm_net(*, testbed: Testbed, kernel, initrd, append: str, accel: str, memory_mib: int, nic: str,
               mitigation: bool, net: dict, outdir, boot_timeout_s: float, job_timeout_s: float,
               log: Callable[[str], None] = print, cpus: int = 1, hooks: Iterable[Hooks] = (),
               tests: Iterable[str] | None = None, qemu: str = "qemu-system-x86_64",
               firmware_dir: str | None = None, run_label: str | None = None,
               ) -> tuple[RunResult, NetSession]:
    """GuestB with one *nic* on HostB's tap; the host runs the plan against it.

    Raises VMRunError when the run does not end "ok", NetBenchError when the host side
    failed (its message names the step).
    """
    outdir = Path(outdir).absolute()
    outdir.mkdir(parents=True, exist_ok=True)
    ad = testbed.addresses
    params = {"GUEST_IP": ad.guest, "PREFIXLEN": str(ad.prefixlen), "CONTROL_PORT": str(CONTROL_PORT),
              "NETPERF_PORT": str(NETPERF_PORT), "IPERF3_PORT": str(IPERF3_PORT)}
    params_path = outdir / "params"
    params_path.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in params.items()))
    session = NetSession(testbed, plan(net, ad, target="guest", tests=tests), outdir / "host", log=log)
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
    return result, session


def run_native_net(*, testbed: Testbed, net: dict, outdir, log: Callable[[str], None] = print,
                   tests: Iterable[str] | None = None) -> tuple[list[tuple[Step, list[Measurement]]], list[dict]]:
    """The same plan natively: HostA against HostB (netserver and iperf3 -s in HostB)."""
    hostdir = Path(outdir).absolute() / "host"
    hostdir.mkdir(parents=True, exist_ok=True)
    testbed.popen("hostb", ["netserver", "-D", "-4", "-p", str(NETPERF_PORT)],
                  stdout=open(hostdir / "netserver.log", "w"), stderr=subprocess.STDOUT)
    testbed.popen("hostb", ["iperf3", "-s", "-4", "-p", str(IPERF3_PORT)],
                  stdout=open(hostdir / "iperf3-server.log", "w"), stderr=subprocess.STDOUT)
    _wait_listening(testbed, "hostb", (NETPERF_PORT, IPERF3_PORT))
    results, summaries = [], []
    for step in plan(net, testbed.addresses, target="hostb", tests=tests):
        t0 = time.monotonic()
        ms, summary = _run_step(testbed, step, hostdir)
        results.append((step, ms))
        summaries.append({**summary, "seconds": round(time.monotonic() - t0, 3)})
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


def measurement_frame(results: Sequence[tuple[Step, list[Measurement]]], **condition):
    """One long-form table for a run: every step's measurements with its peer (the ping path,
    or the host the benchmark ran from); *condition*: guestio.analysis.measurements.frame's."""
    import pandas as pd

    from guestio.analysis.measurements import frame

    parts = [frame(measurements=ms, peer=step.peer, **condition) for step, ms in results if ms]
    return pd.concat(parts, ignore_index=True)


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
