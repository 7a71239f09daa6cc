#!/bin/sh
# Retired: qemu-plugin.h now comes from the pinned QEMU source tree the QEMU build uses
# (build/src/qemu; the exit_plugin rule, workflow/scripts/build_plugin.py), and the source
# package is downloaded by envs/setup.sh only; nothing here touches apt any more.
# Kept for callers of guestio.exits.tcg.plugin.build_plugin(fetch=True): it copies the header of
# that tree (extracting it from qemu.source_dir first if build/ lacks it) into DIR/include.
#
# Usage: workflow/plugin/fetch_header.sh [DIR]     (default: build/plugin)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=$here/../../.venv/bin/python    # the pinned environment (envs/setup.sh), else the host's
[ -x "$python" ] || python=python3
PYTHONPATH="$here/..${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m guestio.build.qemu plugin-header "${1:-build/plugin}"
