#!/usr/bin/env bash
# Soak: 64 concurrent readers on an S3 mount (moto behind the fault proxy,
# tests/fault_proxy.py) for MINUTES (default 10), over DICOM-sized slices and multi-chunk
# volumes, while remote faults are switched on and off and the mount is locked, unlocked
# and purged (then mounted again). Fails (exit 1) on any mismatched byte, hung read,
# growing RSS, moving locked memory (VmLck), leaked descriptor, unclean daemon exit or
# audit log that does not verify; prints a summary either way. Not part of CI.
#
#   bash integration/soak.sh [MINUTES]          as root, from anywhere
#   SMPFS_BIN=path/to/smpfs  use that binary instead of a fresh debug build
#   SOAK_READERS=N SOAK_SEED=S  fewer/more readers, a fixed schedule of faults and actions
#   SOAK_KEEP=1  keep the work directory (it is kept anyway when the soak fails)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
minutes=${1:-10}
[[ "$minutes" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "usage: soak.sh [MINUTES]" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root: the soak mounts a FUSE filesystem" >&2; exit 1; }
bash "$here/install-deps.sh"
bin=${SMPFS_BIN:-}
if [ -z "$bin" ]; then
  cargo build --quiet --bin smpfs --manifest-path "$repo/Cargo.toml"
  bin="$repo/target/debug/smpfs"
fi
args=(--smpfs "$bin" --minutes "$minutes" --readers "${SOAK_READERS:-64}")
[ -n "${SOAK_SEED:-}" ] && args+=(--seed "$SOAK_SEED")
exec python3 "$here/soak.py" "${args[@]}"
