"""What `litestream replicate` costs, ours vs. Litestream v0.3.13 (or, with `--against v0.5.17`,
ours in the LTX format vs. Litestream v0.5.17). Entry point: benches/cost.sh.

Python 3 standard library only. Prints markdown tables; exits 1 if a run failed (a replicator
that exited early, a writer error, commits that never reached the replica, a database that never
got a generation).
"""
import argparse, os, random, signal, sqlite3, statistics, subprocess, sys, textwrap, time

CLK_TCK = os.sysconf("SC_CLK_TCK")
failed = False


def log(m):
    print("[cost-bench] " + m, file=sys.stderr, flush=True)


WRITER = textwrap.dedent(r'''
    import random, sqlite3, sys, time
    db, secs, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    rate = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0  # commits/s; 0: as fast as it can
    rng = random.Random(1)
    c = sqlite3.connect(db, isolation_level=None, timeout=30)
    c.execute("PRAGMA busy_timeout = 30000")
    # Litestream's recommended setting; with FULL every commit waits for an fsync and the
    # shared disk, not the replicator, sets the writer's pace.
    c.execute("PRAGMA synchronous = NORMAL")
    stamps = []
    t0 = time.monotonic(); end = t0 + secs
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if rate > 0:
            due = t0 + len(stamps) / rate
            if due > now:
                time.sleep(min(due, end) - now)
                continue
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO t (v) VALUES (?)", (rng.randbytes(3000),))
        c.execute("COMMIT")
        stamps.append(time.monotonic())
    c.close()
    with open(out, "w") as f:
        f.write("\n".join(f"{s:.6f}" for s in stamps))
''')

POLLER = textwrap.dedent(r'''
    import os, sys, time
    root, out = sys.argv[1], sys.argv[2]
    seen = set(); f = open(out, "w"); stop = root + ".stop"
    while not os.path.exists(stop):
        now = time.monotonic()
        for d, _, names in os.walk(root):
            # v0.3 WAL segments, or LTX level-0 files (--against v0.5.17)
            if "/wal" not in d and not d.endswith("/ltx/0"):
                continue
            for n in names:
                p = os.path.join(d, n)
                if p not in seen and not n.endswith(".tmp"):
                    seen.add(p); f.write(f"{now:.6f} {p}\n")
        f.flush()
        time.sleep(0.002)
''')


def make_db(path, table=True):
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode = wal")
    if table:
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    c.close()


def env():
    e = dict(os.environ)
    e.pop("LITESTREAM_CONFIG", None)
    return e


