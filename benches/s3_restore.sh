#!/usr/bin/env bash
# benches/s3_restore.sh - S3 restore benchmark: our `litestream restore` vs. the real Litestream
# v0.3.13, both restoring the same replica from a PRIVATE local moto server (own free port; the
# shared test server is never touched). Run on demand (not in CI).
#
#   bash benches/s3_restore.sh [--runs N] [--scenario a|b]
#
# The replica is one cached by benches/restore.sh (written by the real v0.3.13 `replicate`):
# $BENCH_DIR/scenario-<S>/replica. Run `bash benches/restore.sh --scenarios b` once first if it
# is missing. Its files are uploaded as-is (v0.3 layout) under s3://BUCKET/bench/<S>/.
#
# Per run and tool: wall time and peak RSS (/usr/bin/time), and the number of HTTP requests the
# restore made, by kind, counted from moto's access log (one line per request; moto is private,
# so every line between two marks belongs to that restore). Every output must be byte-identical
# to v0.3.13's first output and pass integrity_check.
#
# Environment:
#   CARGO_TARGET_DIR       our binary is $CARGO_TARGET_DIR/release/litestream (built with s3)
#   LITESTREAM_OURS_BIN    use this binary instead (no build)
#   LITESTREAM_V0313_BIN   the real v0.3.13 (default .tools/litestream-0.3.13/bin/litestream)
#   BENCH_DIR              default /tmp/litestream-bench
#   TEST_SERVERS_DIR       where moto's venv is (default <repo>/.test-servers; scripts/test-servers/start.sh installs it)
#   BENCH_SKIP_BUILD=1     use the existing release binary as is
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
log() { echo "[s3-restore-bench] $*" >&2; }

RUNS=3
SCENARIO=b
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --scenario|--scenarios) SCENARIO=$2; shift 2 ;;
    *) log "unknown argument $1"; exit 2 ;;
  esac
done

BENCH_DIR=${BENCH_DIR:-/tmp/litestream-bench}
REPLICA=$BENCH_DIR/scenario-$SCENARIO/replica
[ -d "$REPLICA/generations" ] || {
  log "ERROR: no cached replica at $REPLICA; run: bash benches/restore.sh --scenarios $SCENARIO"
  exit 1
}

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

THEIRS=${LITESTREAM_V0313_BIN:-$ROOT/.tools/litestream-0.3.13/bin/litestream}
if [ ! -x "$THEIRS" ]; then
  log "real Litestream v0.3.13 not found at $THEIRS; installing"
  eval "$(bash "$ROOT/scripts/install-litestream.sh")"
  THEIRS=$LITESTREAM_V0313_BIN
fi
[ "$("$THEIRS" version 2>&1)" = v0.3.13 ] || { log "ERROR: $THEIRS is not Litestream v0.3.13"; exit 1; }

TSD=${TEST_SERVERS_DIR:-$ROOT/.test-servers}
MOTO=$TSD/venv/bin/moto_server
[ -x "$MOTO" ] || { log "ERROR: $MOTO missing; run: bash scripts/test-servers/start.sh"; exit 1; }
[ -x /usr/bin/time ] || { log "ERROR: /usr/bin/time missing (apt-get install time)"; exit 1; }

WORK=$(mktemp -d "$BENCH_DIR/s3-XXXXXX")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log "private moto on 127.0.0.1:$PORT (log $WORK/moto.log)"
"$MOTO" -H 127.0.0.1 -p "$PORT" </dev/null >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
cleanup() { kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true; rm -rf "$WORK/out"; }
trap cleanup EXIT
for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

log "ours:   $OURS"
log "theirs: $THEIRS"
python3 - "$OURS" "$THEIRS" "$PORT" "$REPLICA" "$SCENARIO" "$RUNS" "$WORK" <<'PY'
import concurrent.futures, http.client, os, re, sqlite3, statistics, subprocess, sys, time

ours, theirs, port, replica, scenario, runs, work = sys.argv[1:8]
port, runs = int(port), int(runs)
BUCKET = "bench"
PREFIX = f"bench/{scenario}"
moto_log = os.path.join(work, "moto.log")

def log(m): print("[s3-restore-bench] " + m, file=sys.stderr, flush=True)

