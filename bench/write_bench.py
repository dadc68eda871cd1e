"""Write-path benchmark: the same writes into an omnigraph foreign table and
into a native heap table with the same columns, measured in one run.

Usage (against a running cluster with the extension installed, release build):
    PGHOST=... PGPORT=... PGUSER=postgres python3 bench/write_bench.py --graph-dir DIR [--rows 1000000]
Each figure is wall time on the client, COMMIT included (a graph write
publishes at COMMIT). Prints FDW time, heap time and their ratio.
"""

import argparse
import os
import shutil
import statistics
import time

import psycopg2

from read_bench import SCHEMA

INSERT_SELECT = """INSERT INTO {t} (key, name, category, tier, qty, amount, price, ratio, active, created, updated, note, code)
SELECT 'k' || lpad(i::text, 8, '0'), 'item number ' || i, 'cat' || (i % 100),
       (ARRAY['bronze', 'silver', 'gold', 'platinum'])[1 + i % 4], i % 1000, i * 3, i * 0.25,
       (i % 7) / 7.0, i % 2 = 0, date '2010-01-01' + (i % 5000), timestamptz '2024-01-01' + i * interval '1 second',
       CASE WHEN i % 3 = 0 THEN NULL ELSE 'note ' || (i % 17) END, i
FROM generate_series(1, {n}) i"""


SINGLE = "INSERT INTO {t} (key, name, category, tier, qty, amount, price, active, created, updated, code) " \
         "VALUES (%s, 'one', 'c', 'gold', 1, 1, 1.0, true, '2024-01-01', now(), 1)"


def wall(conn, sqls, args=None):
    cur = conn.cursor()
    t0 = time.perf_counter()
    for sql in sqls:
        cur.execute(sql, args)
    conn.commit()
    return time.perf_counter() - t0


def peak_kb(conn):
    cur = conn.cursor()
    cur.execute("SELECT pg_backend_pid()")
    pid = cur.fetchone()[0]
    conn.commit()
    with open(f"/proc/{pid}/status") as s:
        return int([line for line in s if line.startswith("VmHWM")][0].split()[1])


def insert_peak_kb(admin_cur, graph_dir, n):
    """Peak memory of a bulk insert of `n` rows and its COMMIT, in KiB.

    A fresh backend first inserts 50,000 rows into a scratch graph with a
    small staging budget, so the spill and commit paths have run once; its
    peak is then reset (/proc/PID/clear_refs), and the measured insert
    starts from there. Without the warm-up, the peak counts the pages of
    the extension's code each path first touches (the library is mapped
    from disk): a larger insert runs more paths, not more memory.
    """
    new_graph(admin_cur, "wbench_warm", graph_dir + "_warm")
    new_graph(admin_cur, "wbench_peak", graph_dir + "_peak")
    conn = psycopg2.connect(dbname=os.environ.get("PGDATABASE", "postgres"))
    cur = conn.cursor()
    cur.execute("SET jit = off")
    cur.execute("SET LOCAL omnigraph.staging_memory = '1MB'")
    cur.execute(INSERT_SELECT.format(t="wbench_warm.item", n=50_000))
    conn.commit()
    cur.execute("SELECT pg_backend_pid()")
    pid = cur.fetchone()[0]
    conn.commit()
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    wall(conn, [INSERT_SELECT.format(t="wbench_peak.item", n=n)])
    kb = peak_kb(conn)
    conn.close()
    for server in ("wbench_warm", "wbench_peak"):
        admin_cur.execute(f"DROP SERVER {server} CASCADE")
        admin_cur.execute(f"DROP SCHEMA {server} CASCADE")
    for d in (graph_dir + "_warm", graph_dir + "_peak"):
        shutil.rmtree(d, ignore_errors=True)
    return kb


