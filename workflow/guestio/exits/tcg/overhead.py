"""What the exitcount plugin, and the plugin with QEMU's trace, cost a guest job's run."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from guestio.exits.tcg import TcgExitError
from guestio.exits.tcg.plugin import run_with_plugin
from guestio.vm import VMSpec, run_vm


def measure_overhead(spec: VMSpec, plugin: Path | str, outdir: Path | str, *, repeats: int = 1,
                     boot_timeout_s: float = 600, job_timeout_s: float = 600,
                     modes: Iterable[str] = ("plain", "plugin", "plugin+trace"),
                     log: Callable[[str], None] | None = None) -> dict[str, list[dict]]:
    """Run the same job untraced and with the plugin; {mode: [{wall_s, boot_s, job_s}]}.

    Modes run interleaved (plain, plugin, plugin+trace, plain, ...) so that a slow phase of
    the host hits all of them.  The ratio that matters is job_s(plugin) / job_s(plain).
    """
    outdir = Path(outdir)
    times: dict[str, list[dict]] = {m: [] for m in modes}
    for i in range(repeats):
        for mode in modes:
            d = outdir / f"{mode.replace('+', '-')}-{i}"
            if mode == "plain":
                res = run_vm(spec, d, boot_timeout_s=boot_timeout_s, job_timeout_s=job_timeout_s,
                             log=log)
            else:
                res = run_with_plugin(spec, d, plugin, trace=mode == "plugin+trace",
                                      boot_timeout_s=boot_timeout_s, job_timeout_s=job_timeout_s,
                                      log=log).result
            if not res.ok:
                raise TcgExitError(f"{mode} run {i} failed: {res.status}: {res.reason}")
            times[mode].append({"wall_s": res.wall_s, "boot_s": res.boot_s, "job_s": res.job_s})
    return times
