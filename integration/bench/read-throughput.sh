#!/usr/bin/env bash
# Sequential read throughput: smpfs vs gocryptfs vs plain tmpfs, side by side in one run.
#
# Run as root from the repository root:
#   integration/bench/read-throughput.sh
# Environment:
#   SIZE_MIB=1024        size of the random test file
#   REPS=3               repetitions per measurement (the median is reported)
#   SMPFS_OPTS=          extra `-o` options for the measured smpfs mount (e.g. cache_size=512M)
#   KERNEL_CACHE=1       also measure first and second read with `-o kernel_cache` (0 to skip)
#   TWO_READERS=1        also read two files at once through each mount (0 to skip): the
#                        CPU-bound case, where each byte's cost shows instead of latency
#   VERIFY=1             compare what each mount returns with the plaintext once (0 to skip)
#   REPORT=FILE          also write the Markdown report to FILE
#   SMPFS_BIN=PATH       measure that binary instead of building a release one
#
# Everything (plaintext, bucket, gocryptfs cipher dir, mountpoints) lives on a dedicated tmpfs,
# so storage is out of the picture: the numbers are CPU, FUSE and copy costs. Every timed
# mount read is a first read on a fresh mount (unmounted and remounted between repetitions).
# The targets (issue #18: smpfs >= 3x gocryptfs, above raw decrypt) are informational: exit status
# is 0 whether they are met or not.
set -euo pipefail
shopt -s inherit_errexit

SIZE_MIB=${SIZE_MIB:-1024}
REPS=${REPS:-3}
SMPFS_OPTS=${SMPFS_OPTS:-}
KERNEL_CACHE=${KERNEL_CACHE:-1}
TWO_READERS=${TWO_READERS:-1}
VERIFY=${VERIFY:-1}
REPORT=${REPORT:-}
FILE=data.bin
FILE2=data2.bin
GOCRYPTFS_PW=bench-password

