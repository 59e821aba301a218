#!/usr/bin/env bash
# benches/s3_restore.sh - S3 restore benchmark: our `litestream restore` vs. the real Litestream
# v0.3.13 (scenarios a, b) or v0.5.17 (scenario ltx), both restoring the same replica from a
# PRIVATE local S3 server (own free port; the shared test server is never touched). Run on
# demand (not in CI).
#
#   bash benches/s3_restore.sh [--runs N] [--scenario a|b|ltx] [--server moto|s3s-fs] [--latency-ms N]
#
# Servers:
#   moto    (default) the test suite's moto server (Python, one process): every request costs it
#           several ms of CPU, so it sets the pace for both tools (its CPU time is reported).
#   s3s-fs  the storage of s3s-fs 0.14.1 (crates.io; Rust, multi-threaded, serves a directory)
#           behind benches/s3-server, a small front end that sets TCP_NODELAY as production S3
#           servers do (the s3s-fs binary does not, and then every GET waits 40 ms for a delayed
#           ACK) and logs one line per request. Built on first use (a few minutes).
#           --latency-ms N holds every response back N ms (a remote store's time to first byte).
#
# The replica is one cached by benches/restore.sh (written by the real v0.3.13 `replicate`):
# $BENCH_DIR/scenario-<S>/replica. Run `bash benches/restore.sh --scenarios b` once first if it
# is missing. Its files are uploaded as-is (v0.3 layout) under s3://BUCKET/bench/<S>/.
# Scenario ltx: the Litestream v0.5 (LTX) replica of benches/ltx_restore.sh, written by the real
# v0.5.17 `replicate` ($BENCH_DIR/ltx-replica/replica, made here with `ltx_restore.sh --prepare`
# when missing), its files put under s3://BUCKET/bench/ltx/ in v0.5's S3 layout
# (<level %04x>/<min>-<max>.ltx), and restored by ours and by v0.5.17 through the same URL
# (`?endpoint=...&forcePathStyle=true`).
#
# Per run and tool: wall time and peak RSS (/usr/bin/time), and the number of HTTP requests the
# restore made, by kind, counted from the server's log (one line per request; the server is
# private, so every line between two marks belongs to that restore), and the CPU time the server
# process used during the restore. Every output must be byte-identical
# to the real Litestream's first output and pass integrity_check.
#
# Environment:
#   CARGO_TARGET_DIR       our binary is $CARGO_TARGET_DIR/release/litestream (built with s3)
#   LITESTREAM_OURS_BIN    use this binary instead (no build)
#   LITESTREAM_V0313_BIN   the real v0.3.13 (default .tools/litestream-0.3.13/bin/litestream)
#   LITESTREAM_V0517_BIN   the real v0.5.17, scenario ltx (default .tools/litestream-0.5.17/bin/litestream)
#   BENCH_DIR              default /tmp/litestream-bench
#   TEST_SERVERS_DIR       where moto's venv is (default <repo>/.test-servers; scripts/test-servers/start.sh installs it)
#   S3S_SERVER_BIN         use this bench-s3-server binary (no build)
#   S3S_SERVER_FLAGS       extra flags for it (`--hash-on-get`: no stored ETags, as before 2026-12-06)
#   OURS_RESTORE_FLAGS     extra flags for our restore only (e.g. "-parallelism 32")
#   BENCH_SKIP_BUILD=1     use the existing release binary as is
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
log() { echo "[s3-restore-bench] $*" >&2; }

RUNS=3
SCENARIO=b
SERVER=moto
LATENCY_MS=0
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --scenario|--scenarios) SCENARIO=$2; shift 2 ;;
    --server) SERVER=$2; shift 2 ;;
    --latency-ms) LATENCY_MS=$2; shift 2 ;;
    *) log "unknown argument $1"; exit 2 ;;
  esac
done

BENCH_DIR=${BENCH_DIR:-/tmp/litestream-bench}
if [ "$SCENARIO" = ltx ]; then
  REPLICA=$BENCH_DIR/ltx-replica/replica  # written below, once v0.5.17 is found
else
  REPLICA=$BENCH_DIR/scenario-$SCENARIO/replica
  [ -d "$REPLICA/generations" ] || {
    log "ERROR: no cached replica at $REPLICA; run: bash benches/restore.sh --scenarios $SCENARIO"
    exit 1
  }
fi

if [ -n "${LITESTREAM_OURS_BIN:-}" ]; then
  OURS=$LITESTREAM_OURS_BIN
