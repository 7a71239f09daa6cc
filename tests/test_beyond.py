"""Beyond the paper (guestio.report.beyond): each modification at its mechanism (exits,
interrupts, ticks removed per GiB, second or boot) beside its effect, per device; "not
applicable" where it does not apply, "not measured here" with the run that would measure it,
effect rows under TCG marked as emulation.  Synthetic long-form tables (this tests the
computation only); the first test relabels the recorded runs of tests/data/report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from guestio.analysis import measurements
from guestio.report import beyond
from guestio.report.evidence import Evidence
from guestio.report.verdicts import NOT_MEASURED, NOT_TESTABLE

DATA = Path(__file__).parent / "data" / "report" / "results" / "tables" / "disk.csv"
DEFAULTS = {"qemu": ["-", "stock"], "guest_scheduler": ["-", "mq-deadline"], "host_scheduler": ["-", "file"]}
CONFIG = {"disk": {"interfaces": ["ide"]}, "network": {"nics": ["rtl8139", "e1000", "virtio-net"]},
          "exits": {"interface": "ide"}}


def _runs(experiment, metric, unit, sides, accelerator="tcg", disk="ide", reps=3, **columns):
    """Long-form rows: for each (variant, qemu, value) of *sides*, *reps* runs at 1 +- 1%."""
    frames = []
    for variant, qemu, value in sides:
        for rep in range(reps):
            m = measurements.Measurement(metric, value * (1 + 0.01 * (rep - 1)), unit)
            frames.append(measurements.frame(experiment=experiment, target="vm", variant=variant,
                                             accelerator=accelerator, disk=disk, clocksource="acpi_pm",
                                             repetition=rep, measurements=[m], qemu=qemu, **columns))
    return pd.concat(frames, ignore_index=True)


def _evidence(tmp_path, parts, config=CONFIG, **kw) -> Evidence:
    table = tmp_path / "tables.csv"
    measurements.write_csv(pd.concat(parts, ignore_index=True), table)
    return Evidence(tables=[str(table)], n_resamples=2000, defaults=DEFAULTS, config=config, **kw)


def _row(out, modification, quantity, device, role=None, route=None):
    sel = out[(out.modification == modification) & (out.quantity == quantity) & (out.device == device)]
    if role:
        sel = sel[sel.role == role]
    if route is not None:
        sel = sel[sel.route.fillna("").str.contains(route, regex=False)]
    assert len(sel) == 1, sel
    return sel.iloc[0]


def test_effect_per_device_from_recorded_runs(tmp_path):
    df = measurements.read_csv(DATA)
    vm = df[df.target == "vm"]
    vm3 = pd.concat([vm.assign(repetition=rep, value=vm.value * (1 + 0.01 * rep)) for rep in (0, 1, 2)],
                    ignore_index=True)
    parts = [df[df.target == "native"], vm3, vm3.assign(disk="virtio", value=vm3.value * 2),   # baseline on virtio
             vm3.assign(variant="hz100", value=vm3.value * 1.1),                                # hz100 on ide
             vm3.assign(variant="hz100", disk="virtio", value=vm3.value * 2)]                  # on virtio: no gain
    ev = _evidence(tmp_path, parts, config={"disk": {"interfaces": ["ide", "virtio"]}})
    out = beyond.build(ev)
    ide = _row(out, "timer", "disk_write_throughput", "ide", route="by the guest")
    virtio = _row(out, "timer", "disk_write_throughput", "virtio", route="by the guest")
    assert ide.ratio == pytest.approx(1.1, rel=1e-6) and ide.device_kind == "paper"
    assert virtio.ratio == pytest.approx(1.0, rel=1e-6) and virtio.device_kind == "current"
    assert ide.ci_low <= 1.1 <= ide.ci_high and ide.n_numerator == 3 and ide.n_denominator == 3
    merge = out[(out.modification == "merge_io") & (out.device == "virtio")]
    assert set(merge.measured) == {"not applicable"} and "virtio-blk" in merge.reason.iloc[0]


def test_mechanism_rows_count_what_each_modification_removes(tmp_path):
    parts = [
        _runs("disk", "timer_interrupt_rate", "Hz", [("baseline", "stock", 1000.0), ("hz100", "stock", 100.0),
                                                     ("baseline", "pit-scale", 100.0)]),
        _runs("boot", "pm_timer_setup_exits", "exits", [("baseline-i386", "stock", 900.0),
                                                        ("pmtmr-i386", "stock", 60.0)],
              accelerator="tcg-modelled", disk="-"),
        _runs("net", "netperf_tcp_stream_nic_interrupts_per_mib", "interrupts/MiB",
              [("baseline", "stock", 40.0), ("nonapi", "stock", 120.0)], disk="-", nic="e1000"),
    ]
    ev = _evidence(tmp_path, parts)
    out = beyond.build(ev)
    tick = _row(out, "timer", "timer_rate", "ide", route="by the VMM")
    assert tick.role == "mechanism" and tick.unit == "Hz" and tick.per == "second of wall time"
    assert tick.before == pytest.approx(1000.0) and tick.after == pytest.approx(100.0)
    assert tick.removed == pytest.approx(900.0) and tick.before_ci_low < 1000.0 < tick.before_ci_high
    assert tick.ratio == pytest.approx(0.1) and tick.change == "fewer"
    assert tick.n_numerator == 3 and tick.n_denominator == 3
    assert tick.verdict == "reproduced (from emulation, TCG)" and tick.reading == beyond.READ_MECHANISM
    boot = _row(out, "pmtmr", "setup_exits", "-")
    assert boot.device_kind == beyond.NO_DEVICE and boot.per == "boot"
    assert boot.removed == pytest.approx(840.0) and boot.change == "fewer" and boot.accelerator == "tcg-modelled"
    napi = _row(out, "no_napi", "interrupts_per_mib", "e1000")
    assert napi.ratio == pytest.approx(3.0) and napi.change == "more" and napi.removed == pytest.approx(-80.0)
    assert napi.verdict.startswith("reproduced")
    # the mechanism is not drawn from an effect quantity: a throughput row never carries side means
    assert out[out.role == "effect"].before.isna().all()
    text = beyond.markdown(out)
    glance = text.split("## ")[0]
    assert "| 2. lower the timer interrupt rate" in glance and "fewer, 0.100" in glance
    assert "| timer interrupts (IRQ 0), each an exit and an EOI per second of wall time (Hz) |" in text


def test_exit_table_mechanism_on_the_configured_device(tmp_path):
    """Table 4's exit table has no disk column: its rows are the exit runs' interface (exits.interface)."""
    rows = [{"experiment": "table4", "side": side, "variant": v, "qemu": qm, "accelerator": "tcg-modelled",
             "repetition": rep, "site_rank": 1, "site": "ata_sff_tf_load", "site_role": "merged",
             "metric": "port_io_exits_per_gib", "value": value * (1 + 0.01 * (rep - 1)), "unit": "exits/GiB"}
            for side, v, qm, value in (("before", "baseline", "stock", 110000.0), ("after", "coalesce", "coalesce",
                                                                                  17000.0))
            for rep in range(3)]
    table4 = tmp_path / "table4.csv"
    pd.DataFrame(rows).to_csv(table4, index=False)
    ev = _evidence(tmp_path, [_runs("disk", "block_write_throughput", "KiB/s", [("baseline", "stock", 1.0)])],
                   built={"table4"}, exit_tables={"table4": str(table4)})
    merged = _row(beyond.build(ev), "merge_io", "site1_exits", "ide")
    assert merged.before == pytest.approx(110000.0) and merged.after == pytest.approx(17000.0)
    assert merged.ratio == pytest.approx(17000 / 110000, rel=1e-6) and merged.unit == "exits/GiB"
    assert merged.verdict.startswith("reproduced")


def test_effect_under_tcg_is_emulation_not_an_answer(tmp_path):
    sides = [("baseline", "stock", 100.0), ("coalesce", "coalesce", 105.0)]
    tcg = beyond.build(_evidence(tmp_path, [_runs("disk", "block_write_throughput", "KiB/s", sides)]))
    row = _row(tcg, "merge_io", "throughput", "ide")
    assert row.from_emulation and row.reading == beyond.READ_EMULATION
    assert row.verdict == NOT_TESTABLE and "needs KVM" in row.reason
    assert row.ratio == pytest.approx(1.05)        # shown, but only as emulation
    assert "from emulation (TCG): not an answer" in beyond.markdown(tcg)
    kvm = beyond.build(_evidence(tmp_path, [_runs("disk", "block_write_throughput", "KiB/s", sides,
                                                  accelerator="kvm")]))
    row = _row(kvm, "merge_io", "throughput", "ide")
    assert not row.from_emulation and row.reading == beyond.READ_EFFECT and row.verdict != NOT_TESTABLE


def test_not_measured_rows_say_why_and_what_would_measure_them(tmp_path):
    ev = _evidence(tmp_path, [_runs("disk", "block_write_throughput", "KiB/s", [("baseline", "stock", 1.0)])],
                   built={"table4", "fig5"}, targets={"table4": ["results/tables/table4.md"]},
                   command=".venv/bin/snakemake --cores all")
    out = beyond.build(ev)
    # a device this run does not configure: its config key
    virtio = _row(out, "guest_scheduler", "write_throughput", "virtio")
    assert virtio.measured == NOT_MEASURED and "disk.interfaces" in virtio.would_measure
    # a configured device without runs of the condition: the artifact's target
    ide = _row(out, "merge_io", "throughput", "ide")
    assert ide.measured == NOT_MEASURED and "no runs of this condition on ide" in ide.reason
    assert ide.would_measure == ".venv/bin/snakemake --cores all results/tables/table4.md"
    # a modification without a mechanism quantity says so, with its reason
    sched = _row(out, "guest_scheduler", "-", "-", role="mechanism")
    assert sched.measured == NOT_MEASURED and "no mechanism quantity" in sched.reason and sched.would_measure
    # a quantity no run records (claims.yaml not_measured)
    net = _row(out, "timer", "net_throughput", "e1000", route="by the guest")
    assert net.measured == NOT_MEASURED and "no timer conditions" in net.reason and "network runs" in net.would_measure
    # never a made-up number where nothing ran
    assert out[out.measured.isin([NOT_MEASURED, "not applicable"])].ratio.isna().all()
    text = beyond.markdown(out)
    assert "not measured here: no runs of this condition on ide; would measure it: `" not in text
    assert "would measure it: .venv/bin/snakemake --cores all results/tables/table4.md" in text


def test_spec_mechanism_quantities_must_measure_the_mechanism(tmp_path):
    spec = yaml.safe_load(beyond.BEYOND_FILE.read_text())
    beyond.load_spec(beyond.BEYOND_FILE)       # the shipped file passes
    spec["modifications"]["merge_io"]["mechanism"] = [{"claim": "table4", "quantity": "throughput", "device": "disk"}]
    bad = tmp_path / "beyond.yaml"
    bad.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="role effect, listed as mechanism"):
        beyond.load_spec(bad)
    del spec["modifications"]["merge_io"]["mechanism"]
    bad.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="needs `mechanism` or `no_mechanism`"):
        beyond.load_spec(bad)
