#!/usr/bin/env bash
# Installs smpfs as a mount type: /usr/local/bin/smpfs and /sbin/mount.smpfs (a link to it;
# the binary acts as the mount(8) helper when called by that name), with shell completions
# and man pages under PREFIX/share. Installs fuse3 if it is missing. Idempotent: run it again after an update. Run as root from the repository.
#   SMPFS_BIN=path/to/smpfs  install that binary instead of building a release one
#   PREFIX=/usr/local        where bin/smpfs goes
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=${PREFIX:-/usr/local}
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }

if ! command -v fusermount3 >/dev/null; then
  echo "==> apt-get install fuse3"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fuse3 >/dev/null
fi

bin=${SMPFS_BIN:-}
if [ -z "$bin" ]; then
  echo "==> cargo build --release"
  cargo build --quiet --release --bin smpfs --manifest-path "$repo/Cargo.toml"
  bin="$repo/target/release/smpfs"
fi
install -D -m 0755 "$bin" "$prefix/bin/smpfs"
ln -sfn "$prefix/bin/smpfs" /sbin/mount.smpfs
echo "installed $prefix/bin/smpfs and /sbin/mount.smpfs -> $prefix/bin/smpfs"

# Shell completions and man pages, from the binary itself.
share="$prefix/share"
install -d "$share/bash-completion/completions" "$share/zsh/site-functions" \
  "$share/fish/vendor_completions.d" "$share/man/man1"
"$prefix/bin/smpfs" completions bash > "$share/bash-completion/completions/smpfs"
"$prefix/bin/smpfs" completions zsh > "$share/zsh/site-functions/_smpfs"
"$prefix/bin/smpfs" completions fish > "$share/fish/vendor_completions.d/smpfs.fish"
"$prefix/bin/smpfs" manpages "$share/man/man1"
echo "installed completions (bash, zsh, fish) and man pages under $share"

# systemd units: smpfs@NAME mounts what /etc/smpfs/NAME.env (or, for the user unit,
# ~/.config/smpfs/NAME.env) names.
units="$repo/mount-helper/systemd"
install -d /etc/systemd/system /etc/systemd/user /etc/smpfs
sed "s|/usr/local/bin/smpfs|$prefix/bin/smpfs|" "$units/smpfs@.service" > /etc/systemd/system/smpfs@.service
sed "s|/usr/local/bin/smpfs|$prefix/bin/smpfs|" "$units/user/smpfs@.service" > /etc/systemd/user/smpfs@.service
install -m 0644 "$units/smpfs.env.example" /etc/smpfs/smpfs.env.example
if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
echo "installed systemd units smpfs@.service (system and user); see /etc/smpfs/smpfs.env.example"
"$prefix/bin/smpfs" --version
