#!/usr/bin/env bash
# Zero-knowledge (v2) buckets against v1 buckets and an rclone crypt remote, in one run
# against one s3rver (npm) on loopback: seal throughput (v2 includes the manifest update),
# mount time, mount + full tree walk, and the cost of `smpfs refresh` when nothing changed.
#
# Run as root from the repository root:
#   integration/bench/zk-mount.sh
# Environment:
#   COUNTS="1000 10000 100000"  file counts, each in a tree PATIENT/STUDY/FILE (1000 files
#                  per patient, 100 per study, one of them directly in the patient's
#                  directory), FILE_KIB of random bytes each
#   FILE_KIB=2     size of each file
#   RCLONE_MAX=N   skip the rclone crypt peer for counts above N (default: no limit)
#   REPS=3         repetitions of each mount measurement (every one is reported, and the median)
#   REFRESHES=20   `smpfs refresh` calls timed per count
#   REPORT=FILE    also write the Markdown report to FILE
#   SMPFS_BIN=PATH measure that binary instead of building a release one
#   KEEP_LOGS=DIR  copy the smpfs daemon logs and the seal output there; the daemon's info
#                  lines time its steps (manifest read, cache locked, mount is live).
#                  SMPFS_LOG=debug is passed on, but logs every S3 request and slows
#                  sealing and the v1 walk
#
# For each count: the tree is sealed into a v1 prefix (`--layout v1`: one object per file
# under its path) and a v2 prefix (opaque object names plus a sealed manifest; the time
# includes writing the manifest), and copied to an rclone crypt remote on the same bucket
# (`rclone copy --transfers 16`). Then REPS times, each through a fresh mount: the time from
# starting the mount until `ls MNT` returns ("mount"), and until a following `ls -R MNT`
# returns too ("mount + walk", cumulative, same mount; the walk is checked to see every
# file). smpfs mounts with audit=off and its defaults otherwise; rclone mounts --read-only
# with its defaults. The v1 mount lists the whole prefix before it answers; the v2 mount reads
# the manifest; rclone lists each directory when it is first looked at. s3rver logs each
# request, so the requests each step made are counted from its log (at rep 1). Then one v2
# mount (refresh=0, so no timer refresh interferes) times REFRESHES `smpfs refresh` calls
# with the manifest unchanged and counts their requests. boto3's paginated ListObjectsV2 of
# the v1 prefix is the server's own listing rate, for scale.
# s3rver 3.7 answers a ListObjectsV2 with delimiter `/` only with the "directories" that
# hold an object directly (its directory walk stops one level below the prefix), so a
# PATIENT/ holding only STUDY/ directories would be invisible to smpfs v1 (which lists the
# first level with more than one directory with a delimiter) and to rclone (which lists
# every directory with one); hence the file in each patient's directory.
# The default counts take about 25 minutes on a 2-vCPU VM (at 100 000 files: three uploads
# of 3–4 minutes each and a v1 walk of about 1.5 minutes per repetition).
# Target: a v2 mount of 100 000 files in under 2 s. Informational: exits 0 either way.
set -euo pipefail
shopt -s inherit_errexit

COUNTS=${COUNTS:-1000 10000 100000}
FILE_KIB=${FILE_KIB:-2}
RCLONE_MAX=${RCLONE_MAX:-}
REPS=${REPS:-3}
REFRESHES=${REFRESHES:-20}
REPORT=${REPORT:-}
KEEP_LOGS=${KEEP_LOGS:-}

BENCH=zk-mount
source integration/bench/remote-common.sh
positive REPS "$REPS" REFRESHES "$REFRESHES" FILE_KIB "$FILE_KIB"
for n in $COUNTS; do positive COUNTS "$n"; done
[ -z "$RCLONE_MAX" ] || positive RCLONE_MAX "$RCLONE_MAX"
need_commands rclone:rclone
need_s3rver
python3 -c 'import boto3' 2>/dev/null || die "boto3 is missing (integration/install-deps.sh installs it with moto)"
bench_setup
s3_client_env S3RVER S3RVER
export SMPFS_STATE_DIR=$WORK/state
mkdir -p "$WORK/s3rver" "$SMPFS_STATE_DIR"
[ -z "$KEEP_LOGS" ] || mkdir -p "$KEEP_LOGS"

BUCKET=smpfs-zk-bench
# Not --silent: its log has a line per response, which counts the requests.
start_s3rver "$BUCKET"

