#!/usr/bin/env bash
# The smpfs demo: seal real DICOM files (pydicom's test data) to a fresh workstation key,
# mount the sealed bucket, read it with ordinary tools, then unmount, which purges the
# cache and drops the keys. Run as root on Debian; installs what it needs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup) first" >&2; exit 1; }
bash "$here/install-deps.sh"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "building smpfs"
cargo build --quiet --bin smpfs --manifest-path "$repo/Cargo.toml"
smpfs="$repo/target/debug/smpfs"

demo=${SMPFS_DEMO_DIR:-/tmp/smpfs-demo}
if mountpoint -q "$demo/mnt" 2>/dev/null; then umount "$demo/mnt"; fi
rm -rf "$demo"
mkdir -p "$demo/scans" "$demo/mnt"
data=$(python3 -c 'import os, pydicom; print(os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files"))')
cp "$data/CT_small.dcm" "$data/MR_small.dcm" "$demo/scans/"
cp -r "$data/dicomdirtests/77654033" "$demo/scans/study-77654033"

step "a workstation identity (secret key, mode 0600) and its public recipient"
recipient=$("$smpfs" keygen --out "$demo/workstation.key")
echo "recipient: $recipient"

step "seal the scans into a bucket (a local directory here; the cloud would hold only this)"
# Small chunks (default 64K) so even these small files span several authenticated chunks.
"$smpfs" seal "$demo/scans" --to "$recipient" --out "$demo/bucket" --chunk-size 4K
echo "the bucket holds opaque objects and a sealed manifest: no file name, no folder, no plaintext:"
(cd "$demo/bucket" && find . -type f | sort | head -6)
echo "only an identity it is sealed to can list it:"
"$smpfs" ls "$demo/bucket" -i "$demo/workstation.key" | head -4

step "mount the bucket read-only"
"$smpfs" mount "$demo/bucket" "$demo/mnt" -i "$demo/workstation.key" --log-file "$demo/mount.log"
findmnt "$demo/mnt"
ls -lR "$demo/mnt" | head -20

step "tampering is detected: flip one byte of a sealed object in the bucket"
object="$demo/bucket/$("$smpfs" ls "$demo/bucket" MR_small.dcm --objects -i "$demo/workstation.key" 2>/dev/null | awk '{print $2}')"
cp "$object" "$demo/MR_small.backup"
printf '\xff' | dd of="$object" bs=1 seek=5000 conv=notrunc status=none
if cat "$demo/mnt/MR_small.dcm" > /dev/null 2>"$demo/err"; then echo "UNEXPECTED: read succeeded"; exit 1; fi
echo "cat: $(cat "$demo/err")"
cp "$demo/MR_small.backup" "$object"
echo "restored the object; reads work again"

step "read with ordinary tools: sha256sum, dcmdump, pydicom"
(cd "$demo/scans" && sha256sum CT_small.dcm MR_small.dcm)
(cd "$demo/mnt" && sha256sum CT_small.dcm MR_small.dcm)
dcmdump +P PatientName +P Modality +P Rows +P Columns "$demo/mnt/CT_small.dcm"
python3 -W ignore - "$demo/mnt" <<'PY'
import os, sys, pydicom
root = sys.argv[1]
for dirpath, _, files in sorted(os.walk(root)):
    for name in sorted(files):
        ds = pydicom.dcmread(os.path.join(dirpath, name), force=True)
        rel = os.path.relpath(os.path.join(dirpath, name), root)
        print(f"pydicom: {rel:45} {ds.get('Modality', '?'):3} {ds.get('Rows', '?')}x{ds.get('Columns', '?')}")
PY

step "the audit log: every open and read was recorded before its data was returned"
"$smpfs" audit show "$demo/audit.log" | head -4
echo "..."
"$smpfs" audit show "$demo/audit.log" --path CT_small.dcm | tail -4

step "unmount: the locked cache is zeroized, the keys are dropped, the audit segment is sealed"
umount "$demo/mnt"
for _ in $(seq 50); do grep -q "exited cleanly" "$demo/mount.log" && break; sleep 0.1; done
grep -E "zeroized|exited" "$demo/mount.log"
"$smpfs" audit show "$demo/audit.log" | tail -2

step "verify the audit log offline (no auditor was set up, so the workstation key verifies)"
"$smpfs" audit verify "$demo/audit.log" --identity "$demo/workstation.key"
echo
echo "demo done; files are in $demo"
