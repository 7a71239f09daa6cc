"""Beyond the paper: which of the five modifications still matter on a current stack.

Each modification is read at its mechanism first: the exits (interrupts, timer ticks) it removes
per GiB, per second or per boot, modified against unmodified with the per-run means of both sides,
the ratio, 95% bootstrap CIs and n.  Its effect (throughput, CPU) stands beside it; under TCG that
is the emulator's timing, labelled "from emulation" and never an answer.  Rows are per device: the
paper's device models, and virtio where the modification applies.  A device or condition without
runs says "not measured here" with the run that would measure it.

``beyond.yaml`` beside this module names the quantities (claims.yaml) and devices; the ratios,
CIs, requirements and verdicts are the claims table's (``guestio.report.evidence``,
``guestio.report.verdicts``).
``results/beyond.{md,csv}``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Mapping

import pandas as pd
import yaml

from guestio.analysis.claim_model import Claim, Quantity, selector_alternatives
from guestio.analysis.claims import load_claims
from guestio.analysis.placeholders import resolve_placeholders
from guestio.analysis.stats import bootstrap_mean_ci
from guestio.report.evidence import (Evidence, MeasurementTables, build_hashes, command_for, config_value, match_rows,
                                     ratios_by, run_values, testbed_of)
from guestio.report.quantities import ratio_text
from guestio.report.verdicts import (NOT_MEASURED, NOT_TESTABLE, REPRODUCED, RULE_VERDICTS, TESTBED_KEYS, Judgement,
                                     aa_comparison, accelerators_of, testbed_unmet, unmet_judgement, verdict_of,
                                     verdict_rules)
from guestio.util import write_text_atomic

BEYOND_FILE = Path(__file__).with_name("beyond.yaml")
MECHANISM, EFFECT = "mechanism", "effect"
NOT_APPLICABLE = "not applicable"
NO_DEVICE = "no device"
#: The values of each device column that beyond.yaml may name.
DEVICES = {"disk": ("ide", "virtio"), "nic": ("rtl8139", "e1000", "virtio-net")}
#: How a row is to be read (column "reading").
READ_MECHANISM = "mechanism: whether it still removes them"
READ_EFFECT = "effect: what it gains"
READ_EMULATION = "from emulation (TCG): not an answer"
COLUMNS = ["modification", "name", "role", "claim", "quantity", "route", "label", "counts", "per", "device",
           "device_kind", "unit", "before", "before_ci_low", "before_ci_high", "after", "after_ci_low",
           "after_ci_high", "removed", "ratio", "ci_low", "ci_high", "n_numerator", "n_denominator", "change",
           "measured", "verdict", "reason", "would_measure", "accelerator", "from_emulation", "reading"]


def load_spec(path: str | Path = BEYOND_FILE, claims: Mapping[str, Claim] | None = None) -> dict:
    """beyond.yaml, checked against claims.yaml: every quantity exists, mechanism quantities have
    role mechanism and effect quantities do not, and a modification has a mechanism or says why not."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    claims = load_claims() if claims is None else claims
    problems = []
    for mid, m in data["modifications"].items():
        if bool(m.get("mechanism")) == bool(m.get("no_mechanism")):
            problems.append(f"{mid}: needs `mechanism` or `no_mechanism` (with its reason), not both")
        for key in (MECHANISM, EFFECT):
            for item in m.get(key) or []:
                claim = claims.get(item["claim"])
                q = next((x for x in claim.quantities if x.id == item["quantity"]), None) if claim else None
                if q is None:
                    problems.append(f"{mid}: no quantity {item['claim']}.{item['quantity']} in claims.yaml")
                elif (q.role == MECHANISM) != (key == MECHANISM):
                    problems.append(f"{mid}: {item['claim']}.{item['quantity']} has role {q.role}, listed as {key}")
                if item.get("device") not in (*DEVICES, "none"):
                    problems.append(f"{mid}: device column {item.get('device')!r} is none of {', '.join(DEVICES)}, none")
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return data


