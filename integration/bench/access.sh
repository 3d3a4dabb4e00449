#!/usr/bin/env bash
# What changing a zero-knowledge (v2) bucket's readers costs, in one run against one s3rver
# (npm) on loopback: `smpfs seal` of a tree to recipient R1, then `smpfs share --add R2`
# (every file gets a new detached header, its file key wrapped to R1 and R2; no chunk is
# sent again), then `smpfs rotate --remove R2` (every file sealed again under a fresh key).
#
# Run as root from the repository root:
#   integration/bench/access.sh
# Environment:
#   RUNS="10000:4 1000:256"  FILES:KIB pairs: a tree of FILES files of KIB KiB of random
#                  bytes each (100 per directory), each pair in its own prefix
#   REPORT=FILE    also write the Markdown report to FILE
#   SMPFS_BIN=PATH measure that binary instead of building a release one
#   KEEP_LOGS=DIR  copy s3rver's log and each command's output there
#
# Each step is the wall time of the whole command (process start included), with the
# bucket's identity (-i, recipient R1) and SMPFS_STATE_DIR in a scratch directory. s3rver
# logs one line per response ("info: URL STATUS TIMEms SIZE", the URL's start and the
# method cut off, no size after a DELETE) and one "Stored object KEY" line per PUT, so
# each step's requests are counted from its log: PUTs (the stored lines; those under
# hdr/ separately), ranged GETs (status 206), DELETEs (status 204) and the rest (HEADs,
# whole GETs such as rotate's of each detached header, listings: status 200 less the
# PUTs). The bucket's bytes are the sizes of s3rver's object files under the prefix
# (obj/, hdr/ and the manifest, journal and the rest). A check with `smpfs cat` as R2 on
# one file: refused before the share, the right bytes after it, refused after the rotation.
# The default runs take about 2 minutes on a busy 2-vCPU VM.
# Informational: exits 0 unless a command or a check fails.
set -euo pipefail
shopt -s inherit_errexit

RUNS=${RUNS:-10000:4 1000:256}
REPORT=${REPORT:-}
KEEP_LOGS=${KEEP_LOGS:-}

BENCH=access
source integration/bench/remote-common.sh
for run in $RUNS; do
  [[ "$run" =~ ^[1-9][0-9]*:[1-9][0-9]*$ ]] || die "RUNS holds FILES:KIB pairs, not $run"
done
need_s3rver
bench_setup
s3_client_env S3RVER S3RVER
export SMPFS_STATE_DIR=$WORK/state
mkdir -p "$WORK/s3rver" "$SMPFS_STATE_DIR"

BUCKET=smpfs-access-bench
# Not --silent: its log has a line per response, which counts the requests.
start_s3rver "$BUCKET"

R1=$("$SMPFS" keygen --out "$WORK/id1.key" 2>/dev/null)
R2=$("$SMPFS" keygen --out "$WORK/id2.key" 2>/dev/null)
[ -n "$R1" ] && [ -n "$R2" ] || die "keygen failed"
S3_OPTS="endpoint=$ENDPOINT,path_style"

