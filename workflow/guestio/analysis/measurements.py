"""Long-form measurement tables: one row per measurement, the same columns everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd

from guestio.util import write_text_atomic

COLUMNS = ["experiment", "target", "variant", "accelerator", "disk", "clocksource", "repetition",
           "metric", "value", "unit"]


def frame(*, experiment: str, target: str, variant: str, accelerator: str, disk: str, clocksource: str,
          repetition: int, measurements: Iterable) -> pd.DataFrame:
    """Rows for one run; each measurement has .metric, .value and .unit."""
    rows = [
        {"experiment": experiment, "target": target, "variant": variant, "accelerator": accelerator,
         "disk": disk, "clocksource": clocksource, "repetition": int(repetition),
         "metric": m.metric, "value": float(m.value), "unit": m.unit}
        for m in measurements
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    write_text_atomic(Path(path), df[COLUMNS].to_csv(index=False, lineterminator="\n"))


def read_csv(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a guestio measurement table (missing columns: {', '.join(missing)})")
    return df[COLUMNS]


def combine(paths: Iterable[Path]) -> pd.DataFrame:
    """All runs of an experiment in one table, in a stable order."""
    df = pd.concat([read_csv(p) for p in paths], ignore_index=True)
    return df.sort_values(["target", "variant", "disk", "repetition", "metric"], kind="stable").reset_index(drop=True)
