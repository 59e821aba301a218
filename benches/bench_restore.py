#!/usr/bin/env python3
"""Restore benchmark helper: ours vs. real Litestream v0.3.13 (driven by benches/restore.sh).

usage: bench_restore.py --ours BIN --theirs BIN [--dir DIR] [--runs N] [--scenarios a,b] [--regen]

Scenarios (replicas written by the REAL Litestream v0.3.13 `replicate`, file replica, cached in DIR):
  a  ~100 MB database (100 000 rows: random words + 64 random bytes, like spec section 11)
     plus ~300 MB of WAL over 4 indexes: 3 full-table UPDATE rounds, one transaction each, with
     min/max-checkpoint-page-count so large that only `checkpoint-interval` checkpoints; the
     writer waits for Litestream's checkpoint (a new shadow WAL index) between rounds, so every
     round is one big segment on its own index.
  b  the same-size database, snapshot first, then ~2 300 small write transactions (one segment
     each; monitor-interval and sync-interval 10 ms) spread over several indexes
     (min-checkpoint-page-count decides when Litestream checkpoints).
  a-age  scenario a with age encryption on (`age: {identities, recipients}`, test keys below):
     every object is age(lz4(...)); both tools restore through a config file
     (`restore -config CFG -o OUT DB_PATH`), since a replica URL cannot carry age keys.

Each replica is verified once after generation: real v0.3.13 restores it, `PRAGMA integrity_check`
is ok and the table content equals the source database's.

Then each scenario is restored N times per tool (order alternates every run), each into a fresh
output path, timed with `/usr/bin/time -f '%e %M'` (wall seconds, peak RSS KiB). The page cache is
NOT dropped (warm cache for both tools). Every output must be byte-identical (cmp) to v0.3.13's
first output. Prints a table; exit status 1 if an output differs or a restore fails, 0 otherwise
(missed targets are reported, not treated as failure).

Python 3 stdlib only.
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

GEN_VERSION = 1  # bump to invalidate cached replicas when the generator changes
ROWS = 100_000
TEXT_BYTES = 900
# ~1 500 pseudo-words: page images compress to roughly the 57 % that spec section 11 observed
_vrng = random.Random(1500)
WORDS = ["".join(_vrng.choices("abcdefghijklmnopqrstuvwxyz", k=_vrng.randint(3, 10))) for _ in range(1500)]

TARGETS = {"a": 0.40, "b": 0.25, "a-age": 0.50}

# age keys for the benchmark only (never used for anything else).
AGE_IDENTITY = "AGE-SECRET-KEY-19QCFTFFX5U7TYY56HA0VNDEH9T2AMV63V8YPQJUFXCVKK4A5NV0SAUPNFS"
AGE_RECIPIENT = "age1pjpfvdx82rldgfu4ven3ga9vs2vfdvnz39v76jre4cv88flrysssky69ta"
RSS_TARGET_MB = 64.0


def log(msg):
    print("[bench] " + msg, file=sys.stderr, flush=True)


def words(rng, nbytes):
    s = " ".join(rng.choices(WORDS, k=nbytes // 5 + 8))
    return s[:nbytes]


def connect(path):
    c = sqlite3.connect(path, isolation_level=None, timeout=30)
    c.execute("PRAGMA busy_timeout = 30000")
    return c


def populate(path, seed):
    """Create the ~100 MB database (WAL mode), close it (SQLite checkpoints and removes the -wal)."""
    rng = random.Random(seed)
    c = connect(path)
    c.execute("PRAGMA page_size = 4096")
    assert c.execute("PRAGMA journal_mode = wal").fetchone()[0] == "wal"
    c.execute("PRAGMA synchronous = OFF")
    c.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT NOT NULL, rnd BLOB NOT NULL, n INTEGER NOT NULL DEFAULT 0)")
    c.execute("BEGIN")
    batch = []
    for i in range(ROWS):
        batch.append((words(rng, TEXT_BYTES), rng.randbytes(64)))
        if len(batch) == 5000:
            c.executemany("INSERT INTO items (body, rnd) VALUES (?, ?)", batch)
            batch = []
    if batch:
        c.executemany("INSERT INTO items (body, rnd) VALUES (?, ?)", batch)
    c.execute("COMMIT")
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = c.execute("PRAGMA page_count").fetchone()[0]
    c.close()
    return pages


def content_hash(path):
    c = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        h = hashlib.sha256()
        n = 0
        for row in c.execute("SELECT id, body, rnd, n FROM items ORDER BY id"):
            h.update(repr(row).encode())
            n += 1
        return n, h.hexdigest()
    finally:
        c.close()


def integrity(path):
    c = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return c.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        c.close()


def write_config(path, db, replica, db_opts, rep_opts, age=False):
    lines = ["dbs:", "  - path: %s" % db]
    lines += ["    %s: %s" % kv for kv in db_opts.items()]
    lines += ["    replicas:", "      - type: file", "        path: %s" % replica]
    lines += ["        %s: %s" % kv for kv in rep_opts.items()]
    if age:
        lines += ["        age:", "          identities: [%s]" % AGE_IDENTITY,
                  "          recipients: [%s]" % AGE_RECIPIENT]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


class Replicator:
    def __init__(self, ls, cfg, logpath):
        self.ls, self.cfg, self.logpath = ls, cfg, logpath

    def start(self):
        self.logf = open(self.logpath, "ab")
        self.proc = subprocess.Popen([self.ls, "replicate", "-config", self.cfg], stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=subprocess.STDOUT)

    def alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError("litestream replicate exited early (%s), see %s" % (self.proc.returncode, self.logpath))

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise RuntimeError("litestream replicate did not stop on SIGINT")
        self.logf.close()
        if rc != 0:
            raise RuntimeError("litestream replicate exited %d, see %s" % (rc, self.logpath))


def shadow_indexes(db):
    d = os.path.join(os.path.dirname(db), "." + os.path.basename(db) + "-litestream", "generations")
    out = set()
    if os.path.isdir(d):
        for g in os.listdir(d):
            w = os.path.join(d, g, "wal")
            if os.path.isdir(w):
                for f in os.listdir(w):
                    if f.endswith(".wal") and len(f) == 12:
                        out.add(int(f[:8], 16))
    return out


def replica_stats(replica):
    gens = os.listdir(os.path.join(replica, "generations"))
    snaps, segs, seg_bytes, idx = 0, [], 0, set()
    snap_bytes = 0
    for g in gens:
        for root, _, files in os.walk(os.path.join(replica, "generations", g)):
            for f in files:
                p = os.path.join(root, f)
                if f.endswith(".snapshot.lz4"):
                    snaps += 1
                    snap_bytes += os.path.getsize(p)
                elif f.endswith(".wal.lz4"):
                    segs.append(os.path.getsize(p))
                    idx.add((g, f[:8]))  # wal/<index>_<offset>.wal.lz4
    return {"generations": len(gens), "snapshots": snaps, "snapshot_bytes": snap_bytes,
            "segments": len(segs), "segment_bytes": sum(segs), "indexes": len(idx),
            "median_segment_bytes": int(statistics.median(segs)) if segs else 0}


def wait_replica_caught_up(db, replica, timeout=120):
    """Wait until the newest shadow WAL index exists in the replica (best effort)."""
    end = time.time() + timeout
    while time.time() < end:
        sh = shadow_indexes(db)
        if sh:
            top = "%08x" % max(sh)
            found = False
            for root, dirs, _ in os.walk(os.path.join(replica, "generations")):
                if os.path.basename(root) == "wal" and top in dirs:
                    found = True
            if found:
                return
        time.sleep(0.1)


def gen_a(ls, work, age=False):
    db = os.path.join(work, "src", "db.sqlite")
    replica = os.path.join(work, "replica")
    os.makedirs(os.path.dirname(db))
    t = time.time()
    pages = populate(db, seed=11)
    log("a: populated %d pages (%.1f MB) in %.1fs" % (pages, pages * 4096 / 1e6, time.time() - t))
    cfg = os.path.join(work, "litestream.yml")
    write_config(cfg, db, replica,
                 {"monitor-interval": "100ms", "checkpoint-interval": "1s",
                  "min-checkpoint-page-count": 10_000_000, "max-checkpoint-page-count": 10_000_000},
                 {"sync-interval": "100ms"}, age=age)
    rep = Replicator(ls, cfg, os.path.join(work, "replicate.log"))
    c = connect(db)
    c.execute("PRAGMA cache_size = -400000")  # keep the whole round in memory: no cache spill
    rep.start()
    # wait for the snapshot (generation start)
    end = time.time() + 120
    while time.time() < end:
        rep.alive()
        if os.path.isdir(os.path.join(replica, "generations")) and replica_stats(replica)["snapshots"]:
            break
        time.sleep(0.2)
    else:
        raise RuntimeError("no snapshot after 120s")
    # Litestream's start-up leaves a few `_litestream_seq` frames in shadow index 0, which makes the
    # checkpoint-interval rule fire right away; let that checkpoint (-> index 1) happen before the
    # first round, otherwise it races the big write transaction ("database is locked", then
    # "wal overwritten by another process" and a second generation).
    end = time.time() + 60
    while max(shadow_indexes(db) or {0}) < 1 and time.time() < end:
        rep.alive()
        time.sleep(0.2)
    wait_replica_caught_up(db, replica)
    time.sleep(1.0)
    for rnd in range(3):
        before = max(shadow_indexes(db) or {0})
        t = time.time()
        c.execute("BEGIN")
        c.execute("UPDATE items SET rnd = randomblob(64), n = n + 1")
        c.execute("COMMIT")
        log("a: round %d committed in %.1fs (shadow index %d); waiting for Litestream's checkpoint"
            % (rnd + 1, time.time() - t, before))
        # Litestream checkpoints (checkpoint-interval) and then forces the WAL to restart on the
        # next write; wait for the new shadow index before the next round.
        end = time.time() + 120
        while max(shadow_indexes(db) or {0}) <= before:
            rep.alive()
            if time.time() > end:
                raise RuntimeError("Litestream did not start a new WAL index within 120s")
            time.sleep(0.2)
        wait_replica_caught_up(db, replica)
    time.sleep(1.5)
    rep.stop()
    c.close()
    return db, replica, (cfg if age else None)


def gen_b(ls, work, target_segments):
    db = os.path.join(work, "src", "db.sqlite")
    replica = os.path.join(work, "replica")
    os.makedirs(os.path.dirname(db))
    t = time.time()
    pages = populate(db, seed=11)
    log("b: populated %d pages (%.1f MB) in %.1fs" % (pages, pages * 4096 / 1e6, time.time() - t))
    cfg = os.path.join(work, "litestream.yml")
    write_config(cfg, db, replica,
                 {"monitor-interval": "10ms", "checkpoint-interval": "1h",
                  "min-checkpoint-page-count": 500, "max-checkpoint-page-count": 10_000_000},
                 {"sync-interval": "10ms"})
    rep = Replicator(ls, cfg, os.path.join(work, "replicate.log"))
    rng = random.Random(22)
    c = connect(db)
    rep.start()
    end = time.time() + 120
    while time.time() < end:
        rep.alive()
        if os.path.isdir(os.path.join(replica, "generations")) and replica_stats(replica)["snapshots"]:
            break
        time.sleep(0.2)
    else:
        raise RuntimeError("no snapshot after 120s")
    time.sleep(1.0)
    t = time.time()
    writes = 0
    # Small write transactions, each given time to become its own segment; count the replica's
    # segments now and then and stop at the target (the exact count depends on timing/load).
    while True:
        rep.alive()
        c.execute("BEGIN")
        for _ in range(2):
            c.execute("UPDATE items SET body = ?, rnd = ?, n = n + 1 WHERE id = ?",
                      (words(rng, TEXT_BYTES), rng.randbytes(64), rng.randrange(1, ROWS + 1)))
        c.execute("COMMIT")
        writes += 1
        time.sleep(0.03)
        if writes % 100 == 0:
            st = replica_stats(replica)
            log("b: %d writes, %d segments over %d indexes (%.0fs)" % (writes, st["segments"], st["indexes"], time.time() - t))
            if st["segments"] >= target_segments:
                break
            if time.time() - t > 900:
                raise RuntimeError("b: target segment count not reached in 15 min")
    time.sleep(1.0)
    rep.stop()
    c.close()
    return db, replica, None


def restore_args(replica, db, config):
    """The restore command's source arguments: the replica URL, or a config file and the
    database path (age keys live only in a config file)."""
    if config:
        return ["-config", config, db]
    return ["file://" + replica]


def verify(ls, db, replica, work, config):
    gens = os.listdir(os.path.join(replica, "generations"))
    if len(gens) != 1:
        raise RuntimeError("expected exactly one generation in %s, found %s (see replicate.log)" % (replica, gens))
    out = os.path.join(work, "verify", "restored.db")
    shutil.rmtree(os.path.dirname(out), ignore_errors=True)
    os.makedirs(os.path.dirname(out))
    subprocess.run([ls, "restore", "-o", out] + restore_args(replica, db, config), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ic = integrity(out)
    if ic != "ok":
        raise RuntimeError("integrity_check of v0.3.13 restore: %s" % ic)
    a, b = content_hash(db), content_hash(out)
    if a != b:
        raise RuntimeError("v0.3.13 restore content differs from source: %s vs %s" % (a, b))
    shutil.rmtree(os.path.dirname(out))
    return a[0]


def ensure_replica(name, ls, base, regen, target_segments):
    work = os.path.join(base, "scenario-" + name)
    meta = os.path.join(work, "replica.json")
    if not regen and os.path.exists(meta):
        with open(meta) as f:
            m = json.load(f)
        if m.get("gen_version") == GEN_VERSION:
            log("%s: reusing cached replica %s" % (name, m["replica"]))
            return m
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    log("%s: generating replica with real Litestream v0.3.13 in %s" % (name, work))
    t = time.time()
    if name in ("a", "a-age"):
        db, replica, config = gen_a(ls, work, age=(name == "a-age"))
    else:
        db, replica, config = gen_b(ls, work, target_segments)
    rows = verify(ls, db, replica, work, config)
    if config:
        check_encrypted(replica)
    m = {"gen_version": GEN_VERSION, "replica": replica, "db": db, "config": config, "rows": rows,
         "db_bytes": os.path.getsize(db), "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
         "generate_seconds": round(time.time() - t, 1), **replica_stats(replica)}
    with open(meta + ".tmp", "w") as f:
        json.dump(m, f, indent=1)
    os.rename(meta + ".tmp", meta)
    log("%s: replica ready and verified: %s" % (name, json.dumps(m)))
    return m


def check_encrypted(replica):
    """Every object of an age replica is binary age v1."""
    n = 0
    for root, _, files in os.walk(replica):
        for f in files:
            if f.endswith(".lz4"):
                with open(os.path.join(root, f), "rb") as fh:
                    if fh.read(22) != b"age-encryption.org/v1\n":
                        raise RuntimeError("%s is not age-encrypted" % os.path.join(root, f))
                n += 1
    if n == 0:
        raise RuntimeError("no objects in %s" % replica)


def timed_restore(binary, m, out, extra):
    tf = out + ".time"
    cmd = (["/usr/bin/time", "-o", tf, "-f", "%e %M", binary, "restore"] + extra + ["-o", out]
           + restore_args(m["replica"], m["db"], m.get("config")))
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), p.returncode, p.stderr.decode(errors="replace")[-2000:]))
    with open(tf) as f:
        last = f.read().strip().splitlines()[-1].split()
    os.unlink(tf)
    return float(last[0]), int(last[1]) / 1024.0


def extra_flags(tool):
    """Extra restore flags for `tool` from OURS_RESTORE_FLAGS / THEIRS_RESTORE_FLAGS."""
    var = "OURS_RESTORE_FLAGS" if tool == "ours" else "THEIRS_RESTORE_FLAGS"
    return os.environ.get(var, "").split()


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", required=True)
    ap.add_argument("--theirs", required=True)
    ap.add_argument("--dir", default=os.environ.get("BENCH_DIR", "/tmp/litestream-bench"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scenarios", default="a,b", help="comma-separated: a, b, a-age")
    ap.add_argument("--regen", action="store_true", help="regenerate cached replicas")
    ap.add_argument("--segments", type=int, default=2300, help="target segment count for scenario b")
    ap.add_argument("--json", help="also write results as JSON to this file")
    args = ap.parse_args()

    scenarios = [s for s in args.scenarios.split(",") if s]
    metas = {s: ensure_replica(s, args.theirs, args.dir, args.regen, args.segments) for s in scenarios}
    for m in metas.values():
        m.update(replica_stats(m["replica"]))

    outdir = os.path.join(args.dir, "out")
    shutil.rmtree(outdir, ignore_errors=True)
    os.makedirs(outdir)
    load_start = loadavg()
    results = {}
    litter = {}
    ok = True
    for s in scenarios:
        m = metas[s]
        tools = [("v0.3.13", args.theirs), ("ours", args.ours)]
        samples = {"v0.3.13": [], "ours": []}
        ref = None
        tag = s.replace("-", "")  # output names are <tag>-<tool>-<run>.db
        for i in range(args.runs):
            order = tools if i % 2 == 0 else tools[::-1]
            for name, binary in order:
                out = os.path.join(outdir, "%s-%s-%d.db" % (tag, name, i))
                wall, rss = timed_restore(binary, m, out, extra_flags(name))
                samples[name].append((wall, rss))
                log("%s run %d %-7s wall %.2fs rss %.1f MB (load %s)" % (s, i + 1, name, wall, rss, loadavg()))
                if name == "v0.3.13" and ref is None:
                    ref = out
                    continue
                if ref is None:  # ours ran first: compare later
                    continue
                same = subprocess.run(["cmp", "-s", ref, out]).returncode == 0
                if not same:
                    ok = False
                    log("ERROR: %s differs from %s" % (out, ref))
                else:
                    os.unlink(out)
            # outputs of ours written before the reference existed
            for f in sorted(os.listdir(outdir)):
                p = os.path.join(outdir, f)
                if ref and p != ref and f.startswith(tag + "-") and f.endswith(".db"):
                    if subprocess.run(["cmp", "-s", ref, p]).returncode != 0:
                        ok = False
                        log("ERROR: %s differs from %s" % (p, ref))
                    else:
                        os.unlink(p)
            for f in sorted(os.listdir(outdir)):  # -wal/-shm/tmp litter left by a restore
                if f.startswith(tag + "-") and not f.endswith(".db"):
                    litter.setdefault(f.split("-")[1], set()).add(f.split(".db", 1)[-1])
                    os.unlink(os.path.join(outdir, f))
        if ref:
            os.unlink(ref)
        results[s] = {name: {"walls": [w for w, _ in v], "rss": [r for _, r in v],
                             "median_wall": statistics.median(w for w, _ in v),
                             "max_rss_mb": max(r for _, r in v)} for name, v in samples.items()}
    load_end = loadavg()

    # table
    print()
    print("Restore benchmark  %s  host=%s  nproc=%d  load(1/5/15m) start=%s end=%s  runs=%d  page cache: warm (not dropped)"
          % (datetime.now().astimezone().isoformat(timespec="seconds"), os.uname().nodename, os.cpu_count(),
             load_start, load_end, args.runs))
    for s in scenarios:
        m = metas[s]
        print("scenario %s: db %.1f MB, snapshot %.1f MB stored, %d segments (%.1f MB stored, median %d B) over %d indexes"
              % (s, m["db_bytes"] / 1e6, m["snapshot_bytes"] / 1e6, m["segments"], m["segment_bytes"] / 1e6,
                 m["median_segment_bytes"], m["indexes"]))
    print()
    hdr = "| scenario | tool | median wall s | runs (s) | max RSS MB | ratio ours/theirs (wall) | wall target | wall ok | RSS ≤ %d MB |" % RSS_TARGET_MB
    print(hdr)
    print("|" + "---|" * 9)
    for s in scenarios:
        r = results[s]
        ratio = r["ours"]["median_wall"] / r["v0.3.13"]["median_wall"]
        for name in ("v0.3.13", "ours"):
            x = r[name]
            runs = " ".join("%.2f" % w for w in x["walls"])
            if name == "ours":
                print("| %s | %s | %.2f | %s | %.1f | %.3f | ≤ %.2fx | %s | %s |" % (
                    s, name, x["median_wall"], runs, x["max_rss_mb"], ratio, TARGETS[s],
                    "yes" if ratio <= TARGETS[s] else "NO", "yes" if x["max_rss_mb"] <= RSS_TARGET_MB else "NO"))
            else:
                print("| %s | %s | %.2f | %s | %.1f | | | | (%s) |" % (
                    s, name, x["median_wall"], runs, x["max_rss_mb"],
                    "yes" if x["max_rss_mb"] <= RSS_TARGET_MB else "no"))
        r["ratio"] = ratio
    print()
    print("outputs byte-identical (cmp) across all runs: %s" % ("yes" if ok else "NO"))
    for tool in sorted(litter):
        print("files left beside the output by %s: %s" % (tool, ", ".join("<out>.db" + x for x in sorted(litter[tool]))))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "replicas": metas, "load_start": load_start, "load_end": load_end,
                       "identical": ok}, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
