"""Beyond the paper (guestio.report.beyond): each modification per device, "not applicable"
where it does not apply, "not measured here" where nothing ran.  The long-form table is built
from the recorded runs of tests/data/report by relabelling (this tests the computation only)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from guestio.analysis import measurements
from guestio.report import beyond
from guestio.report.claims_table import Evidence

DATA = Path(__file__).parent / "data" / "report" / "results" / "tables" / "disk.csv"


def test_modifications_per_device(tmp_path):
    df = measurements.read_csv(DATA)
    vm = df[df.target == "vm"]
    parts = [df]
    for rep in (1, 2):       # three repetitions of each condition
        parts.append(vm.assign(repetition=rep, value=vm.value * (1 + 0.01 * rep)))
    vm3 = pd.concat([vm] + parts[1:], ignore_index=True)
    parts.append(vm3.assign(disk="virtio", value=vm3.value * 2))                     # baseline on virtio
    parts.append(vm3.assign(variant="pmtmr", value=vm3.value * 1.1))                  # pmtmr on ide
    parts.append(vm3.assign(variant="pmtmr", disk="virtio", value=vm3.value * 2))    # pmtmr on virtio: no gain
    table = tmp_path / "disk.csv"
    measurements.write_csv(pd.concat(parts, ignore_index=True), table)
    ev = Evidence(tables=[str(table)], n_resamples=2000,
                  defaults={"qemu": ["-", "stock"], "guest_scheduler": ["-", "mq-deadline"],
                            "host_scheduler": ["-", "file"]})
    out = beyond.build(ev)
    pm = out[(out.modification == "pmtmr") & (out.quantity == "write_throughput")].set_index("device")
    assert pm.loc["ide", "ratio"] == pytest.approx(1.1, rel=1e-6) and pm.loc["ide", "device_kind"] == "paper"
    assert pm.loc["virtio", "ratio"] == pytest.approx(1.0, rel=1e-6) and pm.loc["virtio", "device_kind"] == "current"
    assert pm.loc["ide", "ci_low"] <= 1.1 <= pm.loc["ide", "ci_high"]
    merge = out[(out.modification == "merge_io") & (out.device == "virtio")]
    assert set(merge.measured) == {"not applicable"} and "virtio-blk" in merge.note.iloc[0]
    napi = out[out.modification == "no_napi"].set_index("device")
    assert napi.loc["virtio-net", "measured"].iloc[0] == "not applicable"
    assert napi.loc["e1000", "measured"].iloc[0] == "not measured here"
    text = beyond.markdown(out)
    assert "## 3. remove verify_pmtmr_rate" in text and "| virtio (current) | 1.00" in text
