"""Benchmark of the pipeline itself: kernel and QEMU builds, image build, boot time, exit-tracing cost.

Each part's figures are kept in workflow/bench/pipeline.json, and the Markdown
table workflow/bench/pipeline.md is drawn from all of them; both are committed.
Running some parts (--parts plugin) updates those rows only.  Kernel builds use
a fresh, private ccache so that "cold" really is cold, and so does the QEMU
build (cold: empty ccache; cached: ccache warm, build dir removed); everything
goes through the same functions the Snakemake rules call.  Builds share the
machine with whatever else runs: the load average at the start is given.

    .venv/bin/python workflow/bench/pipeline.py [--parts kernels,qemu,image,boot,plugin,mainjob] [--boots 5]

mainjob is the main job from nothing in a clean clone of HEAD (the default profile: 46.9 min here
on 2026-12-07; docs/results.md#costs has the history).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from guestio.build import disk
from guestio.build.image import initramfs
from guestio.build import kernel
from guestio.build import qemu, qemu_variant
from guestio import provenance
from guestio.report import cost
from guestio.exits.tcg.overhead import measure_overhead
from guestio.vm.accel import probe_accelerator
from guestio.vm import DiskSpec, VMSpec, run_vm

REPO = Path(__file__).resolve().parents[2]
LAYERS = REPO / "workflow" / "kernel" / "layers"
STORE = REPO / "workflow" / "bench" / "pipeline.json"
TABLE = REPO / "workflow" / "bench" / "pipeline.md"
PARTS = ("kernels", "qemu", "image", "boot", "plugin", "mainjob")
SNAKEMAKE = REPO / ".venv" / "bin" / "snakemake"
# Where the main-job part leaves each profile's log and results dir (its clone is deleted).
KEPT = REPO / "build" / "bench-mainjob"
CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def build(variant: str, layers: list[str], work: Path, ccache: Path) -> float:
    source = json.loads((REPO / "results" / "kernels" / "source.json").read_text())
    started = time.monotonic()
    kernel.build_variant(
        variant=variant, layers=layers, layers_root=LAYERS, pristine=REPO / "build" / "src" / "linux",
        source=source, workdir=work / variant, outdir=work / "out" / variant, jobs=os.cpu_count() or 1,
        ccache_dir=ccache, log_path=work / f"{variant}.log",
    )
    return time.monotonic() - started


def part_kernels(work: Path, args) -> tuple[list[list[str]], str]:
    ccache, variants = work / "ccache", CONFIG["variants"]
    first, *others = list(variants)
    print(f"cold build of {first} (empty ccache)...", flush=True)
    cold = build(first, variants[first], work, ccache)
    rows = [[f"kernel `{first}`, cold (empty ccache)", f"{cold:.0f} s", "1.00 (reference)"]]
    for name in others:
        print(f"build of {name} after {first}...", flush=True)
        secs = build(name, variants[name], work, ccache)
        verdict = "meets" if secs <= 0.2 * cold else "misses"
        rows.append([f"kernel `{name}` after the others", f"{secs:.0f} s", f"{secs / cold:.2f} ({verdict} the 0.20 target)"])
    print(f"fully cached rebuild of {first}...", flush=True)
    again = build(first, variants[first], work, ccache)
    rows.append([f"kernel `{first}` again, fully cached", f"{again:.0f} s", f"{again / cold:.2f}"])
    return rows, "n/a"


def _load() -> str:
    return "load {:.1f}".format(os.getloadavg()[0])


def part_qemu(work: Path, args) -> tuple[list[list[str]], str]:
    """QEMU stock: cold (empty private ccache), then cached (ccache warm, build dir removed)."""
    pristine = REPO / "build" / "src" / "qemu"
    source = qemu.source_record(pristine) or qemu.extract_source(
        Path(CONFIG["qemu"]["source_dir"]).expanduser(), pristine)
    ccache = work / "ccache"

    def build(tag: str, variant: str = "stock") -> tuple[dict, str]:
        load = _load()
        shutil.rmtree(work / "qemu", ignore_errors=True)
        print(f"QEMU {variant} build, {tag} ({load})...", flush=True)
        record = qemu_variant.build_variant(
            variant=variant, layers=CONFIG["qemu"]["variants"][variant],
            layers_root=REPO / "workflow" / "qemu" / "layers", pristine=pristine,
            source=source, workdir=work / "qemu", outdir=work / "out" / tag, jobs=os.cpu_count() or 1,
            ccache_dir=ccache, log_path=work / f"qemu-{tag}.log")
        return record, load

    rows, variant_rows = [], []
    for attempt in range(1, args.qemu_repeats + 1):
        cold, cold_load = build("cold")
        cached, cached_load = build("cached")
        if attempt == args.qemu_repeats:  # each patched variant after stock, as the main job builds them
            for variant in [v for v in CONFIG["qemu"]["variants"] if v != "stock"]:
                after, after_load = build(f"after-{variant}", variant)
                variant_rows.append([f"QEMU `{variant}` after `stock` (ccache warm, build dir removed)",
                             f"{after['build_seconds']:.0f} s (CPU {after['build_cpu_seconds']:.0f} s)",
                             f"{after['build_seconds'] / cold['build_seconds']:.2f} of the last cold build; "
                             f"{after_load} at start"])
        shutil.rmtree(ccache, ignore_errors=True)
        mib = cold["size_bytes"] / (1 << 20)
        rows += [[f"QEMU `stock` {cold['version']}, cold (empty ccache), try {attempt}",
                  f"{cold['build_seconds']:.0f} s (CPU {cold['build_cpu_seconds']:.0f} s)",
                  f"1.00 (reference); {mib:.1f} MiB binary; {cold_load} at start"],
                 [f"QEMU `stock` again, cached (ccache warm, build dir removed), try {attempt}",
                  f"{cached['build_seconds']:.0f} s (CPU {cached['build_cpu_seconds']:.0f} s)",
                  f"{cached['build_seconds'] / cold['build_seconds']:.2f}; {cached_load} at start"]]
    return rows + variant_rows, "n/a"


def part_image(work: Path, args) -> tuple[list[list[str]], str]:
    print("image build from a clean staging dir (debs cached)...", flush=True)
    hashes = []
    for attempt in range(2):
        started = time.monotonic()
        manifest = initramfs.build_initramfs(work / f"img{attempt}.cpio", work / f"img{attempt}.json",
                                             deb_dir=REPO / "build" / "debs", staging_dir=work / f"staging{attempt}",
                                             packages=CONFIG["image"]["packages"],
                                             programs=CONFIG["image"]["programs"])
        secs = time.monotonic() - started
        hashes.append(manifest["image"]["sha256"])
    same = "identical" if hashes[0] == hashes[1] else "DIFFERENT"
    return [["initramfs from clean staging (debs cached)", f"{secs:.1f} s", f"two builds {same}: {hashes[0][:16]}"]], "n/a"


def _guest() -> tuple[Path, Path, str]:
    """The pipeline's own baseline kernel and image, and the accelerator a probe picks."""
    kernel_path = REPO / "results" / "kernels" / "baseline" / "bzImage"
    initrd = REPO / "results" / "image" / "initramfs.cpio"
    accel, _ = probe_accelerator(kernel_path, initrd, CONFIG["vm"]["accel"], timeout_s=CONFIG["vm"]["probe_timeout_s"])
    return kernel_path, initrd, accel


