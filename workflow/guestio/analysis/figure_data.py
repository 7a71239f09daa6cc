"""The data of Figures 1, 2 and 6: the rows each bar stands for, and the bars and ratios computed from them.

What each figure draws (``FIGURE_CLAIMS``) comes from the claims file; the rows come from the
long-form results CSV (one row per measurement, the columns of ``COLUMNS``), taken per condition in
repetition order with NaN values left out.  Every number comes from ``guestio.analysis.stats``
with the caller's seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, NamedTuple

import numpy as np
import pandas as pd

from guestio.analysis.claim_model import FigureClaim, Panel, selector_alternatives
from guestio.analysis.claims import ClaimsError, figure_claims
from guestio.analysis.measurements import COLUMNS as _MEASUREMENT_COLUMNS
from guestio.analysis.measurements import DEFAULT_COLUMNS, NOT_APPLICABLE
from guestio.analysis.stats import bootstrap_mean_ci, bootstrap_ratio_ci, significance_mark, welch_significance

COLUMNS = tuple(_MEASUREMENT_COLUMNS)

# Throughput units the CSV may carry, as the factor to MiB/s.
THROUGHPUT_TO_MIB = {"KiB/s": 1.0 / 1024.0, "MiB/s": 1.0, "B/s": 1.0 / (1024.0 * 1024.0)}


class FigureDataError(ValueError):
    """The CSV lacks what a figure needs; the message names the figure."""


# The panels show throughput (in MiB/s), CPU utilisation (%) or exit counts (a mechanism: the
# exits a modification removes).
DRAWABLE = ("throughput", "cpu", "exits")


def _drawable(specs: dict[str, FigureClaim]) -> dict[str, FigureClaim]:
    for spec in specs.values():
        for panel in spec.panels:
            if panel.quantity not in DRAWABLE:
                raise ClaimsError(f"claim {spec.claim_id}, quantity {panel.ratio_label!r}: figure {spec.fig_id} "
                                  f"cannot draw measure {panel.quantity!r}; it draws {', '.join(DRAWABLE)}")
    return specs


# What each figure draws (title, the paper's claim, the ratios and the paper's values of them)
# comes from the claims file, guestio/analysis/claims.yaml; nothing here states a claim.
FIGURE_CLAIMS: dict[str, FigureClaim] = _drawable(figure_claims())


class Condition(NamedTuple):
    """One bar: the rows that share every condition column (measurements.CONDITION_COLUMNS)."""

    target: str
    variant: str
    accelerator: str
    disk: str
    clocksource: str
    qemu: str = NOT_APPLICABLE
    guest_scheduler: str = NOT_APPLICABLE
    host_scheduler: str = NOT_APPLICABLE
    nic: str = NOT_APPLICABLE
    peer: str = NOT_APPLICABLE

    def extras(self, columns: Iterable[str] | None = None) -> list[str]:
        """The dimensions beyond Fig 1's that apply, as words ("QEMU pit-scale", "guest bfq")."""
        names = DEFAULT_COLUMNS if columns is None else columns
        return [EXTRA_WORDS[c].format(getattr(self, c)) for c in DEFAULT_COLUMNS
                if c in names and getattr(self, c) != NOT_APPLICABLE]

    def accel_word(self) -> str:
        # modelled exits are counted under TCG; the panel's axis says they are exits
        return "TCG" if self.accelerator == "tcg-modelled" else self.accelerator.upper()

    def disk_words(self) -> list[str]:
        if self.disk == NOT_APPLICABLE:
            return []
        return [self.disk.upper() if self.disk in ("ide",) else self.disk]

    def setting(self) -> str:
        """Accelerator, disk interface and clocksource, e.g. "TCG · IDE · acpi_pm"."""
        return " · ".join([self.accel_word(), *self.disk_words(), self.clocksource, *self.extras()])

    def label(self, varying: Iterable[str] = ()) -> str:
        """Tick label: short lines, so that four bars per panel still fit side by side.

        ``varying``: the extra dimensions that differ between the figure's bars; only
        those are named (the rest is in the footer).
        """
        if self.target == "native":
            return f"native\n{self.disk}"
        lines = [f"VM {self.variant}", " · ".join([self.accel_word(), *self.disk_words()]), f"clock {self.clocksource}"]
        extras = self.extras(varying)
        if extras:
            lines.append(" · ".join(extras))
        return "\n".join(lines)

    def short(self) -> str:
        return "native" if self.target == "native" else f"VM {self.variant} ({self.setting()})"


EXTRA_WORDS = {"qemu": "QEMU {}", "guest_scheduler": "guest {}", "host_scheduler": "host {}", "nic": "{}",
               "peer": "peer {}"}


def varying_columns(conditions: Iterable[Condition]) -> list[str]:
    conditions = list(conditions)
    return [c for c in DEFAULT_COLUMNS if len({getattr(x, c) for x in conditions}) > 1]


@dataclass
class Bar:
    condition: Condition
    values: np.ndarray      # display units, repetition order
    mean: float
    low: float
    high: float