def put(path, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request("PUT", path, body=body, headers={"Content-Length": str(len(body))})
    r = c.getresponse(); r.read(); c.close()
    if r.status != 200:
        raise SystemExit(f"PUT {path}: {r.status}")

put(f"/{BUCKET}", b"")
files = []
for d, _, names in os.walk(replica):
    for n in names:
        full = os.path.join(d, n)
        files.append((full, os.path.relpath(full, replica)))
t0 = time.time()
total = 0
def upload(f):
    full, rel = f
    with open(full, "rb") as fh:
        data = fh.read()
    put(f"/{BUCKET}/{PREFIX}/{rel}", data)
    return len(data)
with concurrent.futures.ThreadPoolExecutor(8) as ex:
    total = sum(ex.map(upload, files))
log(f"uploaded {len(files)} objects, {total/1e6:.1f} MB, in {time.time()-t0:.1f} s")

def log_lines():
    with open(moto_log, errors="replace") as f:
        return [l for l in f if '" ' in l and "HTTP/1." in l]

REQ = re.compile(r'"(\w+) (\S+) HTTP/1\.[01]" (\d+)')
def classify(lines):
    kinds = {}
    for l in lines:
        m = REQ.search(l)
        if not m:
            continue
        method, path, status = m.groups()
        p, _, q = path.partition("?")
        parts = [x for x in p.split("/") if x]
        if method == "GET" and len(parts) <= 1:
            k = "LIST"
        elif method == "GET":
            k = "GET"
        else:
            k = method
        if not status.startswith("2"):
            k += f"({status})"
        kinds[k] = kinds.get(k, 0) + 1
    return kinds

url = f"s3://{BUCKET}.localhost:{port}/{PREFIX}"
env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="testtest")
for k in ("LITESTREAM_CONFIG", "AWS_CA_BUNDLE", "AWS_PROFILE", "LITESTREAM_ACCESS_KEY_ID",
          "LITESTREAM_SECRET_ACCESS_KEY"):
    env.pop(k, None)
out_dir = os.path.join(work, "out")
os.makedirs(out_dir, exist_ok=True)
tools = {"v0.3.13": theirs, "ours": ours}
res = {t: [] for t in tools}
reference = None
failed = False

def integrity(db):
    c = sqlite3.connect(db)
    r = c.execute("PRAGMA integrity_check").fetchone()[0]
    c.close()
    return r

for i in range(runs):
    order = ["v0.3.13", "ours"] if i % 2 == 0 else ["ours", "v0.3.13"]
    for t in order:
        out = os.path.join(out_dir, f"{t}-{i}.db")
        before = len(log_lines())
        p = subprocess.run(["/usr/bin/time", "-f", "%e %M", tools[t], "restore", "-o", out, url],
                           env=env, capture_output=True, text=True)
        time.sleep(0.5)  # let moto flush its access log
        reqs = classify(log_lines()[before:])
        last = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
        if p.returncode != 0:
            log(f"{t} run {i}: restore failed ({p.returncode}):\n{p.stderr[-3000:]}")
            failed = True
            continue
        wall, rss = last.split()
        wall, rss = float(wall), int(rss) / 1024
        ok = integrity(out)
        if ok != "ok":
            log(f"{t} run {i}: integrity_check: {ok}"); failed = True
        if reference is None and t == "v0.3.13":
            reference = out
        if reference and subprocess.run(["cmp", "-s", reference, out]).returncode != 0:
            log(f"{t} run {i}: output differs from {reference}"); failed = True
        n = sum(reqs.values())
        log(f"{t} run {i}: {wall:.2f} s, {rss:.1f} MB, {n} requests {reqs}")
        res[t].append((wall, rss, n, reqs))
        for f in os.listdir(out_dir):
            fp = os.path.join(out_dir, f)
            if fp != reference and f.startswith(f"{t}-{i}"):
                os.remove(fp)

print(f"\nS3 restore, scenario {scenario}: {len(files)} objects, {total/1e6:.1f} MB, "
      f"private moto on 127.0.0.1:{port}, {runs} runs per tool\n")
print("| tool | median wall s | runs (s) | max RSS MB | requests per restore | by kind |")
print("|---|---|---|---|---|---|")
med = {}
for t in ("v0.3.13", "ours"):
    r = res[t]
    if not r:
        print(f"| {t} | failed | | | | |"); continue
    med[t] = statistics.median(x[0] for x in r)
    counts = sorted(set(x[2] for x in r))
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(r[-1][3].items()))
    print(f"| {t} | {med[t]:.2f} | {' '.join(f'{x[0]:.2f}' for x in r)} | "
          f"{max(x[1] for x in r):.1f} | {'/'.join(map(str, counts))} | {kinds} |")
if len(med) == 2:
    ratio = med["ours"] / med["v0.3.13"]
    nreq = {t: max(x[2] for x in res[t]) for t in res}
    print(f"\nwall ratio ours/v0.3.13: {ratio:.3f} (target <= 0.30: {'yes' if ratio <= 0.30 else 'NO'}); "
          f"requests ours {nreq['ours']} vs v0.3.13 {nreq['v0.3.13']} "
          f"(target: not more: {'yes' if nreq['ours'] <= nreq['v0.3.13'] else 'NO'})")
print(f"load average: {open('/proc/loadavg').read().split()[:3]}")
sys.exit(1 if failed else 0)
PY
