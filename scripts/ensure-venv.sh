#!/usr/bin/env bash
# Create the project venv. On a fresh Debian, `python3 -m venv` needs the
# python3-venv package (ensurepip): install it when missing (needs root or sudo).
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    echo "python3-venv is missing: installing it"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv
fi
"$python" -m venv "$venv"
