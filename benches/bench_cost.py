"""What `litestream replicate` costs, ours vs. Litestream v0.3.13. Entry point: benches/cost.sh.

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
        for d, _, names in os.walk(os.path.join(root, "generations")):
            if "/wal" not in d:
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
    try:
        return any(os.scandir(os.path.join(rep, "generations")))
    except FileNotFoundError:
        return False


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo = int(k); hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def loadavg():
    return open("/proc/loadavg").read().split()[0]


def run_writer(a, db, out):
    w = subprocess.run([sys.executable, a.writer_py, db, str(a.seconds), out])
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
    dbx = "    monitor-interval: 10ms\n" if fast else ""
    rx = "        sync-interval: 10ms\n" if fast else ""
    open(cfg, "w").write(f"dbs:\n  - path: {db}\n{dbx}    replicas:\n      - type: file\n"
                         f"        path: {rep}\n{rx}")
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
    if po:
        open(rep + ".stop", "w").close(); po.wait()
    stop(p, name)
    wal = os.path.getsize(db + "-wal") if os.path.exists(db + "-wal") else 0
    check_restore(name, bin_, db, rep, os.path.join(d, "restored.db"))
    res = dict(cpu=cpu1 - cpu0, hwm=hwm, commits=len(commits),
               rchar=(io1.get("rchar", 0) - io0.get("rchar", 0)) / 1e6,
               wchar=(io1.get("wchar", 0) - io0.get("wchar", 0)) / 1e6, wal=wal / 1e6)
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
    lines = ["dbs:"]
    reps = []
    for i in range(a.scale_dbs):
        db = os.path.join(dbs, f"db{i:04}.sqlite")
        c = sqlite3.connect(db, isolation_level=None)
        c.execute("PRAGMA journal_mode = wal")
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        c.execute("INSERT INTO t (v) VALUES ('hello')")
        c.close()
        rep = os.path.join(d, "replicas", f"db{i:04}"); reps.append(rep)
        lines += [f"  - path: {db}", "    replicas:", "      - type: file", f"        path: {rep}"]
    cfg = os.path.join(d, "litestream.yml"); open(cfg, "w").write("\n".join(lines) + "\n")
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours"); ap.add_argument("--theirs"); ap.add_argument("--work")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--scale-dbs", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3, help="rounds of the load case")
    ap.add_argument("--only", choices=["load", "latency", "scale"])
    a = ap.parse_args()
    a.writer_py = os.path.join(a.work, "writer.py"); open(a.writer_py, "w").write(WRITER)
    a.poller_py = os.path.join(a.work, "poller.py"); open(a.poller_py, "w").write(POLLER)
    tools = [("v0.3.13", a.theirs), ("ours", a.ours)]
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
              f"{a.runs} rounds.\n")
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
            o, t = load["ours"], load["v0.3.13"]
            ratios["cpu"].append(o["cpu"] / t["cpu"])
            ratios["cpuc"].append((o["cpu"] / o["commits"]) / (t["cpu"] / t["commits"]))
            ratios["rss"].append(o["hwm"] / t["hwm"])
            ratios["thr_o"].append(o["commits"] / b); ratios["thr_t"].append(t["commits"] / b)
        m = {k: statistics.median(v) for k, v in ratios.items()}
        print(f"\nmedians: CPU ours/v0.3.13 {fmt(m['cpu'])} (target <= 0.5), per commit "
              f"{fmt(m['cpuc'])}; peak RSS {fmt(m['rss'])} (target <= 0.5); throughput vs "
              f"unreplicated: ours {fmt(m['thr_o'])} (target >= 0.95), v0.3.13 {fmt(m['thr_t'])}")
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
