"""Long-form measurement tables: one row per measurement, the same columns everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, NamedTuple

import pandas as pd

from guestio.util import write_text_atomic

# Dimensions of a condition that only some experiments have; a run leaves out those that
# do not apply and gets NOT_APPLICABLE.  An experiment with another dimension adds it here.
NOT_APPLICABLE = "-"
DEFAULT_COLUMNS = {
    "qemu": NOT_APPLICABLE,             # QEMU variant (qemu.variants) of a VM run
    "guest_scheduler": NOT_APPLICABLE,  # the guest's effective I/O scheduler of the data disk
    "host_scheduler": NOT_APPLICABLE,   # "file" (image on the host fs) or the pipeline loop device's
    "nic": NOT_APPLICABLE,              # emulated NIC model of a network run
    "peer": NOT_APPLICABLE,             # the other end of a network measurement
}
CONDITION_COLUMNS = ["target", "variant", "accelerator", "disk", "clocksource", *DEFAULT_COLUMNS]
COLUMNS = ["experiment", *CONDITION_COLUMNS, "repetition", "metric", "value", "unit"]


class Measurement(NamedTuple):
    """One number a run measured: a row of the table once its run's condition is added."""

    metric: str
    value: float
    unit: str


def frame(*, experiment: str, target: str, variant: str, accelerator: str, disk: str, clocksource: str,
          repetition: int, measurements: Iterable, **columns: str) -> pd.DataFrame:
    """Rows for one run; each measurement has .metric, .value and .unit.

    ``columns``: values of DEFAULT_COLUMNS that apply to the run (the rest get "-").
    """
    unknown = set(columns) - set(DEFAULT_COLUMNS)
    if unknown:
        raise ValueError(f"unknown measurement columns {sorted(unknown)}; known: {', '.join(DEFAULT_COLUMNS)}")
    extra = {**DEFAULT_COLUMNS, **{k: str(v) for k, v in columns.items()}}
    rows = [
        {"experiment": experiment, "target": target, "variant": variant, "accelerator": accelerator,
         "disk": disk, "clocksource": clocksource, **extra, "repetition": int(repetition),
         "metric": m.metric, "value": float(m.value), "unit": m.unit}
        for m in measurements
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    write_text_atomic(Path(path), df[COLUMNS].to_csv(index=False, lineterminator="\n"))


def read_csv(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={c: str for c in DEFAULT_COLUMNS}, keep_default_na=True)
    for column, default in DEFAULT_COLUMNS.items():
        df[column] = df[column].astype(object).fillna(default) if column in df.columns else default
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a guestio measurement table (missing columns: {', '.join(missing)})")
    return df[COLUMNS]


def combine(paths: Iterable[Path]) -> pd.DataFrame:
    """All runs of an experiment in one table, in a stable order."""
    df = pd.concat([read_csv(p) for p in paths], ignore_index=True)
    return df.sort_values(["target", "variant", "disk", *DEFAULT_COLUMNS, "repetition", "metric"], kind="stable").reset_index(drop=True)