else
  TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
  OURS=$TARGET_DIR/release/litestream
  if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    log "building release binary (cargo build --release -p litestream-cli, target dir $TARGET_DIR)"
    cargo build --release -p litestream-cli >&2
  fi
fi
[ -x "$OURS" ] || { log "ERROR: $OURS not found"; exit 1; }
if "$OURS" restore -o /dev/null/x 's3://probe.localhost:1/x' 2>&1 | grep -q 'not built into'; then
  log "ERROR: $OURS was built without the s3 feature"; exit 1
fi

if [ "$SCENARIO" = ltx ]; then
  THEIRS_NAME=v0.5.17
  THEIRS=${LITESTREAM_V0517_BIN:-$ROOT/.tools/litestream-0.5.17/bin/litestream}
  [ -x "$THEIRS" ] || eval "$(bash "$ROOT/scripts/install-litestream.sh")"
  THEIRS=${LITESTREAM_V0517_BIN:-$THEIRS}
  [ "$("$THEIRS" version 2>&1)" = 0.5.17 ] || { log "ERROR: $THEIRS is not Litestream v0.5.17"; exit 1; }
  [ -f "$BENCH_DIR/ltx-replica/done" ] ||
    BENCH_DIR=$BENCH_DIR LITESTREAM_V0517_BIN=$THEIRS bash "$ROOT/benches/ltx_restore.sh" --prepare
else
  THEIRS_NAME=v0.3.13
  THEIRS=${LITESTREAM_V0313_BIN:-$ROOT/.tools/litestream-0.3.13/bin/litestream}
  if [ ! -x "$THEIRS" ]; then
    log "real Litestream v0.3.13 not found at $THEIRS; installing"
    eval "$(bash "$ROOT/scripts/install-litestream.sh")"
    THEIRS=$LITESTREAM_V0313_BIN
  fi
  [ "$("$THEIRS" version 2>&1)" = v0.3.13 ] || { log "ERROR: $THEIRS is not Litestream v0.3.13"; exit 1; }
fi