def proc_cpu(pid):
    """utime+stime in seconds of a live process (all threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0  # MB
    return float("nan")


def proc_io(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                k, v = line.split(":")
                out[k] = int(v)
    except OSError:
        pass
    return out


def start(bin_, cfg, logpath):
    lf = open(logpath, "w")
    return subprocess.Popen([bin_, "replicate", "-config", cfg], env=env(), stdout=lf,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(p, name, sig=signal.SIGTERM, timeout=60):
    """Signal, wait; returns seconds to exit (None if it had to be killed)."""
    global failed
    if p.poll() is not None:
        log(f"{name}: replicate exited early with {p.returncode}")
        failed = True
        return None
    t = time.monotonic()
    p.send_signal(sig)
    try:
        p.wait(timeout=timeout)
        return time.monotonic() - t
    except subprocess.TimeoutExpired:
        p.kill(); p.wait()
        log(f"{name}: did not exit within {timeout} s of the signal; killed")
        return None


def wait_for(pred, secs):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def has_generation(rep):
    """v0.3: the replica has a generation; LTX: it has a level-0 file."""
    try:
        if os.path.isdir(os.path.join(rep, "ltx")):
            return any(n.endswith(".ltx") for n in os.listdir(os.path.join(rep, "ltx", "0")))
        return any(os.scandir(os.path.join(rep, "generations")))
    except FileNotFoundError:
        return False


def config(a, dbs, extra_db="", extra_rep=""):
    """A config file's text for (db, replica dir) pairs: v0.3 keys (`replicas:`), or with
    `--against v0.5.17` v0.5 keys (`replica:`, default `levels`, `snapshot`, retention) and
    `format: ltx`, which v0.5.17 ignores and which makes ours write the LTX format."""
    ltx = a.against == "v0.5.17"
    lines = ["format: ltx"] if ltx else []
    lines.append("dbs:")
    for db, rep in dbs:
        lines.append(f"  - path: {db}")
        lines += [l for l in [extra_db] if l]
        if ltx:
            lines += ["    replica:", "      type: file", f"      path: {rep}"]
            lines += [f"  {l}" for l in [extra_rep] if l]
        else:
            lines += ["    replicas:", "      - type: file", f"        path: {rep}"]
            lines += [f"    {l}" for l in [extra_rep] if l]
    return "\n".join(lines) + "\n"


def stored(rep):
    """Bytes and files stored under a replica directory, and the LTX files per level."""
    n = files = 0
    levels = {}
    for d, _, names in os.walk(rep):
        for name in names:
            if name.endswith(".tmp"):
                continue
            n += os.path.getsize(os.path.join(d, name)); files += 1
            if name.endswith(".ltx"):
                lv = os.path.basename(d)
                levels[lv] = levels.get(lv, 0) + 1
    return n, files, levels


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo = int(k); hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def loadavg():
    return open("/proc/loadavg").read().split()[0]


def run_writer(a, db, out, secs=None, rate=0.0):
    secs = a.seconds if secs is None else secs
    w = subprocess.run([sys.executable, a.writer_py, db, str(secs), out, str(rate)])
    if w.returncode != 0:
        global failed
        failed = True
        log(f"writer failed on {db}")
    return [float(x) for x in open(out).read().split()]


def unreplicated(a, tag):
    d = os.path.join(a.work, f"plain-{tag}"); os.makedirs(d)
    db = os.path.join(d, "db.sqlite"); make_db(db)
    n = len(run_writer(a, db, os.path.join(d, "commits.txt")))
    log(f"unreplicated ({tag}): {n} commits in {a.seconds} s; load {loadavg()}")
    return n


def replicated(a, name, bin_, fast):
    """One replicated run. fast: 10 ms monitor/sync intervals plus the segment poller."""
    kind = "lat" if fast else "load"
    d = os.path.join(a.work, f"{kind}-{name}"); os.makedirs(d)
    db = os.path.join(d, "db.sqlite"); make_db(db)
    rep = os.path.join(d, "replica")
    cfg = os.path.join(d, "litestream.yml")
    fx = ("    monitor-interval: 10ms", "    sync-interval: 10ms") if fast else ("", "")
    open(cfg, "w").write(config(a, [(db, rep)], *fx))
    t_start = time.monotonic()
    p = start(bin_, cfg, os.path.join(d, "replicate.log"))
    if not wait_for(lambda: has_generation(rep), 60):
        log(f"{name}: no generation after 60 s"); stop(p, name)
        global failed
        failed = True
        return None
    po = None
    seg_txt = os.path.join(d, "segments.txt")
    if fast:
        po = subprocess.Popen([sys.executable, a.poller_py, rep, seg_txt])
    time.sleep(1.0)
    cpu0, io0 = proc_cpu(p.pid), proc_io(p.pid)
    commits = run_writer(a, db, os.path.join(d, "commits.txt"))
    time.sleep(1.0)
    cpu1, io1 = proc_cpu(p.pid), proc_io(p.pid)
    hwm = proc_status(p.pid, "VmHWM")
    long = {}
    if a.minutes and not fast:
        # The rest of the --minutes window: a steady --rate writer (compaction and retention
        # run meanwhile); then what the replica stores and what the whole window cost.
        left = t_start + a.minutes * 60 - time.monotonic()
        trickle = run_writer(a, db, os.path.join(d, "trickle.txt"), max(left, 0.0), a.rate)
        b, files, levels = stored(rep)
        io2 = proc_io(p.pid)
        long = dict(cpu_all=proc_cpu(p.pid), hwm_all=proc_status(p.pid, "VmHWM"), stored=b / 1e6,
                    files=files, levels=levels, trickle=len(trickle),
                    wbytes_all=io2.get("write_bytes", 0) / 1e6,
                    db_mb=os.path.getsize(db) / 1e6, secs_all=time.monotonic() - t_start)
    if po:
        open(rep + ".stop", "w").close(); po.wait()
    stop(p, name)
    wal = os.path.getsize(db + "-wal") if os.path.exists(db + "-wal") else 0
    check_restore(name, bin_, db, rep, os.path.join(d, "restored.db"))
    res = dict(cpu=cpu1 - cpu0, hwm=hwm, commits=len(commits),
               rchar=(io1.get("rchar", 0) - io0.get("rchar", 0)) / 1e6,
               wchar=(io1.get("wchar", 0) - io0.get("wchar", 0)) / 1e6, wal=wal / 1e6, **long)
    if fast:
        segs = sorted(float(l.split()[0]) for l in open(seg_txt) if l.strip())
        lo, hi, missed = [], [], 0
        import bisect
        for tc in commits:
            i = bisect.bisect_left(segs, tc)
            if i + 1 < len(segs):
                lo.append((segs[i] - tc) * 1000); hi.append((segs[i + 1] - tc) * 1000)
            else:
                missed += 1
        if missed > 5:  # the last commits may share the final segment
            log(f"{name}: {missed} commits without two later segments")
        res.update(segs=len(segs), p50=pct(hi, 0.5), p99=pct(hi, 0.99), p99lo=pct(lo, 0.99),
                   mx=max(hi or [float("nan")]))
    log(f"{kind} {name}: {res}; load {loadavg()}")
    return res


def check_restore(name, bin_, db, rep, out):
    """The replica must restore (with the same tool) to the source's rows, intact."""
    global failed
    r = subprocess.run([bin_, "restore", "-o", out, "file://" + rep], env=env(),
                       capture_output=True, text=True)
    try:
        want = sqlite3.connect(db).execute("SELECT COUNT(*), SUM(LENGTH(v)) FROM t").fetchone()
    except sqlite3.Error as e:
        failed = True
        log(f"{name}: SOURCE DATABASE UNREADABLE after the run: {e}")
        return
    try:
        c = sqlite3.connect(out)
        ok = c.execute("PRAGMA integrity_check").fetchone()[0]
        got = c.execute("SELECT COUNT(*), SUM(LENGTH(v)) FROM t").fetchone()
    except sqlite3.Error as e:
        ok, got = str(e), None
    if r.returncode != 0 or ok != "ok" or got != want:
        failed = True
        log(f"{name}: RESTORE CHECK FAILED: exit {r.returncode}, integrity {ok!r}, rows {got} "
            f"want {want}; {r.stderr.strip()[-300:]}")


