"""``python -m guestio.exits.tcg``: the modelled VM exits of one plugin run -> an exits CSV."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from guestio.exits.tcg.cross_check import cross_check
from guestio.exits.tcg.exit_rows import to_exits, to_exits_frame, write_exits_csv
from guestio.exits.tcg.plugin_csv import read_plugin_csv
from guestio.exits.tcg.sequence import parse_sequence


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m guestio.exits.tcg",
                                 description="Modelled VM exits of one plugin run -> exits CSV.")
    ap.add_argument("plugin_csv", type=Path, help="exitcount.csv written by the plugin")
    ap.add_argument("--system-map", type=Path, required=True)
    ap.add_argument("--workload", required=True)
    ap.add_argument("--variant", required=True)
    ap.add_argument("--qemu-log", type=Path, help="qemu.log of the same run (trace=True): "
                    "resolves DX ports exactly and runs the cross-check")
    ap.add_argument("--extra-columns", action="store_true",
                    help="add detail, size, caller_site, device, starts, space (not the schema)")
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args(argv)
    rows = read_plugin_csv(args.plugin_csv)
    ports = None
    if args.qemu_log:
        seq = parse_sequence(args.qemu_log)
        check = cross_check(rows, seq)
        print(check.summary(), file=sys.stderr)
        if not check.ok:
            return 1
        ports = seq.pio_by_site
    if args.extra_columns:
        write_exits_csv(to_exits(rows, args.system_map, workload=args.workload,
                                 variant=args.variant, pio_ports=ports, extra_columns=True),
                        args.output)
    else:
        from guestio.exits import schema as exits
        exits.write_csv(to_exits_frame(rows, args.system_map, workload=args.workload,
                                       variant=args.variant, pio_ports=ports), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
