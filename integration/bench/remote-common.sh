# Shared by the remote-backend benchmarks (s3-read.sh, s3-list.sh, gdrive-read.sh,
# gdrive-list.sh); source it after setting BENCH (the script's name, for messages). It
# checks that it runs as root from the repository root, installs the test dependencies, and
# provides the helpers below.
# bench_setup then sets SMPFS (the binary measured: $SMPFS_BIN, or a fresh release build),
# WORK (a scratch directory), MNT (a mount point in it), PORT (a free loopback port),
# ENDPOINT (http://127.0.0.1:PORT) and a cleanup on exit that unmounts MNT, kills SERVER_PID
# (set it when starting the server) and removes WORK.

log() { echo "==> $*" >&2; }
die() { echo "$BENCH: $*" >&2; exit 1; }

# Exits unless every argument is a positive integer: `positive NAME VALUE ...`.
positive() {
  while [ $# -gt 0 ]; do
    [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer"
    shift 2
  done
}

# The median of the arguments (the mean of the middle two for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# CPU seconds (user + system) process $1 has used so far.
cpu_of() { awk -v tck="$(getconf CLK_TCK)" '{printf "%.3f\n", ($14 + $15) / tck}' "/proc/$1/stat"; }

# Unmounts $MNT and waits until it is gone.
unmount() {
  umount "$MNT"
  for _ in $(seq 100); do mountpoint -q "$MNT" || return 0; sleep 0.1; done
  die "$MNT is still mounted"
}
# CPU seconds per GiB of a $PLAIN_BYTES read, from a CPU delta.
per_gib() { python3 -c "print(f'{($2 - $1) / ($PLAIN_BYTES / 2**30):.2f}')"; }
# Reads $MNT/data.bin ($PLAIN_BYTES) through a fresh mount made by `$1`; prints GB/s, then the CPU seconds per
# GiB the mount's process (the newest one naming the mount point) and the server ($SERVER_PID) spent.
timed_read() {
  "$1"
  local start end client client0 server0
  client=$(pgrep -n -f -- "$MNT")
  client0=$(cpu_of "$client") server0=$(cpu_of "$SERVER_PID")
  start=$(date +%s.%N)
  dd if="$MNT/data.bin" of=/dev/null bs=1M status=none
  end=$(date +%s.%N)
  echo "$(python3 -c "print(f'{$PLAIN_BYTES / ($end - $start) / 1e9:.3f}')")" \
    "$(per_gib "$client0" "$(cpu_of "$client")")" "$(per_gib "$server0" "$(cpu_of "$SERVER_PID")")"
  unmount
}

# Idle and total jiffies of all CPUs so far, as "IDLE TOTAL" (/proc/stat, idle + iowait).
cpu_ticks() { awk '/^cpu / {print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
# Percent of all CPUs busy between two cpu_ticks readings: `busy_pct "$before" "$after"`.
busy_pct() {
  python3 -c "i0, t0 = map(int, '$1'.split()); i1, t1 = map(int, '$2'.split()); print(round(100 - 100 * (i1 - i0) / max(t1 - t0, 1)))"
}

# Installs the Debian packages of the given commands that are missing: `need_commands PKG:CMD ...`.
need_commands() {
  local missing=() pkg_cmd
  for pkg_cmd in "$@"; do
    command -v "${pkg_cmd#*:}" >/dev/null 2>&1 || missing+=("${pkg_cmd%%:*}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

bench_setup() {
  if [ -n "${SMPFS_BIN:-}" ]; then
    SMPFS=$SMPFS_BIN
  else
    log "cargo build --release --bin smpfs"
    cargo build --release --bin smpfs >&2
    SMPFS=$PWD/target/release/smpfs
  fi
  WORK=$(mktemp -d "/tmp/smpfs-$BENCH.XXXXXX")
  MNT=$WORK/mnt
  mkdir -p "$MNT"
  SERVER_PID=
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  ENDPOINT=http://127.0.0.1:$PORT
}

bench_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if mountpoint -q "$MNT" 2>/dev/null; then umount "$MNT" 2>/dev/null || umount -l "$MNT" || true; fi
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  rm -rf "$WORK"
  exit "$rc"
}

# Waits up to 10 s for ENDPOINT to answer HTTP; `wait_for_server WHAT LOG`.
wait_for_server() {
  for _ in $(seq 100); do curl -s -o /dev/null "$ENDPOINT/" && return 0; sleep 0.1; done
  die "$1 did not start: $(cat "$2" 2>/dev/null)"
}

# Installs s3rver 3 (npm) into target/bench-tools the first time; sets TOOLS.
need_s3rver() {
  need_commands npm:npm
  TOOLS=$PWD/target/bench-tools
  if [ ! -x "$TOOLS/node_modules/.bin/s3rver" ]; then
    log "npm install s3rver@3 (into $TOOLS)"
    mkdir -p "$TOOLS"
    (cd "$TOOLS" && npm install --silent --no-audit --no-fund s3rver@3 >/dev/null)
  fi
}

# Starts s3rver on PORT with bucket $1, storing in WORK/s3rver and logging to
# WORK/s3rver.log (one line per response unless $2 is --silent); sets SERVER_PID. The
# legacy provider: s3rver makes listing continuation tokens with DES, which Node's
# OpenSSL 3 refuses without it, so any listing longer than one page fails (FACTS.md).
start_s3rver() {
  mkdir -p "$WORK/s3rver"
  NODE_OPTIONS=--openssl-legacy-provider "$TOOLS/node_modules/.bin/s3rver" -d "$WORK/s3rver" \
    -a 127.0.0.1 -p "$PORT" --configure-bucket "$1" ${2:-} >"$WORK/s3rver.log" 2>&1 &
  SERVER_PID=$!
  wait_for_server s3rver "$WORK/s3rver.log"
}

# Writes an rclone config (exported as RCLONE_CONFIG) with remote `s3:` on the loopback
# s3rver and remote `crypt:` over `s3:$1/crypt`.
rclone_crypt_config() {
  export RCLONE_CONFIG=$WORK/rclone.conf
  cat > "$RCLONE_CONFIG" <<EOF
[s3]
type = s3
provider = Other
access_key_id = S3RVER
secret_access_key = S3RVER
endpoint = $ENDPOINT
force_path_style = true

[crypt]
type = crypt
remote = s3:$1/crypt
password = $(rclone obscure bench-password)
password2 = $(rclone obscure bench-salt)
EOF
}

# Starts the tests' fake Drive server on PORT (sets SERVER_PID), waits for its
# service-account key, and sets OPTS to the smpfs `-o` options that reach it.
start_fake_drive() {
  python3 tests/fake_gdrive.py --port "$PORT" --key-out "$WORK/sa.json" 2>"$WORK/fake.log" &
  SERVER_PID=$!
  wait_for_server "the fake Drive server" "$WORK/fake.log"
  for _ in $(seq 100); do [ -s "$WORK/sa.json" ] && break; sleep 0.1; done
  OPTS="gdrive_endpoint=$ENDPOINT,gdrive_credentials=$WORK/sa.json"
}

# Clients of the loopback S3 servers: plain-http endpoints, static keys, no instance
# metadata. The workplace's CA settings break plain-http endpoints for some clients
# (FACTS.md). `s3_client_env KEY_ID SECRET`.
s3_client_env() {
  unset AWS_CA_BUNDLE AWS_PROFILE AWS_ENDPOINT_URL AWS_SESSION_TOKEN
  export AWS_ACCESS_KEY_ID=$1 AWS_SECRET_ACCESS_KEY=$2 AWS_REGION=us-east-1
  export AWS_EC2_METADATA_DISABLED=true
}

[ "$(id -u)" = 0 ] || die "run as root (mounts FUSE)"
[ -f Cargo.toml ] && grep -q '^name = "smpfs"' Cargo.toml || die "run from the smpfs repository root"
bash integration/install-deps.sh >&2
need_commands curl:curl
