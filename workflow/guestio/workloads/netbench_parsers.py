"""The network tools' own output -> values, and a step's measurements from it.

ping (iputils), netperf ``-- -k KEYS``, iperf3 ``-J``, and the guest's and hosts' counters
(/proc/net/snmp, /proc/interrupts, /proc/net/softnet_stat); real captures in tests/data/net.
"""

from __future__ import annotations

import json
import re
from typing import Iterable

from guestio.analysis.measurements import Measurement
from guestio.workloads.netbench import NetBenchError, Step

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
