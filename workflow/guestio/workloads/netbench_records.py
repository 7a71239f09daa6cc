"""A network run's long-form rows and what it records: direction, tool versions, the guest NIC and its GRO."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Mapping, Sequence

from guestio.analysis.measurements import Measurement
from guestio.workloads.netbench import NetBenchError, Step


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
