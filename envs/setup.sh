#!/usr/bin/env bash
# One-time set-up on Debian 12, as root: host packages, the pinned Python
# environment in .venv and QEMU's source package.  Safe to run again: it only acts
# on what is missing or changed, so a second run takes a second or two.
#
# Usage: envs/setup.sh [--configfile FILE ...] [--print-source-dir]
#   --configfile FILE   the config file(s) the pipeline runs with (as for snakemake;
#                       also GUESTIO_CONFIGFILE=FILE): qemu.source_dir is read from
#                       config/config.yaml with these merged over it
#   --print-source-dir  print that qemu.source_dir (checked) and stop; installs nothing
set -euo pipefail

say() { printf '[setup] %s\n' "$*"; }
usage() { sed -n 's/^# \{0,1\}//; 6,10p' "$0" >&2; exit 2; }

# The config files, absolute: the working directory changes to the repository below.
configfiles=()
print_source_dir=0
add_configfile() {
    [[ -f "$1" ]] || { say "error: config file $1 does not exist"; exit 1; }
    configfiles+=("$(realpath -- "$1")")
}
[[ -n "${GUESTIO_CONFIGFILE:-}" ]] && add_configfile "$GUESTIO_CONFIGFILE"
while (($#)); do
    case $1 in
        --configfile|--configfiles)
            shift
            (($#)) && [[ $1 != -* ]] || { say "error: --configfile needs a file"; exit 2; }
            # Like snakemake's option: every following word that is not an option.
            while (($#)) && [[ $1 != -* ]]; do add_configfile "$1"; shift; done
            continue ;;
        --configfile=*) add_configfile "${1#--configfile=}" ;;
        --print-source-dir) print_source_dir=1 ;;
        -h|--help) usage ;;
        *) say "error: unknown argument $1"; usage ;;
    esac
    shift
done
cd "$(dirname "$0")/.."

# qemu.source_dir of the run with these config files (GUESTIO_QEMU_SOURCE_DIR overrides it),
# ~ expanded; refused (exit 1, the reason on stderr) when it is /, a system directory, or a
# directory with other files in it: set-up chowns it to _apt (guestio.build.hostdirs).
resolve_source_dir() {
    local python=.venv/bin/python args=()
    if [[ ! -x "$python" ]]; then
        python=python3
        "$python" -c 'import yaml' 2>/dev/null ||
            { say "error: reading the config needs PyYAML: run envs/setup.sh without --print-source-dir first"; exit 1; }
    fi
    for f in "${configfiles[@]}"; do args+=(--configfile "$f"); done
    PYTHONPATH="$PWD/workflow${PYTHONPATH:+:$PYTHONPATH}" "$python" -m guestio.build.hostdirs qemu-source-dir "${args[@]}"
}
if ((print_source_dir)); then
    resolve_source_dir
    exit
fi

# derive_sources LIST SED WHY: write the apt sources file LIST, debian.sources with one sed
# expression applied (debian.sources itself is never edited).  False when LIST exists.
derive_sources() {
    local list=$1 expr=$2 why=$3 bin_list=/etc/apt/sources.list.d/debian.sources
    [[ -f "$list" ]] && return 1
    [[ -r "$bin_list" ]] || { say "error: $bin_list missing: cannot derive $why"; exit 1; }
    { echo "# Written by guestio envs/setup.sh: $why, for the entries of $bin_list."
      sed -e "$expr" "$bin_list"; } > "$list.tmp" && chmod 0644 "$list.tmp" && mv "$list.tmp" "$list" ||
        { say "error: cannot write $list"; exit 1; }
    say "wrote $list ($why)"
}

# netperf (the paper's network benchmark, Fig 3/4/7 and Table 2) is only in Debian's
# non-free component.  Set-up enables that component for Debian 12 with its own file,
# /etc/apt/sources.list.d/guestio-non-free.sources: the URIs, suites and keys of
# debian.sources with "Components: non-free" (debian.sources itself is not edited), and
# runs apt-get update once, when the file is new.  Then netperf installs like any package
# (envs/debian-packages.txt) and the guest image can download its .deb.
non_free() {
    if derive_sources /etc/apt/sources.list.d/guestio-non-free.sources 's/^Components:.*/Components: non-free/' \
            "Debian's non-free component (netperf)"; then
        say "updating apt's lists for it"
        apt-get update -qq
    fi
}
non_free

mapfile -t packages < <(grep -Ev '^\s*(#|$)' envs/debian-packages.txt)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    say "Debian packages: all ${#packages[@]} present"
fi
# The guest image is built from .debs that apt downloads, so apt needs its package lists.
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    say "fetching apt package lists (needed to download the guest image's .debs)"
    apt-get update -qq
fi

stamp=.venv/.guestio-requirements
want=$(cat envs/requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ ! -x .venv/bin/python || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    say "creating the Python environment in .venv (pinned: envs/requirements.txt)"
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -r envs/requirements.txt
    # The guestio package (workflow/guestio) is imported from the checkout itself.
    .venv/bin/python -c 'import site, sys; open(site.getsitepackages()[0] + "/guestio.pth", "w").write(sys.argv[1] + "\n")' "$PWD/workflow"
    echo "$want" > "$stamp"
else
    say "Python environment: up to date"
fi

# QEMU is built from Debian's qemu source package, the version of the installed
# qemu-system-x86 (workflow/rules/qemu.smk).  Set-up is the only step that touches
# apt's sources: it adds a deb-src entry mirroring debian.sources, updates the
# Sources index only when it does not know that version, and downloads the .dsc,
# orig and debian tarballs (checksums verified by apt against the signed index)
# into qemu.source_dir of the run's configuration: config/config.yaml with the
# --configfile files over it (GUESTIO_QEMU_SOURCE_DIR overrides it).  It comes after the
# Python environment, which reads that YAML.
qemu_source() {
    local binpkg=qemu-system-x86 src_list=/etc/apt/sources.list.d/guestio-src.sources
    local dir srcpkg srcver nover upver
    dir=$(resolve_source_dir) || exit 1
    srcpkg=$(dpkg-query -W -f='${source:Package}' "$binpkg")
    srcver=$(dpkg-query -W -f='${source:Version}' "$binpkg")
    nover=${srcver#*:}          # no epoch: 7.2+dfsg-7+deb12u18
    upver=${nover%-*}           # upstream: 7.2+dfsg
    derive_sources "$src_list" 's/^Types:.*/Types: deb-src/' \
        "the source packages (QEMU is built from Debian's qemu source package)" || true
    if [[ "$(cat "$dir/.guestio-fetched" 2>/dev/null)" == "$srcpkg $srcver" &&
          -s "$dir/${srcpkg}_$nover.dsc" ]] && compgen -G "$dir/${srcpkg}_$upver.orig.tar.*" >/dev/null &&
          compgen -G "$dir/${srcpkg}_$nover.debian.tar.*" >/dev/null; then
        say "QEMU source: $srcpkg $srcver in $dir"
        return
    fi
    # (grep without -q: under pipefail, -q's early exit would fail apt-cache with SIGPIPE)
    if ! apt-cache showsrc "$srcpkg" 2>/dev/null | grep -x "Version: $srcver" >/dev/null; then
        say "updating apt's Sources index (it does not list $srcpkg $srcver yet)"
        apt-get update -qq
        apt-cache showsrc "$srcpkg" | grep -x "Version: $srcver" >/dev/null ||
            { say "error: no source package $srcpkg $srcver in the configured archives"; exit 1; }
    fi
    say "downloading QEMU source $srcpkg $srcver into $dir"
    mkdir -p "$dir"
    # The marker first (empty: nothing fetched yet) claims the directory as set-up's own, so
    # that a run after an interrupted download may still take it over (guestio.build.hostdirs).
    [[ -e "$dir/.guestio-fetched" ]] || : > "$dir/.guestio-fetched"
    # apt drops privileges to _apt for downloads: let it write there (the directory alone,
    # which resolve_source_dir checked is a dedicated one).
    if id _apt >/dev/null 2>&1; then chown -- _apt "$dir"; fi
    (cd "$dir" && apt-get source -qq --download-only "$srcpkg=$srcver")
    echo "$srcpkg $srcver" > "$dir/.guestio-fetched.tmp" && mv -f -- "$dir/.guestio-fetched.tmp" "$dir/.guestio-fetched"
}
qemu_source