# --- the numbers: the claims table's ratios, per device -----------------------------------------------

def _frames(claim: Claim, ev: Evidence, long_form: pd.DataFrame) -> Iterator[tuple[pd.DataFrame, Any]]:
    """Where a quantity's rows may be, as the claims table looks: the long-form tables (with the
    default condition), then the claim's own exit tables (their own columns, no defaults)."""
    yield long_form, None
    for a in claim.artifact_ids:
        if a in ev.exit_tables:
            yield MeasurementTables([ev.exit_tables[a]], long_form=False).frame(), {}


def _ratios(q, claim, ev, long_form, column) -> tuple[list[dict], pd.DataFrame | None, Any]:
    for df, defaults in _frames(claim, ev, long_form):
        found = ratios_by(q, df, ev, device=column, free=(column,), defaults=defaults)
        if found:
            return found, df, defaults
    return [], None, None


def side_means(q: Quantity, df: pd.DataFrame, ev: Evidence, r: Mapping, column: str,
               defaults: Mapping | None) -> dict:
    """The per-run mean of each side behind ratios_by's row *r* (the same selection: its numerator
    alternative, accelerator and device), with its seeded bootstrap CI, and the unit."""
    defaults = ev.defaults if defaults is None else defaults
    q = resolve_placeholders(q, ev.defaults)
    df = df.assign(**{c: "-" for c in ("accelerator", column, "repetition", "unit") if c not in df.columns})
    rows = df[df["metric"] == q.metric]
    if q.experiment and "experiment" in rows.columns:
        rows = rows[rows["experiment"] == q.experiment]
    kept = {k: v for k, v in defaults.items() if k != column}

    def side(selectors):
        sel = [{k: v for k, v in s.items() if k != column} for s in selectors]
        m = rows[match_rows(rows, sel, kept)]
        return m[(m["accelerator"].astype(str) == r["accelerator"]) & (m[column].astype(str) == r["device"])]

    after = side([selector_alternatives(q.numerator)[r["alternative"]]])
    before = side(selector_alternatives(q.denominator))
    out = {}
    for name, part in (("after", after), ("before", before)):
        values = run_values(part)
        if values.size:
            out[name], out[f"{name}_ci_low"], out[f"{name}_ci_high"] = bootstrap_mean_ci(values, ev.seed, ev.n_resamples)
    units = [u for u in after["unit"].astype(str) if u not in ("-", "", "nan")]
    out["unit"] = units[0] if units else ""
    if "after" in out and "before" in out:
        out["removed"] = out["before"] - out["after"]
    return out


def change_of(low: float, high: float) -> str:
    """The direction the CI shows, in words (modified against unmodified)."""
    if math.isnan(low) or math.isnan(high):
        return "no CI (fewer than 2 runs a side)"
    if high < 1.0:
        return "fewer"
    if low > 1.0:
        return "more"
    return "no clear change (CI includes 1)"


def _judge(q, r, ev, rules, testbed, builds) -> Judgement:
    """The claims table's verdict of one measured ratio (requirements, A/A, runs, rule)."""
    kernels, qemus = builds
    dens = selector_alternatives(resolve_placeholders(q.denominator, ev.defaults))
    aa = "the same rows of the table" if r["same_rows"] else aa_comparison(
        r["numerator"], dens, ev.defaults, kernels, qemus)
    return verdict_of(q, r["ratio"], r["low"], r["high"], r["n_numerator"], r["n_denominator"], r["accelerator"],
                      rules=rules, testbed=testbed, aa=aa)


# --- the rows ---------------------------------------------------------------------------------------

