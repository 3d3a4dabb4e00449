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

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --quiet --all-targets -- -D warnings
echo "==> cargo test"
cargo test
echo "==> end-to-end: pydicom + dcmtk through a mount"
SMPFS_BIN="$PWD/target/debug/smpfs" bash "$here/e2e-dicom.sh"
echo "==> all tests passed"
