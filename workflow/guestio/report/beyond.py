"""Beyond the paper: each of the five modifications' effect with its CI, on the paper's device
models and on virtio where it applies (``beyond.yaml`` beside this module says which quantities,
devices and where a modification applies).  ``results/beyond.{md,csv}``, paper-scale profile."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from guestio.analysis import claims as claims_mod
from guestio.report.claims_table import Evidence, _fmt, _Tables, ratios_by
from guestio.util import write_text_atomic

BEYOND_FILE = Path(__file__).with_name("beyond.yaml")
COLUMNS = ["modification", "name", "claim", "quantity", "label", "device", "device_kind", "applies", "ratio",
           "ci_low", "ci_high", "measured", "accelerator", "n_numerator", "n_denominator", "note"]


def build(ev: Evidence, path: Path = BEYOND_FILE) -> pd.DataFrame:
    spec = yaml.safe_load(path.read_text())["modifications"]
    claims = claims_mod.load_claims(ev.claims_file)
    df = _Tables(ev.tables).frame()
    records = []
    for mid, m in spec.items():
        for item in m["quantities"]:
            q = claims[item["claim"]].quantity(item["quantity"])
            found = {(r["device"]): r for r in reversed(ratios_by(q, df, ev, device=item["device"],
                                                                 free=(item["device"],)))
                     if r["alternative"] == 0}
            for kind in ("paper", "current"):
                for dev in m[kind]:
                    if item["device"] == "disk" and dev not in ("ide", "virtio"):
                        continue
                    if item["device"] == "nic" and dev in ("ide", "virtio"):
                        continue
                    applies = dev in m["applies"]
                    r = found.get(dev)
                    rec = {"modification": mid, "name": m["name"], "claim": item["claim"], "quantity": q.id,
                           "label": q.label, "device": dev, "device_kind": kind, "applies": applies}
                    if not applies:
                        rec.update(measured="not applicable", note=m.get("why", ""))
                    elif r is None:
                        rec.update(measured="not measured here", note="no runs of this condition on this device")
                    else:
                        rec.update(ratio=r["ratio"], ci_low=r["low"], ci_high=r["high"],
                                   measured=_fmt(r["ratio"], r["low"], r["high"]), accelerator=r["accelerator"],
                                   n_numerator=r["n_numerator"], n_denominator=r["n_denominator"], note="")
                    records.append(rec)
    return pd.DataFrame(records, columns=COLUMNS)


def markdown(table: pd.DataFrame) -> str:
    lines = ["# Beyond the paper: the five modifications on a current stack", "",
             "Each modification's effect (modified / unmodified, 95% bootstrap CI) on the paper's device models "
             "and on virtio where it applies. A ratio above 1 is a gain for throughput, a loss for CPU "
             "utilisation. Under TCG the numbers come from emulation.", ""]
    for mid, part in table.groupby("modification", sort=False):
        lines += [f"## {part['name'].iloc[0]}", "", "| quantity | device | here (95% CI) | accelerator | n |",
                  "|---|---|---|---|---|"]
        for r in part.itertuples(index=False):
            n = "" if pd.isna(r.n_numerator) else f"{int(r.n_numerator)} / {int(r.n_denominator)}"
            dev = f"{r.device} ({'paper' if r.device_kind == 'paper' else 'current'})"
            text = r.measured + (f" ({r.note})" if isinstance(r.note, str) and r.note else "")
            lines.append(f"| {r.label} | {dev} | {text} | {r.accelerator if isinstance(r.accelerator, str) else '-'} "
                         f"| {n} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write(table: pd.DataFrame, md: str, csv: str) -> None:
    write_text_atomic(Path(csv), table.to_csv(index=False, lineterminator="\n"))
    write_text_atomic(Path(md), markdown(table))