class _Builder:
    def __init__(self, ev: Evidence, spec: dict, claims: Mapping[str, Claim]):
        self.ev, self.spec, self.claims = ev, spec, claims
        self.long_form = MeasurementTables(ev.tables).frame()
        self.rules = verdict_rules()
        self.testbed = testbed_of(ev, self.rules)
        self.builds = build_hashes(ev)
        self.records: list[dict] = []

    def configured(self, column: str, device: str) -> bool:
        """Whether this run's config runs anything on *device* (disk.interfaces, network.nics); without
        a config (a results directory read as it lies), whether the tables have rows of it."""
        key = (self.spec.get("device_config") or {}).get(column)
        listed = config_value(self.ev.config, key) if key else None
        if isinstance(listed, (list, tuple)):
            return device in listed
        df = self.long_form
        return column in df.columns and (df[column].astype(str) == device).any()

    def would_measure(self, m: Mapping, item: Mapping, claim, device: str) -> str:
        """The run that would measure a device without runs: the device's config key where this run
        does not configure it, else the targets of the claim's artifacts."""
        if item.get("would_measure"):
            return " ".join(item["would_measure"].split())
        if device != "-" and not self.configured(item["device"], device):
            return (m.get("would_measure") or {}).get(device) or self.spec.get("would_measure", {}).get(device, "")
        return command_for(claim, self.ev)

    def devices(self, m: Mapping, item: Mapping) -> list[tuple[str, str]]:
        """(device, kind) of a quantity: the paper's and the current ones its device column has."""
        if item["device"] == "none":
            return [("-", NO_DEVICE)]
        return [(d, kind) for kind in ("paper", "current") for d in m[kind] if d in DEVICES[item["device"]]]

    def add(self, mid: str, m: Mapping, role: str, **rec) -> None:
        self.records.append({"modification": mid, "name": m["name"], "role": role, **rec})

    def quantity_rows(self, mid: str, m: Mapping, role: str, item: Mapping) -> None:
        claim = resolve_placeholders(self.claims[item["claim"]], self.ev.defaults)
        q = claim.quantity(item["quantity"])
        column = "_no_device" if item["device"] == "none" else item["device"]
        found, df, defaults = ([], None, None) if q.not_measured else _ratios(q, claim, self.ev, self.long_form, column)
        runs_on = item.get("runs_on")
        if runs_on:   # an exit table without a device column: its runs used the configured device
            on = config_value(self.ev.config, runs_on["config"]) or runs_on["default"]
            found = [{**r, "device": on, "_table_device": "-"} if r["device"] == "-" else r for r in found]
        routes = list(q.routes) or [""]
        base = {"claim": claim.id, "quantity": q.id, "label": q.label, "counts": item.get("removes", ""),
                "per": item.get("per", "")}
        unmet = testbed_unmet(q.requires, self.testbed, self.rules)
        for device, kind in self.devices(m, item):
            where = {**base, "device": device, "device_kind": kind}
            if device in (m.get("not_applicable") or {}):
                self.add(mid, m, role, **where, measured=NOT_APPLICABLE, reason=m["not_applicable"][device])
                continue
            for i, route in enumerate(routes):
                rec = {**where, "route": route}
                if q.not_measured:
                    self.add(mid, m, role, **rec, measured=NOT_MEASURED, verdict=NOT_MEASURED,
                             reason=" ".join(q.not_measured.split()),
                             would_measure=self.would_measure(m, item, claim, device))
                    continue
                if unmet:
                    j = unmet_judgement(unmet, ", ".join(f"{k} {self.testbed.get(k)}" for k in TESTBED_KEYS))
                    self.add(mid, m, role, **rec, measured=NOT_TESTABLE, verdict=j.verdict, reason=j.reason,
                             would_measure=j.run)
                    continue
                mine = [r for r in found if r["alternative"] == i and r["device"] == device]
                if not mine:
                    self.add(mid, m, role, **rec, measured=NOT_MEASURED, verdict=NOT_MEASURED,
                             reason=f"no runs of this condition on {device}" if device != "-" else "no runs of it",
                             would_measure=self.would_measure(m, item, claim, device))
                    continue
                for r in mine:
                    self.add(mid, m, role, **rec, **self.measured(q, r, role, df, defaults, column))

    def measured(self, q, r, role, df, defaults, column) -> dict:
        j = _judge(q, r, self.ev, self.rules, self.testbed, self.builds)
        emulation = bool(accelerators_of(r["accelerator"]) & set(self.rules["emulation"]))
        verdict = j.verdict or "does not vote"
        if emulation and j.verdict in RULE_VERDICTS:
            verdict += f" ({self.rules['emulation_note']})"
        reading = READ_MECHANISM if role == MECHANISM else READ_EMULATION if emulation else READ_EFFECT
        rec = {"ratio": r["ratio"], "ci_low": r["low"], "ci_high": r["high"], "n_numerator": r["n_numerator"],
               "n_denominator": r["n_denominator"], "change": change_of(r["low"], r["high"]),
               "measured": ratio_text(r["ratio"], r["low"], r["high"]), "verdict": verdict, "reason": j.reason,
               "would_measure": j.run, "accelerator": r["accelerator"], "from_emulation": emulation,
               "reading": reading}
        if role == MECHANISM:
            rec.update(side_means(q, df, self.ev, {**r, "device": r.get("_table_device", r["device"])}, column,
                                  defaults))
        return rec

    def no_mechanism(self, mid: str, m: Mapping) -> None:
        nm = m["no_mechanism"]
        self.add(mid, m, MECHANISM, claim="-", quantity="-", label="no mechanism quantity", device="-",
                 device_kind=NO_DEVICE, measured=NOT_MEASURED, verdict=NOT_MEASURED,
                 reason=" ".join(nm["reason"].split()), would_measure=" ".join(nm["would_measure"].split()))

    def build(self) -> pd.DataFrame:
        for mid, m in self.spec["modifications"].items():
            if m.get("no_mechanism"):
                self.no_mechanism(mid, m)
            for item in m.get(MECHANISM) or []:
                self.quantity_rows(mid, m, MECHANISM, item)
            for item in m.get(EFFECT) or []:
                self.quantity_rows(mid, m, EFFECT, item)
        return pd.DataFrame(self.records, columns=COLUMNS)


