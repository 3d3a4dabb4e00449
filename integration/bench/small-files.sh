#!/usr/bin/env bash
# Many small files: files per second for open + read + close of every file of a tree of
# FILES files of KIB KiB (a DICOM series is many ~100 KiB slices), through a fresh mount of
# each reader, in one run:
#   local: smpfs over a local-directory bucket vs gocryptfs (both in one scratch directory,
#          warm in the page cache after setup);
#   S3 (s3rver on loopback): smpfs vs rclone crypt (`rclone mount`, no VFS cache).
#
# Run as root from the repository root:
#   integration/bench/small-files.sh
# Environment:
#   FILES=10000 KIB=100  the tree (100 files per directory)
#   REPS=2               repetitions (medians; every value is reported)
#   REPORT=FILE          also write the Markdown report to FILE
#   SMPFS_BIN=PATH       measure that binary instead of building a release one
#
# A pass is one `find | xargs cat > /dev/null` over the mount (one reader process at a time,
# files in directory order), timed from the fresh mount's first lookup to the last byte, so
# each reader's directory listing and per-file header checks are included. smpfs runs with
# its defaults (audit log on). Informational: exits 0 either way.
set -euo pipefail
shopt -s inherit_errexit

FILES=${FILES:-10000}
KIB=${KIB:-100}
REPS=${REPS:-2}
REPORT=${REPORT:-}

BENCH=small-files
source integration/bench/remote-common.sh
positive FILES "$FILES" KIB "$KIB" REPS "$REPS"
need_commands rclone:rclone gocryptfs:gocryptfs
need_s3rver
bench_setup
s3_client_env S3RVER S3RVER
BUCKET=smpfs-small
FS=$WORK
start_s3rver "$BUCKET" --silent

log "writing $FILES files of $KIB KiB"
mkdir -p "$FS/plain"
python3 - "$FS/plain" "$FILES" "$KIB" <<'PY'
import os, sys
root, files, kib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(files):
    d = os.path.join(root, f"series-{i // 100:04d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"slice-{i % 100:03d}.dcm"), "wb") as f:
        f.write(os.urandom(kib << 10))
PY
RECIPIENT=$("$SMPFS" keygen --out "$WORK/id.key" 2>/dev/null)
"$SMPFS" seal "$FS/plain" --to "$RECIPIENT" --out "$FS/bucket" -i "$WORK/id.key" >&2
"$SMPFS" seal "$FS/plain" --to "$RECIPIENT" --out "s3://$BUCKET/smpfs" -i "$WORK/id.key" -o "endpoint=$ENDPOINT,path_style" >&2
GOCRYPTFS_PW=bench-password
mkdir -p "$FS/gcipher"
gocryptfs -init -quiet -scryptn 10 -extpass "echo $GOCRYPTFS_PW" "$FS/gcipher" >/dev/null
gocryptfs -quiet -nosyslog -extpass "echo $GOCRYPTFS_PW" "$FS/gcipher" "$MNT"
cp -r "$FS/plain/." "$MNT/"
umount "$MNT"
rclone_crypt_config "$BUCKET"
rclone copy "$FS/plain" crypt: --transfers 16 >&2

pass() {
  local start end
  start=$(date +%s.%N)
  (cd "$MNT" && find . -type f -print0 | xargs -0 cat > /dev/null)
  end=$(date +%s.%N)
  python3 -c "print(round($FILES / ($end - $start)))"
}
wait_mounted() {
  for _ in $(seq 100); do mountpoint -q "$MNT" && return 0; sleep 0.1; done
  die "$1 did not mount"
}

declare -A RATE
for rep in $(seq "$REPS"); do
  log "repetition $rep of $REPS"
  "$SMPFS" mount "$FS/bucket" "$MNT" -i "$WORK/id.key" -o "audit=$WORK/audit.log"
  RATE[smpfs-local]+=" $(pass)"; unmount
  gocryptfs -quiet -nosyslog -extpass "echo $GOCRYPTFS_PW" "$FS/gcipher" "$MNT"
  RATE[gocryptfs]+=" $(pass)"; unmount
  "$SMPFS" mount "s3://$BUCKET/smpfs" "$MNT" -i "$WORK/id.key" -o "endpoint=$ENDPOINT,path_style,audit=$WORK/audit.log"
  RATE[smpfs-s3]+=" $(pass)"; unmount
  rclone mount crypt: "$MNT" --daemon --read-only
  wait_mounted rclone
  RATE[rclone]+=" $(pass)"; unmount
done

med() { median ${RATE[$1]}; }
{
  echo "Small files: $FILES files of $KIB KiB, open + read + close each (find | xargs cat), fresh mount per pass, $(date -u +'%Y-%m-%d %H:%M UTC'), $REPS repetitions, medians in files/s (every value in brackets)."
  echo
  echo "| store | smpfs | peer | smpfs / peer |"
  echo "|---|---:|---:|---:|"
  echo "| local: smpfs vs gocryptfs | $(med smpfs-local) [${RATE[smpfs-local]# }] | $(med gocryptfs) [${RATE[gocryptfs]# }] | $(python3 -c "print(round($(med smpfs-local) / $(med gocryptfs), 2))") |"
  echo "| S3 (s3rver, loopback): smpfs vs rclone crypt | $(med smpfs-s3) [${RATE[smpfs-s3]# }] | $(med rclone) [${RATE[rclone]# }] | $(python3 -c "print(round($(med smpfs-s3) / $(med rclone), 2))") |"
} | tee "${REPORT:-/dev/null}"