def scale(a, name, bin_):
    d = os.path.join(a.work, f"scale-{name}"); dbs = os.path.join(d, "dbs"); os.makedirs(dbs)
    pairs = []
    reps = []
    for i in range(a.scale_dbs):
        db = os.path.join(dbs, f"db{i:04}.sqlite")
        c = sqlite3.connect(db, isolation_level=None)
        c.execute("PRAGMA journal_mode = wal")
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        c.execute("INSERT INTO t (v) VALUES ('hello')")
        c.close()
        rep = os.path.join(d, "replicas", f"db{i:04}"); reps.append(rep)
        pairs.append((db, rep))
    cfg = os.path.join(d, "litestream.yml"); open(cfg, "w").write(config(a, pairs))
    t0 = time.monotonic()
    p = start(bin_, cfg, os.path.join(d, "replicate.log"))
    ok = wait_for(lambda: p.poll() is None and all(has_generation(r) for r in reps), 180)
    t_all = time.monotonic() - t0
    if not ok:
        log(f"scale {name}: not every database had a generation after 180 s")
        global failed
        failed = True
    time.sleep(2.0)
    rss = proc_status(p.pid, "VmRSS")
    cpu0 = proc_cpu(p.pid); time.sleep(10.0); idle = (proc_cpu(p.pid) - cpu0) / 10.0
    threads = len(os.listdir(f"/proc/{p.pid}/task"))
    hwm = proc_status(p.pid, "VmHWM")
    sigint = stop(p, name, signal.SIGINT, timeout=60)
    res = dict(t_all=t_all, rss=rss, hwm=hwm, idle=idle, threads=threads, sigint=sigint)
    log(f"scale {name}: {res}; load {loadavg()}")
    return res