def build(ev: Evidence, path: Path = BEYOND_FILE) -> pd.DataFrame:
    claims = load_claims(ev.claims_file)
    return _Builder(ev, load_spec(path, claims), claims).build()


# --- the summary ------------------------------------------------------------------------------------

def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))


def _level(r, side: str) -> str:
    """A side's per-run mean with its CI, e.g. "1.2e+05 [1.1e+05, 1.3e+05]"."""
    v = getattr(r, side)
    if not _num(v):
        return "-"
    low, high = getattr(r, f"{side}_ci_low"), getattr(r, f"{side}_ci_high")
    ci = f" [{low:.3g}, {high:.3g}]" if _num(low) and _num(high) else " [no CI]"
    return f"{v:.3g}{ci}"


def _n(r) -> str:
    return f"{int(r.n_numerator)} / {int(r.n_denominator)}" if _num(r.n_numerator) else "-"


def _cell(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) or v == "" else \
        str(v).replace("|", "\\|").replace("\n", " ")


def _where(r) -> str:
    where = NO_DEVICE if r.device == "-" else f"{r.device} ({r.device_kind})"
    return where + (f", {r.route}" if isinstance(r.route, str) and r.route else "")


def _glance(part: pd.DataFrame) -> str:
    """One line of what the mechanism rows of a modification show."""
    mech = part[(part.role == MECHANISM) & (part.measured != NOT_APPLICABLE)]
    shown = [f"{_where(r)}: {r.change}, {r.measured} ({r.verdict})" for r in mech.itertuples(index=False)
             if _num(r.ratio)]
    if shown:
        return "; ".join(shown)
    if mech.empty:
        return NOT_APPLICABLE
    first = mech.iloc[0]
    return f"{first.measured}: {first.reason}" + (f"; would measure it: {first.would_measure}"
                                                   if isinstance(first.would_measure, str) and first.would_measure else "")


