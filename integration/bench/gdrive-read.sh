#!/usr/bin/env bash
# Sequential first read through a Google Drive mount vs the Drive server's own raw
# download rate, in the same run, against the fake Drive server of the tests
# (tests/fake_gdrive.py, Python, on loopback).
#
# Run as root from the repository root:
#   integration/bench/gdrive-read.sh
# Environment:
#   SIZE_MIB=256   size of the random test file
#   SMALL=200      number of small random files (SMALL_KIB each) for the small-file read
#   SMALL_KIB=128  size of each small file (an MR slice is about 128 KiB)
#   REPS=3         repetitions of each measurement (every one is reported, and the median)
#   REPORT=FILE    also write the Markdown report to FILE
#   SMPFS_BIN=PATH measure that binary instead of building a release one
#
# Raw rate: `curl` downloads the whole object (`files/ID?alt=media`, one GET) from the
# fake; also reported, the rate of one `curl --parallel` fetching it as 8 MiB ranges, 8 in
# flight (the mount's request pattern, without decryption). Mount rate: `dd bs=1M` of the
# file through a fresh `smpfs mount` (remounted for every repetition, audit off), which
# fetches it as parallel ranged GETs of the pinned revision and decrypts it; the CPU time
# the daemon and the fake spend on it is reported per GiB, and how busy all CPUs were
# during the raw download and during the mount read. Target: mount >= 80% of raw.
# Small files: each repetition also reads SMALL files of SMALL_KIB with one `cat` through a
# fresh mount (which includes checking their headers), in files per second.
# Informational: exits 0 either way.
set -euo pipefail
shopt -s inherit_errexit

SIZE_MIB=${SIZE_MIB:-256}
SMALL=${SMALL:-200}
SMALL_KIB=${SMALL_KIB:-128}
REPS=${REPS:-3}
REPORT=${REPORT:-}

BENCH=gdrive-read
source integration/bench/remote-common.sh
positive SIZE_MIB "$SIZE_MIB" REPS "$REPS" SMALL "$SMALL" SMALL_KIB "$SMALL_KIB"
bench_setup
mkdir -p "$WORK/plain/small"

start_fake_drive

log "sealing a ${SIZE_MIB} MiB random file and $SMALL small ones to the fake Drive"
head -c $(( SIZE_MIB << 20 )) /dev/urandom > "$WORK/plain/data.bin"
for i in $(seq -w "$SMALL"); do
  head -c $(( SMALL_KIB << 10 )) /dev/urandom > "$WORK/plain/small/slice-$i.bin"
