"""Laying out Figures 1, 2 and 6: header, the paper's claim, one bar panel per quantity, the footer.

Texts about the run (accelerator, QEMU, guest kernel, host) come from its provenance.
"""

from __future__ import annotations

import math
import sys
import textwrap
from typing import Iterable, Mapping

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # headless and deterministic; never switch a live pyplot
    matplotlib.use("Agg")

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from guestio.analysis.claim_model import FigureClaim, Panel
from guestio.analysis.figure_data import (Bar, Condition, Ratio, condition_values, format_ratio, varying_columns,
                                          welch_p_text)
from guestio.analysis.measurements import DEFAULT_COLUMNS
from guestio.analysis.stats import SIGNIFICANCE_LEVEL

TCG_WARNING = ("VM numbers come from QEMU TCG emulation, not KVM: they are not comparable "
               "to the paper's KVM numbers in absolute terms.")

# The y axis of each quantity a panel draws.
Y_LABELS = {"throughput": "MiB/s", "cpu": "CPU utilisation (%)", "exits": "exits"}

NATIVE_COLOUR = (0.60, 0.60, 0.60)
VARIANT_COLOURS = sns.color_palette("colorblind", 10)


# --- provenance labels ----------------------------------------------------------------------------

def _get(d, *keys):
    for k in keys:
        if not isinstance(d, Mapping) or k not in d or d[k] in (None, ""):
            return None
        d = d[k]
    return d


def accelerator_text(prov: Mapping) -> tuple[str | None, str | None]:
    acc = _get(prov, "accelerator")
    if isinstance(acc, Mapping):
        return _get(acc, "accelerator"), _get(acc, "reason")
    return (str(acc) if acc else None), None


def qemu_text(prov: Mapping) -> str:
    q = _get(prov, "qemu")
    if isinstance(q, Mapping):
        q = _get(q, "version") or _get(q, "binary")
    if not q:
        return "QEMU version unknown"
    first = str(q).strip().splitlines()[0]
    return first.replace("QEMU emulator version ", "QEMU ")


def kernel_text(prov: Mapping, variants: Iterable[str]) -> str:
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


def host_text(prov: Mapping) -> str:
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
        lines.append(f"here: {format_ratio(r.ratio, r.low, r.high)}, {welch_p_text(r.p_value)}"
                     + (f" {r.mark}" if r.mark else ""))
    return lines


def tick_line(df: pd.DataFrame, conditions: Iterable[Condition]) -> str:
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


def draw(spec: FigureClaim, provenance: Mapping, pairs, bars, ratios, seed: int, n_resamples: int,
          confidence: float, notes: Iterable[str] = ()) -> tuple[Figure, bool]:
    vm_conditions = [c for c, _ in pairs] + [d for _, d in pairs if d.target == "vm"]
    prov_acc, prov_reason = accelerator_text(provenance)
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
    varying = varying_columns([c for pair in pairs for c in pair])
    n_tick_lines = max(c.label(varying).count("\n") + 2 for pair in pairs for c in pair)  # + "n = ..."
    acc_word = prov_acc or "/".join(csv_accs) or "unknown"
    footer_items = [
        f"Bars: mean; error bars: {confidence:.0%} percentile bootstrap CI of the mean ({n_resamples} "
        f"resamples, seed {seed}); dots: repetitions; n: repetitions per bar. Ratio CIs: bootstrap of "
        f"mean(numerator)/mean(denominator), groups resampled independently; * Welch's t-test "
        f"p < {SIGNIFICANCE_LEVEL:g}.",
        f"Accelerator: {acc_word}" + (f" ({prov_reason})" if prov_reason else "") + f" · {qemu_text(provenance)}"
        f" · {kernel_text(provenance, sorted({c.variant for c in vm_conditions}))} · {host_text(provenance)}",
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
    varying = varying_columns(b.condition for b in panel_bars)
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


def figure_texts(fig: Figure) -> list[str]:
    texts = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        texts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        texts += [t.get_text() for t in ax.get_xticklabels()]
        texts += [t.get_text() for t in ax.texts]
    return [t for t in texts if t]
