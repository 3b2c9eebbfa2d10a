#!/usr/bin/env bash
# Install the Debian packages the test suite and benchmarks need, when missing:
# orthanc + orthanc-dicomweb (the real PACS) and dcmtk (the independent DIMSE peer).
set -euo pipefail
need=()
command -v Orthanc >/dev/null 2>&1 || need+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
command -v getscu >/dev/null 2>&1 || need+=(dcmtk)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
echo "installing Debian packages: ${need[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "error: need root (or sudo) to install ${need[*]}" >&2; exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
