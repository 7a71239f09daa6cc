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

This module holds what a run is: its steps (:func:`plan`), the NICs and the ports.  Beside it:

* :mod:`guestio.workloads.netbench_parsers`: the tools' own output -> values and a step's
  measurements (real captures in tests/data/net);
* :mod:`guestio.workloads.netbench_counters`: the counters of a step's ends;
* :mod:`guestio.workloads.netbench_session`: running the plan.  A VM run
  (:func:`~guestio.workloads.netbench_session.run_vm_net`) boots GuestB with one NIC (rtl8139,
  e1000 or virtio-net-pci) on HostB's tap; the guest job (workflow/jobs/net.sh) runs the
  guest's steps when the host asks and marks each step as a named window on the console
  (``GUESTIO: phase NAME`` and ``NAME.end``), so that the exit backends count each benchmark
  separately.  :class:`~guestio.workloads.netbench_session.NetSession` is the host side: a
  :class:`guestio.vm.hooks.Hooks` that drives the plan once the guest is ready; the guest's
  outputs come back in its results and are parsed after the run with the same parsers.  A
  native run (:func:`~guestio.workloads.netbench_session.run_native_net`) runs the same plan
  with HostB in GuestB's place;
* :mod:`guestio.workloads.netbench_records`: a run's long-form rows and what it records
  (direction, tool versions, the guest NIC and its GRO).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

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
