"""Operations benchmark: what omnigraph_optimize buys and what omnigraph_cleanup
reclaims, each measured against a native heap peer (or against itself) in one run.

Usage (against a running cluster with the extension installed, release build):
    PGHOST=... PGPORT=... PGUSER=postgres python3 bench/ops_bench.py --graph-dir DIR [--rows 1000000]
        [--lookups 200] [--runs 10] [--insert-runs 50] [--commits 1000]

On a fresh graph of --rows Item rows (read_bench's SCHEMA, loaded with
write_bench's INSERT ... SELECT) and a heap copy of them with a primary key on
key and a btree on code:
  1. SELECT * ... WHERE code = <const>, a different constant per run: before
     omnigraph_optimize (median of 5) and after it (median of --lookups), with
     the FDW's EXPLAIN (expected: "Omnigraph Index: code (btree)");
  2. UPDATE of 1,000 rows by key after optimize (median of --runs);
  3. single-row INSERT + COMMIT (median of --insert-runs).
On a second, fresh graph:
  4. single-row commit latency after 10 and after --commits earlier commits
     (median of 50 each; goal: ratio at most 1.2);
  5. omnigraph_cleanup(older_than 0): a dry run (must change nothing on disk),
     then the real one; the bytes it reports, the rows removed and kept, and
     the graph directory's size before and after.
Every figure is client wall time around execute + fetchall, COMMIT included
for writes. Protocol: jit = off, max_parallel_workers_per_gather = 0, two
discarded warm-ups per side, FDW and heap alternate in random order, and the
ratio is the median of the per-pair ratios.
"""

import argparse
import itertools
import os
import random
import shutil
import statistics
import subprocess
import time

import psycopg2

from read_bench import SCHEMA
from write_bench import INSERT_SELECT, SINGLE

DB = os.environ.get("PGDATABASE", "postgres")
LOOKUP = "SELECT * FROM {t} WHERE code = %s"
UPDATE = "UPDATE {t} SET qty = qty + 1 WHERE key = ANY(%s)"
CLEANUP = "SELECT * FROM omnigraph_cleanup(%s, interval '0 seconds', %s)"
INDEX_LINE = "Omnigraph Index: code (btree)"
rng = random.Random(20240601)


def connect(autocommit):
    conn = psycopg2.connect(dbname=DB)
    conn.autocommit = autocommit
    cur = conn.cursor()
    cur.execute("SET jit = off")
    cur.execute("SET max_parallel_workers_per_gather = 0")
    if not autocommit:
        conn.commit()
    return conn


def timed(conn, sql, args=None):
    """Client wall time of execute + fetchall (+ COMMIT unless autocommit);
    returns it with the rows, or the row count of a statement without rows."""
    cur = conn.cursor()
    t0 = time.perf_counter()
    cur.execute(sql, args)
    rows = cur.fetchall() if cur.description else cur.rowcount
    if not conn.autocommit:
        conn.commit()
    return time.perf_counter() - t0, rows


def pairs(run_fdw, run_heap, samples, warm):
    """Same-run pairs: the warm-up samples on both sides are discarded; then per
    sample one FDW and one heap run, the first side chosen at random. Returns the
    FDW median, the heap median and the median of the per-pair ratios."""
    for w in warm:
        run_fdw(w)
        run_heap(w)
    fs, hs, rs = [], [], []
    for s in samples:
        if rng.random() < 0.5:
            f = run_fdw(s)
            h = run_heap(s)
        else:
            h = run_heap(s)
            f = run_fdw(s)
        fs.append(f)
        hs.append(h)
        rs.append(f / h)
    return statistics.median(fs), statistics.median(hs), statistics.median(rs)


def lookup(conn, table):
    def run(code):
        t, rows = timed(conn, LOOKUP.format(t=table), (code,))
        assert len(rows) == 1, (table, code, len(rows))
        return t
    return run


def update(conn, table):
    def run(keys):
        t, n = timed(conn, UPDATE.format(t=table), (keys,))
        assert n == len(keys), (table, n)
        return t
    return run


def insert(conn, table):
    return lambda key: timed(conn, SINGLE.format(t=table), (key,))[0]


def codes(n, k):
    return [rng.randint(1, n) for _ in range(k)]


def key_sets(n, k):
    return [[f"k{i:08d}" for i in rng.sample(range(1, n + 1), 1000)] for _ in range(k)]