done
RECIPIENT=$("$SMPFS" keygen --out "$WORK/id.key" 2>/dev/null)
"$SMPFS" seal "$WORK/plain" --to "$RECIPIENT" --out "gdrive:///My Drive/bench" -o "$OPTS" >&2
admin() { curl -s -X POST -H 'Content-Type: application/json' -d '{}' "$ENDPOINT/_admin/$1"; }
ID=$(admin state | python3 -c 'import json,sys; print([e["id"] for e in json.load(sys.stdin) if e["name"]=="data.bin"][0])')
OBJECT_BYTES=$(admin state | python3 -c 'import json,sys; print([e["size"] for e in json.load(sys.stdin) if e["name"]=="data.bin"][0])')
TOKEN=$(admin token | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
PLAIN_BYTES=$(( SIZE_MIB << 20 ))

gbps() { python3 -c "print(f'{$1 / $2 / 1e9:.3f}')"; }
# CPU seconds per GiB moved, from a CPU delta and a byte count.
per_gib() { python3 -c "print(f'{($2 - $1) / ($3 / 2**30):.2f}')"; }
# curl arguments for the whole object as 8 MiB ranges, one transfer each.
RANGES=()
for ((at = 0; at < OBJECT_BYTES; at += 8 << 20)); do
  [ ${#RANGES[@]} -eq 0 ] || RANGES+=(-:)
  RANGES+=(-s -o /dev/null -H "Authorization: Bearer $TOKEN" -r "$at-$(( at + (8 << 20) - 1 ))"
    "$ENDPOINT/drive/v3/files/$ID?alt=media")
done

raw=() raw_busy=() ranged=() mount=() mount_busy=() mount_cpu=() fake_cpu=() small=()
for rep in $(seq "$REPS"); do
  ticks0=$(cpu_ticks)
  secs=$(curl -s -o /dev/null -w '%{time_total}' -H "Authorization: Bearer $TOKEN" \
    "$ENDPOINT/drive/v3/files/$ID?alt=media")
  raw_busy+=("$(busy_pct "$ticks0" "$(cpu_ticks)")")
  raw+=("$(gbps "$OBJECT_BYTES" "$secs")")
  start=$(date +%s.%N)
  curl -s --parallel --parallel-max 8 "${RANGES[@]}"
  end=$(date +%s.%N)
  ranged+=("$(gbps "$OBJECT_BYTES" "$(python3 -c "print($end - $start)")")")
  "$SMPFS" mount "gdrive:///My Drive/bench" "$MNT" -i "$WORK/id.key" -o "$OPTS,audit=off"
  DAEMON=$(pgrep -n -f -- "$MNT")
  daemon0=$(cpu_of "$DAEMON") fake0=$(cpu_of "$SERVER_PID") ticks0=$(cpu_ticks)
  start=$(date +%s.%N)
  dd if="$MNT/data.bin" of=/dev/null bs=1M status=none
  end=$(date +%s.%N)
  mount_busy+=("$(busy_pct "$ticks0" "$(cpu_ticks)")")
  mount_cpu+=("$(per_gib "$daemon0" "$(cpu_of "$DAEMON")" "$PLAIN_BYTES")")
  fake_cpu+=("$(per_gib "$fake0" "$(cpu_of "$SERVER_PID")" "$PLAIN_BYTES")")
  umount "$MNT"
  mount+=("$(gbps "$PLAIN_BYTES" "$(python3 -c "print($end - $start)")")")
  "$SMPFS" mount "gdrive:///My Drive/bench" "$MNT" -i "$WORK/id.key" -o "$OPTS,audit=off"
  start=$(date +%s.%N)
  cat "$MNT"/small/* > /dev/null
  end=$(date +%s.%N)
  umount "$MNT"
  small+=("$(python3 -c "print(f'{$SMALL / ($end - $start):.0f}')")")
  log "rep $rep: small files ${small[-1]}/s"
  log "rep $rep: raw ${raw[-1]}, 8 ranges ${ranged[-1]}, mount ${mount[-1]} GB/s" \
    "(smpfs ${mount_cpu[-1]}, fake ${fake_cpu[-1]} CPU s/GiB;" \
    "CPUs ${raw_busy[-1]}% busy during raw, ${mount_busy[-1]}% during mount)"
done
log "checking the mount's bytes once (untimed)"
"$SMPFS" mount "gdrive:///My Drive/bench" "$MNT" -i "$WORK/id.key" -o "$OPTS,audit=off"
cmp "$MNT/data.bin" "$WORK/plain/data.bin" || die "the mount returned different bytes"
[ "$(cat "$MNT"/small/* | sha256sum)" = "$(cat "$WORK"/plain/small/* | sha256sum)" ] \
  || die "the mount returned different small files"
umount "$MNT"

RAW=$(median "${raw[@]}")
RANGED=$(median "${ranged[@]}")
MOUNT=$(median "${mount[@]}")
MOUNT_CPU=$(median "${mount_cpu[@]}")
FAKE_CPU=$(median "${fake_cpu[@]}")
RATIO=$(python3 -c "print(f'{$MOUNT / $RAW:.2f}')")
VERDICT=$(python3 -c "print('PASS' if $MOUNT / $RAW >= 0.8 else 'MISS')")
report=$(cat <<EOF
| measurement (${SIZE_MIB} MiB, first read) | median GB/s | runs GB/s |
|---|---|---|
| fake Drive raw download (curl, one GET of the sealed object) | $RAW | ${raw[*]} |
| fake Drive, the object as 8 MiB ranges, 8 in flight (one curl --parallel) | $RANGED | ${ranged[*]} |
| smpfs Drive mount first read (dd bs=1M) | $MOUNT | ${mount[*]} |

CPU during the mount read, per GiB read (median): smpfs daemon $MOUNT_CPU s, fake server
$FAKE_CPU s. With $(nproc) CPUs that bounds the mount at
$(python3 -c "print(f'{$(nproc) / ($MOUNT_CPU + $FAKE_CPU) * 2**30 / 1e9:.2f}')") GB/s if it used every CPU, whatever the read path's latency.
All CPUs together were $(median "${raw_busy[@]}")% busy during the raw download and $(median "${mount_busy[@]}")% during the
mount read (medians; runs: ${raw_busy[*]} and ${mount_busy[*]}).

mount / raw = **$RATIO** (target >= 0.80): **$VERDICT**

Small files ($SMALL x $SMALL_KIB KiB, one \`cat\`, fresh mount): median $(median "${small[@]}") files/s (runs: ${small[*]}).
EOF
)
echo "$report"
[ -z "$REPORT" ] || echo "$report" > "$REPORT"
