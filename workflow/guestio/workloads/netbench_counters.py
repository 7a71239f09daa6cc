"""The counters of a network step's ends: TCP counters, softnet drops, the guest NIC's interrupts."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from guestio.analysis.measurements import Measurement
from guestio.net.testbed import Testbed
from guestio.workloads.netbench import TCP_COUNTERS, NetBenchError, Step
from guestio.workloads.netbench_parsers import parse_interrupts, parse_snmp_tcp, parse_softnet_dropped


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
