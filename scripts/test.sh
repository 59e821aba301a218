#!/usr/bin/env bash
# scripts/test.sh - THE project test command (also what CI runs via .ci/run).
#
#   1. installs the real Litestream binaries v0.3.13 and v0.5.17 (scripts/install-litestream.sh)
#   2. starts local S3 (moto with IAM auth: signatures are checked), Azure Blob (Azurite), SFTP
#      (sshd) and GCS (gcp-storage-emulator) test servers (scripts/test-servers/start.sh) and
#      exports their env (TEST_S3_*, TEST_ABS_*, TEST_SFTP_*, TEST_GCS_*)
#   3. exports LITESTREAM_V0313_BIN / LITESTREAM_V0517_BIN (absolute paths of the real binaries),
#      after checking that their `version` reports exactly v0.3.13 / v0.5.17 (else exit 1)
#   4. runs `cargo test --workspace --all-features --locked "$@"` (extra args go to cargo test,
#      e.g. `bash scripts/test.sh -p litestream-cli --test cli fixtures_interop:: -- --nocapture`), then,
#      on a whole-workspace run (no extra args), `cargo fmt --check`, `cargo clippy -D warnings`
#      and `cargo doc` with warnings denied (SKIP_STYLE_CHECKS=1 leaves them out)
#   5. stops the test servers (always, via trap) and exits with cargo's exit status.
#
# Env knobs: SKIP_TEST_SERVERS=1 (don't start/stop the servers), TEST_SERVERS_DIR, plus those of
# scripts/test-servers/start.sh. Timings are printed to stderr.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
exec </dev/null                       # never wait for input (CI has no stdin)
export DEBIAN_FRONTEND=noninteractive PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore
export npm_config_yes=true npm_config_update_notifier=false npm_config_fund=false

T0=$(date +%s.%N)
log() { echo "[test.sh] $*" >&2; }
since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1fs", e-s}'; }

# cargo may not be on PATH in a non-login shell
if ! command -v cargo >/dev/null 2>&1; then
  # shellcheck disable=SC1091
  [ -f "${CARGO_HOME:-$HOME/.cargo}/env" ] && . "${CARGO_HOME:-$HOME/.cargo}/env"
fi
command -v cargo >/dev/null 2>&1 || { log "ERROR: cargo not found"; exit 1; }

# --- 1. real litestream binaries ---------------------------------------------------------------
t=$(date +%s.%N)
LS_ENV=$(bash "$ROOT/scripts/install-litestream.sh") || { log "ERROR: install-litestream.sh failed"; exit 1; }
eval "$LS_ENV"
export LITESTREAM_V0313_BIN LITESTREAM_V0517_BIN
[ -x "$LITESTREAM_V0313_BIN" ] && [ -x "$LITESTREAM_V0517_BIN" ] || { log "ERROR: litestream binaries missing"; exit 1; }
# The interop tests are only meaningful against these exact releases: refuse any other binary.
# (`version` prints "v0.3.13" for v0.3.13 and "0.5.17" for v0.5.17.)
check_reference() {  # check_reference VAR EXPECTED
  local bin=${!1} out
  out=$("$bin" version 2>&1) || { log "ERROR: $1=$bin: 'version' failed: $out"; exit 1; }
  [ "$out" = "$2" ] || { log "ERROR: $1=$bin reports version '$out', expected exactly '$2'"; exit 1; }
}
check_reference LITESTREAM_V0313_BIN v0.3.13
check_reference LITESTREAM_V0517_BIN 0.5.17
log "litestream binaries ready ($(since "$t")): $LITESTREAM_V0313_BIN, $LITESTREAM_V0517_BIN"

# strace: bin/litestream/tests/cli/restore_fsync_cli.rs watches restore's fsyncs with it and injects
# an fsync error. Debian's package; a missing strace fails here, loudly.
if ! command -v strace >/dev/null 2>&1; then
  log "installing strace (apt-get)"
  { apt-get update -qq && apt-get install -y -qq strace >/dev/null; } \
    || { log "ERROR: strace is missing and apt-get install strace failed"; exit 1; }
fi
command -v strace >/dev/null 2>&1 || { log "ERROR: strace not found after install"; exit 1; }

# --- 2. test servers ---------------------------------------------------------------------------
# Servers that were already running before this script (e.g. a developer's own session using the
# same .test-servers dir) are reused and left running; only the ones started here are stopped.
SERVERS_STARTED=0
TO_STOP=""
server_alive() {  # server_alive NAME: pid file exists and the process is alive
  local pf="${TEST_SERVERS_DIR:-$ROOT/.test-servers}/run/$1.pid" pid
  [ -f "$pf" ] && pid=$(cat "$pf" 2>/dev/null) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}
