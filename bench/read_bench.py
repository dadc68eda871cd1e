"""Read-path benchmark: the same queries over an omnigraph foreign table and
over a native heap table holding the same rows, measured in one run.

Usage (against a running cluster with the extension installed, release build):
    PGHOST=... PGPORT=... PGUSER=postgres python3 bench/read_bench.py --graph-dir DIR [--rows 1000000]
Prints, per query, the median FDW and heap times of --runs runs and their ratio.
"""

import argparse
import json
import os
import statistics
import time

import psycopg2

SCHEMA = """
node Item {
    key: String @key
    name: String
    category: String @index
    qty: I32
    amount: I64
    price: F64
    ratio: F32?
    active: Bool
    created: Date
    updated: DateTime
    note: String?
    code: I64 @index
}
"""

QUERIES = [
    ("full scan, all columns", "SELECT * FROM {t}"),
    ("sum of one column", "SELECT sum(amount) FROM {t}"),
    ("selective equality on an @index property", "SELECT * FROM {t} WHERE code = 424242"),
    ("count(*)", "SELECT count(*) FROM {t}"),
    ("LIMIT 10", "SELECT * FROM {t} LIMIT 10"),
]


def rows(n, start):
    for i in range(start, start + n):
        yield json.dumps({"type": "Item", "data": {
            "key": f"k{i:08d}", "name": f"item number {i}", "category": f"cat{i % 100}",
            "qty": i % 1000, "amount": i * 3, "price": i * 0.25, "ratio": (i % 7) / 7.0,
            "active": i % 2 == 0, "created": f"20{10 + i % 15:02d}-0{1 + i % 9}-1{i % 10}",
            "updated": f"2024-01-01T00:00:{i % 60:02d}Z",
            "note": None if i % 3 == 0 else f"note {i % 17}", "code": i}})


def timed(cur, sql, runs):
    """Median server-side execution time (EXPLAIN ANALYZE's Execution Time,
    TIMING OFF), so transferring rows to the client does not dilute ratios."""
    explain = "EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON) " + sql
    cur.execute(explain)  # warm-up
    out = []
    for _ in range(runs):
        cur.execute(explain)
        line = [r[0] for r in cur.fetchall() if r[0].startswith("Execution Time")][0]
        out.append(float(line.split(":")[1].split()[0]) / 1000.0)
    return statistics.median(out)


def peak_memory_kb(scan_rows):
    """VmHWM of a fresh backend after scanning `scan_rows` rows: `code < n`
    is pushed; the row comparison stays local, so the text columns name and
    note of every matching row reach Postgres."""
    conn = psycopg2.connect(dbname=os.environ.get("PGDATABASE", "postgres"))
    cur = conn.cursor()
    cur.execute("SET jit = off")
    cur.execute("SELECT pg_backend_pid()")
    pid = cur.fetchone()[0]
    cur.execute("SELECT count(*) FROM bench.item WHERE code < %s AND (note, name) IS DISTINCT FROM ('x', 'y')", (scan_rows,))
    assert cur.fetchone()[0] == scan_rows
    with open(f"/proc/{pid}/status") as s:
        kb = int([line for line in s if line.startswith("VmHWM")][0].split()[1])
    conn.close()
    return kb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--graph-dir", required=True, help="directory the server process can write")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=100_000)
    args = ap.parse_args()
    conn = psycopg2.connect(dbname=os.environ.get("PGDATABASE", "postgres"))
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SET jit = off")
    cur.execute("CREATE EXTENSION IF NOT EXISTS omnigraph_fdw")
    cur.execute("DROP SERVER IF EXISTS bench CASCADE")
    cur.execute("CREATE SERVER bench FOREIGN DATA WRAPPER omnigraph OPTIONS (uri %s)", (args.graph_dir,))
    if not os.path.exists(os.path.join(args.graph_dir, "_graph", "graph.json")):
        cur.execute("SELECT omnigraph_create_graph('bench', %s)", (SCHEMA,))
        t0 = time.perf_counter()
        for start in range(0, args.rows, args.chunk):
            cur.execute("SELECT omnigraph_load('bench', 'main', %s)",
                        ("\n".join(rows(min(args.chunk, args.rows - start), start)),))
        print(f"load of {args.rows} rows in chunks of {args.chunk}: {time.perf_counter() - t0:.1f} s")
    cur.execute("DROP SCHEMA IF EXISTS bench CASCADE")
    cur.execute("CREATE SCHEMA bench")
    cur.execute('IMPORT FOREIGN SCHEMA "main" FROM SERVER bench INTO bench')
    cur.execute("DROP TABLE IF EXISTS bench_heap")
    cur.execute("CREATE TABLE bench_heap AS SELECT * FROM bench.item")
    cur.execute("CREATE INDEX ON bench_heap (code)")
    cur.execute("VACUUM ANALYZE bench_heap")
    print(f"{'query':45} {'fdw ms':>10} {'heap ms':>10} {'ratio':>9}")
    for label, q in QUERIES:
        f = timed(cur, q.format(t="bench.item"), args.runs)
        h = timed(cur, q.format(t="bench_heap"), args.runs)
        print(f"{label:45} {f * 1000:10.3f} {h * 1000:10.3f} {f / h:9.2f}")
    for n in (args.rows // 10, args.rows):
        print(f"backend peak memory after scanning {n} rows: {peak_memory_kb(n) / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