now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }
secs() { calc "f'{$2 - $1:.2f}'"; }
log_lines() {
  sleep 0.5 # let the last responses reach the log
  wc -l <"$WORK/s3rver.log"
}
# Requests in the log after line $1, as "TOTAL PUTS HDR_PUTS RANGED_GETS DELETES OTHER".
requests_since() {
  tail -n +"$(($1 + 1))" "$WORK/s3rver.log" | sed 's/\x1b\[[0-9;]*m//g' | awk '
    /Stored object "/ { puts++; if ($0 ~ /Stored object "[^"]*hdr\//) hdr++; next }
    match($0, / [1-5][0-9][0-9] [0-9.]+m?s( |$)/) {
      total++; s = substr($0, RSTART + 1, 3)
      if (s == 206) ranged++; else if (s == 204) deleted++
    }
    END { printf "%d %d %d %d %d %d\n", total, puts, hdr, ranged, deleted, total - puts - ranged - deleted }'
}
# Objects and bytes under prefix $1, as "OBJ_N OBJ_BYTES HDR_N HDR_BYTES REST_N REST_BYTES".
bucket_bytes() {
  local dir=$WORK/s3rver/$BUCKET/$1
  [ -d "$dir" ] || { echo "0 0 0 0 0 0"; return; }
  find "$dir" -type f -name '*._S3rver_object' -printf '%s %P\n' | awk '
    { if ($2 ~ /^obj\//) { on++; ob += $1 } else if ($2 ~ /^hdr\//) { hn++; hb += $1 } else { rn++; rb += $1 } }
    END { printf "%d %d %d %d %d %d\n", on, ob, hn, hb, rn, rb }'
}
# `smpfs cat` of file $2 of prefix $1 with R2's identity: prints "reads" or "refused",
# and dies if it reads bytes other than the plaintext $3.
r2_reads() {
  if "$SMPFS" cat "s3://$BUCKET/$1" "$2" -i "$WORK/id2.key" -o "$S3_OPTS" >"$WORK/cat.out" 2>"$WORK/cat.err"; then
    cmp -s "$WORK/cat.out" "$3" || die "R2 read other bytes than $2's"
    echo reads
  else
    echo refused
  fi
}
# Runs a step ($1: its name; the rest: the command), setting STEP_SECS, STEP_REQ, STEP_OUT
# and STEP_BUSY (percent of all CPUs busy meanwhile, this run included).
step() {
  local name=$1 l0 start t0
  shift
  l0=$(log_lines)
  t0=$(cpu_ticks)
  start=$(now)
  "$@" >"$WORK/$name.out" 2>&1 || die "$name failed: $(tail -5 "$WORK/$name.out")"
  STEP_SECS=$(secs "$start" "$(now)")
  STEP_BUSY=$(busy_pct "$t0" "$(cpu_ticks)")
  STEP_REQ=$(requests_since "$l0")
  STEP_OUT=$(grep -E '^(sealed|rotated|[0-9]+ files of) ' "$WORK/$name.out" | tail -1)
  [ -n "$STEP_OUT" ] || STEP_OUT=$(grep -v '^$' "$WORK/$name.out" | tail -1)
  log "$name: $STEP_OUT ($STEP_SECS s wall; requests total/PUT/hdr PUT/ranged GET/DELETE/other: $STEP_REQ; CPUs $STEP_BUSY% busy)"
}

table=$(cat <<'EOF'
| files × size | seal: s (files/s, MiB/s) | share `--add`: s (files/s) | share / seal, time | rotate `--remove`: s (MiB/s) | rotate / seal, throughput | share bytes written / bucket bytes |
|---|---|---|---|---|---|---|
EOF
)
req_table=$(cat <<'EOF'
| files × size | step | requests | per file | PUTs (of them hdr/) | ranged GETs | DELETEs | other | CPUs busy |
|---|---|---:|---:|---|---:|---:|---:|---:|
EOF
)
notes=""
for run in $RUNS; do
  N=${run%%:*} KIB=${run#*:}
  P=n$N-k$KIB
  MIB=$(calc "$N * $KIB / 1024")
  PLAIN=$WORK/plain-$P
  log "$P: writing $N files of $KIB KiB"
  python3 - "$PLAIN" "$N" "$KIB" <<'EOF'
import os, sys
root, count, kib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(count):
    d = os.path.join(root, f"d{i // 100:04d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06d}.bin"), "wb") as f:
        f.write(os.urandom(kib << 10))
EOF
  PROBE=d0000/f000000.bin

  step "seal-$P" "$SMPFS" seal "$PLAIN" --out "s3://$BUCKET/$P" -i "$WORK/id1.key" --to "$R1" -o "$S3_OPTS"
  seal_s=$STEP_SECS seal_req=$STEP_REQ seal_busy=$STEP_BUSY seal_out=$STEP_OUT
  read -r on ob hn hb rn rb < <(bucket_bytes "$P")
  [ "$on" = "$N" ] || die "$P: $on objects after the seal, not $N"
  sealed_bytes=$((ob + hb + rb))
  before=$(r2_reads "$P" "$PROBE" "$PLAIN/$PROBE")

  step "share-$P" "$SMPFS" share "s3://$BUCKET/$P" -i "$WORK/id1.key" --add "$R2" -o "$S3_OPTS"
  share_s=$STEP_SECS share_req=$STEP_REQ share_busy=$STEP_BUSY share_out=$STEP_OUT
  written=$(sed -n 's/.*: \([0-9]*\) bytes of new headers written.*/\1/p' <<<"$share_out")
  [ -n "$written" ] || die "$P: share did not say what it wrote: $share_out"
  read -r on2 ob2 hn2 hb2 rn2 rb2 < <(bucket_bytes "$P")
  [ "$hn2" = "$N" ] || die "$P: $hn2 hdr/ objects after the share, not $N"
  shared=$(r2_reads "$P" "$PROBE" "$PLAIN/$PROBE")

  step "rotate-$P" "$SMPFS" rotate "s3://$BUCKET/$P" -i "$WORK/id1.key" --remove "$R2" -o "$S3_OPTS"
  rot_s=$STEP_SECS rot_req=$STEP_REQ rot_busy=$STEP_BUSY rot_out=$STEP_OUT
  read -r on3 ob3 hn3 hb3 rn3 rb3 < <(bucket_bytes "$P")
  [ "$on3" = "$N" ] || die "$P: $on3 objects after the rotation, not $N"
  after=$(r2_reads "$P" "$PROBE" "$PLAIN/$PROBE")
  [ "$before/$shared/$after" = "refused/reads/refused" ] \
    || die "$P: R2 before the share / after it / after the rotation: $before/$shared/$after"
  rm -rf "$PLAIN"

  size="$N × $KIB KiB"
  table+=$'\n'"| $size | $seal_s ($(calc "f'{$N / $seal_s:.0f}'"), $(calc "f'{$MIB / $seal_s:.2f}'")) | $share_s ($(calc "f'{$N / $share_s:.0f}'")) | $(calc "f'{$share_s / $seal_s:.2f}'") | $rot_s ($(calc "f'{$MIB / $rot_s:.2f}'")) | $(calc "f'{$seal_s / $rot_s:.2f}'") | $written / $sealed_bytes = $(calc "f'{100 * $written / $sealed_bytes:.2f}'") % |"
  for s in seal share rotate; do
    case $s in
      seal) req=$seal_req busy=$seal_busy ;;
      share) req=$share_req busy=$share_busy ;;
      rotate) req=$rot_req busy=$rot_busy ;;
    esac
    read -r total puts hdr ranged deleted other <<<"$req"
    req_table+=$'\n'"| $size | $s | $total | $(calc "f'{$total / $N:.2f}'") | $puts ($hdr) | $ranged | $deleted | $other | $busy % |"
  done
  notes+=$'\n'"- $size ($MIB MiB): seal says \"$seal_out\"; share says \"$share_out\"; rotate says \"$rot_out\". Bucket after the seal: $on objects ($ob bytes) + $rn manifest/other ($rb bytes); after the share: $hn2 hdr/ objects ($hb2 bytes) + $rn2 manifest/other ($rb2 bytes); after the rotation: $on3 objects ($ob3 bytes), $hn3 hdr/, $rn3 manifest/other ($rb3 bytes). R2 reading $PROBE before the share / after it / after the rotation: $before / $shared / $after. Load average after: $(cut -d' ' -f1-3 /proc/loadavg)."
done

report=$(cat <<EOF
$table

$req_table

Every run:$notes

s3rver 3 on loopback; "rotate / seal, throughput" is seal's wall time over rotate's on the
same plaintext (above 1: rotate is faster); "CPUs busy" counts every process on the machine.
$(nproc) CPUs; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg).
EOF
)
[ -z "$KEEP_LOGS" ] || { mkdir -p "$KEEP_LOGS" && cp "$WORK"/*.out "$WORK/s3rver.log" "$KEEP_LOGS/"; }
echo "$report"
[ -z "$REPORT" ] || echo "$report" >"$REPORT"