def fmt(x, nd=2):
    return "n/a" if x is None or x != x else f"{x:.{nd}f}"


def long_table(a, tools, rounds):
    """The --minutes window: whole-window CPU and peak RSS, what the replica stores."""
    T = tools[0][0]
    print(f"\nWhole window: the burst above, then one 3 KB commit at {a.rate:g}/s until "
          f"{a.minutes:g} min after the replicator started; replica measured then.\n")
    print("| round | tool | window s | CPU s | peak RSS MB | commits after burst | db MB | "
          "replica MB stored | files | LTX files per level | write_bytes MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rs = {"cpu": [], "rss": [], "stored": []}
    for k, (_, load) in enumerate(rounds):
        for name, _ in tools:
            r = load[name]
            lv = " ".join(f"L{x}:{n}" for x, n in sorted(r["levels"].items())) or "-"
            print(f"| {k} | {name} | {fmt(r['secs_all'], 0)} | {fmt(r['cpu_all'])} | "
                  f"{fmt(r['hwm_all'], 1)} | {r['trickle']} | {fmt(r['db_mb'], 1)} | "
                  f"{fmt(r['stored'], 2)} | {r['files']} | {lv} | {fmt(r['wbytes_all'], 0)} |")
        o, t = load["ours"], load[T]
        rs["cpu"].append(o["cpu_all"] / t["cpu_all"]); rs["rss"].append(o["hwm_all"] / t["hwm_all"])
        rs["stored"].append(o["stored"] / t["stored"])
    m = {k: statistics.median(v) for k, v in rs.items()}
    print(f"\nmedians over the window: CPU ours/{T} {fmt(m['cpu'])}, peak RSS {fmt(m['rss'])}, "
          f"bytes stored {fmt(m['stored'])} (target <= 1)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours"); ap.add_argument("--theirs"); ap.add_argument("--work")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--scale-dbs", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3, help="rounds of the load case")
    ap.add_argument("--only", choices=["load", "latency", "scale"])
    ap.add_argument("--against", choices=["v0.3.13", "v0.5.17"], default="v0.3.13",
                    help="v0.5.17: the real v0.5.17 vs. ours in the LTX format (v0.5 config keys)")
    ap.add_argument("--minutes", type=float, default=0.0,
                    help="load case: keep each replicator running this long in total (a --rate "
                         "writer after the burst), then report the replica's stored bytes")
    ap.add_argument("--rate", type=float, default=10.0,
                    help="commits/s of the writer after the burst in the --minutes window")
    a = ap.parse_args()
    a.writer_py = os.path.join(a.work, "writer.py"); open(a.writer_py, "w").write(WRITER)
    a.poller_py = os.path.join(a.work, "poller.py"); open(a.poller_py, "w").write(POLLER)
    T = a.against
    tools = [(T, a.theirs), ("ours", a.ours)]
    loads = [loadavg()]
    lat, sc = {}, {}
    rounds = []
    if a.only in (None, "load"):
        # Rounds alternate the tools' order; each has its own unreplicated run before it.
        for k in range(a.runs):
            b = unreplicated(a, f"r{k}")
            order = tools if k % 2 == 0 else tools[::-1]
            rounds.append((b, {name: replicated(a, f"{name}-r{k}", bin_, False)
                               for name, bin_ in order}))
        base = [b for b, _ in rounds]
        base_n = statistics.mean(base)
    if a.only in (None, "latency"):
        for name, bin_ in tools:
            lat[name] = replicated(a, name, bin_, True)
    if a.only in (None, "scale"):
        for name, bin_ in tools:
            sc[name] = scale(a, name, bin_)
    loads.append(loadavg())
    if rounds and all(all(r.values()) for _, r in rounds):
        print(f"\nSteady write load: one ~3 KB insert per transaction, as fast as python3 can "
              f"(synchronous=NORMAL), {a.seconds:g} s, file replica, default intervals, "
              f"{a.runs} rounds" + (", ours in the LTX format (`format: ltx`), v0.5 config keys "
              "with default `levels`" if T == "v0.5.17" else "") + ".\n")
        print("| round | tool | CPU s | CPU ms per 1,000 commits | peak RSS MB | commits | "
              "throughput vs unreplicated (same round) | rchar MB | wchar MB |")
        print("|---|---|---|---|---|---|---|---|---|")
        ratios = {"cpu": [], "cpuc": [], "rss": [], "thr_o": [], "thr_t": []}
        for k, (b, load) in enumerate(rounds):
            for name, _ in tools:
                r = load[name]
                print(f"| {k} | {name} | {fmt(r['cpu'])} | {fmt(r['cpu'] * 1e6 / r['commits'], 1)}"
                      f" | {fmt(r['hwm'], 1)} | {r['commits']} (unreplicated {b}) | "
                      f"{fmt(r['commits'] / b)} | {fmt(r['rchar'], 0)} | {fmt(r['wchar'], 0)} |")
            o, t = load["ours"], load[T]
            ratios["cpu"].append(o["cpu"] / t["cpu"])
            ratios["cpuc"].append((o["cpu"] / o["commits"]) / (t["cpu"] / t["commits"]))
            ratios["rss"].append(o["hwm"] / t["hwm"])
            ratios["thr_o"].append(o["commits"] / b); ratios["thr_t"].append(t["commits"] / b)
        m = {k: statistics.median(v) for k, v in ratios.items()}
        print(f"\nmedians: CPU ours/{T} {fmt(m['cpu'])} (target <= 0.5), per commit "
              f"{fmt(m['cpuc'])}; peak RSS {fmt(m['rss'])} (target <= 0.5); throughput vs "
              f"unreplicated: ours {fmt(m['thr_o'])} (target >= 0.95), {T} {fmt(m['thr_t'])}")
        if a.minutes:
            long_table(a, tools, rounds)
    if lat and all(lat.values()):
        print("\nSame load, monitor-interval 10ms, sync-interval 10ms; latency bound = second new "
              "segment after the commit (p99 of the first one in brackets)\n")
        print("| tool | commits | segments | p50 ms | p99 ms | max ms | CPU s | peak RSS MB |")
        print("|---|---|---|---|---|---|---|---|")
        for name, _ in tools:
            r = lat[name]
            print(f"| {name} | {r['commits']} | {r['segs']} | {fmt(r['p50'], 1)} | "
                  f"{fmt(r['p99'], 1)} ({fmt(r['p99lo'], 1)}) | {fmt(r['mx'], 1)} | "
                  f"{fmt(r['cpu'])} | {fmt(r['hwm'], 1)} |")
    if sc:
        print(f"\nScale: {a.scale_dbs} databases in one directory, each written once, one file "
              "replica each\n")
        print("| tool | all replicated after s | RSS MB | peak RSS MB | idle CPU (cores) | threads "
              "| SIGINT to exit s |")
        print("|---|---|---|---|---|---|---|")
        for name, _ in tools:
            r = sc[name]
            print(f"| {name} | {fmt(r['t_all'], 1)} | {fmt(r['rss'], 1)} | {fmt(r['hwm'], 1)} | "
                  f"{fmt(r['idle'], 3)} | {r['threads']} | {fmt(r['sigint'])} |")
    print(f"\nload average (1 min) at start {loads[0]}, at end {loads[1]}; {os.cpu_count()} CPUs")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
