#!/usr/bin/env bash
# benches/ltx_restore.sh - restore of a Litestream v0.5 (LTX) replica: our `litestream restore`
# vs. the real Litestream v0.5.17's, same replica, same machine, runs interleaved. Run on demand
# (not in CI).
#
#   bash benches/ltx_restore.sh [--runs N] [--regen] [--prepare]
#
# --prepare only writes (or keeps) the cached replica and exits; benches/s3_restore.sh
# --format ltx calls it to restore the same replica from a local S3 server.
#
# The replica (cached in $BENCH_DIR/ltx-replica) is written by the real v0.5.17 `replicate`: a
# ~100 MB database (25,000 rows of 4,000 random bytes) snapshotted at start (L9), then ~500
# small update transactions synced one by one (monitor and sync intervals of 50 ms: ~500 L0
# files, kept by a 1 h l0-retention) and compacted into L1 (10 s) and L2 (30 s). Each run
# restores the latest state with `/usr/bin/time -f '%e %M'` (wall seconds, max RSS KiB) into a
# fresh path; every output of ours must be byte-identical to v0.5.17's.
#
# Environment:
#   LITESTREAM_OURS_BIN    our binary (default $CARGO_TARGET_DIR/release/litestream; build it with
#                          `cargo build --release -p litestream-cli`, file-only is enough:
#                          `--no-default-features`); never built by this script
#   LITESTREAM_V0517_BIN   the real v0.5.17 (default .tools/litestream-0.5.17/bin/litestream)
#   BENCH_DIR              default /tmp/litestream-bench
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { echo "[ltx-restore-bench] $*" >&2; }
RUNS=3
REGEN=0
PREPARE=0
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --regen) REGEN=1; shift ;;
    --prepare) PREPARE=1; shift ;;
    *) log "unknown argument $1"; exit 2 ;;
  esac
done
THEIRS=${LITESTREAM_V0517_BIN:-$ROOT/.tools/litestream-0.5.17/bin/litestream}
[ "$("$THEIRS" version 2>&1)" = 0.5.17 ] || { log "ERROR: $THEIRS is not Litestream v0.5.17"; exit 1; }
[ -x /usr/bin/time ] || { log "ERROR: /usr/bin/time missing (apt-get install time)"; exit 1; }

DIR=${BENCH_DIR:-/tmp/litestream-bench}/ltx-replica
if [ "$REGEN" = 1 ] || [ ! -f "$DIR/done" ]; then
  log "writing the replica with v0.5.17 into $DIR (~1 min)"
  rm -rf "$DIR"; mkdir -p "$DIR"
  cat >"$DIR/cfg.yml" <<YML
levels:
  - interval: 10s
  - interval: 30s
l0-retention: 1h
dbs:
  - path: $DIR/src.db
    monitor-interval: 50ms
    replica:
      url: file://$DIR/replica
      sync-interval: 50ms
YML
  python3 - "$DIR/src.db" <<'PY'
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1]); c.execute("pragma journal_mode=wal")
c.execute("create table t(id integer primary key, v blob)")
for i in range(25):
    c.executemany("insert into t(v) values (?)", [(os.urandom(4000),) for _ in range(1000)])
    c.commit()
PY
  "$THEIRS" replicate -config "$DIR/cfg.yml" >"$DIR/replicate.log" 2>&1 &
  PID=$!
  sleep 8
  python3 - "$DIR/src.db" <<'PY'
import os, random, sqlite3, sys, time
random.seed(7)
c = sqlite3.connect(sys.argv[1], timeout=10)
for i in range(500):
    for _ in range(3):
        c.execute("update t set v = ? where id = ?", (os.urandom(4000), random.randint(1, 25000)))
    c.execute("insert into t(v) values (?)", (os.urandom(500),))
    c.commit(); time.sleep(0.1)
PY
  sleep 12
  kill -INT $PID; wait $PID || true
  touch "$DIR/done"
fi
for l in 0 1 2 9; do log "L$l: $(find "$DIR/replica/ltx/$l" -name '*.ltx' 2>/dev/null | wc -l) files"; done
log "replica: $(du -sh "$DIR/replica" | cut -f1), database $(stat -c %s "$DIR/src.db") bytes"
[ "$PREPARE" = 1 ] && exit 0

OURS=${LITESTREAM_OURS_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/litestream}
[ -x "$OURS" ] || { log "ERROR: $OURS not found (set LITESTREAM_OURS_BIN or build --release)"; exit 1; }

URL=file://$DIR/replica
OUT=$DIR/out
declare -a OW OR OC TW TR TC LOADS
for i in $(seq 1 "$RUNS"); do
  for who in theirs ours; do
    rm -rf "$OUT-$who"; mkdir -p "$OUT-$who"
    bin=$THEIRS; [ $who = ours ] && bin=$OURS
    r=$( { /usr/bin/time -f '%e %M %U %S' "$bin" restore -o "$OUT-$who/db" "$URL" >/dev/null 2>"$OUT-$who.log"; } 2>&1; tail -n1 "$OUT-$who.log")
    read -r wall rss user sys <<<"$r"
    cpu=$(python3 -c "print(f'{$user + $sys:.2f}')")
    if [ $who = ours ]; then OW+=("$wall"); OR+=("$rss"); OC+=("$cpu"); else TW+=("$wall"); TR+=("$rss"); TC+=("$cpu"); fi
  done
  cmp "$OUT-theirs/db" "$OUT-ours/db" || { log "ERROR: outputs differ on run $i"; exit 1; }
  LOADS+=("$(cut -d' ' -f1 /proc/loadavg)")
  log "run $i: v0.5.17 ${TW[-1]} s ${TR[-1]} KiB CPU ${TC[-1]} s, ours ${OW[-1]} s ${OR[-1]} KiB CPU ${OC[-1]} s (identical), load ${LOADS[-1]}"
done
python3 - "${TW[*]}" "${TR[*]}" "${OW[*]}" "${OR[*]}" "${TC[*]}" "${OC[*]}" "${LOADS[*]}" <<'PY'
import statistics as s, sys
tw, tr, ow, orr, tc, oc, loads = ([float(x) for x in a.split()] for a in sys.argv[1:])
mt, mo = s.median(tw), s.median(ow)
print(f"| restore of the LTX replica | v0.5.17 | litestream-rs | ratio |")
print(f"| --- | --- | --- | --- |")
print(f"| wall (median of {len(tw)}) | {mt:.2f} s | {mo:.2f} s | {mo/mt:.2f}x |")
print(f"| peak RSS (max) | {max(tr)/1024:.0f} MB | {max(orr)/1024:.0f} MB | |")
print(f"| CPU user+sys (median) | {s.median(tc):.2f} s | {s.median(oc):.2f} s | {s.median(oc)/s.median(tc):.2f}x |")
print(f"load average (1 min) during the runs: {min(loads):.1f}-{max(loads):.1f}")
PY
