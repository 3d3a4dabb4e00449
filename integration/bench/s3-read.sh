#!/usr/bin/env bash
# Sequential first read from an S3 bucket: smpfs vs rclone mount of an rclone crypt remote vs
# s3fs (plain, unencrypted), and the server's own raw GET rate (the limit), in one run against
# one s3rver (npm) on loopback.
#
# Run as root from the repository root:
#   integration/bench/s3-read.sh
# Environment:
#   SIZE_MIB=256   size of the random test file
#   SMALL=200      number of small random files (SMALL_KIB each) for the small-file read
#   SMALL_KIB=128  size of each small file (an MR slice is about 128 KiB)
#   REPS=3         repetitions of each measurement (every one is reported, and the median)
#   REPORT=FILE    also write the Markdown report to FILE
#   SMPFS_BIN=PATH measure that binary instead of building a release one
#
# Each repetition, in this order: the raw rate (`curl`, one GET of the sealed object, to
# /dev/null), then `dd bs=1M` of the file through a fresh mount of each peer (unmounted
# after, so nothing is cached between repetitions). smpfs runs with its defaults (audit log
# on). Every mount is checked against the plaintext with `cmp` once, untimed. The CPU time of
# the smpfs daemon and of s3rver during the smpfs read is reported per GiB. Target: smpfs
# ahead of both peers and at least 90% of the raw GET rate.
#
# Small files: each repetition also reads SMALL files of SMALL_KIB (a DICOM series) with one
# `cat` through a fresh mount of each peer; the time includes each peer's first look at the
# directory, which for smpfs checks every header. Reported in files per second.
# Informational: exits 0 either way.
set -euo pipefail
shopt -s inherit_errexit

SIZE_MIB=${SIZE_MIB:-256}
SMALL=${SMALL:-200}
SMALL_KIB=${SMALL_KIB:-128}
REPS=${REPS:-3}
REPORT=${REPORT:-}

BENCH=s3-read
source integration/bench/remote-common.sh
positive SIZE_MIB "$SIZE_MIB" REPS "$REPS" SMALL "$SMALL" SMALL_KIB "$SMALL_KIB"
need_commands rclone:rclone s3fs:s3fs
need_s3rver
bench_setup
s3_client_env S3RVER S3RVER
mkdir -p "$WORK/plain/small" "$WORK/s3rver"

BUCKET=smpfs-bench
start_s3rver "$BUCKET" --silent

log "writing a ${SIZE_MIB} MiB random file and putting it in the bucket three ways"
head -c $(( SIZE_MIB << 20 )) /dev/urandom > "$WORK/plain/data.bin"
PLAIN_BYTES=$(( SIZE_MIB << 20 ))
for i in $(seq -w "$SMALL"); do
  head -c $(( SMALL_KIB << 10 )) /dev/urandom > "$WORK/plain/small/slice-$i.bin"
done
RECIPIENT=$("$SMPFS" keygen --out "$WORK/id.key" 2>/dev/null)
SMPFS_OPTS="endpoint=$ENDPOINT,path_style"
# v1, so that the raw GET below can name the sealed object.
"$SMPFS" seal "$WORK/plain" --layout v1 --to "$RECIPIENT" --out "s3://$BUCKET/smpfs" -o "$SMPFS_OPTS" >&2

rclone_crypt_config "$BUCKET"
rclone copy "$WORK/plain" crypt: >&2
rclone copy "$WORK/plain" "s3:$BUCKET/plain" >&2
echo "S3RVER:S3RVER" > "$WORK/s3fs.passwd"
chmod 600 "$WORK/s3fs.passwd"
SEALED_BYTES=$(stat -c %s "$WORK/s3rver/$BUCKET/smpfs/data.bin._S3rver_object" 2>/dev/null \
  || curl -sI "$ENDPOINT/$BUCKET/smpfs/data.bin" | tr -d '\r' | awk 'tolower($1)=="content-length:" {print $2}')
[ -n "$SEALED_BYTES" ] || die "cannot size the sealed object"

mount_smpfs() { "$SMPFS" mount "s3://$BUCKET/smpfs" "$MNT" -i "$WORK/id.key" -o "$SMPFS_OPTS,audit=$WORK/audit.log"; }
mount_rclone() {
  rclone mount crypt: "$MNT" --daemon --read-only
  for _ in $(seq 100); do mountpoint -q "$MNT" && return; sleep 0.1; done
  die "rclone mount did not come up"
}
mount_s3fs() {
  s3fs "$BUCKET:/plain" "$MNT" -o "url=$ENDPOINT,use_path_request_style,passwd_file=$WORK/s3fs.passwd,ro"
  for _ in $(seq 100); do mountpoint -q "$MNT" && return; sleep 0.1; done
  die "s3fs did not come up"
}

