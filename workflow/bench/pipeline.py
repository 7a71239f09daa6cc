"""Benchmark of the pipeline itself: kernel builds, image build, boot-to-job time.

Writes a Markdown table (default workflow/bench/pipeline.md) that is committed.
Kernel builds use a fresh, private ccache so that "cold" really is cold; the
numbers go through the same functions the Snakemake rules call.

    .venv/bin/python workflow/bench/pipeline.py [--boots 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from guestio import image, kernel, provenance
from guestio.accel import probe_accelerator
from guestio.runner import VMSpec, run_vm

REPO = Path(__file__).resolve().parents[2]
LAYERS = REPO / "workflow" / "kernel" / "layers"


def build(variant: str, layers: list[str], work: Path, ccache: Path, source: dict) -> float:
    started = time.monotonic()
    kernel.build_variant(
        variant=variant, layers=layers, layers_root=LAYERS, pristine=REPO / "build" / "src" / "linux",
        source=source, workdir=work / variant, outdir=work / "out" / variant, jobs=_cores(),
        ccache_dir=ccache, log_path=work / f"{variant}.log",
    )
    return time.monotonic() - started


def _cores() -> int:
    import os

    return os.cpu_count() or 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "workflow" / "bench" / "pipeline.md")
    args = parser.parse_args()
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    source = json.loads((REPO / "results" / "kernels" / "source.json").read_text())
    rows: list[tuple[str, str, str]] = []

    with tempfile.TemporaryDirectory(prefix="guestio-bench-", dir=REPO / "build") as tmp:
        work = Path(tmp)
        ccache = work / "ccache"
        variants = config["variants"]
        first, *others = list(variants)
        print(f"cold build of {first} (empty ccache)...", flush=True)
        cold = build(first, variants[first], work, ccache, source)
        rows.append((f"kernel `{first}`, cold (empty ccache)", f"{cold:.0f} s", "1.00 (reference)"))
        for name in others:
            print(f"build of {name} after {first}...", flush=True)
            secs = build(name, variants[name], work, ccache, source)
            verdict = "meets" if secs <= 0.2 * cold else "misses"
            rows.append((f"kernel `{name}` after the others", f"{secs:.0f} s", f"{secs / cold:.2f} ({verdict} the 0.20 target)"))
        print(f"fully cached rebuild of {first}...", flush=True)
        again = build(first, variants[first], work, ccache, source)
        rows.append((f"kernel `{first}` again, fully cached", f"{again:.0f} s", f"{again / cold:.2f}"))

        print("image build from a clean staging dir (debs cached)...", flush=True)
        hashes = []
        for attempt in range(2):
            started = time.monotonic()
            image.build_initramfs(work / f"img{attempt}.cpio", work / f"img{attempt}.json",
                                  deb_dir=REPO / "build" / "debs", staging_dir=work / f"staging{attempt}",
                                  packages=config["image"]["packages"], programs=config["image"]["programs"])
            secs = time.monotonic() - started
            hashes.append(json.loads((work / f"img{attempt}.json").read_text())["image"]["sha256"])
        same = "identical" if hashes[0] == hashes[1] else "DIFFERENT"
        rows.append(("initramfs from clean staging (debs cached)", f"{secs:.1f} s", f"two builds {same}: {hashes[0][:16]}"))

        kernel_path = work / "out" / first / "bzImage"
        initrd = work / "img0.cpio"
        accel, reason = probe_accelerator(kernel_path, initrd, config["vm"]["accel"],
                                          timeout_s=config["vm"]["probe_timeout_s"])
        job = work / "job.sh"
        job.write_text("echo ok > \"$GUESTIO_OUT/ok\"\n")
        boots, jobs, walls = [], [], []
        for i in range(args.boots):
            spec = VMSpec(kernel=kernel_path, initrd=initrd, append=config["vm"]["append"], accel=accel,
                          memory_mib=config["vm"]["memory_mib"], job=job)
            result = run_vm(spec, work / f"boot{i}", boot_timeout_s=120, job_timeout_s=60)
            assert result.ok, result.reason
            boots.append(result.boot_s)
            jobs.append(result.job_s)
            walls.append(result.wall_s)
        rows.append((f"boot to init under {accel} (median of {args.boots})", f"{statistics.median(boots):.2f} s",
                     f"min {min(boots):.2f}, max {max(boots):.2f}"))
        rows.append((f"whole run, QEMU start to exit, under {accel}", f"{statistics.median(walls):.2f} s",
                     f"min {min(walls):.2f}, max {max(walls):.2f}"))

    host = provenance.host_snapshot()["host"]
    lines = [
        "# Pipeline benchmark",
        "",
        f"Written by `workflow/bench/pipeline.py` on {time.strftime('%Y-%m-%d')}.",
        f"Host: {host['cpu_model']}, {host['cpus']} cores, {host['memory_kib'] // 1024} MiB, kernel {platform.release()}.",
        f"Accelerator: {accel} ({reason}).",
        "",
        "| what | time | ratio / note |",
        "|---|---|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
