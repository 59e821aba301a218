#!/usr/bin/env bash
# benches/replicate.sh - `litestream replicate` benchmark: our binary vs. the real Litestream
# v0.3.13, same run, same machine, one tool at a time. Run on demand (not in CI).
#
#   bash benches/replicate.sh [--s3-seconds N] [--latency-seconds M] [--only s3|latency]
#                             [--against v0.5.17]
#
# 1. S3 requests per hour with Litestream's DEFAULT intervals: `litestream replicate -config CFG`
#    with one s3 replica on a PRIVATE moto (own free port, force-path-style, credentials via
#    AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY=test/test, AWS_CA_BUNDLE unset). A python3 writer
#    commits one small transaction every 200 ms for N seconds (default 60). Requests are counted
#    from moto's access log (one line per request, as in benches/s3_restore.sh) in the
#    steady-state window [10 s, N s] after start (start-up excluded) and extrapolated to an hour.
# 2. Commit-to-replica latency with `monitor-interval: 10ms` and `sync-interval: 10ms` on a
#    `file` replica: the writer commits a row every 250 ms (+ a seeded 0-20 ms jitter per commit,
#    so commits do not all land at one phase of the 10 ms tickers) for M seconds (default 20); a separate
#    python3 poller lists the replica's generations/*/wal/ tree every 2 ms and records when each
#    new segment file first appears. Latency of a commit = first new segment seen at or after the
#    commit. Median and p95 per tool.
#
# --against v0.5.17: the real Litestream v0.5.17 vs. ours writing the LTX format: one config with
# v0.5 keys (`replica:`, default `levels`, snapshot and retention) plus `format: ltx` (v0.5.17
# ignores it); the latency poller watches the LTX level-0 directory instead of the WAL tree.
#
# Environment:
#   LITESTREAM_OURS_BIN    our binary (default $CARGO_TARGET_DIR/release/litestream, or
#                          target/release/litestream); never built by this script
#   LITESTREAM_V0313_BIN   the real v0.3.13 (default .tools/litestream-0.3.13/bin/litestream)
#   LITESTREAM_V0517_BIN   the real v0.5.17, with --against v0.5.17
#   BENCH_S3_PORT          moto's port (default: a free one)
#   BENCH_DIR              default /tmp/litestream-bench
#   TEST_SERVERS_DIR       where moto's venv is (default <repo>/.test-servers)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
log() { echo "[replicate-bench] $*" >&2; }

S3_SECONDS=60
LAT_SECONDS=20
ONLY=all
AGAINST=v0.3.13
while [ $# -gt 0 ]; do
  case $1 in
    --s3-seconds) S3_SECONDS=$2; shift 2 ;;
    --latency-seconds) LAT_SECONDS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --against) AGAINST=$2; shift 2 ;;
    *) log "unknown argument $1"; exit 2 ;;
  esac
done
[ "$S3_SECONDS" -gt 15 ] || { log "ERROR: --s3-seconds must be > 15 (first 10 s are excluded)"; exit 2; }

OURS=${LITESTREAM_OURS_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/litestream}
[ -x "$OURS" ] || { log "ERROR: $OURS not found (this script does not build; set LITESTREAM_OURS_BIN)"; exit 1; }
case $AGAINST in
  v0.3.13)
    THEIRS=${LITESTREAM_V0313_BIN:-$ROOT/.tools/litestream-0.3.13/bin/litestream}
    [ -x "$THEIRS" ] || { log "ERROR: $THEIRS not found (bash scripts/install-litestream.sh)"; exit 1; }
    [ "$("$THEIRS" version 2>&1)" = v0.3.13 ] || { log "ERROR: $THEIRS is not Litestream v0.3.13"; exit 1; } ;;
  v0.5.17)
    THEIRS=${LITESTREAM_V0517_BIN:-$ROOT/.tools/litestream-0.5.17/bin/litestream}
    [ -x "$THEIRS" ] || { log "ERROR: $THEIRS not found (set LITESTREAM_V0517_BIN)"; exit 1; }
    [ "$("$THEIRS" version 2>&1)" = 0.5.17 ] || { log "ERROR: $THEIRS is not Litestream v0.5.17"; exit 1; } ;;
  *) log "--against: v0.3.13 or v0.5.17"; exit 2 ;;