cleanup() {
  local rc=$?
  if [ "$SERVERS_STARTED" = 1 ]; then
    if [ -n "$TO_STOP" ]; then
      local t; t=$(date +%s.%N)
      # shellcheck disable=SC2086
      bash "$ROOT/scripts/test-servers/stop.sh" $TO_STOP || log "WARNING: stopping the test servers failed"
      log "test servers stopped:$TO_STOP ($(since "$t"))"
    else
      log "test servers were already running before; left running"
    fi
  fi
  log "total $(since "$T0"), exit $rc"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "${SKIP_TEST_SERVERS:-0}" != 1 ]; then
  t=$(date +%s.%N)
  for n in s3 abs sftp gcs; do server_alive "$n" || TO_STOP="$TO_STOP $n"; done
  SERVERS_STARTED=1   # stop whatever got started, even if start.sh fails half-way
  SRV_ENV=$(bash "$ROOT/scripts/test-servers/start.sh") || { log "ERROR: starting the test servers failed"; exit 1; }
  eval "$SRV_ENV"
  log "test servers ready ($(since "$t"))"
else
  log "SKIP_TEST_SERVERS=1: not starting test servers"
fi

# The tests run our binary, never a stand-in (LITESTREAM_TEST_OUR_BIN is a calibration knob).
unset LITESTREAM_TEST_OUR_BIN
# No fallback S3 credentials: the tests pass the test server's keys explicitly (config, builder
# or the command's own env), and moto checks signatures, so a key taken from the environment
# instead of the config would fail instead of being masked.
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE \
  LITESTREAM_ACCESS_KEY_ID LITESTREAM_SECRET_ACCESS_KEY
# litestream >= 0.5 (aws-sdk-go-v2) fails on every S3 call when AWS_CA_BUNDLE is set
unset AWS_CA_BUNDLE
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}

# --- 3. cargo test -----------------------------------------------------------------------------
# Incremental artifacts only help repeated local builds; in a one-shot run they cost GBs of disk.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
disk_free() { df -Pk "${CARGO_TARGET_DIR:-$ROOT/target}" 2>/dev/null | awk 'NR==2{printf "%.1f GiB", $4/1048576}' || true; }
mkdir -p "${CARGO_TARGET_DIR:-$ROOT/target}"
log "disk free for the build: $(disk_free)"
t=$(date +%s.%N)
log "running: cargo test --workspace --all-features --locked --no-fail-fast $*"
set +e
cargo test --workspace --all-features --locked --no-fail-fast "$@" 2>&1
rc=$?
set -e
log "cargo test finished with exit $rc ($(since "$t")); disk free: $(disk_free)"

# --- 4. style checks (whole-workspace runs only: extra arguments mean a partial run) ------------
# fmt, clippy with warnings denied, the docs with warnings denied and core without `bundled`;
# any failure fails the run.
if [ $# -eq 0 ] && [ "${SKIP_STYLE_CHECKS:-0}" != 1 ]; then
  style_rc=0
  t=$(date +%s.%N)
  cargo fmt --all -- --check 2>&1 || { log "ERROR: cargo fmt --check: code is not formatted"; style_rc=1; }
  cargo clippy --workspace --all-features --all-targets --locked -- -D warnings 2>&1 \
    || { log "ERROR: cargo clippy reported warnings"; style_rc=1; }
  RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --locked 2>&1 \
    || { log "ERROR: cargo doc reported warnings"; style_rc=1; }
  # An embedder with its own SQLite turns core's `bundled` feature off: core must still build
  # against rusqlite's bindings for a system SQLite.
  cargo check -p litestream-core --no-default-features --locked 2>&1 \
    || { log "ERROR: litestream-core does not build without its bundled feature"; style_rc=1; }
  log "style checks (fmt, clippy, doc) finished with exit $style_rc ($(since "$t"))"
  [ "$rc" != 0 ] || rc=$style_rc
fi

# --- 5. fuzz smoke run (fuzz/run.sh: a few seconds per target; SKIP_FUZZ_SMOKE=1 skips) ---------
if [ $# -eq 0 ] && [ "$rc" = 0 ] && [ "${SKIP_FUZZ_SMOKE:-0}" != 1 ]; then
  t=$(date +%s.%N)
  set +e
  bash "$ROOT/fuzz/run.sh" "${FUZZ_SMOKE_SECS:-5}"
  rc=$?
  set -e
  log "fuzz smoke run finished with exit $rc ($(since "$t"))"
fi
exit "$rc"
