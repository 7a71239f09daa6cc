"""Snapshot of the host, written once per host for provenance."""

import json
from pathlib import Path

from guestio.provenance import host_snapshot
from guestio.util import write_json_atomic

snapshot = host_snapshot()
write_json_atomic(Path(snakemake.output[0]), snapshot)
Path(snakemake.log[0]).write_text(json.dumps(snapshot["host"]) + "\n")
