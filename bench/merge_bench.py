"""Merge and diff benchmark: whether their cost follows the changes or the
table. The same work against a 10,000-row and a 1,000,000-row table, in
one run, and against its peer: committing the same rows as ordinary writes.

Usage (against a running cluster with the extension installed, release build):
    PGHOST=... PGPORT=... PGUSER=postgres python3 bench/merge_bench.py --graph-dir DIR

Per table size, each of --runs rounds: create a branch from main, update 500
rows on it and 500 other rows on main (disjoint), then time
  - omnigraph_diff(main, branch)  (1,000 changed rows),
  - omnigraph_branch_merge(branch -> main)  (1,000 changed rows, one commit),
  - an UPDATE of the same 1,000 rows on main  (the ordinary-write peer).
Prints medians, the 1M/10K ratios (goal: at most 1.3) and merge/peer.
"""

import argparse
import os
import shutil
import statistics
import time

import psycopg2

SCHEMA = """node Item {
    key: String @key
    name: String
    qty: I64
    amount: F64?
    note: String?
}"""

FILL = """INSERT INTO {s}.item (key, name, qty, amount, note)
SELECT 'k' || lpad(i::text, 8, '0'), 'item ' || i, i % 1000, i * 0.25,
       CASE WHEN i % 3 = 0 THEN NULL ELSE 'note ' || (i % 17) END
FROM generate_series(1, {n}) i"""

UPDATE = "UPDATE {s}.item SET qty = qty + %s WHERE key = ANY(%s)"


def timed(conn, sql, args=None):
    cur = conn.cursor()
    t0 = time.perf_counter()
    cur.execute(sql, args)
    rows = cur.fetchall() if cur.description else None
    conn.commit()
    return time.perf_counter() - t0, rows


def keys(n, start, count, stride):
    return [f"k{(start + i * stride) % n + 1:08d}" for i in range(count)]


def bench_size(admin, conn, graph_dir, n, runs):
    name = f"mb{n}"
    a = admin.cursor()
    a.execute(f"DROP SERVER IF EXISTS {name} CASCADE")
    path = os.path.join(graph_dir, name)
    if os.path.exists(path):
        shutil.rmtree(path)
    a.execute(f"CREATE SERVER {name} FOREIGN DATA WRAPPER omnigraph OPTIONS (uri %s)", (path,))
    a.execute("SELECT omnigraph_create_graph(%s, %s)", (name, SCHEMA))
    a.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    a.execute(f"CREATE SCHEMA {name}")
    a.execute(f'IMPORT FOREIGN SCHEMA "main" FROM SERVER {name} INTO {name}')
    timed(conn, FILL.format(s=name, n=n))
    diffs, merges, peers = [], [], []
    stride = max(1, n // 2000)
    for r in range(runs):
        branch = f"f{r}"
        a.execute("SELECT omnigraph_branch_create(%s, %s)", (name, branch))
        a.execute(f"DROP SCHEMA IF EXISTS {name}_{branch} CASCADE")
        a.execute(f"CREATE SCHEMA {name}_{branch}")
        a.execute(f'IMPORT FOREIGN SCHEMA "{branch}" FROM SERVER {name} INTO {name}_{branch}')
        # Disjoint keys: the branch takes even slots, main odd ones, each run its own.
        base = r * 2000 * stride + 7
        on_branch = keys(n, base, 500, 2 * stride)
        on_main = keys(n, base + stride, 500, 2 * stride)
        timed(conn, UPDATE.format(s=f"{name}_{branch}"), (1, on_branch))
        timed(conn, UPDATE.format(s=name), (1, on_main))
        t, rows = timed(conn, "SELECT count(*) FROM omnigraph_diff(%s, 'main', %s)", (name, branch))
        assert rows[0][0] == 1000, rows
        diffs.append(t)
        t, rows = timed(conn, "SELECT status, updated FROM omnigraph_branch_merge(%s, %s)", (name, branch))
        assert rows[0] == ("merged", 500), rows
        merges.append(t)
        # The peer: the same 1,000 rows committed as one ordinary write.
        t, _ = timed(conn, UPDATE.format(s=name), (1, on_branch + on_main))
        peers.append(t)
    return statistics.median(diffs), statistics.median(merges), statistics.median(peers)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--graph-dir", required=True, help="directory the server process can write")
    ap.add_argument("--sizes", default="10000,1000000")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    db = os.environ.get("PGDATABASE", "postgres")
    admin = psycopg2.connect(dbname=db)
    admin.autocommit = True
    admin.cursor().execute("CREATE EXTENSION IF NOT EXISTS omnigraph_fdw")
    conn = psycopg2.connect(dbname=db)
    conn.cursor().execute("SET jit = off")
    conn.commit()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {n: bench_size(admin, conn, args.graph_dir, n, args.runs) for n in sizes}
    print(f"{'rows':>10} {'diff ms':>10} {'merge ms':>10} {'update ms':>10} {'merge/update':>13}")
    for n, (d, m, p) in results.items():
        print(f"{n:>10} {d * 1000:>10.1f} {m * 1000:>10.1f} {p * 1000:>10.1f} {m / p:>13.2f}")
    small, large = results[min(sizes)], results[max(sizes)]
    print(f"ratio {max(sizes)}/{min(sizes)} rows: diff {large[0] / small[0]:.2f}, merge {large[1] / small[1]:.2f} (goal: at most 1.3)")


if __name__ == "__main__":
    main()
