#!/usr/bin/env bash
# Sequential first read from an Azure Blob container: smpfs vs rclone mount of an rclone
# crypt remote over rclone's azureblob remote, and the emulator's own raw GET rate (the
# limit), in one run against one Azurite (npm) on loopback.
#
# Run as root from the repository root:
#   integration/bench/azure-read.sh
# Environment:
#   SIZE_MIB=256   size of the random test file
#   REPS=3         repetitions of each measurement (every one is reported, and the median)
#   REPORT=FILE    also write the Markdown report to FILE
#   SMPFS_BIN=PATH measure that binary instead of building a release one
#
# Each repetition, in this order: the raw rates (`curl`, one GET of the sealed blob to
# /dev/null, and the blob in 8 MiB ranged GETs, 8 at a time, the pattern smpfs's
# read-ahead uses; the container allows anonymous reads of blobs so curl needs no
# signature), then `dd bs=1M` of the file through a fresh mount of each peer (unmounted after, so
# nothing is cached between repetitions). smpfs runs with its defaults (audit log on).
# Every mount is checked against the plaintext with `cmp` once, untimed. Target: smpfs
# ahead of rclone crypt and at least 90% of the raw GET rate. Informational: exits 0
# either way.
set -euo pipefail
shopt -s inherit_errexit

SIZE_MIB=${SIZE_MIB:-256}
REPS=${REPS:-3}
REPORT=${REPORT:-}

BENCH=azure-read
source integration/bench/remote-common.sh
positive SIZE_MIB "$SIZE_MIB" REPS "$REPS"
need_commands rclone:rclone
command -v azurite-blob >/dev/null || die "azurite-blob is missing (integration/install-deps.sh installs it)"
bench_setup
mkdir -p "$WORK/plain" "$WORK/azurite"

ACCOUNT=devstoreaccount1
CONTAINER=smpfs-bench
AZ_ENDPOINT=$ENDPOINT/$ACCOUNT
export AZURE_STORAGE_KEY=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==
unset AZURE_STORAGE_CONNECTION_STRING AZURE_STORAGE_SAS_TOKEN AZURE_CLIENT_ID AZURE_TENANT_ID

azurite-blob --blobHost 127.0.0.1 --blobPort "$PORT" --location "$WORK/azurite" --silent \
  --skipApiVersionCheck --disableTelemetry >"$WORK/azurite.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do curl -s -o /dev/null "$ENDPOINT/" && break; sleep 0.1; done

# rclone 1.60's emulator mode needs the endpoint spelled out to reach a port other than 10000.
export RCLONE_CONFIG=$WORK/rclone.conf
cat > "$RCLONE_CONFIG" <<EOF
[az]
type = azureblob
use_emulator = true
endpoint = $AZ_ENDPOINT
public_access = blob

[crypt]
type = crypt
remote = az:$CONTAINER/crypt
password = $(rclone obscure bench-password)
password2 = $(rclone obscure bench-salt)
EOF
rclone mkdir "az:$CONTAINER" >&2

log "writing a ${SIZE_MIB} MiB random file and putting it in the container two ways"
head -c $(( SIZE_MIB << 20 )) /dev/urandom > "$WORK/plain/data.bin"
PLAIN_BYTES=$(( SIZE_MIB << 20 ))
RECIPIENT=$("$SMPFS" keygen --out "$WORK/id.key" 2>/dev/null)
SOURCE=az://$ACCOUNT/$CONTAINER/smpfs
SMPFS_OPTS="endpoint=$AZ_ENDPOINT"
"$SMPFS" seal "$WORK/plain" --layout v1 --to "$RECIPIENT" --out "$SOURCE" -o "$SMPFS_OPTS" >&2
rclone copy "$WORK/plain" crypt: >&2
BLOB_URL=$AZ_ENDPOINT/$CONTAINER/smpfs/data.bin
SEALED_BYTES=$(curl -sI "$BLOB_URL" | tr -d '\r' | awk 'tolower($1)=="content-length:" {print $2}')
[ -n "$SEALED_BYTES" ] || die "cannot size the sealed blob (anonymous HEAD of $BLOB_URL failed)"

