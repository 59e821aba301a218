#!/usr/bin/env bash
# benches/restore.sh - restore benchmark: our `litestream restore` vs. the real Litestream v0.3.13,
# on file:// replicas written by the real v0.3.13 `replicate`. Run on demand (not in CI).
#
#   bash benches/restore.sh [--runs N] [--scenarios a,b,a-age] [--regen] [--segments N] [--json FILE]
#
# Environment:
#   CARGO_TARGET_DIR       where cargo builds (default: <repo>/target); our binary is $CARGO_TARGET_DIR/release/litestream
#   LITESTREAM_V0313_BIN   the real v0.3.13 binary (default: .tools/litestream-0.3.13/bin/litestream,
#                          installed with scripts/install-litestream.sh if missing)
#   BENCH_DIR              work dir with the cached replicas and scratch outputs (default /tmp/litestream-bench)
#   BENCH_SKIP_BUILD=1     use the existing release binary as is
#
# See benches/README.md for what is measured and the latest results.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
log() { echo "[restore-bench] $*" >&2; }

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OURS=$TARGET_DIR/release/litestream
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building release binary (cargo build --release -p litestream-cli, target dir $TARGET_DIR)"
  cargo build --release -p litestream-cli >&2
fi
[ -x "$OURS" ] || { log "ERROR: $OURS not found"; exit 1; }

THEIRS=${LITESTREAM_V0313_BIN:-$ROOT/.tools/litestream-0.3.13/bin/litestream}
if [ ! -x "$THEIRS" ]; then
  log "real Litestream v0.3.13 not found at $THEIRS; installing"
  eval "$(bash "$ROOT/scripts/install-litestream.sh")"
  THEIRS=$LITESTREAM_V0313_BIN
fi
[ "$("$THEIRS" version 2>&1)" = v0.3.13 ] || { log "ERROR: $THEIRS is not Litestream v0.3.13"; exit 1; }

if [ ! -x /usr/bin/time ]; then
  log "/usr/bin/time missing; installing the Debian 'time' package"
  if [ "$(id -u)" = 0 ]; then apt-get install -y time >&2 || { apt-get update >&2 && apt-get install -y time >&2; }
  else sudo apt-get install -y time >&2; fi
fi
command -v python3 >/dev/null || { log "ERROR: python3 required"; exit 1; }

log "ours:   $OURS"
log "theirs: $THEIRS"
exec python3 "$ROOT/benches/bench_restore.py" --ours "$OURS" --theirs "$THEIRS" \
  --dir "${BENCH_DIR:-/tmp/litestream-bench}" "$@"
