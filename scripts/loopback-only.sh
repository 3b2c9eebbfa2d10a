#!/usr/bin/env bash
# Run a command in a private network namespace that has only the loopback interface.
# Orthanc 1.10 and DCMTK listeners bind every interface and have no bind-address option;
# inside this namespace every interface is loopback, so nothing is reachable from outside.
# Falls back to running the command as is when namespaces are not available (not root).
set -euo pipefail
if [ "${DICOMTROLLEY_NO_NETNS:-}" != "1" ] && [ "$(id -u)" -eq 0 ] \
        && command -v unshare >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 \
        && unshare --net true 2>/dev/null; then
    exec unshare --net sh -c 'ip link set lo up && exec "$@"' sh "$@"
fi
echo "note: no private network namespace; listeners of the tests bind as configured" >&2
exec "$@"
