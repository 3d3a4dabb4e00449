#!/usr/bin/env bash
# Volume read speed: a DICOM series opened and read as `.volumes/<uid>.nii` through an
# smpfs mount (`-o volumes`: decrypt, parse, decode, assemble in locked memory; loaded with
# nibabel, get_fdata) against pydicom + numpy reading the same series from plaintext files
# and stacking pixel_array * slope + intercept sorted along the normal. Same run, same data.
#
# Run as root from the repository root:  integration/bench/volume-read.sh
# Environment: SLICES=300 (CT_small.dcm copies, 128x128 int16), REPS=5 (median reported),
#              REPORT=FILE (also write the Markdown report there),
#              SMPFS_BIN=PATH (measure that binary instead of building a release one).
# Everything lives on a dedicated tmpfs; every smpfs repetition is a fresh mount (nothing
# assembled or cached), the directory listing that populates .volumes included.
set -euo pipefail

SLICES=${SLICES:-300}
REPS=${REPS:-5}
REPORT=${REPORT:-}
log() { echo "==> $*" >&2; }
die() { echo "volume-read: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (mounts a tmpfs)"
[ -f Cargo.toml ] && grep -q '^name = "smpfs"' Cargo.toml || die "run from the smpfs repository root"

bash integration/install-deps.sh >&2
if [ -n "${SMPFS_BIN:-}" ]; then
  SMPFS=$SMPFS_BIN   # another build (e.g. debug), reported as such
else
  log "cargo build --release --bin smpfs"
  cargo build --release --bin smpfs >&2
  SMPFS=$PWD/target/release/smpfs
fi

WORK=$(mktemp -d /tmp/smpfs-volbench.XXXXXX)
mount -t tmpfs -o size=2G tmpfs "$WORK"
cleanup() {
  mountpoint -q "$WORK/mnt" 2>/dev/null && fusermount3 -u "$WORK/mnt" || true
  umount "$WORK" || true
  rmdir "$WORK" || true
}
trap cleanup EXIT
mkdir -p "$WORK/plain" "$WORK/bucket" "$WORK/mnt"
UIDS=$(python3 tests/dicom/make_series.py "$WORK/plain" "$SLICES")
UID_CT=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ct"])' "$UIDS")
RECIPIENT=$("$SMPFS" keygen --out "$WORK/identity" 2>/dev/null)
[ -n "$RECIPIENT" ] || die "cannot get a recipient for the identity"
"$SMPFS" seal "$WORK/plain" --to "$RECIPIENT" --out "$WORK/bucket" >/dev/null 2>&1

SMPFS_TIMES=()
PY_TIMES=()
for rep in $(seq "$REPS"); do
  "$SMPFS" mount "$WORK/bucket" "$WORK/mnt" -i "$WORK/identity" -o volumes -o audit="$WORK/audit.log" -f 2>"$WORK/mount.log" &
  for _ in $(seq 200); do mountpoint -q "$WORK/mnt" && break; sleep 0.05; done
  mountpoint -q "$WORK/mnt" || die "mount failed: $(cat "$WORK/mount.log")"
  SMPFS_TIMES+=("$(python3 - "$WORK/mnt/.volumes/$UID_CT.nii" <<'PY'
import sys, time
import nibabel
start = time.perf_counter()
data = nibabel.load(sys.argv[1]).get_fdata()
print(f"{time.perf_counter() - start:.4f}")
PY
)")
  fusermount3 -u "$WORK/mnt"; wait
  sync; echo 3 > /proc/sys/vm/drop_caches || true
  PY_TIMES+=("$(python3 - "$WORK/plain/ct" <<'PY'
import os, sys, time
import numpy as np
import pydicom
start = time.perf_counter()
datasets = [pydicom.dcmread(os.path.join(sys.argv[1], f)) for f in os.listdir(sys.argv[1])]
normal = np.cross(np.array(datasets[0].ImageOrientationPatient[:3], float),
                  np.array(datasets[0].ImageOrientationPatient[3:], float))
datasets.sort(key=lambda ds: float(np.dot(np.array(ds.ImagePositionPatient, float), normal)))
data = np.stack([ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope)
                 + float(ds.RescaleIntercept) for ds in datasets], axis=-1)
print(f"{time.perf_counter() - start:.4f}")
PY
)")
  log "rep $rep: smpfs ${SMPFS_TIMES[-1]} s, pydicom ${PY_TIMES[-1]} s"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
S=$(median "${SMPFS_TIMES[@]}")
P=$(median "${PY_TIMES[@]}")
RATIO=$(python3 -c "print(f'{$P / $S:.1f}')")
VERDICT=$(python3 -c "print('PASS' if $P / $S >= 5 else 'MISS')")
OUT=$(cat <<MD
| series | smpfs (.volumes, nibabel get_fdata) | pydicom + numpy stack | ratio | target 5x |
|---|---|---|---|---|
| $SLICES x 128x128 int16 (CT_small copies) | $S s | $P s | ${RATIO}x | $VERDICT |

Median of $REPS; $(nproc) CPUs; $(date -u +%Y-%m-%d).
MD
)
echo "$OUT"
[ -z "$REPORT" ] || echo "$OUT" > "$REPORT"