def p90(xs):
    return statistics.quantiles(xs, n=10)[-1]


def remove_tree(path):
    if not os.path.exists(path):
        return
    try:
        shutil.rmtree(path)
    except PermissionError:  # the server's files, mode 0700/0600
        subprocess.run(["sudo", "rm", "-rf", path], check=True)


def dir_bytes(path):
    """Apparent size of a directory tree, each inode once (as `du -sb`); falls
    back to `sudo du -sb` when this user may not read the server's files."""
    def fail(e):
        raise e
    try:
        seen, total = set(), 0
        for root, _, files in os.walk(path, onerror=fail):
            for p in [root] + [os.path.join(root, f) for f in files]:
                st = os.lstat(p)
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
        return total
    except PermissionError:
        out = subprocess.run(["sudo", "du", "-sb", path], check=True, capture_output=True, text=True).stdout
        return int(out.split()[0])


def fresh_graph(admin, name, path):
    a = admin.cursor()
    a.execute(f"CREATE SERVER {name} FOREIGN DATA WRAPPER omnigraph OPTIONS (uri %s)", (path,))
    a.execute("SELECT omnigraph_create_graph(%s, %s)", (name, SCHEMA))
    a.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    a.execute(f"CREATE SCHEMA {name}")
    a.execute(f'IMPORT FOREIGN SCHEMA "main" FROM SERVER {name} INTO {name}')


