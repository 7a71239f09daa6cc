"""Build the exitcount TCG plugin against qemu-plugin.h of the pinned QEMU source tree."""

import json
import subprocess
from pathlib import Path

from guestio import lifetime
from guestio.build import plugin, qemu
from guestio.util import exclusive, write_json_atomic

# An interrupted or orphaned job stops its children and tidies up (guestio.lifetime).
lifetime.die_with_snakemake()

params = snakemake.params
build_dir = Path(snakemake.output.plugin).parent.absolute()
source = json.loads(Path(snakemake.input.source).read_text())
with open(snakemake.log[0], "w") as log, exclusive(build_dir, log=lambda msg: print(msg, file=log, flush=True)):
    header = qemu.plugin_header(source, Path(params.pristine), build_dir / "include" / "qemu-plugin.h")
    log.write(f"qemu-plugin.h from {header['from']} (sha256 {header['sha256']}, API version "
              f"{header['plugin_api_version']})\n")
    log.flush()
    # An argument list, never a shell line: build_dir lies under results_dir (configuration).
    subprocess.run(plugin.make_argv(build_dir, build_dir / "include",
                                    plugin_dir=Path(snakemake.input.makefile).parent.absolute()),
                   stdout=log, stderr=subprocess.STDOUT, check=True)
write_json_atomic(Path(snakemake.output.record), {"plugin": str(Path(snakemake.output.plugin)), **header})
