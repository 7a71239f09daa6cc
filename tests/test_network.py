"""The network experiment's fast tier: parsers on real captures, the plan, the testbed's checks,
the figures' numbers and bytes, and the DAG (no root, no QEMU)."""

from __future__ import annotations

import copy
import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, SNAKEMAKE, job_counts
from guestio.analysis.measurements import COLUMNS, read_csv
from guestio.net import testbed
from guestio.net.testbed import Addresses, NotRootError, Shape, TestbedError
from guestio.workloads import netbench

DATA = Path(__file__).parent / "data" / "net"
NET = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["network"]


# -- parsers ----------------------------------------------------------------------------------

def test_ping_parser_takes_every_reply_after_the_warmup():
    text = (DATA / "ping-hosta-guestb.txt").read_text()
    r = netbench.parse_ping(text, warmup=3)
    assert r["transmitted"] == 53 and r["received"] == 53
    assert len(r["rtt_ms"]) == 50
    assert r["rtt_ms"][0] == pytest.approx(float(text.splitlines()[4].split("time=")[1].split()[0]))
    # The first reply (ARP) is the slowest of the capture and is dropped.
    assert netbench.parse_ping(text, warmup=0)["rtt_ms"][0] == pytest.approx(1.02)
    assert all(0 < v < 50 for v in r["rtt_ms"])


def test_ping_parser_refuses_output_without_replies():
    with pytest.raises(netbench.NetBenchError, match="no summary"):
        netbench.parse_ping("PING 10.0.0.1 (10.0.0.1) 56(84) bytes of data.\n")
    lost = "PING x\n\n--- x ping statistics ---\n5 packets transmitted, 0 received, 100% packet loss, time 4ms\n"
    with pytest.raises(netbench.NetBenchError, match="0 of 5 received"):
        netbench.parse_ping(lost)


def test_netperf_parsers_read_the_keyval_output():
    step = next(s for s in netbench.plan(NET, Addresses.from_subnet("10.210.0.0/24"), target="guest")
                if s.name == "netperf-tcp_stream")
    ms, values = netbench.step_measurements(step, (DATA / "netperf-tcp_stream.txt").read_text())
    assert ms == [netbench.Measurement("netperf_tcp_stream_throughput", 696.16, "Mbit/s")]
    assert values["DIRECTION"] == "Send" and values["PROTOCOL"] == "TCP"
    rr = next(s for s in netbench.plan(NET, Addresses.from_subnet("10.210.0.0/24"), target="guest")
              if s.name == "netperf-tcp_rr")
    ms, _ = netbench.step_measurements(rr, (DATA / "netperf-tcp_rr.txt").read_text())
    assert ms == [netbench.Measurement("netperf_tcp_rr_rate", 1829.98, "trans/s"),
                  netbench.Measurement("netperf_tcp_rr_latency", 546.13, "us")]
    with pytest.raises(netbench.NetBenchError, match="THROUGHPUT"):
        netbench.parse_netperf("establish control: are you sure there is a netserver listening\n")


def test_iperf3_parser_reads_the_receiver_side():
    r = netbench.parse_iperf3((DATA / "iperf3.json").read_text())
    assert 100e6 < r["received_bps"] <= r["sent_bps"] * 1.01
    assert r["seconds"] == pytest.approx(3.0, abs=0.2)
    with pytest.raises(netbench.NetBenchError, match="unable to connect"):
        netbench.parse_iperf3('{"start": {}, "intervals": [], "end": {}, "error": "unable to connect to server"}')


# -- the plan and the testbed's checks ----------------------------------------------------------