def explain(conn, sql, args):
    cur = conn.cursor()
    cur.execute("EXPLAIN " + sql, args)
    return [r[0] for r in cur.fetchall()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--graph-dir", required=True, help="directory the server process can write")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--lookups", type=int, default=200, help="equality lookups after optimize")
    ap.add_argument("--runs", type=int, default=10, help="UPDATE runs")
    ap.add_argument("--insert-runs", type=int, default=50, help="single-row INSERT runs")
    ap.add_argument("--commits", type=int, default=1000, help="earlier commits for the late commit latency")
    args = ap.parse_args()
    admin = psycopg2.connect(dbname=DB)
    admin.autocommit = True
    a = admin.cursor()
    a.execute("CREATE EXTENSION IF NOT EXISTS omnigraph_fdw")
    for name in ("obench", "obench_c"):
        a.execute(f"DROP SERVER IF EXISTS {name} CASCADE")
    remove_tree(args.graph_dir)
    with open("/proc/loadavg") as f:
        print(f"load average at start: {' '.join(f.read().split()[:3])}")

    # 1-3: a --rows graph and its heap peer.
    fresh_graph(admin, "obench", os.path.join(args.graph_dir, "big"))
    fdw_r, heap_r = connect(True), connect(True)
    fdw_w, heap_w = connect(False), connect(False)
    t, _ = timed(fdw_w, INSERT_SELECT.format(t="obench.item", n=args.rows))
    print(f"load of {args.rows} rows with one INSERT ... SELECT: {t:.1f} s")
    a.execute("DROP TABLE IF EXISTS obench_heap")
    a.execute("CREATE TABLE obench_heap AS SELECT * FROM obench.item")
    a.execute("ALTER TABLE obench_heap ADD PRIMARY KEY (key)")
    a.execute("CREATE INDEX ON obench_heap (code)")
    a.execute("VACUUM ANALYZE obench_heap")
    results = []
    fdw_lookup, heap_lookup = lookup(fdw_r, "obench.item"), lookup(heap_r, "obench_heap")
    before = pairs(fdw_lookup, heap_lookup, codes(args.rows, 5), codes(args.rows, 2))
    results.append(("code = <const>, before optimize (median of 5)",) + before)

    t, rows = timed(fdw_r, "SELECT * FROM omnigraph_optimize(%s, 'main')", ("obench",))
    print(f"omnigraph_optimize: {t:.1f} s")
    print(f"  {'type':10} {'fragments before':>16} {'after':>6} {'rows':>10}  indexes")
    for type_name, frag_before, frag_after, n, indexes in rows:
        print(f"  {type_name:10} {frag_before:>16} {frag_after:>6} {n:>10}  {', '.join(indexes or [])}")
    plan = explain(fdw_r, LOOKUP.format(t="obench.item"), (424242,))
    print("EXPLAIN (FDW, after optimize):\n  " + "\n  ".join(plan))
    if not any(INDEX_LINE in line for line in plan):
        print(f"WARNING: the FDW plan has no '{INDEX_LINE}' line")
    print("EXPLAIN (heap):\n  " + "\n  ".join(explain(heap_r, LOOKUP.format(t="obench_heap"), (424242,))))
    after = pairs(fdw_lookup, heap_lookup, codes(args.rows, args.lookups), codes(args.rows, 2))
    results.append((f"code = <const>, after optimize (median of {args.lookups})",) + after)

    upd = pairs(update(fdw_w, "obench.item"), update(heap_w, "obench_heap"),
                key_sets(args.rows, args.runs), key_sets(args.rows, 2))
    results.append((f"UPDATE of 1000 rows by key (median of {args.runs})",) + upd)

    ins = pairs(insert(fdw_w, "obench.item"), insert(heap_w, "obench_heap"),
                [f"single{i}" for i in range(args.insert_runs)], ["warm0", "warm1"])
    results.append((f"single-row INSERT + COMMIT (median of {args.insert_runs})",) + ins)

    print(f"\n{'operation':52} {'fdw ms':>10} {'heap ms':>10} {'ratio':>9}")
    for name, f, h, r in results:
        print(f"{name:52} {f * 1000:10.3f} {h * 1000:10.3f} {r:9.1f}")
    print("(ratio: median of the per-pair FDW/heap ratios; jit = off, max_parallel_workers_per_gather = 0)")
    print(f"optimize speeds the FDW lookup up {before[0] / after[0]:.1f}x")

    # 4: commit latency against history, on a fresh small graph.
    small = os.path.join(args.graph_dir, "small")
    fresh_graph(admin, "obench_c", small)
    w = connect(False)
    seq, inserted = itertools.count(1), []

    def commit_one():
        key = f"c{next(seq):07d}"
        inserted.append(key)
        return timed(w, SINGLE.format(t="obench_c.item"), (key,))[0]

    def log_len():
        a.execute("SELECT count(*) FROM omnigraph_log('obench_c', 'main')")
        return a.fetchone()[0]

    def fill_to(target):
        t0 = time.perf_counter()
        for _ in range(target - log_len()):
            commit_one()
        return log_len(), time.perf_counter() - t0

    print()
    at_early, _ = fill_to(10)
    early = [commit_one() for _ in range(50)]
    at_late, fill = fill_to(args.commits)
    print(f"made commits up to {at_late} in the log in {fill:.1f} s")
    late = [commit_one() for _ in range(50)]
    med_early, med_late = statistics.median(early), statistics.median(late)
    print(f"{'single-row INSERT + COMMIT':40} {'median ms':>10} {'p90 ms':>10}")
    print(f"{f'after {at_early} earlier commits':40} {med_early * 1000:10.2f} {p90(early) * 1000:10.2f}")
    print(f"{f'after {at_late} earlier commits':40} {med_late * 1000:10.2f} {p90(late) * 1000:10.2f}")
    print(f"ratio {at_late}/{at_early} commits: {med_late / med_early:.2f} (goal: at most 1.2)")

    # 5: cleanup of that graph's history, a dry run first.
    c = connect(True)
    sizes = [dir_bytes(small)]
    print(f"\n{'omnigraph_cleanup(0 seconds)':30} {'ms':>10} {'removed':>8} {'kept':>6} "
          f"{'reported bytes':>15} {'dir bytes after':>16}")
    for dry in (True, False):
        t, rows = timed(c, CLEANUP, ("obench_c", dry))
        removed = [r for r in rows if r[3] == "remove"]
        kept = sum(1 for r in rows if r[3] == "keep")
        reported = sum(r[5] or 0 for r in removed)
        sizes.append(dir_bytes(small))
        print(f"{'dry run' if dry else 'cleanup':30} {t * 1000:10.1f} {len(removed):8} {kept:6} "
              f"{reported:15} {sizes[-1]:16}")
        if dry:
            assert sizes[1] == sizes[0], f"the dry run changed the directory: {sizes[0]} -> {sizes[1]} bytes"
    print(f"graph directory: {sizes[0]} bytes before, {sizes[2]} after ({sizes[0] - sizes[2]} reclaimed, "
          f"{reported} reported)")
    commit_one()  # the graph still takes commits and still reads every row
    a.execute("SELECT count(*) FROM obench_c.item")
    assert a.fetchone()[0] == len(inserted), "rows lost after cleanup"


if __name__ == "__main__":
    main()
