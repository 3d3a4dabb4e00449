#!/usr/bin/env bash
# What auditing costs: the same sealed file read through smpfs with the audit log on and off,
# alternating, in one run: 1 MiB sequential first reads (dd) and 4 KiB random-read IOPS (fio).
# Targets: at most 10% loss sequential, at most 25% loss for 4 KiB random reads.
#   SIZE_MIB=512 REPS=3 RUNTIME=10 AUDIT_SYNC=100 sudo -E integration/bench/audit-overhead.sh
# Run as root from the repository root. Everything lives on a dedicated tmpfs.
set -euo pipefail
SIZE_MIB=${SIZE_MIB:-512}
REPS=${REPS:-3}
RUNTIME=${RUNTIME:-10}
AUDIT_SYNC=${AUDIT_SYNC:-100}
log() { echo "==> $*" >&2; }

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
SMPFS_BENCH=1 bash integration/install-deps.sh >&2
cargo build --release --bin smpfs >&2
SMPFS=$PWD/target/release/smpfs

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

mount_with() {  # audit option value
  mountpoint -q "$MNT" && umount "$MNT"
  rm -f "$WORK/audit.log"
  "$SMPFS" mount "$WORK/bucket" "$MNT" -i "$WORK/id" -o "audit=$1,audit_sync=$AUDIT_SYNC" --log-file "$WORK/mount.log"
}
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

declare -A SEQ IOPS1 IOPS2
for rep in $(seq "$REPS"); do
  for mode in off on; do
    target=off; [ "$mode" = on ] && target=$WORK/audit.log
    mount_with "$target"; s=$(seq_gbps)
    mount_with "$target"; i1=$(rand_iops 1)
    mount_with "$target"; i2=$(rand_iops 2)
    records=$( [ "$mode" = on ] && wc -l < "$WORK/audit.log" || echo 0)
    log "rep $rep audit=$mode: sequential $s GB/s, random 4K $i1 IOPS (1 job), $i2 IOPS (2 jobs; $records audit records)"
    SEQ[$mode]="${SEQ[$mode]:-} $s"; IOPS1[$mode]="${IOPS1[$mode]:-} $i1"; IOPS2[$mode]="${IOPS2[$mode]:-} $i2"
  done
done
umount "$MNT"

python3 - "${SEQ[off]}" "${SEQ[on]}" "${IOPS1[off]}" "${IOPS1[on]}" "${IOPS2[off]}" "${IOPS2[on]}" "$SIZE_MIB" "$AUDIT_SYNC" <<'PY'
import statistics, sys
seq_off, seq_on, iops1_off, iops1_on, iops2_off, iops2_on = (list(map(float, a.split())) for a in sys.argv[1:7])
size, sync = sys.argv[7], sys.argv[8]
def row(name, off, on, unit, limit):
    m_off, m_on = statistics.median(off), statistics.median(on)
    loss = 1 - m_on / m_off
    verdict = "PASS" if loss <= limit else "MISS"
    fmt = "{:,.3f}" if unit == "GB/s" else "{:,.0f}"
    print(f"| {name} | {fmt.format(m_off)} {unit} | {fmt.format(m_on)} {unit} | {loss:+.1%} | ≤ {limit:.0%} | {verdict} |")
print(f"{size} MiB sealed file on tmpfs, audit_sync={sync} ms, median of {len(seq_off)} alternating runs\n")
print("| workload | audit off | audit on | loss | target | result |")
print("|---|---:|---:|---:|---:|---|")
row("1 MiB sequential first read (dd)", seq_off, seq_on, "GB/s", 0.10)
row("4 KiB random reads, 1 job (fio)", iops1_off, iops1_on, "IOPS", 0.25)
row("4 KiB random reads, 2 jobs (fio)", iops2_off, iops2_on, "IOPS", 0.25)
PY