# Reads every small file with one `cat` through a fresh mount made by `$1`; prints files/s.
small_read() {
  "$1"
  local start end
  start=$(date +%s.%N)
  cat "$MNT"/small/* > /dev/null
  end=$(date +%s.%N)
  unmount
  python3 -c "print(f'{$SMALL / ($end - $start):.0f}')"
}

log "checking every mount's bytes once (untimed)"
SMALL_SUM=$(cat "$WORK"/plain/small/* | sha256sum)
for m in mount_smpfs mount_rclone mount_s3fs; do
  "$m"
  cmp "$MNT/data.bin" "$WORK/plain/data.bin" || die "$m returned different bytes"
  [ "$(cat "$MNT"/small/* | sha256sum)" = "$SMALL_SUM" ] || die "$m returned different small files"
  unmount
done

raw=() raw_cpu=() smpfs=() smpfs_cpu=() server_cpu=() rclone=() s3fs=()
small_smpfs=() small_rclone=() small_s3fs=()
for rep in $(seq "$REPS"); do
  server0=$(cpu_of "$SERVER_PID")
  secs=$(curl -s -o /dev/null -w '%{time_total}' "$ENDPOINT/$BUCKET/smpfs/data.bin")
  raw+=("$(python3 -c "print(f'{$SEALED_BYTES / $secs / 1e9:.3f}')")")
  raw_cpu+=("$(per_gib "$server0" "$(cpu_of "$SERVER_PID")")")
  read -r rate client server < <(timed_read mount_smpfs)
  smpfs+=("$rate") smpfs_cpu+=("$client") server_cpu+=("$server")
  read -r rate _ _ < <(timed_read mount_rclone)
  rclone+=("$rate")
  read -r rate _ _ < <(timed_read mount_s3fs)
  s3fs+=("$rate")
  small_smpfs+=("$(small_read mount_smpfs)")
  small_rclone+=("$(small_read mount_rclone)")
  small_s3fs+=("$(small_read mount_s3fs)")
  log "rep $rep: small files/s: smpfs ${small_smpfs[-1]}, rclone crypt ${small_rclone[-1]}, s3fs ${small_s3fs[-1]}"
  log "rep $rep: raw ${raw[-1]}, smpfs ${smpfs[-1]}, rclone crypt ${rclone[-1]}, s3fs ${s3fs[-1]} GB/s;" \
    "CPU s/GiB: smpfs ${smpfs_cpu[-1]}, s3rver ${server_cpu[-1]} (${raw_cpu[-1]} for the raw GET)"
done

RAW=$(median "${raw[@]}")
SMPFS_MED=$(median "${smpfs[@]}")
RCLONE=$(median "${rclone[@]}")
S3FS=$(median "${s3fs[@]}")
SMPFS_CPU=$(median "${smpfs_cpu[@]}")
SERVER_CPU=$(median "${server_cpu[@]}")
RAW_CPU=$(median "${raw_cpu[@]}")
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
verdict() { python3 -c "print('PASS' if $1 else 'MISS')"; }
report=$(cat <<EOF
| measurement (${SIZE_MIB} MiB, first read, s3rver on loopback) | median GB/s | runs GB/s |
|---|---|---|
| s3rver raw GET (curl, one GET of the sealed object) | $RAW | ${raw[*]} |
| smpfs mount (sealed, AES-256-GCM-SIV, audit on) | $SMPFS_MED | ${smpfs[*]} |
| rclone mount of a crypt remote | $RCLONE | ${rclone[*]} |
| s3fs (plain, unencrypted) | $S3FS | ${s3fs[*]} |

| target | measured | result |
|---|---|---|
| smpfs >= 90% of the raw GET rate | **$(ratio "$SMPFS_MED" "$RAW")** of raw | **$(verdict "$SMPFS_MED >= 0.9 * $RAW")** |
| smpfs ahead of rclone crypt | **$(ratio "$SMPFS_MED" "$RCLONE")x** | **$(verdict "$SMPFS_MED > $RCLONE")** |
| smpfs ahead of s3fs | **$(ratio "$SMPFS_MED" "$S3FS")x** | **$(verdict "$SMPFS_MED > $S3FS")** |

| small files ($SMALL x $SMALL_KIB KiB, one \`cat\`, fresh mount) | median files/s | runs files/s |
|---|---|---|
| smpfs | $(median "${small_smpfs[@]}") | ${small_smpfs[*]} |
| rclone mount of a crypt remote | $(median "${small_rclone[@]}") | ${small_rclone[*]} |
| s3fs (plain, unencrypted) | $(median "${small_s3fs[@]}") | ${small_s3fs[*]} |

CPU per GiB read (medians): during the smpfs read, smpfs $SMPFS_CPU s and s3rver $SERVER_CPU s;
s3rver $RAW_CPU s during the raw GET. With $(nproc) CPUs that bounds the smpfs read at
$(python3 -c "print(f'{$(nproc) / ($SMPFS_CPU + $SERVER_CPU) * 2**30 / 1e9:.2f}')") GB/s if it used every CPU.
EOF
)
echo "$report"
[ -z "$REPORT" ] || echo "$report" > "$REPORT"
