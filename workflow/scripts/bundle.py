"""The archival bundle of a run (guestio.report.bundle): one .tar.gz, re-renderable offline."""

from pathlib import Path

from guestio.report import bundle

p = snakemake.params
lines = []
summary = bundle.build(results=p.results, repo=p.repo, out=snakemake.output[0], config=p.config,
                       configfiles=p.configfiles, render=snakemake.input.render,
                       declared=[str(f) for f in snakemake.input], log=lines.append)
lines.append(f"bundle: {summary}")
Path(snakemake.log[0]).write_text("\n".join(lines) + "\n")
