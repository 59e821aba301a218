#!/usr/bin/env bash
# benches/cost.sh - what `litestream replicate` costs: our binary vs. the real Litestream v0.3.13,
# same run, same machine, one tool at a time. Run on demand (never in CI). See benches/README.md.
#
#   bash benches/cost.sh [--runs R] [--seconds N] [--scale-dbs N] [--only load|latency|scale]
#                        [--against v0.5.17 [--minutes M] [--rate C]]
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
# --against v0.5.17: the real Litestream v0.5.17 (LITESTREAM_V0517_BIN) vs. ours writing the LTX
# format, one config with v0.5 keys (`replica:`, default `levels`) and `format: ltx`. --minutes M
# keeps each load run's replicator going M minutes in total (after the burst a writer commits C
# 3 KB rows per second, default 10) and reports the replica's stored bytes and per-level files.
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
AGAINST=v0.3.13
prev=
for arg in "$@"; do
  case $prev$arg in --againstv0.5.17|--against=v0.5.17) AGAINST=v0.5.17 ;; esac
  prev=$arg
done
if [ "$AGAINST" = v0.5.17 ]; then
  THEIRS=${LITESTREAM_V0517_BIN:-$ROOT/.tools/litestream-0.5.17/bin/litestream}
  [ -x "$THEIRS" ] || { log "ERROR: $THEIRS not found (set LITESTREAM_V0517_BIN)"; exit 1; }
  [ "$("$THEIRS" version 2>&1)" = 0.5.17 ] || { log "ERROR: $THEIRS is not Litestream v0.5.17"; exit 1; }
else
  THEIRS=${LITESTREAM_V0313_BIN:-$ROOT/.tools/litestream-0.3.13/bin/litestream}
  [ -x "$THEIRS" ] || { log "ERROR: $THEIRS not found (bash scripts/install-litestream.sh)"; exit 1; }
  [ "$("$THEIRS" version 2>&1)" = v0.3.13 ] || { log "ERROR: $THEIRS is not Litestream v0.3.13"; exit 1; }
fi
BENCH_DIR=${BENCH_DIR:-/tmp/litestream-bench}
mkdir -p "$BENCH_DIR"
WORK=$(mktemp -d "$BENCH_DIR/cost-XXXXXX")
log "ours: $OURS; theirs: $THEIRS; work: $WORK"
exec python3 "$ROOT/benches/bench_cost.py" --ours "$OURS" --theirs "$THEIRS" --work "$WORK" "$@"