def markdown(table: pd.DataFrame) -> str:
    lines = ["# Beyond the paper: which of the five modifications still matter on a current stack", "",
             "Read the **mechanism** rows first: the exits, interrupts or timer ticks each modification removes "
             "(before: unmodified, after: modified; per-run means with 95% bootstrap CIs, in the unit named; "
             "after/before with its CI; n the independent runs of each side). They are counted under KVM or, "
             "under TCG, by the guest and the exit plugin's modelled exits, so they answer whether a modification "
             "still removes them today. The **effect** rows (throughput, CPU) answer what it gains only on KVM: "
             f"under TCG they read \"{READ_EMULATION}\". Verdicts are the claims table's "
             "(`workflow/guestio/report/verdicts.yaml`) against the paper's number. \"not measured here\" names the "
             "run that would measure it; \"not applicable\" says why the modification does not apply there.", "",
             "| modification | mechanism here (after/before, 95% CI) |", "|---|---|"]
    groups = list(table.groupby("modification", sort=False))
    for _, part in groups:
        lines.append(f"| {_cell(part['name'].iloc[0])} | {_cell(_glance(part))} |")
    lines.append("")
    for _, part in groups:
        lines += [f"## {part['name'].iloc[0]}", ""]
        mech = part[part.role == MECHANISM]
        if not mech.empty:
            lines += ["Mechanism:", "",
                      "| counts | device | before | after | removed | after/before (95% CI) | n | change | verdict | "
                      "accelerator |", "|---|---|---|---|---|---|---|---|---|---|"]
            for r in mech.itertuples(index=False):
                per = f" per {r.per}" if isinstance(r.per, str) and r.per else ""
                unit = f" ({r.unit})" if isinstance(r.unit, str) and r.unit else ""
                what = (r.counts if isinstance(r.counts, str) and r.counts else r.label) + per + unit
                removed = f"{r.removed:.3g}" if _num(r.removed) else "-"
                lines.append("| " + " | ".join(_cell(x) for x in (
                    what, _where(r), _level(r, "before"), _level(r, "after"), removed,
                    _measured(r), _n(r), r.change, _verdict(r), r.accelerator)) + " |")
            lines.append("")
        eff = part[part.role == EFFECT]
        if not eff.empty:
            lines += ["Effect:", "", "| quantity | device | after/before (95% CI) | n | reading | verdict | accelerator |",
                      "|---|---|---|---|---|---|---|"]
            for r in eff.itertuples(index=False):
                lines.append("| " + " | ".join(_cell(x) for x in (
                    r.label, _where(r), _measured(r), _n(r), r.reading, _verdict(r), r.accelerator)) + " |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _measured(r) -> str:
    """The value, or why there is none and the run that would give one."""
    text = str(r.measured)
    if r.measured in (NOT_MEASURED, NOT_APPLICABLE, NOT_TESTABLE):
        if isinstance(r.reason, str) and r.reason:
            text += f": {r.reason}"
        if isinstance(r.would_measure, str) and r.would_measure:
            text += f"; would measure it: {r.would_measure}"
    return text


def _verdict(r) -> str:
    if r.measured in (NOT_MEASURED, NOT_APPLICABLE, NOT_TESTABLE) or not isinstance(r.verdict, str):
        return "-"
    return r.verdict + (f": {r.reason}" if isinstance(r.reason, str) and r.reason and
                        not r.verdict.startswith(REPRODUCED) else "")


def write(table: pd.DataFrame, md: str, csv: str) -> None:
    write_text_atomic(Path(csv), table.to_csv(index=False, lineterminator="\n"))
    write_text_atomic(Path(md), markdown(table))
