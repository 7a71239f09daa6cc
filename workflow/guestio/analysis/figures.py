"""Figures 1, 2 and 6 of Zhang et al. (2010), reproduced from the long-form results CSV.

What each figure is about (``FIGURE_CLAIMS``: its title, the paper's claim, the
ratios it states and the paper's values of them) comes from the claims file
(``guestio.analysis.claims``, ``claims.yaml``).  Every number drawn or written comes from
``guestio.analysis.stats`` with the caller's seed, so the bars, the error bars, the
annotation and the summary table agree and are identical on every rerun.

Input: the long-form CSV (one row per measurement) with the columns of
``COLUMNS`` and the run's provenance dict.  Values are taken per condition in
repetition order; NaN values (a benchmark that reported nothing) are left out
and the repetition counts shown on the figure count only real values.

Output files are byte-identical for identical inputs: matplotlib's own
defaults (not the user's matplotlibrc) plus pinned settings, the Agg/PDF
renderers, no dates or software strings in the metadata, and an atomic write
(temporary file in the same directory, then rename).
"""

from __future__ import annotations

import math
import os
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # headless and deterministic; never switch a live pyplot
    matplotlib.use("Agg")

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from guestio.analysis.claim_model import FigureClaim, Panel, selector_alternatives
from guestio.analysis.claims import ClaimsError, figure_claims
from guestio.analysis.placeholders import resolve_placeholders
from guestio.analysis.measurements import COLUMNS as _MEASUREMENT_COLUMNS
from guestio.analysis.measurements import DEFAULT_COLUMNS, NOT_APPLICABLE
from guestio.util import atomic_path
from guestio.analysis.stats import (DEFAULT_CONFIDENCE, DEFAULT_N_RESAMPLES, SIGNIFICANCE_LEVEL, bootstrap_mean_ci,
                    bootstrap_ratio_ci, significance_mark, welch_significance)

__all__ = ["COLUMNS", "FIGURE_CLAIMS", "Panel", "FigureClaim", "Condition", "FigureDataError", "FigureResult",
           "plot_comparison", "plot_fig1", "plot_fig2", "plot_fig6", "summary_table", "summary_markdown",
           "write_summary_csv", "format_ratio", "condition_values"]

COLUMNS = tuple(_MEASUREMENT_COLUMNS)

# Throughput units the CSV may carry, as the factor to MiB/s.
THROUGHPUT_TO_MIB = {"KiB/s": 1.0 / 1024.0, "MiB/s": 1.0, "B/s": 1.0 / (1024.0 * 1024.0)}


class FigureDataError(ValueError):
    """The CSV lacks what a figure needs; the message names the figure."""


# The panels show throughput (in MiB/s), CPU utilisation (%) or exit counts (a mechanism: the
# exits a modification removes).
DRAWABLE = ("throughput", "cpu", "exits")
Y_LABELS = {"throughput": "MiB/s", "cpu": "CPU utilisation (%)", "exits": "exits"}


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

TCG_WARNING = ("VM numbers come from QEMU TCG emulation, not KVM: they are not comparable "
               "to the paper's KVM numbers in absolute terms.")

# Pinned on top of matplotlib's built-in defaults (a user's matplotlibrc is ignored).
RC = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],   # ships with matplotlib
    "font.size": 9.0,
    "axes.titlesize": 11.0,
    "axes.labelsize": 9.5,
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
    "axes.unicode_minus": True,
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": None,                 # keep the computed layout; "tight" would re-measure text
    "pdf.fonttype": 42,                   # embedded TrueType: text stays selectable and searchable
    "pdf.compression": 6,
    "path.simplify": True,
    "svg.hashsalt": "guestio",
}
PDF_METADATA = {"Creator": "guestio figures.py", "Producer": None, "CreationDate": None, "ModDate": None}
PNG_METADATA = {"Software": None}

NATIVE_COLOUR = (0.60, 0.60, 0.60)
VARIANT_COLOURS = sns.color_palette("colorblind", 10)


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


def _varying(conditions: Iterable[Condition]) -> list[str]:
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


@dataclass
class FigureResult:
    fig_id: str
    figure: Figure
    texts: list[str]                 # every text drawn: titles, annotations, tick labels, footer
    ratios: list[Ratio]
    bars: dict[str, list[Bar]]       # metric -> bars in drawing order
    tcg: bool
    summary: pd.DataFrame            # the same numbers as summary_table()
    outputs: list[Path] = field(default_factory=list)