esac

TSD=${TEST_SERVERS_DIR:-$ROOT/.test-servers}
MOTO=$TSD/venv/bin/moto_server
[ -x "$MOTO" ] || { log "ERROR: $MOTO missing; run: bash scripts/test-servers/start.sh"; exit 1; }

BENCH_DIR=${BENCH_DIR:-/tmp/litestream-bench}
mkdir -p "$BENCH_DIR"
WORK=$(mktemp -d "$BENCH_DIR/replicate-XXXXXX")
MOTO_PID=
cleanup() {
  if [ -n "$MOTO_PID" ]; then kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

PORT=0
if [ "$ONLY" != latency ]; then
  PORT=${BENCH_S3_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
  log "private moto on 127.0.0.1:$PORT (log $WORK/moto.log)"
  "$MOTO" -H 127.0.0.1 -p "$PORT" </dev/null >"$WORK/moto.log" 2>&1 &
  MOTO_PID=$!
  for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
fi

log "ours:   $OURS"
log "theirs: $THEIRS"
log "work:   $WORK"
python3 - "$OURS" "$THEIRS" "$PORT" "$WORK" "$S3_SECONDS" "$LAT_SECONDS" "$ONLY" "$AGAINST" <<'PY'
import http.client, os, re, signal, statistics, subprocess, sys, textwrap, time

ours, theirs, port, work, s3_secs, lat_secs, only, against = sys.argv[1:9]
port, s3_secs, lat_secs = int(port), int(s3_secs), int(lat_secs)
WARMUP = 10.0
TOOLS = [(against, theirs), ("ours", ours)]
LTX = against == "v0.5.17"

def config(db, replica, db_extra="", rep_extra=""):
    """v0.3 keys (`replicas:`), or v0.5 keys (`replica:`) and `format: ltx` with --against
    v0.5.17; `replica` is the replica's YAML lines, unindented."""
    ind = "      " if LTX else "        "
    body = "".join(ind + l + "\n" for l in (replica + rep_extra).splitlines())
    if LTX:
        body = "    replica:\n" + body
    else:
        body = "    replicas:\n      - " + body.lstrip()
    return ("format: ltx\n" if LTX else "") + f"dbs:\n  - path: {db}\n{db_extra}" + body
moto_log = os.path.join(work, "moto.log")
failed = False

def log(m): print("[replicate-bench] " + m, file=sys.stderr, flush=True)

# --- helpers -------------------------------------------------------------------------------
WRITER = textwrap.dedent(r'''
    import random, sqlite3, sys, time
    db, period, secs, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    jitter = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    rng = random.Random(1)
    c = sqlite3.connect(db, isolation_level=None, timeout=30)
    c.execute("PRAGMA busy_timeout = 30000")
    f = open(out, "w")
    t0 = time.monotonic(); i = 0
    while True:
        due = t0 + i * period
        if due - t0 >= secs:
            break
        due += rng.uniform(0, jitter)
        d = due - time.monotonic()
        if d > 0:
            time.sleep(d)
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO t (v) VALUES (?)", ("x" * 100,))
        c.execute("COMMIT")
        f.write(f"{time.monotonic():.6f}\n"); f.flush()
        i += 1
    c.close()
''')

POLLER = textwrap.dedent(r'''
    import os, sys, time
    root, out = sys.argv[1], sys.argv[2]
    seen = set()
    f = open(out, "w")
    stop = root + ".stop"
    while not os.path.exists(stop):
        now = time.monotonic()
        gens = os.path.join(root, "generations")
        try:
            glist = os.listdir(gens)
        except FileNotFoundError:
            glist = []
        # v0.3 WAL segments, or LTX level-0 files (--against v0.5.17)
        for walroot in [os.path.join(gens, g, "wal") for g in glist] + [os.path.join(root, "ltx", "0")]:
            for d, _, names in os.walk(walroot):
                for n in names:
                    p = os.path.join(d, n)
                    if p not in seen and not n.endswith(".tmp"):
                        seen.add(p)
                        f.write(f"{now:.6f} {os.path.relpath(p, root)}\n"); f.flush()
        time.sleep(0.002)
''')

writer_py = os.path.join(work, "writer.py"); open(writer_py, "w").write(WRITER)
poller_py = os.path.join(work, "poller.py"); open(poller_py, "w").write(POLLER)

def make_db(path):
    import sqlite3
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode = wal")
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    c.execute("INSERT INTO t (v) VALUES ('seed')")
    c.close()

def base_env():
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
    for k in ("LITESTREAM_CONFIG", "AWS_CA_BUNDLE", "AWS_PROFILE", "AWS_SESSION_TOKEN",
              "LITESTREAM_ACCESS_KEY_ID", "LITESTREAM_SECRET_ACCESS_KEY"):
        env.pop(k, None)
    return env

def start_replicate(bin_, cfg, logpath):
    lf = open(logpath, "w")
    return subprocess.Popen([bin_, "replicate", "-config", cfg], env=base_env(),
                            stdout=lf, stderr=subprocess.STDOUT, start_new_session=True)

def stop_replicate(p, name, logpath):
    global failed
    if p.poll() is not None:
        log(f"{name}: replicate exited early with {p.returncode}; see {logpath}")
        failed = True
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill(); p.wait()
        log(f"{name}: replicate did not stop on SIGTERM within 20 s; killed")

def moto_lines():
    with open(moto_log, errors="replace") as f:
        return [l for l in f if '" ' in l and "HTTP/1." in l]

sys.path.insert(0, "benches")
from s3_requests import classify as classify_requests, moto_requests
def classify(lines):
    return classify_requests(moto_requests(lines))

def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo = int(k); hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

loads = []
def loadavg():
    l = open("/proc/loadavg").read().split()[:3]
    loads.append(float(l[0]))
    return " ".join(l)

# --- 1. S3 requests per hour, default intervals ---------------------------------------------
s3_res = {}
if only in ("all", "s3"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("PUT", "/bench", body=b"", headers={"Content-Length": "0"})
    r = c.getresponse(); r.read(); c.close()
    if r.status != 200:
        raise SystemExit(f"create bucket: {r.status}")
    for name, bin_ in TOOLS:
        d = os.path.join(work, f"s3-{name}"); os.makedirs(d)
        db = os.path.join(d, "db.sqlite"); make_db(db)
        cfg = os.path.join(d, "litestream.yml")
        open(cfg, "w").write(config(db, textwrap.dedent(f"""\
            type: s3
            bucket: bench
            path: {name}
            endpoint: http://127.0.0.1:{port}
            region: us-east-1
            force-path-style: true
            """)))
        logpath = os.path.join(d, "replicate.log")
        log(f"s3 {name}: replicate + writer (200 ms) for {s3_secs} s; load {loadavg()}")
        mark0 = len(moto_lines())
        t_start = time.monotonic()
        p = start_replicate(bin_, cfg, logpath)
        w = subprocess.Popen([sys.executable, writer_py, db, "0.2", str(s3_secs),
                              os.path.join(d, "commits.txt")])
        time.sleep(max(0.0, t_start + WARMUP - time.monotonic()))
        mark1 = len(moto_lines()); t1 = time.monotonic()
        w.wait()
        t2 = time.monotonic()
        time.sleep(0.3)  # let moto flush its access log
        mark2 = len(moto_lines())
        stop_replicate(p, name, logpath)
        if w.returncode != 0:
            log(f"s3 {name}: writer failed ({w.returncode})"); failed = True
        lines = moto_lines()
        startup = classify(lines[mark0:mark1])
        steady = classify(lines[mark1:mark2])
        window = t2 - t1
        n = sum(steady.values())
        commits = sum(1 for _ in open(os.path.join(d, "commits.txt")))
        log(f"s3 {name}: start-up {startup}; steady {window:.1f} s: {n} requests {steady}; "
            f"{commits} commits; load {loadavg()}")
        s3_res[name] = (window, steady, n, commits)

# --- 2. commit-to-replica latency, file replica, 10 ms intervals ------------------------------
lat_res = {}
if only in ("all", "latency"):
    for name, bin_ in TOOLS:
        d = os.path.join(work, f"lat-{name}"); os.makedirs(d)
        db = os.path.join(d, "db.sqlite"); make_db(db)
        rep = os.path.join(d, "replica")
        cfg = os.path.join(d, "litestream.yml")
        open(cfg, "w").write(config(db, f"type: file\npath: {rep}\n", "    monitor-interval: 10ms\n",
                                    "sync-interval: 10ms\n"))
        logpath = os.path.join(d, "replicate.log")
        seg_txt = os.path.join(d, "segments.txt"); com_txt = os.path.join(d, "commits.txt")
        log(f"latency {name}: writer (250 ms) for {lat_secs} s; load {loadavg()}")
        p = start_replicate(bin_, cfg, logpath)
        po = subprocess.Popen([sys.executable, poller_py, rep, seg_txt])
        # wait until the initial generation/segment exists, so start-up is not measured
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if os.path.exists(seg_txt) and os.path.getsize(seg_txt) > 0:
                break
            time.sleep(0.05)
        time.sleep(1.0)
        # 250 ms is a multiple of the 10 ms tickers: without jitter a run's commits all land at the
        # same tick phase and the median measures that random phase, not the tool.
        w = subprocess.Popen([sys.executable, writer_py, db, "0.25", str(lat_secs), com_txt, "0.02"])
        w.wait()
        time.sleep(1.0)
        open(rep + ".stop", "w").close(); po.wait()
        stop_replicate(p, name, logpath)
        commits = [float(x) for x in open(com_txt).read().split()]
        segs = sorted(float(l.split()[0]) for l in open(seg_txt) if l.strip())
        lats, missed = [], 0
        for tc in commits:
            nxt = [s for s in segs if s >= tc]
            if nxt:
                lats.append((nxt[0] - tc) * 1000)
            else:
                missed += 1
        if missed:
            log(f"latency {name}: {missed} commits never showed up as a new segment"); failed = True
        med, p95 = statistics.median(lats) if lats else float("nan"), pct(lats, 0.95)
        log(f"latency {name}: {len(commits)} commits, {len(segs)} segments seen, "
            f"median {med:.1f} ms, p95 {p95:.1f} ms, max {max(lats or [0]):.1f} ms; load {loadavg()}")
        lat_res[name] = (len(commits), len(segs), med, p95, max(lats or [float('nan')]), missed)

# --- report -----------------------------------------------------------------------------------
if s3_res:
    print(f"\nS3 requests, default intervals, writer every 200 ms for {s3_secs} s; "
          f"steady-state window excludes the first {WARMUP:.0f} s; per hour = count * 3600 / window\n")
    print("| tool | window s | commits | requests in window | by kind | requests/hour | PUT/hour |")
    print("|---|---|---|---|---|---|---|")
    for name, _ in TOOLS:
        if name not in s3_res: continue
        window, steady, n, commits = s3_res[name]
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(steady.items()))
        print(f"| {name} | {window:.1f} | {commits} | {n} | {kinds} | {n*3600/window:,.0f} | "
              f"{steady.get('PUT',0)*3600/window:,.0f} |")
    if len(s3_res) == 2:
        a = s3_res["ours"][2] / s3_res["ours"][0]; b = s3_res[against][2] / s3_res[against][0]
        print(f"\nrequests/hour ratio ours/{against}: {a/b:.3f}" if b else f"\n{against} made no requests")
if lat_res:
    print(f"\nCommit-to-replica latency, file replica, monitor-interval 10ms, sync-interval 10ms, "
          f"writer every 250 ms (+0-20 ms jitter) for {lat_secs} s, poller every 2 ms\n")
    print("| tool | commits | segments seen | median ms | p95 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for name, _ in TOOLS:
        if name not in lat_res: continue
        n, s, med, p95, mx, missed = lat_res[name]
        print(f"| {name} | {n} | {s} | {med:.1f} | {p95:.1f} | {mx:.1f} |")
print(f"\nload average (1 min) during run: min {min(loads):.2f}, max {max(loads):.2f}; "
      f"{os.cpu_count()} CPUs")
sys.exit(1 if failed else 0)
PY