mount_smpfs() { "$SMPFS" mount "$SOURCE" "$MNT" -i "$WORK/id.key" -o "$SMPFS_OPTS,audit=$WORK/audit.log"; }
mount_rclone() {
  rclone mount crypt: "$MNT" --daemon --read-only
  for _ in $(seq 100); do mountpoint -q "$MNT" && return; sleep 0.1; done
  die "rclone mount did not come up"
}

log "checking every mount's bytes once (untimed)"
for m in mount_smpfs mount_rclone; do
  "$m"
  cmp "$MNT/data.bin" "$WORK/plain/data.bin" || die "$m returned different bytes"
  unmount
done

# The sealed blob in 8 MiB ranges, 8 curls at a time; prints seconds.
ranged_get() {
  local start end
  start=$(date +%s.%N)
  seq 0 $(( (SEALED_BYTES - 1) / (8 << 20) )) | xargs -P 8 -I{} sh -c \
    'curl -sf -o /dev/null -r $(( {} * 8388608 ))-$(( {} * 8388608 + 8388607 )) "$0"' "$BLOB_URL"
  end=$(date +%s.%N)
  python3 -c "print($end - $start)"
}

raw=() ranged=() smpfs=() smpfs_cpu=() server_cpu=() rclone=()
for rep in $(seq "$REPS"); do
  secs=$(curl -s -o /dev/null -w '%{time_total}' "$BLOB_URL")
  raw+=("$(python3 -c "print(f'{$SEALED_BYTES / $secs / 1e9:.3f}')")")
  secs=$(ranged_get)
  ranged+=("$(python3 -c "print(f'{$SEALED_BYTES / $secs / 1e9:.3f}')")")
  read -r rate client server < <(timed_read mount_smpfs)
  smpfs+=("$rate") smpfs_cpu+=("$client") server_cpu+=("$server")
  read -r rate _ _ < <(timed_read mount_rclone)
  rclone+=("$rate")
  log "rep $rep: raw ${raw[-1]}, ranged ${ranged[-1]}, smpfs ${smpfs[-1]}, rclone crypt ${rclone[-1]} GB/s;" \
    "CPU s/GiB: smpfs ${smpfs_cpu[-1]}, Azurite ${server_cpu[-1]}"
done

RAW=$(median "${raw[@]}")
RANGED=$(median "${ranged[@]}")
SMPFS_MED=$(median "${smpfs[@]}")
RCLONE=$(median "${rclone[@]}")
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
verdict() { python3 -c "print('PASS' if $1 else 'MISS')"; }
report=$(cat <<EOF
| measurement (${SIZE_MIB} MiB, first read, Azurite on loopback) | median GB/s | runs GB/s |
|---|---|---|
| Azurite raw GET (curl, one GET of the sealed blob) | $RAW | ${raw[*]} |
| Azurite raw ranged GETs (curl, 8 MiB ranges, 8 at a time) | $RANGED | ${ranged[*]} |
| smpfs mount (sealed, AES-256-GCM-SIV, audit on) | $SMPFS_MED | ${smpfs[*]} |
| rclone mount of a crypt remote over azureblob | $RCLONE | ${rclone[*]} |

| target | measured | result |
|---|---|---|
| smpfs >= 90% of the raw GET rate | **$(ratio "$SMPFS_MED" "$RAW")** of raw | **$(verdict "$SMPFS_MED >= 0.9 * $RAW")** |
| smpfs >= 90% of the raw ranged-GET rate | **$(ratio "$SMPFS_MED" "$RANGED")** of ranged | **$(verdict "$SMPFS_MED >= 0.9 * $RANGED")** |
| smpfs ahead of rclone crypt | **$(ratio "$SMPFS_MED" "$RCLONE")x** | **$(verdict "$SMPFS_MED > $RCLONE")** |

CPU per GiB read (medians): during the smpfs read, smpfs $(median "${smpfs_cpu[@]}") s and Azurite
$(median "${server_cpu[@]}") s ($(nproc) CPUs).
EOF
)
echo "$report"
[ -z "$REPORT" ] || echo "$report" > "$REPORT"