# --- selecting the data --------------------------------------------------------------------------

def _spec(fig_id: str) -> FigureClaim:
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

def _compute(df: pd.DataFrame, spec: FigureClaim, seed: int, n_resamples: int, confidence: float,
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


def format_ratio(ratio: float, low: float, high: float) -> str:
    """How a ratio and its CI are written: three significant digits of the ratio, the CI to the
    same decimals, e.g. "0.432 [0.401, 0.468]", "1.91 [1.85, 1.98]", "0.0707 [0.0695, 0.0718]"."""
    decimals = 2
    if math.isfinite(ratio) and ratio != 0.0:
        decimals = max(0, 2 - math.floor(math.log10(abs(ratio))))
    if math.isnan(low) or math.isnan(high):
        return f"{ratio:.{decimals}f} [no CI: one repetition]"
    return f"{ratio:.{decimals}f} [{low:.{decimals}f}, {high:.{decimals}f}]"


def _p_text(p: float) -> str:
    if math.isnan(p):
        return "Welch p n/a"
    return "Welch p < 0.001" if p < 0.001 else f"Welch p = {p:.3f}"


def summary_table(df: pd.DataFrame, fig_id: str, seed: int, n_resamples: int = DEFAULT_N_RESAMPLES,
                  confidence: float = DEFAULT_CONFIDENCE) -> pd.DataFrame:
    """The reproduced ratios of one figure with their bootstrap CIs, one row per ratio."""
    spec = resolve_placeholders(_spec(fig_id))
    _, _, ratios = _compute(df, spec, seed, n_resamples, confidence)
    return _summary(spec, ratios, seed, n_resamples, confidence)


def _summary(spec: FigureClaim, ratios: list[Ratio], seed: int, n_resamples: int,
             confidence: float) -> pd.DataFrame:
    records = [{
        "figure": spec.fig_id, "paper_figure": spec.paper_id, "metric": r.panel.metric,
        "ratio_label": r.panel.ratio_label, "numerator": r.numerator.short(), "denominator": r.denominator.short(),
        "paper": r.panel.paper, "paper_relation": r.panel.paper_relation, "paper_value": r.panel.paper_value,
        "ratio": r.ratio, "ci_low": r.low, "ci_high": r.high, "confidence": confidence,
        "n_numerator": r.n_numerator, "n_denominator": r.n_denominator,
        "mean_numerator": r.mean_numerator, "mean_denominator": r.mean_denominator, "unit": r.unit,
        "welch_p": r.p_value, "significant": bool(r.mark), "accelerator": r.numerator.accelerator,
        "n_resamples": n_resamples, "seed": seed,
    } for r in ratios]
    return pd.DataFrame.from_records(records)


def summary_markdown(table: pd.DataFrame) -> str:
    """A Markdown table of ``summary_table``'s result (no tabulate needed)."""
    head = ["figure", "ratio", "numerator / denominator", "paper", "here (95% CI)", "Welch p", "n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.itertuples(index=False):
        p = "n/a" if math.isnan(r.welch_p) else f"{r.welch_p:.3g}{' *' if r.significant else ''}"
        lines.append("| " + " | ".join([
            r.paper_figure, r.ratio_label, f"{r.numerator} / {r.denominator}", r.paper,
            format_ratio(r.ratio, r.ci_low, r.ci_high), p, f"{r.n_numerator} / {r.n_denominator}"]) + " |")
    return "\n".join(lines) + "\n"


def write_summary_csv(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    return _atomic(Path(path), lambda tmp: table.to_csv(tmp, index=False, lineterminator="\n"))


# --- provenance labels ----------------------------------------------------------------------------

def _get(d, *keys):
    for k in keys:
        if not isinstance(d, Mapping) or k not in d or d[k] in (None, ""):
            return None
        d = d[k]
    return d


def _accelerator_text(prov: Mapping) -> tuple[str | None, str | None]:
    acc = _get(prov, "accelerator")
    if isinstance(acc, Mapping):
        return _get(acc, "accelerator"), _get(acc, "reason")
    return (str(acc) if acc else None), None


def _qemu_text(prov: Mapping) -> str:
    q = _get(prov, "qemu")
    if isinstance(q, Mapping):
        q = _get(q, "version") or _get(q, "binary")
    if not q:
        return "QEMU version unknown"
    first = str(q).strip().splitlines()[0]
    return first.replace("QEMU emulator version ", "QEMU ")


def _kernel_text(prov: Mapping, variants: Iterable[str]) -> str:
    kernels = _get(prov, "kernels")
    found = []
    for v in variants:
        source = _get(kernels, v, "source") if kernels else None
        if source is None and _get(prov, "kernel", "variant") in (v, None):
            source = _get(prov, "kernel", "source")
        if not source:
            continue
        version = _get(source, "kernelversion") or "?"
        debian = _get(source, "debian_version")
        found.append(f"Linux {version}" + (f" (Debian {debian})" if debian else ""))
    found = sorted(set(found))
    return "guest kernel " + (", ".join(found) if found else "version unknown")


def _host_text(prov: Mapping) -> str:
    cpu = _get(prov, "host", "cpu_model") or "unknown CPU"
    kernel = _get(prov, "host", "kernel")
    return f"host {cpu}" + (f", Linux {kernel}" if kernel else "")


# --- drawing ---------------------------------------------------------------------------------------

def _line_h(points: float) -> float:
    """Height in inches of one text line at ``points``."""
    return points * 1.3 / 72.0


def _colour(c: Condition, keys: list) -> tuple:
    """Native grey; each VM condition its own colour, in the order ``keys`` (colour_keys) gives."""
    if c.target == "native":
        return NATIVE_COLOUR
    return tuple(VARIANT_COLOURS[keys.index(_colour_key(c)) % len(VARIANT_COLOURS)])


def _colour_key(c: Condition) -> tuple:
    return (c.variant, *(getattr(c, col) for col in DEFAULT_COLUMNS))


def _fmt_value(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def _panel_lines(panel: Panel, ratios: list[Ratio]) -> list[str]:
    lines = textwrap.wrap(panel.ratio_label, 60) + textwrap.wrap(f"paper: {panel.paper}", 60)
    mine = [r for r in ratios if r.panel is panel]
    for r in mine:
        if len(mine) > 1:
            lines += textwrap.wrap(f"{r.numerator.short()}:", 60)
        lines.append(f"here: {format_ratio(r.ratio, r.low, r.high)}, {_p_text(r.p_value)}"
                     + (f" {r.mark}" if r.mark else ""))
    return lines


def _tick_line(df: pd.DataFrame, conditions: Iterable[Condition]) -> str:
    """The guest tick measured in the runs of the drawn conditions (metric timer_interrupt_rate,
    guestio.workloads.tick), as one line; "" when the table has none."""
    if any(c not in df.columns for c in ("metric", "repetition", "value", "unit", *Condition._fields)):
        return ""
    rows = df[df["metric"] == "timer_interrupt_rate"]
    parts = []
    for c in dict.fromkeys(conditions):
        if c.target != "vm" or rows.empty:
            continue
        try:
            values, _ = condition_values(rows, c, "timer_interrupt_rate")
        except ValueError:
            continue
        if values.size:
            extras = " ".join(c.extras(["qemu"]))
            parts.append(f"{c.variant}{' ' + extras if extras else ''} {values.mean():.0f} Hz "
                         f"({values.min():.0f}-{values.max():.0f})")
    return ("Measured guest tick (timer interrupts per second of wall time, mean and range of the runs): "
            + "; ".join(parts) + ".") if parts else ""


def _draw(spec: FigureClaim, provenance: Mapping, pairs, bars, ratios, seed: int, n_resamples: int,
          confidence: float, notes: Iterable[str] = ()) -> tuple[Figure, bool]:
    vm_conditions = [c for c, _ in pairs] + [d for _, d in pairs if d.target == "vm"]
    prov_acc, prov_reason = _accelerator_text(provenance)
    csv_accs = sorted({c.accelerator for c in vm_conditions})
    tcg = "tcg" in csv_accs or prov_acc == "tcg"

    W, left, right, gap = 11.0, 0.85, 0.3, 1.0
    panel_w = (W - left - right - gap) / 2
    header = [(f"{spec.paper_id}: {spec.title}", 13.0, "bold", "black")]
    if tcg:
        header += [(line, 10.0, "bold", "#b00000") for line in textwrap.wrap(TCG_WARNING, 105)]
    header += [(line, 10.0, "normal", "black") for line in
               textwrap.wrap(f"Paper's claim ({spec.paper_id}; {spec.testbed}): {spec.claim}.", 125)]
    header += [(line, 9.0, "normal", "#1f3f7f") for note in (*spec.notes, *notes) for line in textwrap.wrap(note, 140)]
    panel_text = [_panel_lines(p, ratios) for p in spec.panels]
    n_panel_lines = max(len(t) for t in panel_text)
    varying = _varying([c for pair in pairs for c in pair])
    n_tick_lines = max(c.label(varying).count("\n") + 2 for pair in pairs for c in pair)  # + "n = ..."
    acc_word = prov_acc or "/".join(csv_accs) or "unknown"
    footer_items = [
        f"Bars: mean; error bars: {confidence:.0%} percentile bootstrap CI of the mean ({n_resamples} "
        f"resamples, seed {seed}); dots: repetitions; n: repetitions per bar. Ratio CIs: bootstrap of "
        f"mean(numerator)/mean(denominator), groups resampled independently; * Welch's t-test "
        f"p < {SIGNIFICANCE_LEVEL:g}.",
        f"Accelerator: {acc_word}" + (f" ({prov_reason})" if prov_reason else "") + f" · {_qemu_text(provenance)}"
        f" · {_kernel_text(provenance, sorted({c.variant for c in vm_conditions}))} · {_host_text(provenance)}",
    ]
    footer = [line for item in footer_items for line in textwrap.wrap(item, 160)]

    pad, axes_h = 0.18, 3.3
    header_h = sum(_line_h(size) for _, size, _, _ in header) + pad
    panel_title_h = _line_h(11.0)
    annot_h = panel_title_h + n_panel_lines * _line_h(9.0) + 0.12
    ticks_h = n_tick_lines * _line_h(8.5) + 0.2
    footer_h = len(footer) * _line_h(7.5) + 0.1
    # Two panels a row (more than two: further rows below, e.g. throughput and CPU of write and read).
    rows = max(1, math.ceil(len(spec.panels) / 2))
    H = pad + header_h + annot_h + axes_h + ticks_h + footer_h + pad + (rows - 1) * (annot_h + axes_h + ticks_h)

    fig = Figure(figsize=(W, H))
    FigureCanvasAgg(fig)
    y = H - pad
    for text, size, weight, colour in header:
        fig.text(left / W, y / H, text, fontsize=size, fontweight=weight, color=colour, va="top", ha="left")
        y -= _line_h(size)
    y -= pad
    axes_top = y - annot_h
    axes_bottom = axes_top - axes_h
    variants = sorted({_colour_key(c) for c in vm_conditions}, key=lambda k: (k[0] != "baseline", k))
    row_h = annot_h + axes_h + ticks_h
    for i, panel in enumerate(spec.panels):
        x0 = left + (i % 2) * (panel_w + gap)
        row_y, axes_bottom = y - (i // 2) * row_h, axes_top - axes_h - (i // 2) * row_h
        fig.text(x0 / W, row_y / H, panel.title, fontsize=11.0, fontweight="bold", va="top", ha="left")
        ty = row_y - panel_title_h
        for line in panel_text[i]:
            fig.text(x0 / W, ty / H, line, fontsize=9.0, va="top", ha="left",
                     fontweight="bold" if line.startswith("here:") else "normal")
            ty -= _line_h(9.0)
        ax = fig.add_axes((x0 / W, axes_bottom / H, panel_w / W, axes_h / H))
        _bar_panel(ax, panel, bars[panel.metric], variants)
    fy = pad + footer_h - 0.05
    for line in footer:
        fig.text(left / W, fy / H, line, fontsize=7.5, color="#333333", va="top", ha="left")
        fy -= _line_h(7.5)
    return fig, tcg


def _bar_panel(ax, panel: Panel, panel_bars: list[Bar], variants: list[str]) -> None:
    varying = _varying(b.condition for b in panel_bars)
    labels = [f"{b.condition.label(varying)}\nn = {b.values.size}" for b in panel_bars]
    frame = pd.DataFrame({"condition": labels, "mean": [b.mean for b in panel_bars]})
    palette = {lab: _colour(b.condition, variants) for lab, b in zip(labels, panel_bars)}
    sns.barplot(data=frame, x="condition", y="mean", hue="condition", order=labels, hue_order=labels,
                palette=palette, errorbar=None, legend=False, width=0.6, saturation=0.9, ax=ax)
    top = 0.0
    for x, b in enumerate(panel_bars):
        if not (math.isnan(b.low) or math.isnan(b.high)):
            ax.errorbar([x], [b.mean], yerr=[[b.mean - b.low], [b.high - b.mean]], fmt="none",
                        ecolor="black", elinewidth=1.3, capsize=7, zorder=5)
        offsets = np.linspace(-0.22, 0.22, b.values.size) if b.values.size > 1 else np.zeros(1)
        ax.plot(x + offsets, b.values, linestyle="none", marker="o", markersize=3.5,
                markerfacecolor="white", markeredgecolor="black", markeredgewidth=0.7, zorder=4)
        high = b.high if not math.isnan(b.high) else b.mean
        top = max(top, high, float(b.values.max()))
    for x, b in enumerate(panel_bars):
        high = max(b.high if not math.isnan(b.high) else b.mean, float(b.values.max()))
        ax.text(x, high + top * 0.03, _fmt_value(b.mean), ha="center", va="bottom", fontsize=8.5,
                fontweight="bold")
    ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
    ax.set_xlabel("")
    ax.set_ylabel(Y_LABELS[panel.quantity])
    ax.grid(axis="y", linewidth=0.5, alpha=0.5)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _figure_texts(fig: Figure) -> list[str]:
    texts = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        texts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        texts += [t.get_text() for t in ax.get_xticklabels()]
        texts += [t.get_text() for t in ax.texts]
    return [t for t in texts if t]


# --- writing ---------------------------------------------------------------------------------------

def _atomic(path: Path, write) -> Path:
    with atomic_path(path) as tmp:
        write(tmp)
    return path


def plot_comparison(fig_id: str, df: pd.DataFrame, provenance: Mapping | None,
                    out_pdf: str | os.PathLike | None, out_png: str | os.PathLike | None, seed: int,
                    n_resamples: int = DEFAULT_N_RESAMPLES,
                    confidence: float = DEFAULT_CONFIDENCE,
                    defaults: Mapping[str, str] | None = None) -> FigureResult:
    """Draw figure ``fig_id`` ("fig1", "fig2", "fig6") and write it as PDF and PNG.

    Raises FigureDataError (naming the figure) when ``df`` lacks rows it needs.
    Returns the figure, its texts and the numbers drawn.  ``out_pdf``/``out_png``
    may be None to skip that file.  ``defaults``: the default condition's value of the extra
    columns (qemu, guest_scheduler, ...) that a claim's selector leaves unnamed.
    """
    spec = resolve_placeholders(_spec(fig_id), defaults)   # e.g. the host scheduler in CFQ's place
    provenance = provenance or {}
    pairs, bars, ratios = _compute(df, spec, seed, n_resamples, confidence, defaults)
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(RC)
        tick = _tick_line(df, [c for pair in pairs for c in pair])
        fig, tcg = _draw(spec, provenance, pairs, bars, ratios, seed, n_resamples, confidence,
                         notes=[tick] if tick else [])
        outputs = []
        if out_pdf is not None:
            outputs.append(_atomic(Path(out_pdf), lambda tmp: fig.savefig(tmp, format="pdf",
                                                                           metadata=PDF_METADATA)))
        if out_png is not None:
            outputs.append(_atomic(Path(out_png), lambda tmp: fig.savefig(tmp, format="png",
                                                                           metadata=PNG_METADATA)))
    summary = _summary(spec, ratios, seed, n_resamples, confidence)
    return FigureResult(fig_id, fig, _figure_texts(fig), ratios, bars, tcg, summary, outputs)


def plot_fig1(df, provenance, out_pdf, out_png, seed, **kw) -> FigureResult:
    return plot_comparison("fig1", df, provenance, out_pdf, out_png, seed, **kw)


def plot_fig2(df, provenance, out_pdf, out_png, seed, **kw) -> FigureResult:
    return plot_comparison("fig2", df, provenance, out_pdf, out_png, seed, **kw)


def plot_fig6(df, provenance, out_pdf, out_png, seed, **kw) -> FigureResult:
    return plot_comparison("fig6", df, provenance, out_pdf, out_png, seed, **kw)