def test_plan_covers_the_three_paths_and_both_netperf_tests():
    ad = Addresses.from_subnet(NET["subnet"])
    vm = netbench.plan(NET, ad, target="guest")
    assert [s.name for s in vm] == ["ping-hosta-hostb", "ping-hostb-guestb", "ping-hosta-guestb",
                                    "netperf-tcp_stream", "netperf-tcp_rr", "iperf3"]
    assert {s.peer for s in vm if s.kind == "ping"} == set(netbench.PATHS)
    assert all(ad.guest in s.argv for s in vm if s.name != "ping-hosta-hostb")
    ping = vm[1]
    assert ping.role == "hostb" and ping.argv[ping.argv.index("-c") + 1] == str(NET["ping"]["count"] + NET["ping"]["warmup"])
    native = netbench.plan(NET, ad, target="hostb")
    assert [s.name for s in native] == ["ping-hosta-hostb", "netperf-tcp_stream", "netperf-tcp_rr", "iperf3"]
    assert all(ad.hostb in s.argv for s in native)
    assert [s.name for s in netbench.plan(NET, ad, target="guest", tests=["tcp_stream"])] == ["netperf-tcp_stream"]


def test_addresses_are_private_and_in_order():
    ad = Addresses.from_subnet("10.210.0.0/24")
    assert (ad.hosta, ad.hostb, ad.guest, ad.prefixlen) == ("10.210.0.1", "10.210.0.2", "10.210.0.3", 24)
    with pytest.raises(TestbedError, match="private"):
        Addresses.from_subnet("8.8.8.0/24")
    with pytest.raises(TestbedError, match="fewer than 3"):
        Addresses.from_subnet("10.0.0.0/31")
    with pytest.raises(TestbedError, match="network.subnet"):
        Addresses.from_subnet("10.0.0.1/24")


