"""Exit sites rendered as a paper-style table (Markdown and LaTeX): one table per accelerator,
workload, variant and phase, its caption saying whether the exits were measured or modelled."""

from __future__ import annotations

import pandas as pd

from guestio.exits.schema import GROUP, SITE, SITE_WITH_CALLER, rank

MODELLED_CAPTION = "modelled exits (TCG)"

_KIND_TEXT = {"pio_in": "in", "pio_out": "out", "mmio_read": "mmio read", "mmio_write": "mmio write",
              "hlt": "hlt", "cpuid": "cpuid", "msr_read": "rdmsr", "msr_write": "wrmsr",
              "hypercall": "vmcall", "interrupt": "interrupt", "other": "other"}


def _exit_text(row, max_ports: int = 3) -> str:
    kind = _KIND_TEXT.get(row["exit_kind"], row["exit_kind"])
    ports = [p for p in str(row.get("ports", "") or "").split(",") if p]
    if not ports and not pd.isna(row.get("port_or_address", pd.NA)):
        ports = [f"0x{int(row['port_or_address']):x}"]
    if not ports:
        return kind
    if row["exit_kind"] == "interrupt":
        ports = [f"vector {p}" for p in ports]
    shown = ", ".join(ports[:max_ports]) + (f", +{len(ports) - max_ports} more" if len(ports) > max_ports else "")
    return f"{kind} {shown}"


def _function_text(row) -> str:
    fn = row.get("function", "")
    if not fn:
        return "(unknown)"
    off = row.get("offset", pd.NA)
    return fn if pd.isna(off) else f"{fn}+0x{int(off):x}"


def _pct(v) -> str:
    return "" if pd.isna(v) else f"{100.0 * float(v):.1f}"


def _us(v) -> str:
    return "" if pd.isna(v) else f"{float(v) / 1000.0:.1f}"


def _prepare(df: pd.DataFrame, modelled: bool, caller: bool | None, by: str, n: int | None
             ) -> tuple[pd.DataFrame, bool, dict]:
    if df.empty:
        raise ValueError("render: no rows")
    accs = set(df["accelerator"])
    expected = "tcg-modelled" if modelled else "kvm"
    if accs != {expected}:
        raise ValueError(f"render: modelled={modelled} needs accelerator {expected!r} rows only, got "
                         f"{', '.join(sorted(accs))}")
    groups = df[list(GROUP)].drop_duplicates()
    if len(groups) != 1:
        raise ValueError("render: one table is one (accelerator, workload, variant, phase); got "
                         f"{len(groups)}: filter the frame first")
    if caller is None:
        caller = "caller" in df.columns and (df["caller"] != "").any()
    if "rank" not in df.columns:
        df = rank(df, by=by, n=n, site=SITE_WITH_CALLER if caller else SITE)
    ctx = dict(zip(GROUP, groups.iloc[0]))
    return df.sort_values("rank", kind="stable"), bool(caller), ctx


def _caption(title: str, modelled: bool, ctx: dict) -> str:
    where = f"workload {ctx['workload']}, variant {ctx['variant']}, phase {ctx['phase']}"
    if modelled:
        return (f"{title} -- {MODELLED_CAPTION}: instructions that would exit under Intel VMX with KVM's "
                f"defaults, counted per guest PC by a QEMU TCG plugin; TCG has no VM exits, so there is "
                f"no handling time ({where}).")
    return (f"{title} -- VM exits under KVM, counted with kvm:kvm_exit; handling time = next "
            f"kvm_entry - kvm_exit on the same vCPU thread, % of the total over all exit sites ({where}).")


def _table_rows(df: pd.DataFrame, modelled: bool, caller: bool) -> tuple[list[str], list[list[str]]]:
    head = ["#", "Address", "Exit", "Modelled exits" if modelled else "Exits", "% of exits"]
    if not modelled:
        head += ["Handling time (us)", "% of time"]
    head += ["Guest function"]
    if caller:
        head += ["Calling function"]
    body = []
    for _, r in df.iterrows():
        row = [str(int(r["rank"])), f"0x{int(r['guest_pc']):016x}", _exit_text(r), str(int(r["count"])),
               _pct(r["count_share"])]
        if not modelled:
            row += [_us(r["handling_ns"]), _pct(r["time_share"])]
        row += [_function_text(r)]
        if caller:
            row += [r.get("caller", "") or "(unknown)"]
        body.append(row)
    return head, body


def render_markdown(df: pd.DataFrame, title: str, modelled: bool, *, caller: bool | None = None,
                    by: str = "count", n: int | None = 5) -> str:
    """A paper-style table (Tables 1-3): address, exits and % of total, handling time and % of
    total (KVM only), guest function, and the calling function where ``caller``.

    ``df`` is :func:`rank` output, or an exits table (ranked here by ``by``, top ``n``).
    A TCG table (``modelled=True``) says "modelled exits (TCG)" in its caption and has no
    handling-time column.
    """
    df, caller, ctx = _prepare(df, modelled, caller, by, n)
    head, body = _table_rows(df, modelled, caller)
    numeric = {"#", "Exits", "Modelled exits", "% of exits", "Handling time (us)", "% of time"}
    lines = [f"**{_caption(title, modelled, ctx)}**", "",
             "| " + " | ".join(head) + " |",
             "|" + "|".join("---:" if h in numeric else "---" for h in head) + "|"]
    for row in body:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines) + "\n"


def _tex(s: str) -> str:
    rep = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
           "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(rep.get(c, c) for c in s)


def render_latex(df: pd.DataFrame, title: str, modelled: bool, *, caller: bool | None = None,
                 by: str = "count", n: int | None = 5, label: str | None = None) -> str:
    """The same table as :func:`render_markdown`, as a booktabs LaTeX table."""
    df, caller, ctx = _prepare(df, modelled, caller, by, n)
    head, body = _table_rows(df, modelled, caller)
    numeric = {"#", "Exits", "Modelled exits", "% of exits", "Handling time (us)", "% of time"}
    align = "".join("r" if h in numeric else "l" for h in head)
    tt = {"Address", "Guest function", "Calling function"}
    head_tex = [_tex(h).replace("(us)", r"($\mu$s)") for h in head]
    lines = [r"\begin{table}[htbp]", r"\centering",
             r"\caption{" + _tex(_caption(title, modelled, ctx)) + "}"]
    if label:
        lines.append(r"\label{" + label + "}")
    lines += [r"\begin{tabular}{" + align + "}", r"\toprule", " & ".join(head_tex) + r" \\", r"\midrule"]
    for row in body:
        cells = [(r"\texttt{" + _tex(c) + "}") if h in tt and c and not c.startswith("(") else _tex(c)
                 for h, c in zip(head, row)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