RECIPIENT=$("$SMPFS" keygen --out "$WORK/id.key" 2>/dev/null)
[ -n "$RECIPIENT" ] || die "keygen failed"
S3_OPTS="endpoint=$ENDPOINT,path_style"
rclone_crypt_config "$BUCKET"

now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }
secs() { calc "f'{$2 - $1:.3f}'"; }
ratio() { calc "f'{$1 / $2:.2f}' if $2 > 0 else '-'"; }
# Responses s3rver has logged so far ("info: …URL STATUS TIMEms SIZE"; the method is cut off).
requests_now() { grep -cE ' [1-5][0-9]{2} [0-9.]+m?s ' "$WORK/s3rver.log" || true; }
requests() {
  sleep 0.3 # let the last responses reach the log
  requests_now
}
since() { echo $(( $(requests) - $1 )); }
unmount() {
  if [ "$1" = rclone ]; then umount "$MNT"; else "$SMPFS" purge "$MNT" >/dev/null; fi
  for _ in $(seq 100); do mountpoint -q "$MNT" || return 0; sleep 0.1; done
  die "$MNT is still mounted"
}
# Mounts peer $1 (v1, v2, rclone) of the current count; returns once it is mounted.
mount_peer() {
  case "$1" in
    v1 | v2)
      "$SMPFS" mount "s3://$BUCKET/n$N-$1" "$MNT" -i "$WORK/id.key" \
        -o "$S3_OPTS,audit=off${2:+,$2}" --log-file "$WORK/mount-n$N-$1.log" 2>"$WORK/mount.err" \
        || die "smpfs mount of n$N-$1 failed: $(cat "$WORK/mount.err")"
      ;;
    rclone)
      rclone mount "crypt:n$N" "$MNT" --daemon --read-only 2>"$WORK/mount.err" \
        || die "rclone mount failed: $(cat "$WORK/mount.err")"
      for _ in $(seq 600); do mountpoint -q "$MNT" && return; sleep 0.05; done
      die "rclone mount did not come up"
      ;;
  esac
}
# One fresh mount of peer $1: prints the seconds until `ls` of the root returned, the
# seconds until `ls -R` returned too, and the requests each part made.
mount_and_walk() {
  local r0 r1 r2 start t1 t1b t2 roots entries
  r0=$(requests)
  start=$(now)
  mount_peer "$1"
  roots=$(ls "$MNT" | wc -l)
  t1=$(now)
  r1=$(requests_now) # no pause here: it would give background work free time
  t1b=$(now)
  entries=$(ls -R "$MNT" | awk 'NF && !/:$/' | wc -l)
  t2=$(now)
  r2=$(requests)
  [ "$roots" = "$PATIENTS" ] || die "$1 shows $roots entries at the root of n$N, not $PATIENTS"
  [ "$entries" = "$((N + PATIENTS + STUDIES))" ] || die "$1 walked $entries entries of n$N, not $((N + PATIENTS + STUDIES))"
  unmount "$1"
  echo "$(secs "$start" "$t1") $(calc "f'{$t1 - $start + $t2 - $t1b:.3f}'") $((r1 - r0)) $((r2 - r1))"
}