def test_not_root_is_refused_before_anything_is_built(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    before = testbed.guestio_namespaces()
    with pytest.raises(NotRootError, match="needs root.*uid is 1000"):
        with testbed.Testbed():
            pass
    assert testbed.guestio_namespaces() == before


def test_shape_and_mitigation_come_from_config():
    s = Shape.from_config(NET["link"])
    assert s.rate == NET["link"]["rate"] and s.delay == NET["link"]["delay"]
    assert Shape.from_config({"rate": None}).rate is None
    assert netbench.mitigation_args("e1000", True) == ["-global", "e1000.mitigation=on"]
    assert netbench.mitigation_args("e1000", False) == ["-global", "e1000.mitigation=off"]
    assert netbench.mitigation_args("virtio-net", True) == []
    assert netbench.nic_model("virtio-net") == "virtio-net-pci"


# -- figures: the numbers and the bytes ---------------------------------------------------------

def _table() -> pd.DataFrame:
    """A long-form table shaped like the pipeline's, values drawn around the captured ones."""
    rng = np.random.default_rng(7)
    rows = []

    def add(target, variant, nic, peer, metric, unit, values, accel):
        for rep, v in enumerate(values):
            rows.append({"experiment": "net", "target": target, "variant": variant, "accelerator": accel,
                         "disk": "-", "clocksource": "acpi_pm", "qemu": "stock" if target == "vm" else "-",
                         "guest_scheduler": "-", "host_scheduler": "-", "nic": nic, "peer": peer,
                         "repetition": rep % 3, "metric": metric, "value": float(v), "unit": unit})

    ping = netbench.parse_ping((DATA / "ping-hosta-guestb.txt").read_text(), warmup=3)["rtt_ms"]
    for variant, scale in (("baseline", 1.0), ("nonapi", 0.6)):
        for nic in ("rtl8139", "e1000", "virtio-net"):
            if variant == "nonapi" and nic != "e1000":
                continue
            add("vm", variant, nic, "hosta", "netperf_tcp_stream_throughput", "Mbit/s",
                rng.normal(696.16 * scale, 20, 3), "tcg")
            add("vm", variant, nic, "hosta", "iperf3_throughput", "Mbit/s", rng.normal(530 * scale, 20, 3), "tcg")
            add("vm", variant, nic, "hosta", "netperf_tcp_rr_latency", "us", rng.normal(546, 20, 3), "tcg")
            add("vm", variant, nic, "hostb-guestb", "ping_rtt", "ms", np.array(ping) * 0.95, "tcg")
            add("vm", variant, nic, "hosta-guestb", "ping_rtt", "ms", ping, "tcg")
            add("vm", variant, nic, "hosta-hostb", "ping_rtt", "ms", np.array(ping) * 0.1, "tcg")
    add("native", "host", "veth", "hosta", "netperf_tcp_stream_throughput", "Mbit/s", rng.normal(949, 2, 3), "native")
    add("native", "host", "veth", "hosta", "iperf3_throughput", "Mbit/s", rng.normal(940, 2, 3), "native")
    add("native", "host", "veth", "hosta", "netperf_tcp_rr_latency", "us", rng.normal(94, 5, 3), "native")
    return pd.DataFrame(rows, columns=COLUMNS)


PROVENANCE = {"accelerator": {"accelerator": "tcg", "reason": "no KVM"},
              "qemu": {"version": "QEMU emulator version 7.2.22"},
              "kernels": {"baseline": {"source": {"kernelversion": "6.1.0"}}},
              "host": {"cpu_model": "test CPU", "kernel": "6.1"}}


def test_network_figure_is_byte_identical_and_names_accelerator_and_mitigation(tmp_path):
    from guestio.net import figures

    df = _table()
    drawn = []
    for attempt in ("a", "b"):
        pdf, png = tmp_path / f"fig7-{attempt}.pdf", tmp_path / f"fig7-{attempt}.png"
        summary = figures.plot("fig7", df.copy(), PROVENANCE, {**NET, "e1000_mitigation": False}, pdf, png,
                               seed=2010, n_resamples=300)
        drawn.append((pdf.read_bytes(), png.read_bytes()))
    assert drawn[0] == drawn[1]
    assert list(summary.columns) == figures.SUMMARY_COLUMNS
    row = summary.set_index("quantity").loc["throughput"]
    assert 0.5 < row.ratio < 0.7 and row.verdict == "opposite" and row.welch_p < 0.05
    if subprocess.run(["which", "pdftotext"], capture_output=True).returncode == 0:
        text = subprocess.run(["pdftotext", str(tmp_path / "fig7-a.pdf"), "-"], capture_output=True, text=True).stdout
        assert "TCG" in text and "mitigation=off" in text


@pytest.mark.parametrize("fig", ["fig3", "fig4"])
def test_network_figures_give_the_claims_ratios(fig):
    from guestio.net import figures

    summary = figures.summary_frame(fig, figures.ratios(fig, _table(), seed=2010, n_resamples=300))
    assert (summary.ci_low <= summary.ratio).all() and (summary.ratio <= summary.ci_high).all()
    if fig == "fig3":
        row = summary.set_index("quantity").loc["virtualisation_share"]
        assert row.ratio == pytest.approx(0.95, rel=1e-6)  # the table's HostB->GuestB is 0.95x HostA->GuestB
        assert row.verdict == "differs" and row.n_numerator == row.n_denominator == 50
    else:
        assert set(summary.quantity) >= {"rtl8139_throughput", "e1000_latency", "nic_model_throughput"}
        paper_nics = ~summary.quantity.str.startswith("virtio_net")
        assert (summary[paper_nics & summary.quantity.str.endswith("_latency")].verdict == "agrees").all()
        assert (summary[paper_nics & summary.quantity.str.endswith("_throughput")
                        & (summary.denominator == "target=native")].verdict == "agrees").all()
        # virtio-net is not one of the paper's NICs: measured and shown, never voting
        virtio = summary[~paper_nics]
        assert len(virtio) == 2 and (virtio.verdict == "not_tested").all() and (virtio.ratio > 0).all()


# -- the DAG -----------------------------------------------------------------------------------

def test_dag_one_job_per_repetition_and_condition(tmp_path):
    out = subprocess.run([str(SNAKEMAKE), "-n", "--cores", "all", "fig3", "fig4", "fig7", "table2",
                          "--config", f"results_dir={tmp_path / 'r'}"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    counts = job_counts(out.stdout)
    reps = NET["repetitions"]
    # rtl8139, e1000, virtio-net on the net kernel, e1000 on nonapi: each repetition its own job.
    assert counts["net_vm"] == (len(NET["nics"]) + 1) * reps
    assert counts["net_native"] == reps
    assert counts["net_exits"] == 1
    assert counts["net_fig3"] == counts["net_fig4"] == counts["net_fig7"] == counts["net_table2"] == 1