def _plugin() -> Path:
    """The exit plugin of the default results directory, as the pipeline's exit_plugin rule builds
    it (built now if it is missing or out of date)."""
    target = "results/exits/plugin/libexitcount.so"
    subprocess.run([str(SNAKEMAKE), "--cores", "all", target], cwd=REPO, check=True, capture_output=True, text=True)
    return REPO / target


def _spec(kernel_path: Path, initrd: Path, accel: str, job: Path, **extra) -> VMSpec:
    append = f"{CONFIG['vm']['append']} clocksource={CONFIG['vm']['clocksource']}"
    return VMSpec(kernel=kernel_path, initrd=initrd, append=append, accel=accel,
                  memory_mib=CONFIG["vm"]["memory_mib"], job=job, **extra)


def _spread(values: list[float]) -> str:
    return f"min {min(values):.2f}, max {max(values):.2f}"


def part_boot(work: Path, args) -> tuple[list[list[str]], str]:
    kernel_path, initrd, accel = _guest()
    job = work / "job.sh"
    job.write_text('echo ok > "$GUESTIO_OUT/ok"\n')
    boots, walls = [], []
    for i in range(args.boots):
        result = run_vm(_spec(kernel_path, initrd, accel, job), work / f"boot{i}", boot_timeout_s=120, job_timeout_s=60)
        assert result.ok, result.reason
        boots.append(result.boot_s)
        walls.append(result.wall_s)
    return [[f"boot to init under {accel} (median of {args.boots})", f"{statistics.median(boots):.2f} s", _spread(boots)],
            [f"whole run, QEMU start to exit, under {accel}", f"{statistics.median(walls):.2f} s", _spread(walls)]], accel