table=$(cat <<EOF
| files | measurement | smpfs v2 | smpfs v1 | rclone crypt | v1 / v2 | rclone / v2 |
|---|---|---|---|---|---|---|
EOF
)
refresh_table=$(cat <<EOF
| files | \`smpfs refresh\`, manifest unchanged: median ms | min–max ms | s3rver requests per refresh | its answer |
|---|---|---|---|---|
EOF
)
steps_table=$(cat <<EOF
| files | v2 mount + \`ls\`, s | daemon: reading the manifest, ms | building the tree, locking the cache, ms | on to the live mount, ms |
|---|---|---|---|---|
EOF
)
runs=""
verdict=""
for N in $COUNTS; do
  PATIENTS=$(( (N + 999) / 1000 ))
  STUDIES=$(( (N + 99) / 100 ))
  MIB=$(calc "$N * $FILE_KIB / 1024")
  with_rclone=1
  [ -z "$RCLONE_MAX" ] || [ "$N" -le "$RCLONE_MAX" ] || with_rclone=0
  PLAIN=$WORK/plain-$N
  log "n=$N: writing $N files of $FILE_KIB KiB"
  python3 - "$PLAIN" "$N" "$FILE_KIB" <<'EOF'
import os, sys
root, count, kib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(count):
    patient = os.path.join(root, f"p{i // 1000:04d}")
    if i % 1000 == 0:  # one file directly in the patient's directory (see the header)
        os.makedirs(patient, exist_ok=True)
        path = os.path.join(patient, "patient.bin")
    else:
        os.makedirs(os.path.join(patient, f"s{i // 100 % 10}"), exist_ok=True)
        path = os.path.join(patient, f"s{i // 100 % 10}", f"f{i % 100:02d}.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(kib << 10))
EOF

  # Sealing / uploading: wall time of the whole command, files/s and plaintext MiB/s.
  declare -A put_secs=() put_reqs=()
  for layout in v1 v2; do
    log "n=$N: smpfs seal --layout $layout"
    r0=$(requests)
    start=$(now)
    "$SMPFS" seal "$PLAIN" -i "$WORK/id.key" --layout "$layout" --out "s3://$BUCKET/n$N-$layout" \
      -o "$S3_OPTS" >"$WORK/seal-n$N-$layout.out" 2>&1 \
      || die "seal $layout failed: $(tail -5 "$WORK/seal-n$N-$layout.out")"
    put_secs[$layout]=$(secs "$start" "$(now)")
    put_reqs[$layout]=$(since "$r0")
    log "n=$N: $(tail -1 "$WORK/seal-n$N-$layout.out") (${put_secs[$layout]} s wall, ${put_reqs[$layout]} requests)"
  done
  if [ "$with_rclone" = 1 ]; then
    log "n=$N: rclone copy --transfers 16 to the crypt remote"
    r0=$(requests)
    start=$(now)
    rclone copy --transfers 16 "$PLAIN" "crypt:n$N" 2>"$WORK/rclone-copy.err" \
      || die "rclone copy failed: $(tail -5 "$WORK/rclone-copy.err")"
    put_secs[rclone]=$(secs "$start" "$(now)")
    put_reqs[rclone]=$(since "$r0")
    log "n=$N: rclone copy ${put_secs[rclone]} s, ${put_reqs[rclone]} requests"
  fi
  rm -rf "$PLAIN"

  raw=$(python3 - "$ENDPOINT" "$BUCKET" "n$N-v1/" "$N" <<'EOF'
import sys, time
import boto3
endpoint, bucket, prefix, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s3 = boto3.client("s3", endpoint_url=endpoint)
start = time.monotonic()
seen = sum(len(page.get("Contents", []))
           for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix))
took = time.monotonic() - start
assert seen == count, (seen, count)
print(f"{took:.3f}")
EOF
)
  log "n=$N: boto3 lists the v1 prefix in $raw s"

  peers="v2 v1"
  [ "$with_rclone" = 0 ] || peers="v2 v1 rclone"
  declare -A mnt=() walk=() mreq=() wreq=()
  for rep in $(seq "$REPS"); do
    for p in $peers; do
      read -r m w rm rw < <(mount_and_walk "$p") || true
      [ -n "${rw:-}" ] || die "n=$N: the $p mount failed (see above)"
      mnt[$p]="${mnt[$p]:-} $m" walk[$p]="${walk[$p]:-} $w"
      [ "$rep" != 1 ] || mreq[$p]=$rm wreq[$p]=$rw
      [ -z "$KEEP_LOGS" ] || [ "$p" = rclone ] || cp "$WORK/mount-n$N-$p.log" "$KEEP_LOGS/"
      log "n=$N rep $rep: $p mount $m s, + walk $w s (requests: $rm to mount, $rw to walk)"
    done
  done

  # Where a v2 mount's time goes, from the daemon's log lines (medians over the mounts
  # above): from its first line to "manifest read", to "cache locked", to "mount is live".
  steps=$(python3 - "$WORK/mount-n$N-v2.log" <<'EOF'
import datetime, statistics, sys
marks = {"audit=off": 0, "manifest read": 1, "cache locked": 2, "mount is live": 3}
runs, run = [], None
for line in open(sys.argv[1], errors="replace"):
    step = next((v for k, v in marks.items() if k in line), None)
    if step is None:
        continue
    when = datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
    if step == 0:
        run = [when]
        runs.append(run)
    elif run is not None and len(run) == step:
        run.append(when)
runs = [r for r in runs if len(r) == 4]
ms = lambda a, b: f"{statistics.median(r[b] - r[a] for r in runs) * 1000:.0f}"
print(f"{ms(0, 1)} {ms(1, 2)} {ms(2, 3)}" if runs else "- - -")
EOF
)
  read -r step_manifest step_cache step_live <<<"$steps"
  log "n=$N: v2 mount steps (daemon log, ms): manifest $step_manifest, cache lock $step_cache, live $step_live"

  log "n=$N: $REFRESHES x smpfs refresh on an unchanged v2 mount"
  mount_peer v2 refresh=0
  ls "$MNT" >/dev/null
  answer=$("$SMPFS" refresh "$MNT" 2>&1) || die "refresh failed: $answer"
  answer=$(echo "$answer" | tail -1 | sed 's/^.*: manifest generation/manifest generation/')
  r0=$(requests)
  refresh=()
  for _ in $(seq "$REFRESHES"); do
    start=$(now)
    "$SMPFS" refresh "$MNT" >/dev/null 2>&1 || die "refresh failed"
    refresh+=("$(calc "f'{($(now) - $start) * 1000:.1f}'")")
  done
  rreq=$(calc "f'{$(since "$r0") / $REFRESHES:g}'")
  unmount v2
  [ -z "$KEEP_LOGS" ] || cp "$WORK"/seal-n"$N"-*.out "$WORK/mount-n$N-v2.log" "$KEEP_LOGS/"
  sorted=$(printf '%s\n' "${refresh[@]}" | sort -g)
  refresh_table+=$'\n'"| $N | $(median "${refresh[@]}") | $(head -1 <<<"$sorted")–$(tail -1 <<<"$sorted") | $rreq | $answer |"

  med() { if [ -n "${1:-}" ]; then median $1; else echo -; fi; }
  row() { # label, v2, v1, rclone (medians or -)
    local r1=- r2=-
    [ "$3" = - ] || r1=$(ratio "$3" "$2")
    [ "$4" = - ] || r2=$(ratio "$4" "$2")
    table+=$'\n'"| $N | $1 | $2 | $3 | $4 | $r1 | $r2 |"
  }
  M2=$(med "${mnt[v2]}") M1=$(med "${mnt[v1]}") MR=$(med "${mnt[rclone]:-}")
  W2=$(med "${walk[v2]}") W1=$(med "${walk[v1]}") WR=$(med "${walk[rclone]:-}")
  row "mount + \`ls\` of the root, s (median of $REPS)" "$M2" "$M1" "$MR"
  row "mount + \`ls\` + \`ls -R\`, s (median of $REPS)" "$W2" "$W1" "$WR"
  steps_table+=$'\n'"| $N | $M2 | $step_manifest | $step_cache | $step_live |"
  row "requests to mount + \`ls\`" "${mreq[v2]}" "${mreq[v1]}" "${mreq[rclone]:--}"
  row "requests for the \`ls -R\`" "${wreq[v2]}" "${wreq[v1]}" "${wreq[rclone]:--}"
  fps() { if [ -n "${put_secs[$1]:-}" ]; then calc "f'{$N / ${put_secs[$1]}:.0f}'"; else echo -; fi; }
  mibps() { if [ -n "${put_secs[$1]:-}" ]; then calc "f'{$MIB / ${put_secs[$1]}:.2f}'"; else echo -; fi; }
  # Throughputs: the ratio columns are still "other / v2", so below 1 means v2 is faster.
  row "seal (smpfs) / \`rclone copy\`: files/s" "$(fps v2)" "$(fps v1)" "$(fps rclone)"
  row "seal / copy: plaintext MiB/s" "$(mibps v2)" "$(mibps v1)" "$(mibps rclone)"
  row "seal / copy: wall s" "${put_secs[v2]}" "${put_secs[v1]}" "${put_secs[rclone]:--}"
  row "seal / copy: requests" "${put_reqs[v2]}" "${put_reqs[v1]}" "${put_reqs[rclone]:--}"
  runs+=$'\n'"- $N files: mount s: v2${mnt[v2]}; v1${mnt[v1]}; rclone${mnt[rclone]:- -}. mount + walk s: v2${walk[v2]}; v1${walk[v1]}; rclone${walk[rclone]:- -}. boto3 ListObjectsV2 of the v1 prefix ($(( (N + 999) / 1000 )) pages): $raw s. Load average after: $(cut -d' ' -f1-3 /proc/loadavg)."
  if [ "$N" -ge 100000 ]; then
    verdict+=$'\n'"Target, v2 mount of $N files under 2 s: **$M2 s, $(calc "'PASS' if $M2 < 2 else 'MISS'")**"
  fi
  unset put_secs put_reqs mnt walk mreq wreq
done

report=$(cat <<EOF
$table

$refresh_table

$steps_table

Every run:$runs
$verdict

s3rver 3 on loopback, files of $FILE_KIB KiB in PATIENT/STUDY/FILE (1000 per patient, 100 per
study, one in the patient's directory); $(nproc) CPUs; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg).
EOF
)
echo "$report"
[ -z "$REPORT" ] || echo "$report" > "$REPORT"