log() { echo "==> $*" >&2; }
die() { echo "read-throughput: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (mounts a tmpfs)"
[ -f Cargo.toml ] && grep -q '^name = "smpfs"' Cargo.toml || die "run from the smpfs repository root"
[[ "$SIZE_MIB" =~ ^[1-9][0-9]*$ ]] || die "SIZE_MIB must be a positive integer"
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive integer"

# --- dependencies -------------------------------------------------------------------------
SMPFS_BENCH=1 bash integration/install-deps.sh >&2
command -v python3 >/dev/null || die "python3 is needed for the arithmetic"

if [ -n "${SMPFS_BIN:-}" ]; then
  SMPFS=$SMPFS_BIN
else
  log "cargo build --release --bin smpfs"
  cargo build --release --bin smpfs >&2
  SMPFS=$PWD/target/release/smpfs
fi
[ -x "$SMPFS" ] || die "$SMPFS was not built"

# --- scratch tmpfs and cleanup ------------------------------------------------------------
WORK=$(mktemp -d /tmp/smpfs-bench.XXXXXX)
SMNT=$WORK/mnt-smpfs
GMNT=$WORK/mnt-gocryptfs

unmount_quietly() {
  local mnt=$1 i
  mountpoint -q "$mnt" 2>/dev/null || return 0
  umount "$mnt" 2>/dev/null || fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
  for i in $(seq 50); do mountpoint -q "$mnt" 2>/dev/null || return 0; sleep 0.1; done
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  unmount_quietly "$SMNT"
  unmount_quietly "$GMNT"
  if mountpoint -q "$WORK" 2>/dev/null; then
    umount "$WORK" 2>/dev/null || umount -l "$WORK" 2>/dev/null || true
  fi
  rm -rf "$WORK" 2>/dev/null || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# plaintext + sealed copy + gocryptfs copy (of each file), with headroom
FILES=1
[ "$TWO_READERS" = 1 ] && FILES=2
TMPFS_MIB=$(( FILES * SIZE_MIB * 7 / 2 + 256 ))
[ "$TMPFS_MIB" -ge 4096 ] || TMPFS_MIB=4096
mount -t tmpfs -o "size=${TMPFS_MIB}M,mode=0700" smpfs-bench "$WORK"
mkdir -p "$WORK/plain" "$WORK/bucket" "$WORK/gcipher" "$SMNT" "$GMNT"
BYTES=$(( SIZE_MIB * 1024 * 1024 ))

log "creating ${SIZE_MIB} MiB of random plaintext on tmpfs"
head -c "$BYTES" /dev/urandom > "$WORK/plain/$FILE"
PLAIN_FILES=("$WORK/plain/$FILE")
if [ "$TWO_READERS" = 1 ]; then
  head -c "$BYTES" /dev/urandom > "$WORK/plain/$FILE2"
  PLAIN_FILES+=("$WORK/plain/$FILE2")
fi

# --- helpers ------------------------------------------------------------------------------
now() { date +%s.%N; }

# Seconds taken by "$@" (stdout to /dev/null; stderr kept for errors).
time_cmd() {
  local t0 t1
  t0=$(now)
  "$@" > /dev/null
  t1=$(now)
  python3 -c "print(f'{$t1 - $t0:.6f}')"
}


dd_read() { dd if="$1" of=/dev/null bs=1M status=none; }

# Both files of directory $1 read at once, one dd each.
dd_read_two() {
  dd_read "$1/$FILE" &
  dd_read "$1/$FILE2"
  wait $!
}

smpfs_mount() {
  local opts=("$@")
  unmount_quietly "$SMNT"
  "$SMPFS" mount "$WORK/bucket" "$SMNT" -i "$WORK/id" "${opts[@]}"
  mountpoint -q "$SMNT" || die "smpfs mount is not live (see ~/.local/state/smpfs/smpfs.log)"
}

gocryptfs_mount() {
  unmount_quietly "$GMNT"
  gocryptfs -quiet -nosyslog -extpass "echo $GOCRYPTFS_PW" "$WORK/gcipher" "$GMNT"
  mountpoint -q "$GMNT" || die "gocryptfs mount is not live"
}

smpfs_o=()
[ -n "$SMPFS_OPTS" ] && smpfs_o=(-o "$SMPFS_OPTS")

declare -A RUNS   # label -> space-separated GB/s of every repetition

record() {  # label seconds [files read in that time]
  local rate
  rate=$(python3 -c "print(f'{${3:-1} * $BYTES / $2 / 1e9:.3f}')")
  RUNS[$1]="${RUNS[$1]:-}${RUNS[$1]:+ }$rate"
  log "  $1: $2 s = $rate GB/s"
}

measure() {  # label command...: time one run and record it
  local label=$1 secs
  shift
  secs=$(time_cmd "$@")
  record "$label" "$secs"
}

measure_two() {  # label directory: time both files read at once; records their total rate
  local secs
  secs=$(time_cmd dd_read_two "$2")
  record "$1" "$secs" 2
}

median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" $1; }

# --- setup: smpfs -------------------------------------------------------------------------
log "smpfs keygen + seal (default 64 KiB chunks)"
RECIPIENT=$("$SMPFS" keygen --out "$WORK/id" 2>/dev/null)
"$SMPFS" seal "${PLAIN_FILES[@]}" --to "$RECIPIENT" --out "$WORK/bucket" 2>&1 | tail -n 1 >&2
# A zero-knowledge (v2) bucket, the default: object names are opaque.
[ -n "$(ls -A "$WORK/bucket" 2>/dev/null)" ] || die "nothing was sealed into $WORK/bucket"

# --- setup: gocryptfs ---------------------------------------------------------------------
log "gocryptfs -init (scryptn 10) + copy plaintext in"
gocryptfs -init -quiet -scryptn 10 -extpass "echo $GOCRYPTFS_PW" "$WORK/gcipher" >/dev/null
gocryptfs_mount
cp "${PLAIN_FILES[@]}" "$GMNT/"
unmount_quietly "$GMNT"

# --- measurements -------------------------------------------------------------------------
L_TMPFS="tmpfs plaintext dd"
L_CAT="smpfs raw decrypt (cat)"
L_SMPFS="smpfs mount first read"
L_GOCRYPTFS="gocryptfs first read"
L_KC1="smpfs -o kernel_cache, first read"
L_KC2="smpfs -o kernel_cache, second read"
L_SMPFS2="smpfs mount, two readers at once (total)"
L_GOCRYPTFS2="gocryptfs, two readers at once (total)"

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
# Busy share of all CPUs over one second, measured now (after setup): other work skews results.
BUSY_BEFORE=$(python3 - <<'PY'
import time
def sample():
    f = [int(x) for x in open('/proc/stat').readline().split()[1:]]
    return sum(f), f[3] + f[4]
t0, i0 = sample(); time.sleep(1); t1, i1 = sample()
print(f"{100 * (1 - (i1 - i0) / max(t1 - t0, 1)):.0f}")
PY
)
if [ "$BUSY_BEFORE" -gt 10 ]; then
  log "warning: CPUs are ${BUSY_BEFORE}% busy before measuring; other work on this machine will skew the numbers"
fi
for rep in $(seq "$REPS"); do
  log "repetition $rep/$REPS"
  measure "$L_TMPFS" dd_read "$WORK/plain/$FILE"
  measure "$L_CAT" "$SMPFS" cat "$WORK/bucket" "$FILE" -i "$WORK/id"
  smpfs_mount "${smpfs_o[@]}"
  measure "$L_SMPFS" dd_read "$SMNT/$FILE"
  unmount_quietly "$SMNT"
  gocryptfs_mount
  measure "$L_GOCRYPTFS" dd_read "$GMNT/$FILE"
  unmount_quietly "$GMNT"
  if [ "$TWO_READERS" = 1 ]; then
    smpfs_mount "${smpfs_o[@]}"
    measure_two "$L_SMPFS2" "$SMNT"
    unmount_quietly "$SMNT"
    gocryptfs_mount
    measure_two "$L_GOCRYPTFS2" "$GMNT"
    unmount_quietly "$GMNT"
  fi
  if [ "$KERNEL_CACHE" = 1 ]; then
    smpfs_mount -o "kernel_cache${SMPFS_OPTS:+,$SMPFS_OPTS}"
    measure "$L_KC1" dd_read "$SMNT/$FILE"
    measure "$L_KC2" dd_read "$SMNT/$FILE"
    unmount_quietly "$SMNT"
  fi
done

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
VERIFIED="skipped (VERIFY=0)"
if [ "$VERIFY" = 1 ]; then
  log "verifying mount contents against the plaintext (untimed)"
  smpfs_mount "${smpfs_o[@]}"
  cmp "$WORK/plain/$FILE" "$SMNT/$FILE" || die "smpfs returned different bytes"
  unmount_quietly "$SMNT"
  gocryptfs_mount
  cmp "$WORK/plain/$FILE" "$GMNT/$FILE" || die "gocryptfs returned different bytes"
  unmount_quietly "$GMNT"
  VERIFIED="smpfs and gocryptfs mounts return the plaintext byte for byte (cmp)"
fi

# --- report -------------------------------------------------------------------------------
M_TMPFS=$(median "${RUNS[$L_TMPFS]}")
M_CAT=$(median "${RUNS[$L_CAT]}")
M_SMPFS=$(median "${RUNS[$L_SMPFS]}")
M_GOCRYPTFS=$(median "${RUNS[$L_GOCRYPTFS]}")
R_GOCRYPTFS=$(python3 -c "print(f'{$M_SMPFS / $M_GOCRYPTFS:.2f}')")
R_CAT=$(python3 -c "print(f'{$M_SMPFS / $M_CAT:.2f}')")
P_GOCRYPTFS=$(python3 -c "print('PASS' if $M_SMPFS >= 3 * $M_GOCRYPTFS else 'MISS')")
P_CAT=$(python3 -c "print('PASS' if $M_SMPFS > $M_CAT else 'MISS')")

CPU=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
row() { printf '| %s | %s | %s |\n' "$1" "$(median "${RUNS[$1]}")" "$(echo "${RUNS[$1]}" | sed 's/ /, /g')"; }

report() {
  echo "### Sequential read throughput ($SIZE_MIB MiB random file, median of $REPS, GB/s = 10^9 B/s)"
  echo
  echo "| measurement | median GB/s | all runs GB/s |"
  echo "|---|---:|---|"
  row "$L_TMPFS"
  row "$L_CAT"
  row "$L_SMPFS"
  row "$L_GOCRYPTFS"
  echo
  echo "- smpfs mount / gocryptfs: **${R_GOCRYPTFS}x** (target >= 3x): **$P_GOCRYPTFS**"
  echo "- smpfs mount / smpfs raw decrypt: **${R_CAT}** (target > 1): **$P_CAT**"
  if [ "$TWO_READERS" = 1 ]; then
    echo
    echo "Two readers at once, one file each (fresh mount, total rate):"
    echo
    echo "| measurement | median GB/s | all runs GB/s |"
    echo "|---|---:|---|"
    row "$L_SMPFS2"
    row "$L_GOCRYPTFS2"
    echo
    echo "- two readers, smpfs mount / gocryptfs: **$(python3 -c "print(f'{$(median "${RUNS[$L_SMPFS2]}") / $(median "${RUNS[$L_GOCRYPTFS2]}"):.2f}')")x**"
  fi
  if [ "$KERNEL_CACHE" = 1 ]; then
    echo
    echo "With \`-o kernel_cache\` (plaintext kept in the kernel page cache):"
    echo
    echo "| measurement | median GB/s | all runs GB/s |"
    echo "|---|---:|---|"
    row "$L_KC1"
    row "$L_KC2"
  fi
  echo
  echo "- smpfs mount options: ${SMPFS_OPTS:-defaults (cache_size=256M)}; chunk size 64 KiB; \`dd bs=1M\`"
  echo "- correctness: $VERIFIED"
  echo "- CPU: $CPU; cores: $(nproc); memory: $(free -g | awk '/^Mem:/ {print $2}') GiB"
  echo "- CPU busy just before measuring: ${BUSY_BEFORE}%; load average (1/5/15 min) before: $LOAD_BEFORE, after: $LOAD_AFTER"
  echo "- kernel: $(uname -r); gocryptfs: $(gocryptfs -version 2>/dev/null | head -n 1)"
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); smpfs: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src 2>/dev/null || echo ' (+ uncommitted changes in src/)')"
}

if [ -n "$REPORT" ]; then
  report | tee "$REPORT"
else
  report
fi
