#!/usr/bin/env bash
# Sequential first read through a Dropbox mount vs the Dropbox server's own raw download
# rate, in the same run, against the fake Dropbox server of the tests
# (tests/fake_dropbox.py, Python, on loopback, one port for the api and content hosts).
#
# Run as root from the repository root:
#   integration/bench/dropbox-read.sh
# Environment:
#   SIZE_MIB=256   size of the random test file
#   REPS=3         repetitions of each measurement (every one is reported, and the median)
#   REPORT=FILE    also write the Markdown report to FILE
#   SMPFS_BIN=PATH measure that binary instead of building a release one
#
# Raw rate: `curl` downloads the whole sealed object (`files/download` of its `rev:`, one
# request) from the fake; also reported, one `curl --parallel` fetching it as 8 MiB ranges,
# 8 in flight (the mount's request pattern, without decryption). Mount rate: `dd bs=1M` of
# the file through a fresh `smpfs mount` (remounted for every repetition, audit off), which
# fetches it as parallel ranged downloads of the pinned revision and decrypts it. The CPU
# time the daemon and the fake spend per GiB is reported. Target: mount >= 90% of raw.
# Informational: exits 0 either way.
set -euo pipefail
shopt -s inherit_errexit

SIZE_MIB=${SIZE_MIB:-256}
REPS=${REPS:-3}
REPORT=${REPORT:-}

BENCH=dropbox-read
source integration/bench/remote-common.sh
positive SIZE_MIB "$SIZE_MIB" REPS "$REPS"
bench_setup
mkdir -p "$WORK/plain"

log "starting the fake Dropbox server"
python3 tests/fake_dropbox.py --port "$PORT" 2>"$WORK/fake.log" &
SERVER_PID=$!
wait_for_server "the fake Dropbox server" "$WORK/fake.log"
admin() { curl -s -X POST -H 'Content-Type: application/json' -d '{}' "$ENDPOINT/_admin/$1"; }
admin token | python3 -c '
import json, sys
t = json.load(sys.stdin)
print(json.dumps({"app_key": "test-app", "refresh_token": t["refresh_token"],
                  "access_token": t["access_token"], "expires_at": 4000000000}))' > "$WORK/token.json"
chmod 600 "$WORK/token.json"
TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["access_token"])' "$WORK/token.json")
OPTS="dropbox_endpoint=$ENDPOINT,dropbox_token=$WORK/token.json"

log "sealing a ${SIZE_MIB} MiB random file to the fake Dropbox"
head -c $(( SIZE_MIB << 20 )) /dev/urandom > "$WORK/plain/data.bin"
RECIPIENT=$("$SMPFS" keygen --out "$WORK/id.key" 2>/dev/null)
"$SMPFS" seal "$WORK/plain" --to "$RECIPIENT" --out "dropbox:///bench" -o "$OPTS" >&2
# The sealed object of data.bin: the largest file (a v2 bucket's names are opaque).
read -r REV OBJECT_BYTES < <(admin state | python3 -c '
import json, sys
f = max(json.load(sys.stdin), key=lambda e: e["size"])
print(f["rev"], f["size"])')
PLAIN_BYTES=$(( SIZE_MIB << 20 ))
ARG="{\"path\": \"rev:$REV\"}"

gbps() { python3 -c "print(f'{$1 / $2 / 1e9:.3f}')"; }
per_gib() { python3 -c "print(f'{($2 - $1) / ($3 / 2**30):.2f}')"; }
RANGES=()
for ((at = 0; at < OBJECT_BYTES; at += 8 << 20)); do
  [ ${#RANGES[@]} -eq 0 ] || RANGES+=(-:)
  RANGES+=(-s -o /dev/null -X POST -H "Authorization: Bearer $TOKEN" -H "Dropbox-API-Arg: $ARG"
    -r "$at-$(( at + (8 << 20) - 1 ))" "$ENDPOINT/2/files/download")
done

raw=() raw_busy=() ranged=() mount=() mount_busy=() mount_cpu=() fake_cpu=()
for rep in $(seq "$REPS"); do
  ticks0=$(cpu_ticks)
  secs=$(curl -s -o /dev/null -w '%{time_total}' -X POST -H "Authorization: Bearer $TOKEN" \
    -H "Dropbox-API-Arg: $ARG" "$ENDPOINT/2/files/download")
  raw_busy+=("$(busy_pct "$ticks0" "$(cpu_ticks)")")
  raw+=("$(gbps "$OBJECT_BYTES" "$secs")")
  start=$(date +%s.%N)
  curl -s --parallel --parallel-max 8 "${RANGES[@]}"
  end=$(date +%s.%N)
  ranged+=("$(gbps "$OBJECT_BYTES" "$(python3 -c "print($end - $start)")")")
  "$SMPFS" mount "dropbox:///bench" "$MNT" -i "$WORK/id.key" -o "$OPTS,audit=off"
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
  log "rep $rep: raw ${raw[-1]}, 8 ranges ${ranged[-1]}, mount ${mount[-1]} GB/s" \
    "(smpfs ${mount_cpu[-1]}, fake ${fake_cpu[-1]} CPU s/GiB;" \
    "CPUs ${raw_busy[-1]}% busy during raw, ${mount_busy[-1]}% during mount)"
done
log "checking the mount's bytes once (untimed)"
"$SMPFS" mount "dropbox:///bench" "$MNT" -i "$WORK/id.key" -o "$OPTS,audit=off"
cmp "$MNT/data.bin" "$WORK/plain/data.bin" || die "the mount returned different bytes"
umount "$MNT"

RAW=$(median "${raw[@]}")
RANGED=$(median "${ranged[@]}")
MOUNT=$(median "${mount[@]}")
RATIO=$(python3 -c "print(f'{$MOUNT / $RAW:.2f}')")
VERDICT=$(python3 -c "print('PASS' if $MOUNT / $RAW >= 0.9 else 'MISS')")
report=$(cat <<REPORT_EOF
| measurement (${SIZE_MIB} MiB, first read) | median GB/s | runs GB/s |
|---|---|---|
| fake Dropbox raw download (curl, one files/download of the sealed object) | $RAW | ${raw[*]} |
| fake Dropbox, the object as 8 MiB ranges, 8 in flight (one curl --parallel) | $RANGED | ${ranged[*]} |
| smpfs Dropbox mount first read (dd bs=1M) | $MOUNT | ${mount[*]} |

CPU per GiB read during the mount read (median): smpfs daemon $(median "${mount_cpu[@]}") s,
fake server $(median "${fake_cpu[@]}") s ($(nproc) CPUs). All CPUs together were
$(median "${raw_busy[@]}")% busy during the raw download and $(median "${mount_busy[@]}")% during the mount read
(medians; runs: ${raw_busy[*]} and ${mount_busy[*]}). mount / 8 ranges =
$(python3 -c "print(f'{$MOUNT / $RANGED:.2f}')").

mount / raw = **$RATIO** (target >= 0.90): **$VERDICT**
REPORT_EOF
)
echo "$report"
[ -z "$REPORT" ] || echo "$report" > "$REPORT"