def part_plugin(work: Path, args) -> tuple[list[list[str]], str]:
    """Cost of the exitcount plugin: the same disk job untraced, with the plugin, and with the trace too."""
    kernel_path, initrd, _ = _guest()
    plugin = _plugin()
    data = disk.make_data_disk(work / "dd.img", 128, fs="none")
    job = work / "dd.sh"
    job.write_text("dd if=/dev/zero of=/dev/sda bs=1M count=64 conv=fsync 2>&1\n"
                   "dd if=/dev/sda of=/dev/null bs=1M count=64 2>&1\n")
    spec = _spec(kernel_path, initrd, "tcg", job, disks=[DiskSpec(path=Path(data), interface="ide", cache="none")])
    times = measure_overhead(spec, plugin, work / "overhead", repeats=args.boots)
    plain = statistics.median(t["wall_s"] for t in times["plain"])
    plain_job = statistics.median(t["job_s"] for t in times["plain"])
    rows = []
    for mode in ("plugin", "plugin+trace"):
        wall = statistics.median(t["wall_s"] for t in times[mode])
        job_s = statistics.median(t["job_s"] for t in times[mode])
        verdict = "meets" if wall <= 2 * plain else "misses"
        rows.append([f"exit tracing ({mode}), 64 MiB dd each way on IDE, median of {args.boots}",
                     f"{wall:.2f} s vs {plain:.2f} s untraced",
                     f"{wall / plain:.2f}x whole run ({verdict} the 2x target); job alone {job_s / plain_job:.2f}x"])
    return rows, "tcg"


