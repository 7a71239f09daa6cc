#!/bin/sh
# Fetch include/qemu/qemu-plugin.h of the QEMU the host runs (Debian's qemu source package)
# into a cache directory, for building the exitcount TCG plugin.
#
# Usage: workflow/plugin/fetch_header.sh [CACHE_DIR]     (default: build/plugin)
# Result: CACHE_DIR/include/qemu-plugin.h  and  CACHE_DIR/include/qemu-plugin.h.json
#         (source package, version, sha256, which patches touched it).
#
# Idempotent: nothing is downloaded when the header of the installed version is cached.
# Steps otherwise: (1) add a deb-src entry (/etc/apt/sources.list.d/guestio-src.sources)
# with the URIs/Suites/Components/Signed-By of /etc/apt/sources.list.d/debian.sources,
# (2) apt-get update, (3) `apt-get source --download-only qemu=<installed source version>`
# (the .dsc, the orig tarball and the debian tarball; apt verifies their checksums against
# the signed Sources index), (4) extract only include/qemu/qemu-plugin.h from the orig
# tarball, (5) apply, to that one file, the hunks of any Debian patch in debian/patches/series
# that touches it (in 7.2+dfsg-7+deb12u18 none does; the script says so either way).
# Needs root for (1)-(2) (only when the deb-src entry is missing) and dpkg-dev (apt-get source).
set -eu

CACHE=${1:-build/plugin}
BINPKG=qemu-system-x86
SRC_LIST=/etc/apt/sources.list.d/guestio-src.sources
BIN_LIST=/etc/apt/sources.list.d/debian.sources
HDR_PATH=include/qemu/qemu-plugin.h

die() { echo "fetch_header.sh: error: $*" >&2; exit 1; }

srcpkg=$(dpkg-query -W -f='${source:Package}' "$BINPKG" 2>/dev/null) || die "$BINPKG is not installed"
srcver=$(dpkg-query -W -f='${source:Version}' "$BINPKG")
upver=${srcver#*:}          # strip the epoch: 7.2+dfsg-7+deb12u18
upver=${upver%-*}           # strip the Debian revision: 7.2+dfsg

mkdir -p "$CACHE/include" "$CACHE/src"
CACHE=$(cd "$CACHE" && pwd)
out=$CACHE/include/qemu-plugin.h
meta=$out.json

if [ -s "$out" ] && [ -s "$meta" ] && grep -q "\"version\": \"$srcver\"" "$meta"; then
	echo "fetch_header.sh: $out is up to date ($srcpkg $srcver)"
	exit 0
fi

# (1) deb-src entry mirroring the deb entries.
if [ ! -f "$SRC_LIST" ]; then
	[ -r "$BIN_LIST" ] || die "$BIN_LIST missing: cannot derive a deb-src entry"
	[ "$(id -u)" = 0 ] || die "root needed to write $SRC_LIST (run once as root)"
	tmp=$(mktemp)
	{
		echo "# Written by guestio workflow/plugin/fetch_header.sh: source packages of the"
		echo "# entries in $BIN_LIST (used to fetch QEMU's qemu-plugin.h)."
		sed -e 's/^Types:.*/Types: deb-src/' "$BIN_LIST"
	} >"$tmp"
	install -m 0644 "$tmp" "$SRC_LIST"
	rm -f "$tmp"
	echo "fetch_header.sh: wrote $SRC_LIST"
fi

# (2) the Sources index, when it does not know this version yet.
if ! apt-cache showsrc "$srcpkg" 2>/dev/null | grep -qx "Version: $srcver"; then
	[ "$(id -u)" = 0 ] || die "root needed for apt-get update (Sources index lacks $srcpkg $srcver)"
	apt-get update -qq
	apt-cache showsrc "$srcpkg" | grep -qx "Version: $srcver" ||
		die "no source package $srcpkg $srcver in the configured archives"
fi

# (3) download (apt-get source skips files already present with the right checksum).
cd "$CACHE/src"
# apt drops privileges to _apt for downloads: let it write here.
if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then
	chown _apt "$CACHE/src" 2>/dev/null || true
fi
apt-get source -qq --download-only "$srcpkg=$srcver"

orig=$(ls "${srcpkg}_${upver}".orig.tar.* 2>/dev/null | head -n1)
[ -n "$orig" ] || die "orig tarball ${srcpkg}_${upver}.orig.tar.* not downloaded"
debtar=$(ls "${srcpkg}_${srcver#*:}".debian.tar.* 2>/dev/null | head -n1)
[ -n "$debtar" ] || die "debian tarball ${srcpkg}_${srcver#*:}.debian.tar.* not downloaded"

# (4) just the header out of the orig tarball.
work=$(mktemp -d "$CACHE/src/extract.XXXXXX")
trap 'rm -rf "$work"' EXIT
tar -xf "$orig" -C "$work" --wildcards "*/$HDR_PATH"
found=$(find "$work" -path "*/$HDR_PATH" -type f | head -n1)
[ -n "$found" ] || die "$HDR_PATH not in $orig"
srctop=${found%/$HDR_PATH}

# (5) Debian patches that touch the header.
tar -xf "$debtar" -C "$work" debian/patches
touching=""
if [ -f "$work/debian/patches/series" ]; then
	for p in $(sed -e 's/#.*//' "$work/debian/patches/series"); do
		[ -f "$work/debian/patches/$p" ] || continue
		if grep -Eq "^\+\+\+ [^ ]*/?$HDR_PATH" "$work/debian/patches/$p"; then
			touching="$touching $p"
			# Apply only this file's hunks: the patch is split per file by awk.
			awk -v f="$HDR_PATH" '
				/^diff / { keep = 0 }
				/^--- / { hdr = $0; next }
				/^\+\+\+ / { keep = (index($2, f) > 0); if (keep) print hdr; }
				keep { print }' "$work/debian/patches/$p" |
				patch -s -p1 -d "$srctop" || die "Debian patch $p does not apply to $HDR_PATH"
		fi
	done
fi

grep -q 'QEMU_PLUGIN_VERSION' "$found" || die "$found does not look like qemu-plugin.h"
cp "$found" "$out.tmp"
mv "$out.tmp" "$out"
sha=$(sha256sum "$out" | cut -d' ' -f1)
api=$(sed -n 's/^#define QEMU_PLUGIN_VERSION \([0-9]*\).*/\1/p' "$out")
cat >"$meta.tmp" <<EOF
{"source_package": "$srcpkg", "version": "$srcver", "orig_tarball": "$(basename "$orig")",
 "debian_patches_touching_header": "$(echo $touching)", "plugin_api_version": "$api",
 "sha256": "$sha"}
EOF
mv "$meta.tmp" "$meta"
echo "fetch_header.sh: $out from $(basename "$orig") (API version $api; Debian patches touching it:${touching:- none})"
