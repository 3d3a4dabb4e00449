#!/usr/bin/env bash
# Mount time of a large S3 bucket: `smpfs mount` (which lists the whole prefix before it
# answers) against the server's own paginated ListObjectsV2 (boto3), a per-directory walk
# with delimiter `/` (what a lazy listing would cost to see everything) and rclone's
# recursive listing (`rclone lsf -R --fast-list`), in one run against one S3 server on
# loopback: moto, or s3s-fs (which serves a directory tree, so a large bucket is made in
# seconds, without one PUT per object).
#
# Run as root from the repository root:
#   integration/bench/s3-list.sh
# Environment:
#   OBJECTS=10000  objects to create, in a tree PATIENT/STUDY/FILE of 100 files per study
#   SERVER=moto    or s3s-fs (built with cargo into target/bench-tools the first time)
#   REPS=3         repetitions of each measurement (every one is reported, and the median)
#   REPORT=FILE    also write the Markdown report to FILE
#   SMPFS_BIN=PATH measure that binary instead of building a release one
#
# The objects are tiny and not sealed: mounting lists them and builds the tree, and the
# headers of a directory's files are read only when that directory is first looked up, so
# the timed `smpfs mount` + `ls` of the root measures exactly the listing and the tree.
# Informational: exits 0 either way.
set -euo pipefail
shopt -s inherit_errexit

OBJECTS=${OBJECTS:-10000}
SERVER=${SERVER:-moto}
REPS=${REPS:-3}
REPORT=${REPORT:-}

BENCH=s3-list
source integration/bench/remote-common.sh
positive OBJECTS "$OBJECTS" REPS "$REPS"
need_commands rclone:rclone
bench_setup
s3_client_env bench bench

BUCKET=smpfs-list-bench
KEYS_PY='keys = [f"scans/p{i // 1000:04d}/s{i // 100 % 10}/f{i % 100:02d}.dcm" for i in range(count)]'
case "$SERVER" in
  moto)
    moto_server -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
    SERVER_PID=$!
    wait_for_server moto_server "$WORK/moto.log"
    log "putting $OBJECTS objects (16 in flight)"
    python3 - "$ENDPOINT" "$BUCKET" "$OBJECTS" <<EOF
import concurrent.futures, sys
import boto3
from botocore.config import Config
endpoint, bucket, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(max_pool_connections=16))
s3.create_bucket(Bucket=bucket)
$KEYS_PY
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    for _ in pool.map(lambda key: s3.put_object(Bucket=bucket, Key=key, Body=b"x"), keys):
        pass
EOF
    ;;
  s3s-fs)
    TOOLS=$PWD/target/bench-tools
    if [ ! -x "$TOOLS/bin/s3s-fs" ]; then
      log "cargo install s3s-fs 0.14.1 (into $TOOLS, a few minutes the first time)"
      cargo install --quiet s3s-fs --version 0.14.1 --locked --features binary --root "$TOOLS" >&2
    fi
    log "writing $OBJECTS objects into the served directory"
    python3 - "$WORK/s3s-fs/$BUCKET" "$OBJECTS" <<EOF
import os, sys
root, count = sys.argv[1], int(sys.argv[2])
$KEYS_PY
for key in keys:
    path = os.path.join(root, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"x")
EOF
    "$TOOLS/bin/s3s-fs" --host 127.0.0.1 --port "$PORT" --access-key bench --secret-key bench \
      "$WORK/s3s-fs" >"$WORK/s3s-fs.log" 2>&1 &
    SERVER_PID=$!
    wait_for_server s3s-fs "$WORK/s3s-fs.log"
    ;;
  *) die "SERVER must be moto or s3s-fs" ;;
esac

RECIPIENT=$("$SMPFS" keygen --out "$WORK/id.key" 2>/dev/null)
[ -n "$RECIPIENT" ] || die "keygen failed"
export RCLONE_CONFIG=$WORK/rclone.conf
cat > "$RCLONE_CONFIG" <<EOF
[s3]
type = s3
provider = Other
access_key_id = bench
secret_access_key = bench
endpoint = $ENDPOINT
force_path_style = true
EOF

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }
# Seconds for boto3 to page through the prefix; checks the count.
raw_list() {
  python3 - "$ENDPOINT" "$BUCKET" "$OBJECTS" <<'EOF'
import sys, time
import boto3
endpoint, bucket, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
s3 = boto3.client("s3", endpoint_url=endpoint)
start = time.monotonic()
seen = sum(len(page.get("Contents", []))
           for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="scans/"))
