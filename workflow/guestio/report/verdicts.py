"""How a quantity of a claim gets its verdict, and a claim its verdict from its quantities'.

The rules are data: ``verdicts.yaml`` beside this module (the verdicts, their precedence, the
number of runs an interval needs, what each requirement of a quantity needs of the run and which
run would meet it, the A/A comparisons), and the numeric rule of each quantity in
``guestio/analysis/claims.yaml``.  This module applies them: to a number and its CI
(``judge_numbers``), to the hottest exit sites (``judge_sites``), to a measured ratio with its
run's testbed, accelerator and number of runs (``verdict_of``), and to a claim's quantities
(``claim_verdict``).  ``settings.yaml`` beside it says where the paper's setting differs in a
way that can decide a claim.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from guestio.analysis.claim_model import Quantity, VerdictRule

HERE = Path(__file__).parent
VERDICTS_FILE = HERE / "verdicts.yaml"
SETTINGS_FILE = HERE / "settings.yaml"

REPRODUCED = "reproduced"
INCONCLUSIVE = "inconclusive"
NOT_REPRODUCED = "not reproduced"
CONTRADICTED = "contradicted"
NOT_TESTABLE = "not testable here"
NOT_MEASURED = "not measured here"
VERDICTS = (REPRODUCED, INCONCLUSIVE, NOT_REPRODUCED, CONTRADICTED, NOT_TESTABLE, NOT_MEASURED)
#: What a verdict rule can give on numbers (the other two come from the run and the data).
RULE_VERDICTS = (REPRODUCED, INCONCLUSIVE, NOT_REPRODUCED, CONTRADICTED)
#: What a requirement may be satisfied by: the run's accelerator, or a fact of its testbed.
TESTBED_KEYS = ("hosts", "guest_arch", "guest_kernel")
REQUIREMENT_KEYS = ("accelerator", *TESTBED_KEYS)


@functools.lru_cache(maxsize=4)


def _yaml(path: str) -> Any:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def verdict_rules(path: str | os.PathLike = VERDICTS_FILE) -> dict:
    """verdicts.yaml, checked: the six verdicts, a precedence of them all, min_runs, and each
    requirement with one thing that satisfies it, its reason and the run that would test it."""
    data = _yaml(str(path))
    verdicts = list(data["verdicts"])
    if sorted(verdicts) != sorted(VERDICTS):
        raise ValueError(f"{path}: verdicts must be {', '.join(VERDICTS)}; got {verdicts}")
    if sorted(data["precedence"]) != sorted(verdicts):
        raise ValueError(f"{path}: precedence must list every verdict once")
    if not isinstance(data.get("min_runs"), int) or data["min_runs"] < 2:
        raise ValueError(f"{path}: min_runs must be an integer of at least 2 (an interval needs two runs)")
    for name, req in (data.get("requirements") or {}).items():
        keys = [k for k in REQUIREMENT_KEYS if k in req]
        if len(keys) != 1 or not req.get("reason") or not req.get("run"):
            raise ValueError(f"{path}: requirement {name!r} needs one of {', '.join(REQUIREMENT_KEYS)}, "
                             "a reason and a run")
    for key in TESTBED_KEYS:
        if key not in (data.get("testbed") or {}):
            raise ValueError(f"{path}: testbed lacks {key!r}")
    return data


def settings(path: str | os.PathLike = SETTINGS_FILE) -> dict[str, list[dict]]:
    return _yaml(str(path)) or {}


# --- judging numbers: the verdict rules of claims.yaml ------------------------------------------------


@dataclass(frozen=True)


class Judgement:
    verdict: str
    reason: str = ""   # why, in words (always given for anything but "reproduced")
    run: str = ""      # the run that would test it (not testable / not measured / inconclusive)


def _g(x: float) -> str:
    return f"{x:.3g}"


def _directional(side: str, reference: float, value: float, low: float, high: float,
                 target: tuple[float, float] | None, target_text: str = "") -> Judgement:
    """An effect claimed on *side* of no effect (*reference*); *target*: where the point must lie."""
    ci = f"CI [{_g(low)}, {_g(high)}]"
    wrong = high < reference if side == ">" else low > reference
    right = low > reference if side == ">" else high < reference
    if wrong:
        return Judgement(CONTRADICTED, f"{ci} lies wholly on the wrong side of no effect ({_g(reference)})")
    if not right:
        return Judgement(INCONCLUSIVE, f"{ci} includes no effect ({_g(reference)})")
    if target is not None and not target[0] <= value <= target[1]:
        return Judgement(NOT_REPRODUCED, f"an effect on the claimed side ({ci} excludes {_g(reference)}), but "
                                         f"{_g(value)} is not {target_text}")
    return Judgement(REPRODUCED, f"{ci} excludes no effect ({_g(reference)}) on the claimed side"
                     + (f" and {_g(value)} is {target_text}" if target is not None else ""))


def judge_numbers(rule: VerdictRule, value: float, low: float, high: float) -> Judgement:
    """Step 8 of verdicts.yaml: a numeric verdict rule on a point estimate and its CI."""
    if rule.kind not in ("ratio_ci_contains", "direction"):
        raise ValueError(f"judge_numbers: rule {rule.kind!r} does not judge a number")
    if value is None or not math.isfinite(value):
        return Judgement(NOT_MEASURED, "no value")
    if math.isnan(low) or math.isnan(high):
        return Judgement(INCONCLUSIVE, "no confidence interval")
    ci = f"CI [{_g(low)}, {_g(high)}]"
    if rule.kind == "ratio_ci_contains":
        v, t, ref = rule["value"], rule["tolerance"], rule.get("reference", 1.0)
        band = (v - t, v + t)
        band_text = f"within [{_g(band[0])}, {_g(band[1])}] (about {_g(v)})"
        if band[0] <= ref <= band[1]:   # "about equal": no wrong side
            if band[0] <= low and high <= band[1]:
                return Judgement(REPRODUCED, f"{ci} lies {band_text}")
            if high < band[0] or low > band[1]:
                return Judgement(NOT_REPRODUCED, f"{ci} lies wholly outside [{_g(band[0])}, {_g(band[1])}]: "
                                                 f"a difference where the paper says about {_g(v)}")
            return Judgement(INCONCLUSIVE, f"{ci} crosses the edge of [{_g(band[0])}, {_g(band[1])}]")
        return _directional(">" if v > ref else "<", ref, value, low, high, band, band_text)
    expect, ref = rule["expect"], rule["reference"]
    t = rule.get("tolerance", 0.0)
    if expect == "!=":
        if (low > ref or high < ref) and abs(value - ref) > t:
            return Judgement(REPRODUCED, f"{ci} excludes {_g(ref)} and {_g(value)} differs from it by more "
                                         f"than {_g(t)}")
        if t > 0 and ref - t <= low and high <= ref + t:
            return Judgement(NOT_REPRODUCED, f"{ci} lies within [{_g(ref - t)}, {_g(ref + t)}]: no noticeable "
                                             "change")
        return Judgement(INCONCLUSIVE, f"{ci} does not exclude a change of at most {_g(t)}")
    v = rule.get("value")
    if v is None:
        return _directional(expect, ref, value, low, high, None)
    target = (v - t, math.inf) if expect == ">" else (-math.inf, v + t)
    word = f"at least {_g(v - t)}" if expect == ">" else f"at most {_g(v + t)}"
    return _directional(expect, ref, value, low, high, target, f"{word} (the paper: {expect} {_g(v)})")


def judge(rule: VerdictRule, value: float, low: float, high: float) -> str:
    """The verdict a numeric rule gives on its own (no requirements, no run count): see judge_numbers."""
    return judge_numbers(rule, value, low, high).verdict


def countable_sites(rule: VerdictRule, unmet: Iterable[str]) -> tuple[list, list]:
    """(sites that can exist in this run, (site, reason) of those that cannot)."""
    unmet = set(unmet)
    can, cannot = [], []
    for site in rule["sites"]:
        (cannot if unmet & set(site.requires) else can).append(site)
    return can, [(s, s.reason) for s in cannot]


def _site_name(site) -> str:
    return f"{site.function}<-{site.caller}" if site.caller else site.function


def judge_sites(rule: VerdictRule, hottest: Sequence[tuple[str, str | None]],
                unmet: Iterable[str] = ()) -> tuple[Judgement, int]:
    """A sites_include rule over the hottest sites: (judgement, listed sites found).  Listed sites
    whose requirements are in *unmet* cannot exist in the run: left out of the count, named."""
    can, cannot = countable_sites(rule, unmet)
    left_out = "; ".join(f"{_site_name(s)} left out: {why}" for s, why in cannot)
    if not can:
        return Judgement(NOT_TESTABLE, left_out), 0
    need = min(rule.get("at_least", len(can)), len(can))
    found = sum(any(fn == s.function and (s.caller is None or caller == s.caller) for fn, caller in hottest)
                for s in can)
    text = f"{found} of the {len(can)} listed sites that can exist here found, {need} needed"
    text += f" ({left_out})" if left_out else ""
    return Judgement(REPRODUCED if found >= need else NOT_REPRODUCED, text), found


# --- what the run can test ---------------------------------------------------------------------------


def unmet_judgement(unmet: Sequence[tuple[str, dict]], have: str) -> Judgement:
    reasons = "; ".join(" ".join(str(req["reason"]).split()) for _, req in unmet)
    return Judgement(NOT_TESTABLE, reasons + (f" (this run: {have})" if have else ""), unmet[0][1]["run"])


def testbed_unmet(names: Iterable[str], testbed: Mapping[str, Any], rules: dict) -> list[tuple[str, dict]]:
    """The requirements among *names* that the testbed (hosts, guest architecture, kernel) lacks."""
    out = []
    for name in names:
        req = rules["requirements"][name]
        key = next((k for k in TESTBED_KEYS if k in req), None)
        if key is not None and str(testbed.get(key)) not in {str(v) for v in req[key]}:
            out.append((name, req))
    return out


def accelerators_of(accelerator: str) -> set[str]:
    return {a.strip() for a in str(accelerator or "").split(",") if a.strip() and a.strip() != "-"}


def accelerator_unmet(names: Iterable[str], accelerator: str, rules: dict) -> list[tuple[str, dict]]:
    """The requirements among *names* that the run's accelerator(s) do not satisfy; an unknown
    accelerator satisfies none."""
    accs = accelerators_of(accelerator)
    out = []
    for name in names:
        req = rules["requirements"][name]
        if "accelerator" in req and (not accs or not accs <= set(req["accelerator"])):
            out.append((name, req))
    return out


def unmet_requirements(names: Iterable[str], accelerator: str, testbed: Mapping[str, Any], rules: dict) -> list[str]:
    names = list(names)
    return [n for n, _ in testbed_unmet(names, testbed, rules) + accelerator_unmet(names, accelerator, rules)]


def verdict_of(q: Quantity, value: float, low: float, high: float, n_numerator: int,
               n_denominator: int, accelerator: str, *, rules: dict | None = None,
               testbed: Mapping[str, Any] | None = None, aa: str | None = None) -> Judgement:
    """A measured ratio quantity's verdict, steps 3 and 5-8 of verdicts.yaml (requirements of the
    testbed and the accelerator, A/A, the number of runs, the rule).  *aa*: what the two sides
    share when they are an A/A comparison (None when they are not)."""
    rules = rules or verdict_rules()
    testbed = rules["testbed"] if testbed is None else testbed
    if q.verdict_rule.kind == "not_tested":
        return Judgement("", "not tested: " + q.verdict_rule["reason"])
    unmet = testbed_unmet(q.requires, testbed, rules)
    if unmet:
        return unmet_judgement(unmet, ", ".join(f"{k} {testbed.get(k)}" for k in TESTBED_KEYS))
    unmet = accelerator_unmet(q.requires, accelerator, rules)
    if unmet:
        return unmet_judgement(unmet, accelerator or "accelerator not recorded")
    if aa:
        return Judgement(NOT_TESTABLE, rules["aa"]["reason"].format(what=aa), rules["aa"]["run"])
    if min(n_numerator, n_denominator) < rules["min_runs"]:
        return Judgement(INCONCLUSIVE, f"n = {n_numerator} / {n_denominator}: fewer than {rules['min_runs']} "
                                       "independent runs on a side, no interval",
                         "more repetitions (config/paper-scale.yaml runs 10)")
    j = judge_numbers(q.verdict_rule, value, low, high)
    if j.verdict == INCONCLUSIVE and not j.run:
        j = Judgement(j.verdict, j.reason, "more repetitions (config/paper-scale.yaml runs 10)")
    return j


def claim_verdict(quantity_verdicts: Iterable[str | None], rules: dict) -> str:
    """The claim's verdict from its quantities' (None or "": does not vote): the first of `precedence`."""
    voting = [v for v in quantity_verdicts if v]
    if not voting:
        return NOT_MEASURED
    for verdict in rules["precedence"]:
        if verdict in voting:
            return verdict
    raise AssertionError("unreachable: precedence lists every verdict")


# --- A/A comparisons ------------------------------------------------------------------------------


def _default(column: str, defaults: Mapping[str, Sequence[str]]) -> str | None:
    named = [str(v) for v in defaults.get(column, []) if str(v) != "-"]
    return named[-1] if named else None


def aa_comparison(numerator: Mapping[str, str], denominators: Sequence[Mapping[str, str]],
                  defaults: Mapping[str, Sequence[str]], kernels: Mapping[str, str],
                  qemus: Mapping[str, str]) -> str | None:
    """What the two sides of a ratio share when they are an A/A comparison, else None: the same
    condition, or conditions that differ only in the kernel or QEMU variant, each of which names
    the same build (the same sha256)."""
    if len(denominators) != 1:
        return None
    den = denominators[0]
    columns = sorted(set(numerator) | set(den))
    side = {c: (str(numerator.get(c, _default(c, defaults))), str(den.get(c, _default(c, defaults))))
            for c in columns}
    differ = {c: v for c, v in side.items() if v[0] != v[1]}
    if not differ:
        return "the same condition (" + ", ".join(f"{c} {v[0]}" for c, v in side.items()) + ")"
    if not set(differ) <= {"variant", "qemu"}:
        return None
    same = []
    for column, (a, b) in sorted(differ.items()):
        builds, what = (kernels, "kernel") if column == "variant" else (qemus, "QEMU")
        if builds.get(a) is None or builds.get(a) != builds.get(b):
            return None
        same.append(f"the same {what} build ({a} and {b}: sha256 {builds[a][:12]})")
    return " and ".join(same)