def _du(path: Path) -> int:
    """Bytes a tree takes on disk, counted as the claims table counts its costs (sparse files by use)."""
    return sum(cost.disk_usage(f) for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _timed(cmd: list[str], cwd: Path, env: dict, log: Path) -> tuple[float, float]:
    """Wall and CPU seconds (children's user+sys) of one command; its output appended to log."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.monotonic() - started, cpu


_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")


def _main_job_log(log: str) -> list[str]:
    """The lines of the main job's own Snakemake run: the kept log's first command."""
    lines = log.splitlines()
    commands = [i for i, line in enumerate(lines) if line.startswith("$ ")]
    return lines[commands[0]:commands[1]] if len(commands) > 1 else lines


def _time_by_rule(lines: list[str], top: int = 8) -> str:
    """Where the main job's time went: each job's wall time (from the timestamps Snakemake
    prints before it starts and when it finishes), summed per rule."""
    stamp, rule, started, per_rule = None, None, {}, {}
    for line in lines:
        if m := _STAMP.match(line):
            stamp = time.mktime(time.strptime(m.group(1), "%a %b %d %H:%M:%S %Y"))
        elif m := re.match(r"^(?:local)?rule (\S+):$", line):
            rule = m.group(1)
        elif (m := re.match(r"^    jobid: (\d+)$", line)) and rule:
            started[m.group(1)] = (rule, stamp)
            rule = None
        elif (m := re.match(r"^Finished jobid: (\d+) ", line)) and m.group(1) in started:
            name, began = started.pop(m.group(1))
            per_rule.setdefault(name, []).append(stamp - began)
    ranked = sorted(per_rule.items(), key=lambda kv: -sum(kv[1]))[:top]
    return "; ".join(f"{name} {sum(t) / 60:.1f} min ({len(t)})" for name, t in ranked)


def _elapsed_s(lines: list[str]) -> float | None:
    m = next((re.match(r"^Elapsed time: (\d+):(\d\d):(\d\d(?:\.\d+)?)$", l) for l in lines
              if l.startswith("Elapsed time: ")), None)
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)) if m else None


def part_mainjob(work: Path, args) -> tuple[list[list[str]], str]:
    """The main job from nothing, for one profile (args.profile): a clean clone of HEAD with its
    own build/ and results/ and an empty private ccache (set-up already done), then the report
    and the bundle."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.strip()
    profile = args.profile
    clone = work / profile
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    cold = clone / "bench-cold.yaml"
    ccache = str(work / f"ccache-{profile}")
    cold.write_text(yaml.safe_dump({"kernel": {"ccache_dir": ccache}, "qemu": {"ccache_dir": ccache}}))
    configs = [] if profile == "default" else [f"config/{profile}.yaml"]
    profile_config = yaml.safe_load((clone / configs[0]).read_text()) if configs else {}
    results = clone / profile_config.get("results_dir", CONFIG["results_dir"])
    # The clone's own package, not the one .venv's guestio.pth points at.
    env = dict(os.environ, PYTHONPATH=str(clone / "workflow"))
    log = work / f"{profile}.log"
    base = [str(SNAKEMAKE), "--cores", "all", "--configfile", *configs, str(cold)]
    load = _load()
    print(f"main job, {profile} profile, cold ({load})...", flush=True)
    def step(cmd: list[str]) -> str:
        """A step after the main job: its time, or that it failed (the main job's row stands)."""
        try:
            return f"{_timed(cmd, clone, env, log)[0]:.0f} s"
        except subprocess.CalledProcessError as err:
            return f"failed (exit {err.returncode}; kept log)"

    try:
        main_s, main_cpu = _timed(base, clone, env, log)
        report = step([*base[:1], "--report", str(results / "report.html"), *base[1:]])
        # The target before --configfile, which takes every word after it as a config file.
        bundle = step([*base[:1], "bundle", *base[1:]])
    finally:  # the clone is deleted with the part: keep what says how it went (results as hard links)
        kept = KEPT / profile
        shutil.rmtree(kept, ignore_errors=True)
        kept.mkdir(parents=True)
        shutil.copy(log, kept / "snakemake.log")
        if results.is_dir():
            subprocess.run(["cp", "-al", str(results), str(kept / "results")], check=False)
        # Snakemake's job records: what the claims table's costs are computed from
        if (clone / ".snakemake" / "metadata").is_dir():
            subprocess.run(["cp", "-al", str(clone / ".snakemake" / "metadata"), str(kept / "metadata")], check=False)
    return _mainjob_rows(profile, commit, log.read_text(), results, f"{main_s / 60:.1f} min (CPU {main_cpu / 60:.0f} min)",
                         f"{load} at start; build {_gib(_du(clone / 'build'))}", report, bundle)


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def _mainjob_rows(profile: str, commit: str, log: str, results: Path, took: str, note: str, report: str,
                  bundle: str) -> tuple[list[list[str]], str]:
    # the main job's own steps: report and bundle, later in the same log, have theirs
    steps = re.findall(r"(\d+) of (\d+) steps \(100%\) done", "\n".join(_main_job_log(log)))
    jobs = steps[-1][1] if steps else "?"
    accel = json.loads((results / "host" / "accelerator.json").read_text())["accelerator"]
    archive = results / "bundle" / "guestio-bundle.tar.gz"
    return [[f"main job `snakemake --cores all`, {profile} profile, cold (clone of {commit}, empty ccache, "
             f"set-up done), {accel}", took, f"{jobs} jobs; {note}; results {_gib(_du(results))}"],
            [f"time by rule (jobs), {profile} profile", "", _time_by_rule(_main_job_log(log))],
            [f"`--report` after it, {profile} profile", report, ""],
            [f"`bundle` after it, {profile} profile", bundle,
             f"archive {_mib(archive.stat().st_size)}" if archive.is_file() else ""]], accel


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{n / 1024:.0f} KiB"


def part_mainjob_kept(work: Path, args) -> tuple[list[list[str]], str]:
    """A profile's rows again from what its run kept (build/bench-mainjob/<profile>): its log and
    results, when the run ended before its rows were written.  What only the live run saw (CPU
    time, the build tree, the report's time) is said to be missing."""
    kept = KEPT / args.profile
    log, results = (kept / "snakemake.log").read_text(), kept / "results"
    commit = json.loads((results / "tables" / "disk.provenance.json").read_text())["guestio"]["commit"][:7]
    elapsed = _elapsed_s(_main_job_log(log))
    if elapsed is None:
        raise SystemExit(f"{kept / 'snakemake.log'}: the main job did not finish (no 'Elapsed time')")
    return _mainjob_rows(args.profile, commit, log, results, f"{elapsed / 60:.1f} min (Snakemake's elapsed time)",
                         "from the kept log, CPU and build tree not recorded",
                         "ran, not timed" if (results / "report.html").is_file() else "not run",
                         "ran, not timed" if (results / "bundle" / "guestio-bundle.tar.gz").is_file() else "not run")


def render(store: dict) -> str:
    host = store["host"]
    lines = [
        "# Pipeline benchmark",
        "",
        "Written by `workflow/bench/pipeline.py`; each part's date and accelerator are given with it.",
        f"Host: {host['cpu_model']}, {host['cpus']} cores, {host['memory_kib'] // 1024} MiB, kernel {host['kernel']}.",
        "",
        "| what | time | ratio / note |",
        "|---|---|---|",
    ]
    # One stored part per main-job profile ("mainjob default"), so that profiles measured on
    # different days keep their rows.
    stored = [key for part in PARTS for key in sorted(store["parts"]) if key.split(" ")[0] == part]
    for key in stored:
        lines += [f"| {a} | {b} | {c} |" for a, b, c in store["parts"][key]["rows"]]
    lines += ["", "| part | measured on | accelerator |", "|---|---|---|"]
    lines += [f"| {p} | {store['parts'][p]['date']} | {store['parts'][p]['accelerator']} |" for p in stored]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)}")
    parser.add_argument("--boots", type=int, default=5, help="repetitions of the boot and plugin measurements")
    parser.add_argument("--qemu-repeats", type=int, default=2, help="cold + cached QEMU builds, each this many times")
    parser.add_argument("--profiles", default="default,quick",
                        help="main-job part: comma-separated; default is config/config.yaml alone, NAME adds config/NAME.yaml")
    parser.add_argument("--from-kept", action="store_true",
                        help="main-job part: the rows again from build/bench-mainjob/<profile> (log and results "
                             "kept by a run that failed after the main job), without running anything")
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    store = json.loads(STORE.read_text()) if STORE.exists() else {"parts": {}}
    store["host"] = provenance.host_snapshot()["host"]
    runners = {"kernels": part_kernels, "qemu": part_qemu, "image": part_image, "boot": part_boot, "plugin": part_plugin,
               "mainjob": part_mainjob}
    (REPO / "build").mkdir(exist_ok=True)
    runs = [(part, None) for part in parts if part != "mainjob"]
    if "mainjob" in parts:
        runs += [("mainjob", profile) for profile in args.profiles.split(",")]
    for part, profile in runs:
        args.profile = profile
        runner = part_mainjob_kept if part == "mainjob" and args.from_kept else runners[part]
        with tempfile.TemporaryDirectory(prefix=f"guestio-bench-{part}-", dir=REPO / "build") as tmp:
            rows, accel = runner(Path(tmp), args)
        key = f"{part} {profile}" if profile else part
        # Read again: a main-job part runs for hours, and another bench may have written since.
        store["parts"] = json.loads(STORE.read_text())["parts"] if STORE.exists() else {}
        store["parts"][key] = {"rows": rows, "date": time.strftime("%Y-%m-%d"), "accelerator": accel}
        STORE.write_text(json.dumps(store, indent=2, sort_keys=True) + "\n")
        TABLE.write_text(render(store))
    print(TABLE.read_text())


if __name__ == "__main__":
    main()