took = time.monotonic() - start
assert seen == count, (seen, count)
print(f"{took:.2f}")
EOF
}
# Seconds for a per-directory walk (delimiter `/`, 8 requests in flight, as a lazy
# per-directory listing would issue them); prints the seconds and the request count.
walk_list() {
  python3 - "$ENDPOINT" "$BUCKET" "$OBJECTS" <<'EOF'
import concurrent.futures, sys, time
import boto3
from botocore.config import Config
endpoint, bucket, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(max_pool_connections=8))
def one_dir(prefix):
    files, dirs, requests = 0, [], 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        requests += 1
        files += len(page.get("Contents", []))
        dirs += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    return files, dirs, requests
start = time.monotonic()
seen, requests, level = 0, 0, ["scans/"]
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    while level:
        next_level = []
        for files, dirs, n in pool.map(one_dir, level):
            seen, requests = seen + files, requests + n
            next_level += dirs
        level = next_level
took = time.monotonic() - start
assert seen == count, (seen, count)
print(f"{took:.2f} {requests}")
EOF
}
rclone_list() {
  local start end n
  start=$(now)
  n=$(rclone lsf -R --fast-list --files-only "s3:$BUCKET/scans" | wc -l)
  end=$(now)
  [ "$n" = "$OBJECTS" ] || die "rclone listed $n objects, not $OBJECTS"
  elapsed "$start" "$end"
}
smpfs_mount() {
  local start end n
  start=$(now)
  "$SMPFS" mount "s3://$BUCKET/scans" "$MNT" -i "$WORK/id.key" \
    -o "endpoint=$ENDPOINT,path_style,audit=off" 2>"$WORK/mount.err" \
    || die "smpfs mount failed: $(cat "$WORK/mount.err")"
  n=$(ls "$MNT" | wc -l)
  end=$(now)
  umount "$MNT"
  [ "$n" = "$(( (OBJECTS + 999) / 1000 ))" ] || die "the mount's root holds $n entries"
  elapsed "$start" "$end"
}

raw=() walk=() rclone=() smpfs=()
for rep in $(seq "$REPS"); do
  raw+=("$(raw_list)")
  read -r secs WALK_REQUESTS < <(walk_list)
  walk+=("$secs")
  # s3s-fs answers rclone's HEAD of the prefix and its empty `delimiter=` wrongly.
  if [ "$SERVER" = moto ]; then rclone+=("$(rclone_list)"); else rclone+=(0); fi
  smpfs+=("$(smpfs_mount)")
  log "rep $rep: boto3 ${raw[-1]} s, walk ${walk[-1]} s, rclone ${rclone[-1]} s, smpfs mount ${smpfs[-1]} s"
done

RAW=$(median "${raw[@]}")
WALK=$(median "${walk[@]}")
RCLONE=$(median "${rclone[@]}")
SMPFS_MED=$(median "${smpfs[@]}")
PAGES=$(( (OBJECTS + 999) / 1000 ))
report=$(cat <<EOF
| measurement ($OBJECTS objects, $PAGES pages of 1000, $SERVER on loopback) | median s | runs s |
|---|---|---|
| boto3 paginated ListObjectsV2 (the server's own rate; $PAGES requests) | $RAW | ${raw[*]} |
| boto3 per-directory walk, delimiter \`/\`, 8 in flight ($WALK_REQUESTS requests) | $WALK | ${walk[*]} |
$([ "$SERVER" = moto ] && echo "| rclone lsf -R --fast-list | $RCLONE | ${rclone[*]} |")
| smpfs mount + ls of the root | $SMPFS_MED | ${smpfs[*]} |

smpfs mount / raw listing: **$(python3 -c "print(f'{$SMPFS_MED / $RAW:.2f}')")**
EOF
)
echo "$report"
[ -z "$REPORT" ] || echo "$report" > "$REPORT"