@dataclass
class Ratio:
    panel: Panel
    numerator: Condition
    denominator: Condition
    ratio: float
    low: float
    high: float
    p_value: float
    n_numerator: int
    n_denominator: int
    mean_numerator: float
    mean_denominator: float
    unit: str

    @property
    def mark(self) -> str:
        return significance_mark(self.p_value)


# --- selecting the data --------------------------------------------------------------------------

def figure_spec(fig_id: str) -> FigureClaim:
    try:
        return FIGURE_CLAIMS[fig_id]
    except KeyError:
        raise ValueError(f"unknown figure {fig_id!r}; known figures: {', '.join(FIGURE_CLAIMS)}") from None


def _fail(spec: FigureClaim, what: str) -> FigureDataError:
    return FigureDataError(f"{spec.fig_id} ({spec.paper_id}: {spec.title}): {what}")


def _side(df: pd.DataFrame, side, defaults: Mapping[str, str] | None = None) -> pd.Series:
    """Rows matching one side (a numerator or denominator): a mapping column -> value, or a
    list of such mappings (any of them).  A condition column the mapping leaves unnamed must
    be "-" (not applicable) or its default (``defaults``, e.g. the default QEMU variant), so
    that Fig 1's selector does not pick up the runs of another artifact's conditions."""
    mask = pd.Series(False, index=df.index)
    for alternative in selector_alternatives(side):
        one = pd.Series(True, index=df.index)
        for column, value in alternative.items():
            one &= df[column].astype(str) == value
        for column, default in (defaults or {}).items():
            if column not in alternative and column in df.columns:
                one &= df[column].astype(str).isin([NOT_APPLICABLE, str(default)])
        mask |= one
    return mask


def _is_native(side) -> bool:
    return any(a.get("target") == "native" for a in selector_alternatives(side))


def _describe_side(side) -> str:
    alternatives = selector_alternatives(side)
    if len(alternatives) > 1:
        return " or ".join(_describe_side(a) for a in alternatives)
    side = alternatives[0]
    rest = {k: v for k, v in side.items() if k != "target"}
    if _is_native(side) and not rest:
        return "native rows (target 'native')"
    if side.get("target") == "vm" and set(rest) == {"variant"}:
        return f"VM rows of variant {rest['variant']!r} (target 'vm')"
    return "rows with " + ", ".join(f"{k} {v!r}" for k, v in side.items())


def _present(df: pd.DataFrame) -> str:
    if df.empty:
        return "none"
    combos = df[["target", "variant"]].drop_duplicates().sort_values(["target", "variant"])
    return ", ".join(f"{t}/{v}" for t, v in combos.itertuples(index=False))


def _conditions(df: pd.DataFrame) -> list[Condition]:
    keys = df[list(Condition._fields)].drop_duplicates()
    return sorted(Condition(*(str(x) for x in row)) for row in keys.itertuples(index=False))


def _select(df: pd.DataFrame, spec: FigureClaim,
            defaults: Mapping[str, str] | None = None) -> tuple[pd.DataFrame, list[tuple[Condition, Condition]]]:
    """The figure's rows and its (numerator, denominator) condition pairs, or a FigureDataError."""
    df = df.copy()
    for column, default in DEFAULT_COLUMNS.items():
        df[column] = df[column].astype(object).fillna(default) if column in df.columns else default
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise _fail(spec, f"the CSV lacks the columns {', '.join(missing)} (expected: {', '.join(COLUMNS)})")
    rows = df[df["experiment"] == spec.experiment]
    if rows.empty:
        have = sorted(map(str, df["experiment"].dropna().unique()))
        raise _fail(spec, f"no rows of experiment {spec.experiment!r}; the CSV has experiments: "
                          f"{', '.join(have) or 'none'}")
    metrics = [p.metric for p in spec.panels]
    for metric in metrics:
        if not (rows["metric"] == metric).any():
            have = sorted(map(str, rows["metric"].unique()))
            raise _fail(spec, f"no rows of metric {metric!r}; metrics present: {', '.join(have)}")
    rows = rows[rows["metric"].isin(metrics)]
    for side in (spec.numerator, spec.denominator):
        for metric in metrics:
            sel = rows[_side(rows, side, defaults) & (rows["metric"] == metric)]
            if sel.empty:
                raise _fail(spec, f"no {_describe_side(side)} for metric {metric!r}; target/variant "
                                  f"present for it: {_present(rows[rows['metric'] == metric])}")
    num_mask, den_mask = _side(rows, spec.numerator, defaults), _side(rows, spec.denominator, defaults)
    rows = rows[num_mask | den_mask]
    numerators = _conditions(rows[num_mask[rows.index]])
    denominators = _conditions(rows[den_mask[rows.index]])
    # A VM numerator pairs with the denominator that agrees on every column neither side names.
    named = {c for side in (spec.numerator, spec.denominator) for a in selector_alternatives(side) for c in a}
    free = [i for i, c in enumerate(Condition._fields) if c not in named]
    pairs: list[tuple[Condition, Condition]] = []
    if _is_native(spec.denominator):
        if len(denominators) != 1:
            raise _fail(spec, "expected one native condition, found "
                              f"{len(denominators)}: {'; '.join(c.short() for c in denominators)}")
        pairs = [(num, denominators[0]) for num in numerators]
    else:
        for num in numerators:
            same = [d for d in denominators if all(d[i] == num[i] for i in free)]
            if not same:
                raise _fail(spec, f"no {_describe_side(spec.denominator)} with the same "
                                  f"{', '.join(Condition._fields[i] for i in free)} as {num.short()}; available: "
                                  f"{'; '.join(d.short() for d in denominators)}")
            pairs.append((num, same[0]))
    return rows, pairs


