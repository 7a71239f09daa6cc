"""What the report, claims and bundle rules need to know of the running Snakemake workflow: which
rules exist, their plain outputs and inputs, a script rule's expanded job, the invocation, and the
report() flag of a file.

The one place that reads Snakemake's internals (rule.output._names, expand_input, the workflow's
config settings), so that a Snakemake upgrade that moves them changes this file alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from snakemake.io import report as flag_for_report
from snakemake.sourcecache import infer_source_file



def _named(named_list) -> dict:
    """A Snakemake named list: its items (a name may stand for several) and each name's indices."""
    items = [str(x) if not isinstance(x, (list, tuple)) else [str(y) for y in x] for x in named_list]
    return {"items": items, "names": {name: list(idx) for name, idx in named_list._names.items()}}


class WorkflowView:
    def __init__(self, workflow, repo: Path) -> None:
        self._workflow = workflow
        self.repo = Path(repo)

    def is_rule(self, name: str) -> bool:
        return bool(name) and self._workflow.is_rule(name)

    def has_script(self, name: str) -> bool:
        return self.is_rule(name) and self._workflow.get_rule(name).script is not None

    def plain_outputs(self, name: str) -> list[tuple[str | None, str]]:
        """The wildcard-free outputs of a rule, with their names where it names them."""
        rule = self._workflow.get_rule(name)
        names = {i: n for n, (start, end) in rule.output._names.items() for i in range(start, end or start + 1)}
        return [(names.get(i), str(o)) for i, o in enumerate(rule.output) if "{" not in str(o)]

    def plain_inputs(self, name: str) -> set[str]:
        """The inputs a rule names as plain paths (not input functions)."""
        return {str(f) for f in self._workflow.get_rule(name).input if isinstance(f, str)}

    def input_provenance(self, name: str) -> str:
        """The provenance of what a rule's job reads (a table's .provenance.json), or the
        provenance.json beside its first run file (an exit run's); "" if none."""
        try:
            inputs, *_ = self._workflow.get_rule(name).expand_input({})
        except Exception:   # an input function that needs wildcards or a checkpoint: no provenance shown
            return ""
        for f in map(str, inputs):
            if Path(f).name.endswith("provenance.json"):
                return f
            if f.endswith(".csv"):
                return str(Path(f).with_name("provenance.json"))
        return ""

    def command(self) -> str:
        """This invocation's options; "{targets}" marks where the targets go (before the options
        that take several values)."""
        cmd = [".venv/bin/snakemake", "--cores", "all", "{targets}"]
        for f in self._workflow.overwrite_configfiles or []:
            cmd += ["--configfile", os.path.relpath(f)]
        overrides = getattr(self._workflow.config_settings, "config", None) or {}
        if overrides:
            cmd += ["--config"] + [f"{k}={v}" for k, v in overrides.items()]
        return " ".join(cmd)

    def job(self, name: str, wildcards: Mapping[str, str]) -> dict:
        """A script rule's job for *wildcards*, as plain values: its script's path, its input,
        output and log as {"items", "names"}, its params by name."""
        rule = self._workflow.get_rule(name)
        wc = dict(wildcards)
        inputs, *_ = rule.expand_input(wc)
        outputs, _ = rule.expand_output(wc)
        params, _ = rule.expand_params(wc, inputs, outputs, None)
        basedir = (rule.basedir.get_path_or_uri(secret_free=True) if hasattr(rule.basedir, "get_path_or_uri")
                   else str(rule.basedir))
        if rule.script is None:
            raise ValueError(f"rule {name} has no script: directive")
        return {"rule": name, "wildcards": wc, "script": str((Path(basedir) / rule.script).resolve()),
                "input": _named(inputs), "output": _named(outputs), "log": _named(rule.expand_log(wc)),
                "params": dict(params.items())}

    def flag_for_report(self, path: str, caption: str, category: str, subcategory: str, labels: dict):
        """*path* flagged for `snakemake --report`, with a caption file of workflow/report.  In an
        input function Snakemake resolves no caption path, so it gets the file itself."""
        caption_file = infer_source_file(str(self.repo / "workflow" / "report" / caption))
        return flag_for_report(path, caption=caption_file, category=category, subcategory=subcategory, labels=labels)
