#!/usr/bin/env bash
# One-time set-up on Debian 12, as root: host packages and the pinned Python
# environment in .venv.  Safe to run again: it only acts on what is missing
# or changed, so a second run takes a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }

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
