#!/usr/bin/env bash
# Epoch after epoch over a dataset larger than the locked RAM cache, from S3 (s3rver on
# loopback), in one run: smpfs without and with `-o disk_cache=`, rclone crypt mounted with
# `--vfs-cache-mode full` (which keeps plaintext on disk), and smpfs over a local-directory
# bucket holding the same sealed objects (the target for epoch 2).
#
# Run as root from the repository root:
#   integration/bench/epochs.sh
# Environment:
#   CACHE_MIB=64   smpfs's locked RAM cache (cache_size=); the dataset is 4x it
#   FILES=32       files in the dataset (random bytes, CACHE_MIB*4/FILES MiB each)
#   REPS=2         repetitions (each with fresh mounts and an empty disk cache); medians
#   REPORT=FILE    also write the Markdown report to FILE
#   SMPFS_BIN=PATH measure that binary instead of building a release one
#
# An epoch is one `cat` of every file to /dev/null through the mount, timed. Epoch 1 and
# epoch 2 run on the same mount, one after the other. After epoch 2 of the disk-cache
# mount its daemon's VmRSS and VmLck are read, and `smpfs status` gives the cache's hits
# and misses. Informational: exits 0 either way.
set -euo pipefail
shopt -s inherit_errexit

CACHE_MIB=${CACHE_MIB:-64}
FILES=${FILES:-32}
REPS=${REPS:-2}
REPORT=${REPORT:-}

BENCH=epochs
source integration/bench/remote-common.sh
positive CACHE_MIB "$CACHE_MIB" FILES "$FILES" REPS "$REPS"
need_commands rclone:rclone
need_s3rver
bench_setup
s3_client_env S3RVER S3RVER
DATA_MIB=$(( CACHE_MIB * 4 ))
FILE_KIB=$(( DATA_MIB * 1024 / FILES ))
BUCKET=smpfs-epochs
start_s3rver "$BUCKET" --silent

log "writing $FILES files of $FILE_KIB KiB ($DATA_MIB MiB) and storing them three ways"
mkdir -p "$WORK/plain"
for i in $(seq -w "$FILES"); do
  head -c $(( FILE_KIB << 10 )) /dev/urandom > "$WORK/plain/part-$i.bin"
done
RECIPIENT=$("$SMPFS" keygen --out "$WORK/id.key" 2>/dev/null)
SMPFS_OPTS="endpoint=$ENDPOINT,path_style,cache_size=${CACHE_MIB}M"
"$SMPFS" seal "$WORK/plain" --to "$RECIPIENT" --out "s3://$BUCKET/smpfs" -o "endpoint=$ENDPOINT,path_style" >&2
"$SMPFS" seal "$WORK/plain" --to "$RECIPIENT" --out "$WORK/local" >&2
rclone_crypt_config "$BUCKET"
rclone copy "$WORK/plain" crypt: >&2

epoch() {
  local start end
  start=$(date +%s.%N)
  cat "$MNT"/*.bin > /dev/null
  end=$(date +%s.%N)
  python3 -c "print(round($DATA_MIB / ($end - $start), 1))"
}
daemon_pid() { "$SMPFS" status "$MNT" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])'; }

declare -A RATE
RSS=() LCK=() HITS=() MISSES=()
for rep in $(seq "$REPS"); do
  log "repetition $rep of $REPS"
  "$SMPFS" mount "s3://$BUCKET/smpfs" "$MNT" -i "$WORK/id.key" -o "$SMPFS_OPTS,audit=$WORK/audit.log"
  RATE[s3,1]+=" $(epoch)"; RATE[s3,2]+=" $(epoch)"
  unmount

  rm -rf "$WORK/dcache"
  "$SMPFS" mount "s3://$BUCKET/smpfs" "$MNT" -i "$WORK/id.key" \
    -o "$SMPFS_OPTS,audit=$WORK/audit.log,disk_cache=$WORK/dcache"
  RATE[disk,1]+=" $(epoch)"; RATE[disk,2]+=" $(epoch)"
  pid=$(daemon_pid)
  RSS+=("$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")")
  LCK+=("$(awk '/^VmLck/ {print $2}' "/proc/$pid/status")")
  stats=$("$SMPFS" status "$MNT" --json)
  HITS+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["disk_cache"]["hits"])' "$stats")")
  MISSES+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["disk_cache"]["misses"])' "$stats")")
  unmount

  rm -rf "$WORK/rclone-cache"
  rclone mount crypt: "$MNT" --daemon --read-only --vfs-cache-mode full \
    --cache-dir "$WORK/rclone-cache" --vfs-cache-max-size "$(( DATA_MIB * 2 ))M"
  for _ in $(seq 100); do mountpoint -q "$MNT" && break; sleep 0.1; done
  RATE[rclone,1]+=" $(epoch)"; RATE[rclone,2]+=" $(epoch)"
  unmount

  "$SMPFS" mount "$WORK/local" "$MNT" -i "$WORK/id.key" -o "cache_size=${CACHE_MIB}M,audit=$WORK/audit.log"
  RATE[local,1]+=" $(epoch)"; RATE[local,2]+=" $(epoch)"
  unmount
done

med() { median ${RATE[$1]}; }
LOCAL2=$(med local,2)
{
  echo "Epochs over $DATA_MIB MiB ($FILES files) with a ${CACHE_MIB} MiB RAM cache, $(date -u +'%Y-%m-%d %H:%M UTC'), $REPS repetitions, medians (MiB/s; every value in brackets)."
  echo
  echo "| reader | epoch 1 | epoch 2 | epoch 2 / local epoch 2 |"
  echo "|---|---:|---:|---:|"
  for peer in "s3:smpfs, S3, no disk cache" "disk:smpfs, S3, disk_cache" "rclone:rclone crypt, --vfs-cache-mode full (plaintext on disk)" "local:smpfs, local-directory bucket"; do
    key=${peer%%:*} name=${peer#*:}
    e1=$(med "$key,1") e2=$(med "$key,2")
    ratio=$(python3 -c "print(round($e2 / $LOCAL2, 2))")
    echo "| $name | $e1 [${RATE[$key,1]# }] | $e2 [${RATE[$key,2]# }] | $ratio |"
  done
  echo
  echo "smpfs with disk_cache after epoch 2: VmRSS $(median "${RSS[@]}") KiB, VmLck $(median "${LCK[@]}") KiB; disk cache hits ${HITS[*]}, misses ${MISSES[*]} (per repetition)."
} | tee "${REPORT:-/dev/null}"
