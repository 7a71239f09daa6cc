"""Snapshot of the host, written once per host for provenance."""

from pathlib import Path

from guestio.provenance import host_snapshot
from guestio.util import write_json_atomic

write_json_atomic(Path(snakemake.output[0]), host_snapshot())