def new_graph(cur, server, graph_dir):
    """A new, empty graph of the read schema behind `server`, imported into schema `server`."""
    cur.execute(f"DROP SERVER IF EXISTS {server} CASCADE")
    if os.path.exists(graph_dir):
        shutil.rmtree(graph_dir)
    cur.execute(f"CREATE SERVER {server} FOREIGN DATA WRAPPER omnigraph OPTIONS (uri %s)", (graph_dir,))
    cur.execute(f"SELECT omnigraph_create_graph('{server}', %s)", (SCHEMA,))
    cur.execute(f"DROP SCHEMA IF EXISTS {server} CASCADE")
    cur.execute(f"CREATE SCHEMA {server}")
    cur.execute(f'IMPORT FOREIGN SCHEMA "main" FROM SERVER {server} INTO {server}')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--graph-dir", required=True, help="directory the server process can write")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    admin = psycopg2.connect(dbname=os.environ.get("PGDATABASE", "postgres"))
    admin.autocommit = True
    a = admin.cursor()
    a.execute("CREATE EXTENSION IF NOT EXISTS omnigraph_fdw")
    # Peak memory of the bulk insert at a tenth of the rows and at all of
    # them, each from a fresh backend warmed up first (see insert_peak_kb).
    small = args.rows // 10
    peaks = {n: insert_peak_kb(a, args.graph_dir, n) for n in (small, args.rows)}
    new_graph(a, "wbench", args.graph_dir)
    a.execute("DROP TABLE IF EXISTS wbench_heap")
    a.execute("CREATE TABLE wbench_heap (LIKE wbench.item)")
    a.execute("ALTER TABLE wbench_heap ADD PRIMARY KEY (key)")
    a.execute("ALTER TABLE wbench_heap ALTER COLUMN id DROP NOT NULL")
    results = []

    fdw_conn = psycopg2.connect(dbname=os.environ.get("PGDATABASE", "postgres"))
    heap_conn = psycopg2.connect(dbname=os.environ.get("PGDATABASE", "postgres"))
    for c in (fdw_conn, heap_conn):
        c.cursor().execute("SET jit = off")
        c.commit()
    f = wall(fdw_conn, [INSERT_SELECT.format(t="wbench.item", n=args.rows)])
    h = wall(heap_conn, [INSERT_SELECT.format(t="wbench_heap", n=args.rows)])
    results.append((f"bulk INSERT ... SELECT of {args.rows} rows, one txn", f, h))
    print(f"peak backend memory (VmHWM) of the FDW bulk insert, warmed backend: "
          f"{peaks[small] / 1024:.1f} MiB for {small} rows, {peaks[args.rows] / 1024:.1f} MiB for {args.rows}; "
          f"unwarmed, {args.rows} rows: {peak_kb(fdw_conn) / 1024:.1f} MiB; heap: {peak_kb(heap_conn) / 1024:.1f} MiB")

    keys = [f"k{i:08d}" for i in range(1, args.rows + 1, max(1, args.rows // 1000))][:1000]
    upd = "UPDATE {t} SET qty = qty + 1 WHERE key = ANY(%s)"
    f = wall(fdw_conn, [upd.format(t="wbench.item")], (keys,))
    h = wall(heap_conn, [upd.format(t="wbench_heap")], (keys,))
    results.append((f"UPDATE of {len(keys)} rows by key", f, h))
    # The same rows with a constant value: a direct modify on the FDW.
    upd = "UPDATE {t} SET qty = 5 WHERE key = ANY(%s)"
    f = wall(fdw_conn, [upd.format(t="wbench.item")], (keys,))
    h = wall(heap_conn, [upd.format(t="wbench_heap")], (keys,))
    results.append((f"UPDATE of {len(keys)} rows by key, SET constant", f, h))
    dele = "DELETE FROM {t} WHERE key = ANY(%s)"
    f = wall(fdw_conn, [dele.format(t="wbench.item")], (keys[:500],))
    h = wall(heap_conn, [dele.format(t="wbench_heap")], (keys[:500],))
    results.append(("DELETE of 500 rows by key", f, h))

    fs, hs = [], []
    for i in range(args.runs):
        fs.append(wall(fdw_conn, [SINGLE.format(t="wbench.item")], (f"single{i}",)))
        hs.append(wall(heap_conn, [SINGLE.format(t="wbench_heap")], (f"single{i}",)))
    results.append(("single-row INSERT + COMMIT (median)", statistics.median(fs), statistics.median(hs)))

    print(f"{'write':45} {'fdw ms':>10} {'heap ms':>10} {'ratio':>9}")
    for name, f, h in results:
        print(f"{name:45} {f * 1000:10.1f} {h * 1000:10.2f} {f / h:9.1f}")


if __name__ == "__main__":
    main()