def condition_values(rows: pd.DataFrame, condition: Condition, metric: str) -> tuple[np.ndarray, str]:
    """(values in repetition order with NaNs left out, unit) of one condition and metric."""
    sel = rows[(rows["metric"] == metric)]
    for name, value in zip(Condition._fields, condition):
        sel = sel[sel[name].astype(str) == value]
    units = sorted(map(str, sel["unit"].dropna().unique()))
    if len(units) != 1:
        raise ValueError(f"{condition.short()} {metric}: expected one unit, found {units or 'none'}")
    dup = sel["repetition"][sel["repetition"].duplicated()]
    if not dup.empty:
        raise ValueError(f"{condition.short()} {metric}: repetition(s) {sorted(set(dup.tolist()))} appear "
                         "more than once")
    sel = sel.sort_values("repetition", kind="stable")
    values = pd.to_numeric(sel["value"], errors="raise").to_numpy(dtype=float)
    return values[~np.isnan(values)], units[0]


def _to_display(values: np.ndarray, unit: str, panel: Panel, spec: FigureClaim) -> tuple[np.ndarray, str]:
    if panel.quantity == "throughput":
        if unit not in THROUGHPUT_TO_MIB:
            raise _fail(spec, f"{panel.metric}: unit {unit!r} is not a throughput unit "
                              f"({', '.join(THROUGHPUT_TO_MIB)})")
        return values * THROUGHPUT_TO_MIB[unit], "MiB/s"
    if panel.quantity == "exits":
        if unit != "exits":
            raise _fail(spec, f"{panel.metric}: unit {unit!r}, expected 'exits'")
        return values, "exits"
    if unit != "%":
        raise _fail(spec, f"{panel.metric}: unit {unit!r}, expected '%'")
    return values, "%"


def _values(rows, condition, panel, spec) -> tuple[np.ndarray, str]:
    try:
        values, unit = condition_values(rows, condition, panel.metric)
    except ValueError as e:
        raise _fail(spec, str(e)) from None
    if values.size == 0:
        raise _fail(spec, f"{condition.short()} has only missing (NaN) values for {panel.metric}")
    return values, unit


# --- computing ------------------------------------------------------------------------------------

def compute(df: pd.DataFrame, spec: FigureClaim, seed: int, n_resamples: int, confidence: float,
             defaults: Mapping[str, str] | None = None):
    rows, pairs = _select(df, spec, defaults)
    order: list[Condition] = []
    for num, den in pairs:  # native first; for fig6 each baseline right before its variant
        for c in (den, num):
            if c not in order:
                order.append(c)
    bars: dict[str, list[Bar]] = {}
    ratios: list[Ratio] = []
    for panel in spec.panels:
        raw = {c: _values(rows, c, panel, spec) for c in order}
        bars[panel.metric] = []
        for c in order:
            shown, _ = _to_display(*raw[c], panel, spec)
            mean, low, high = bootstrap_mean_ci(shown, seed, n_resamples, confidence)
            bars[panel.metric].append(Bar(c, shown, mean, low, high))
        for num, den in pairs:
            (nv, nu), (dv, du) = raw[num], raw[den]
            if nu != du:
                raise _fail(spec, f"{panel.metric}: units differ between {num.short()} ({nu}) and "
                                  f"{den.short()} ({du})")
            try:
                ratio, low, high = bootstrap_ratio_ci(nv, dv, seed, n_resamples, confidence)
            except ValueError as e:
                raise _fail(spec, f"{panel.metric}: {e}") from None
            ratios.append(Ratio(panel, num, den, ratio, low, high, welch_significance(nv, dv),
                                nv.size, dv.size, float(nv.mean()), float(dv.mean()), nu))
    return pairs, bars, ratios


# --- ratios as text ------------------------------------------------------------------------------

def format_ratio(ratio: float, low: float, high: float) -> str:
    """How a ratio and its CI are written: three significant digits of the ratio, the CI to the
    same decimals, e.g. "0.432 [0.401, 0.468]", "1.91 [1.85, 1.98]", "0.0707 [0.0695, 0.0718]"."""
    decimals = 2
    if math.isfinite(ratio) and ratio != 0.0:
        decimals = max(0, 2 - math.floor(math.log10(abs(ratio))))
    if math.isnan(low) or math.isnan(high):
        return f"{ratio:.{decimals}f} [no CI: one repetition]"
    return f"{ratio:.{decimals}f} [{low:.{decimals}f}, {high:.{decimals}f}]"


def welch_p_text(p: float) -> str:
    if math.isnan(p):
        return "Welch p n/a"
    return "Welch p < 0.001" if p < 0.001 else f"Welch p = {p:.3f}"
