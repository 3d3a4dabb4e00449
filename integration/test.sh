#!/usr/bin/env bash
# Installs what the tests need, then runs every test: formatting and lints, unit and
# property tests, real-FUSE integration tests, and the end-to-end DICOM script.
# Run as root on Debian (the tests mount FUSE filesystems for real).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$(dirname "$here")"

command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup) first" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root: the tests mount FUSE filesystems" >&2; exit 1; }
bash "$here/install-deps.sh"

# A fresh debug build of every test binary takes about 2.5 GiB; say so up front rather than
# let a full disk surface later as a linker crash. Incremental state only helps rebuilds.
export CARGO_INCREMENTAL=0
free_kib=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [ "$free_kib" -lt $((3 * 1024 * 1024)) ]; then
  echo "warning: only $((free_kib / 1024)) MiB free here; the test build needs about 2.5 GiB" >&2
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --quiet --all-targets -- -D warnings
echo "==> cargo test"
cargo test
echo "==> end-to-end: pydicom + dcmtk through a mount"
SMPFS_BIN="$PWD/target/debug/smpfs" bash "$here/e2e-dicom.sh"
echo "==> all tests passed"
