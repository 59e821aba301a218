#!/usr/bin/env bash
# benches/cost.sh - what `litestream replicate` costs: our binary vs. the real Litestream v0.3.13,
# same run, same machine, one tool at a time. Run on demand (never in CI). See benches/README.md.
#
#   bash benches/cost.sh [--runs R] [--seconds N] [--scale-dbs N] [--only load|latency|scale]
#
# 1. load: a python3 writer commits one ~3 KB random blob per transaction as fast as it can for
#    N s (default 6) against a file:// replica with default intervals. Per tool: the replicator's
#    CPU seconds (utime+stime from /proc/PID/stat over the writer's run plus 1 s), peak RSS
#    (VmHWM), rchar/wchar (/proc/PID/io), and the writer's commits vs. an unreplicated run
#    (the mean of one before and one after the replicated runs).
# 2. latency: the same load with monitor-interval 10ms and sync-interval 10ms; a poller lists the
#    replica's wal tree every 2 ms. A commit's latency bound = the SECOND new segment seen after
#    the commit (the first may come from a sync that began before it; replication is one sync at a
#    time per database, so the second one began after it). p50/p99 per tool.
# 3. scale: N databases (default 1000) in one directory, each written once, one `dbs:` entry each:
#    time until every one has a generation, RSS then, CPU over 10 idle seconds, SIGINT-to-exit time.
#
# Environment: LITESTREAM_OURS_BIN (default $CARGO_TARGET_DIR/release/litestream or
# target/release/litestream; never built here), LITESTREAM_V0313_BIN, BENCH_DIR (default
# /tmp/litestream-bench).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
log() { echo "[cost-bench] $*" >&2; }
OURS=${LITESTREAM_OURS_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/litestream}
[ -x "$OURS" ] || { log "ERROR: $OURS not found (this script does not build; set LITESTREAM_OURS_BIN)"; exit 1; }
THEIRS=${LITESTREAM_V0313_BIN:-$ROOT/.tools/litestream-0.3.13/bin/litestream}
[ -x "$THEIRS" ] || { log "ERROR: $THEIRS not found (bash scripts/install-litestream.sh)"; exit 1; }
[ "$("$THEIRS" version 2>&1)" = v0.3.13 ] || { log "ERROR: $THEIRS is not Litestream v0.3.13"; exit 1; }
BENCH_DIR=${BENCH_DIR:-/tmp/litestream-bench}
mkdir -p "$BENCH_DIR"
WORK=$(mktemp -d "$BENCH_DIR/cost-XXXXXX")
log "ours: $OURS; theirs: $THEIRS; work: $WORK"
exec python3 "$ROOT/benches/bench_cost.py" --ours "$OURS" --theirs "$THEIRS" --work "$WORK" "$@"
