#!/usr/bin/env bash
# What auditing costs: the same sealed file read through smpfs with the audit log off, on with
# one record per read request (`audit_reads=each`, the behaviour before folding) and on with
# folded range records (`audit_reads=folded`, the default), alternating, in one run: 1 MiB
# sequential first reads (dd) and 4 KiB random-read IOPS (fio), and the read records each
# sequential read wrote. Targets (issue #21): at most 5% loss for 1 MiB sequential reads with
# folding, and half of the 2-reader 4 KiB loss measured before folding (21%).
#   SIZE_MIB=512 REPS=3 RUNTIME=10 AUDIT_SYNC=100 sudo -E integration/bench/audit-overhead.sh
# SMPFS_BIN=PATH measures that binary instead of building a release one; REPORT=FILE also
# writes the table there.
# Run as root from the repository root. Everything lives on a dedicated tmpfs.
set -euo pipefail
SIZE_MIB=${SIZE_MIB:-512}
REPS=${REPS:-3}
RUNTIME=${RUNTIME:-10}
AUDIT_SYNC=${AUDIT_SYNC:-100}
log() { echo "==> $*" >&2; }

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
SMPFS_BENCH=1 bash integration/install-deps.sh >&2
if [ -n "${SMPFS_BIN:-}" ]; then
  SMPFS=$SMPFS_BIN
else
  cargo build --release --bin smpfs >&2
  SMPFS=$PWD/target/release/smpfs
fi

WORK=$(mktemp -d /tmp/smpfs-audit-bench.XXXXXX)
MNT=$WORK/mnt
cleanup() {
  mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"
  mountpoint -q "$WORK" && umount "$WORK"
  rm -rf "$WORK"
}
trap cleanup EXIT
mount -t tmpfs -o "size=$(( SIZE_MIB * 3 + 512 ))M,mode=0700" smpfs-audit-bench "$WORK"
mkdir -p "$WORK/plain" "$MNT"
head -c $(( SIZE_MIB << 20 )) /dev/urandom > "$WORK/plain/data.bin"
recipient=$("$SMPFS" keygen --out "$WORK/id" 2>/dev/null)
"$SMPFS" seal "$WORK/plain/data.bin" --to "$recipient" --out "$WORK/bucket" 2>/dev/null

mount_with() {  # mode: off, each or folded
  local opts="audit=$WORK/audit.log,audit_sync=$AUDIT_SYNC,audit_reads=$1"
  [ "$1" = off ] && opts="audit=off"
  mountpoint -q "$MNT" && umount "$MNT"
  rm -f "$WORK/audit.log"
  "$SMPFS" mount "$WORK/bucket" "$MNT" -i "$WORK/id" -o "$opts" --log-file "$WORK/mount.log"
}
read_records() { if [ -f "$WORK/audit.log" ]; then grep -c '"event":"read"' "$WORK/audit.log"; else echo 0; fi; }
seq_gbps() {
  local t0 t1
  t0=$(date +%s.%N); dd if="$MNT/data.bin" of=/dev/null bs=1M status=none; t1=$(date +%s.%N)
  python3 -c "print(f'{($SIZE_MIB << 20) / ($t1 - $t0) / 1e9:.3f}')"
}
rand_iops() {  # jobs
  fio --name=rand --filename="$MNT/data.bin" --rw=randread --bs=4k --ioengine=psync \
    --numjobs="$1" --group_reporting --time_based --runtime="$RUNTIME" --output-format=json 2>/dev/null \
    | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["jobs"][0]["read"]["iops"]))'
}

declare -A SEQ IOPS1 IOPS2 RECORDS
for rep in $(seq "$REPS"); do
  for mode in off each folded; do
    mount_with "$mode"; s=$(seq_gbps); r=$(read_records)
    mount_with "$mode"; i1=$(rand_iops 1)
    mount_with "$mode"; i2=$(rand_iops 2)
    log "rep $rep audit=$mode: sequential $s GB/s ($r read records), random 4K $i1 IOPS (1 job), $i2 IOPS (2 jobs)"
    SEQ[$mode]="${SEQ[$mode]:-} $s"; IOPS1[$mode]="${IOPS1[$mode]:-} $i1"; IOPS2[$mode]="${IOPS2[$mode]:-} $i2"
    RECORDS[$mode]="${RECORDS[$mode]:-} $r"
  done
done
umount "$MNT"

python3 - "$SIZE_MIB" "$AUDIT_SYNC" "${SEQ[off]}" "${SEQ[each]}" "${SEQ[folded]}" \
  "${IOPS1[off]}" "${IOPS1[each]}" "${IOPS1[folded]}" "${IOPS2[off]}" "${IOPS2[each]}" "${IOPS2[folded]}" \
  "${RECORDS[each]}" "${RECORDS[folded]}" <<'PY' | tee "${REPORT:-/dev/null}"
import statistics, sys
size, sync = sys.argv[1], sys.argv[2]
runs = [list(map(float, a.split())) for a in sys.argv[3:14]]
seq, iops1, iops2 = runs[0:3], runs[3:6], runs[6:9]
records_each, records_folded = runs[9], runs[10]
med = statistics.median
def row(name, values, unit):
    off, each, folded = (med(v) for v in values)
    fmt = "{:,.3f}" if unit == "GB/s" else "{:,.0f}"
    print(f"| {name} | {fmt.format(off)} {unit} | {fmt.format(each)} {unit} ({1 - each / off:+.1%}) "
          f"| {fmt.format(folded)} {unit} ({1 - folded / off:+.1%}) |")
print(f"{size} MiB sealed file on tmpfs, audit_sync={sync} ms, median of {len(seq[0])} alternating runs; "
      "in brackets, the loss against audit off\n")
print("| workload | audit off | audit on, a record per read | audit on, folded |")
print("|---|---:|---:|---:|")
row("1 MiB sequential first read (dd)", seq, "GB/s")
row("4 KiB random reads, 1 job (fio)", iops1, "IOPS")
row("4 KiB random reads, 2 jobs (fio)", iops2, "IOPS")
print(f"\nread records written by one sequential read of the file: {med(records_each):,.0f} "
      f"one per request, {med(records_folded):,.0f} folded")
PY