[ -x /usr/bin/time ] || { log "ERROR: /usr/bin/time missing (apt-get install time)"; exit 1; }
WORK=$(mktemp -d "$BENCH_DIR/s3-XXXXXX")
if [ "$SCENARIO" = ltx ]; then
  # v0.5 keys on S3 are <path>/<level %04x>/<min>-<max>.ltx (file:// has ltx/<level>/): hard-link
  # the file replica into that layout, and upload or serve that.
  for d in "$REPLICA"/ltx/*/; do
    level=$(basename "$d")
    mkdir -p "$WORK/ltx-s3/$(printf %04x "$level")"
    ln "$d"*.ltx "$WORK/ltx-s3/$(printf %04x "$level")/"
  done
  REPLICA=$WORK/ltx-s3
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SERVER_LOG=$WORK/server.log
case $SERVER in
  moto)
    [ "$LATENCY_MS" = 0 ] || { log "--latency-ms needs --server s3s-fs"; exit 2; }
    TSD=${TEST_SERVERS_DIR:-$ROOT/.test-servers}
    MOTO=$TSD/venv/bin/moto_server
    [ -x "$MOTO" ] || { log "ERROR: $MOTO missing; run: bash scripts/test-servers/start.sh"; exit 1; }
    log "private moto on 127.0.0.1:$PORT (log $SERVER_LOG)"
    "$MOTO" -H 127.0.0.1 -p "$PORT" </dev/null >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    ;;
  s3s-fs)
    # benches/s3-server: s3s-fs storage behind a front end that sets TCP_NODELAY and writes
    # one access-log line per request (see its src/main.rs). Built on demand (a few minutes).
    S3S=${S3S_SERVER_BIN:-}
    if [ -z "$S3S" ]; then
      log "building benches/s3-server (cargo build --release, target dir $BENCH_DIR/s3-server-target)"
      CARGO_TARGET_DIR=$BENCH_DIR/s3-server-target \
        cargo build --release --locked --manifest-path "$ROOT/benches/s3-server/Cargo.toml" >&2
      S3S=$BENCH_DIR/s3-server-target/release/bench-s3-server
    fi
    # s3s-fs serves ROOT/<bucket>/<key>: hard-link the replica in (it only reads it).
    mkdir -p "$WORK/s3root/bench/bench"
    cp -al "$REPLICA" "$WORK/s3root/bench/bench/$SCENARIO"
    log "private s3s-fs (benches/s3-server) on 127.0.0.1:$PORT (access log $SERVER_LOG)"
    "$S3S" --port "$PORT" --access-key test --secret-key testtest --access-log "$SERVER_LOG" \
      --latency-ms "$LATENCY_MS" ${S3S_SERVER_FLAGS:-} "$WORK/s3root" </dev/null 2>"$WORK/server.stderr" &
    SERVER_PID=$!
    ;;
  *) log "unknown server $SERVER (moto or s3s-fs)"; exit 2 ;;
esac
cleanup() {
  kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true
  rm -rf "$WORK/out" "$WORK/s3root" "$WORK/ltx-s3"
}
trap cleanup EXIT
for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

log "ours:   $OURS"
log "theirs: $THEIRS"
LATENCY_MS=$LATENCY_MS THEIRS_NAME=$THEIRS_NAME python3 - "$OURS" "$THEIRS" "$PORT" "$REPLICA" "$SCENARIO" "$RUNS" "$WORK" "$SERVER_PID" "$SERVER" \
  "$SERVER_LOG" <<'PY'
import concurrent.futures, http.client, os, re, sqlite3, statistics, subprocess, sys, time

ours, theirs, port, replica, scenario, runs, work, server_pid, server, server_log = sys.argv[1:11]
port, runs = int(port), int(runs)
TICK = os.sysconf("SC_CLK_TCK")

def server_cpu():
    """CPU seconds (user + system) the S3 server process has used so far."""
    with open(f"/proc/{server_pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK
BUCKET = "bench"
PREFIX = f"bench/{scenario}"

def log(m): print("[s3-restore-bench] " + m, file=sys.stderr, flush=True)

def put(path, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request("PUT", path, body=body, headers={"Content-Length": str(len(body))})
    r = c.getresponse(); r.read(); c.close()
    if r.status != 200:
        raise SystemExit(f"PUT {path}: {r.status}")

files = []
for d, _, names in os.walk(replica):
    for n in names:
        full = os.path.join(d, n)
        files.append((full, os.path.relpath(full, replica)))
total = sum(os.path.getsize(f) for f, _ in files)
t0 = time.time()
def upload(f):
    full, rel = f
    with open(full, "rb") as fh:
        data = fh.read()
    put(f"/{BUCKET}/{PREFIX}/{rel}", data)
if server == "moto":  # s3s-fs serves the hard-linked files as they are
    put(f"/{BUCKET}", b"")
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        list(ex.map(upload, files))
log(f"uploaded {len(files)} objects, {total/1e6:.1f} MB, in {time.time()-t0:.1f} s")

def log_lines():
    """The server's log lines that stand for one request each."""
    with open(server_log, errors="replace") as f:
        if server == "moto":  # werkzeug's access log
            return [l for l in f if '" ' in l and "HTTP/1." in l]
        return [l for l in f if l.strip()]  # bench-s3-server: "METHOD URI STATUS"

sys.path.insert(0, "benches")
from s3_requests import classify, moto_requests
S3S_REQ = re.compile(r'^(\w+) (\S+) (\S+)$')
def requests_in(lines):
    """(method, path, status) per request."""
    if server == "moto":
        return moto_requests(lines)
    return (m.groups() for m in (S3S_REQ.match(l.strip()) for l in lines) if m)

THEIRS_NAME = os.environ["THEIRS_NAME"]  # v0.3.13, or v0.5.17 for the LTX scenario
if THEIRS_NAME == "v0.5.17":  # v0.5's URL form for a local S3 server; ours reads it too
    url = f"s3://{BUCKET}/{PREFIX}?endpoint=http://127.0.0.1:{port}&forcePathStyle=true&region=us-east-1"
else:
    url = f"s3://{BUCKET}.localhost:{port}/{PREFIX}"
env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="testtest")
for k in ("LITESTREAM_CONFIG", "AWS_CA_BUNDLE", "AWS_PROFILE", "LITESTREAM_ACCESS_KEY_ID",
          "LITESTREAM_SECRET_ACCESS_KEY", "THEIRS_NAME"):
    env.pop(k, None)
if THEIRS_NAME == "v0.5.17":  # v0.5's URL mode takes the keys from these
    env.update(LITESTREAM_ACCESS_KEY_ID="test", LITESTREAM_SECRET_ACCESS_KEY="testtest")
out_dir = os.path.join(work, "out")
os.makedirs(out_dir, exist_ok=True)
tools = {THEIRS_NAME: theirs, "ours": ours}
extra = {THEIRS_NAME: [], "ours": os.environ.get("OURS_RESTORE_FLAGS", "").split()}
res = {t: [] for t in tools}
reference = None
failed = False

def integrity(db):
    c = sqlite3.connect(db)
    r = c.execute("PRAGMA integrity_check").fetchone()[0]
    c.close()
    return r

for i in range(runs):
    order = [THEIRS_NAME, "ours"] if i % 2 == 0 else ["ours", THEIRS_NAME]
    for t in order:
        out = os.path.join(out_dir, f"{t}-{i}.db")
        before = len(log_lines())
        cpu0 = server_cpu()
        p = subprocess.run(["/usr/bin/time", "-f", "%e %M %U %S", tools[t], "restore", *extra[t], "-o", out, url],
                           env=env, capture_output=True, text=True)
        time.sleep(0.5)  # let the server flush its log
        server_s = server_cpu() - cpu0
        reqs = classify(requests_in(log_lines()[before:]))
        last = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
        if p.returncode != 0:
            log(f"{t} run {i}: restore failed ({p.returncode}):\n{p.stderr[-3000:]}")
            failed = True
            continue
        wall, rss, user, sys_s = last.split()
        wall, rss, cpu = float(wall), int(rss) / 1024, float(user) + float(sys_s)
        ok = integrity(out)
        if ok != "ok":
            log(f"{t} run {i}: integrity_check: {ok}"); failed = True
        if reference is None and t == THEIRS_NAME:
            reference = out
        if reference and subprocess.run(["cmp", "-s", reference, out]).returncode != 0:
            log(f"{t} run {i}: output differs from {reference}"); failed = True
        n = sum(reqs.values())
        log(f"{t} run {i}: {wall:.2f} s, {rss:.1f} MB, CPU {cpu:.2f} s ({user} user, {sys_s} sys), "
            f"{n} requests {reqs}, server CPU {server_s:.2f} s ({1000 * server_s / max(n, 1):.2f} ms/request), "
            f"load {open('/proc/loadavg').read().split()[0]}")
        res[t].append((wall, rss, n, reqs, server_s, cpu))
        for f in os.listdir(out_dir):
            fp = os.path.join(out_dir, f)
            if fp != reference and f.startswith(f"{t}-{i}"):
                os.remove(fp)

print(f"\nS3 restore, scenario {scenario}: {len(files)} objects, {total/1e6:.1f} MB, "
      f"private {server} on 127.0.0.1:{port}, {runs} runs per tool"
      + (f", response latency {os.environ.get('LATENCY_MS')} ms" if os.environ.get("LATENCY_MS", "0") != "0" else "")
      + (f", our flags: {' '.join(extra['ours'])}" if extra["ours"] else "") + "\n")
print("| tool | median wall s | runs (s) | max RSS MB | tool CPU s (median) | requests per restore | by kind | server CPU s (median) |")
print("|---|---|---|---|---|---|---|---|")
med = {}
for t in (THEIRS_NAME, "ours"):
    r = res[t]
    if not r:
        print(f"| {t} | failed | | | | | | |"); continue
    med[t] = statistics.median(x[0] for x in r)
    counts = sorted(set(x[2] for x in r))
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(r[-1][3].items()))
    print(f"| {t} | {med[t]:.2f} | {' '.join(f'{x[0]:.2f}' for x in r)} | "
          f"{max(x[1] for x in r):.1f} | {statistics.median(x[5] for x in r):.2f} | "
          f"{'/'.join(map(str, counts))} | {kinds} | "
          f"{statistics.median(x[4] for x in r):.2f} |")
if len(med) == 2:
    ratio = med["ours"] / med[THEIRS_NAME]
    nreq = {t: max(x[2] for x in res[t]) for t in res}
    print(f"\nwall ratio ours/{THEIRS_NAME}: {ratio:.3f} (target <= 0.30: {'yes' if ratio <= 0.30 else 'NO'}); "
          f"requests ours {nreq['ours']} vs {THEIRS_NAME} {nreq[THEIRS_NAME]} "
          f"(target: not more: {'yes' if nreq['ours'] <= nreq[THEIRS_NAME] else 'NO'})")
print(f"load average: {open('/proc/loadavg').read().split()[:3]}")
sys.exit(1 if failed else 0)
PY
