"""Prepared point lookups with random keys, as an application sends them:
pgbench -M prepared clients each running
SELECT name, score FROM <table> WHERE code = :k
with k random over the keys, on an optimized 100K-node graph table (the
key's BTree index built) and on a heap table with a primary key, in
alternating rounds in random order. After the first executions Postgres
switches to a generic plan, so the key reaches the foreign scan as a
parameter. Both sides must return the same row for sampled keys.

Usage (against a running cluster with the extension installed, release build):
    PGHOST=... PGPORT=... PGUSER=postgres python3 bench/lookup_bench.py --graph-dir DIR
"""

import argparse
import os
import random
import re
import statistics

from read_bench import connect, environment, save
from tps_bench import pgbench

SCHEMA = """
node Item {
    code: I32 @key
    name: String
    score: F64
}
"""


def run(table, rows, clients, seconds, dbname):
    script = (f"\\set k random(0, {rows - 1})\n"
              f"SELECT name, score FROM {table} WHERE code = :k;\n")
    out = pgbench(script, ["-M", "prepared", "-c", str(clients), "-j", str(min(clients, 2)),
                           "-T", str(seconds)], dbname)
    tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))
    latency = float(re.search(r"latency average = ([0-9.]+) ms", out).group(1))
    return tps, latency


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--graph-dir", required=True)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="alternating FDW/heap rounds")
    args = ap.parse_args()
    dbname = os.environ.get("PGDATABASE", "postgres")
    cur = connect("lbench", args.graph_dir)
    if not os.path.exists(os.path.join(args.graph_dir, "_graph", "graph.json")):
        cur.execute("SELECT omnigraph_create_graph('lbench', %s)", (SCHEMA,))
        for start in range(0, args.rows, 50_000):
            lines = "\n".join(f'{{"type": "Item", "data": {{"code": {i}, "name": "item {i}", "score": {i / 7}}}}}'
                              for i in range(start, min(start + 50_000, args.rows)))
            cur.execute("SELECT omnigraph_load('lbench', 'main', %s)", (lines,))
        cur.execute("SELECT count(*) FROM omnigraph_optimize('lbench')")
    cur.execute("DROP SCHEMA IF EXISTS lbench CASCADE")
    cur.execute("CREATE SCHEMA lbench")
    cur.execute('IMPORT FOREIGN SCHEMA "main" FROM SERVER lbench INTO lbench')
    cur.execute("DROP TABLE IF EXISTS lb_heap")
    cur.execute("CREATE TABLE lb_heap (code int PRIMARY KEY, name text, score float8)")
    cur.execute("INSERT INTO lb_heap SELECT code, name, score FROM lbench.item")
    cur.execute("VACUUM ANALYZE lb_heap")
    cur.execute("ANALYZE lbench.item")
    # The same row on both sides, through the same generic plan shape.
    cur.execute("PREPARE f(int) AS SELECT name, score FROM lbench.item WHERE code = $1")
    cur.execute("PREPARE h(int) AS SELECT name, score FROM lb_heap WHERE code = $1")
    for k in random.sample(range(args.rows), 20) + [args.rows + 5]:
        cur.execute("EXECUTE f(%s)", (k,))
        fdw = cur.fetchall()
        cur.execute("EXECUTE h(%s)", (k,))
        assert fdw == cur.fetchall(), f"code {k}: {fdw}"
        assert len(fdw) == (1 if k < args.rows else 0)
    cur.execute("EXPLAIN (COSTS OFF) EXECUTE f(42)")
    plan = [r[0] for r in cur.fetchall()]
    print("\n".join(plan))
    assert any("Omnigraph Index: code" in line for line in plan), plan
    results = {"env": environment(cur), "rows": args.rows, "clients": args.clients,
               "seconds": args.seconds, "plan": plan, "rounds": []}
    print(f"{'round':>5} {'side':>5} {'tps':>9} {'latency ms':>11}")
    for r in range(args.rounds):
        sides = [("fdw", "lbench.item"), ("heap", "lb_heap")]
        random.shuffle(sides)
        for side, table in sides:
            tps, latency = run(table, args.rows, args.clients, args.seconds, dbname)
            results["rounds"].append({"round": r, "side": side, "tps": tps, "latency_ms": latency})
            print(f"{r:5} {side:>5} {tps:9.1f} {latency:11.3f}")
    fdw = statistics.median(x["latency_ms"] for x in results["rounds"] if x["side"] == "fdw")
    heap = statistics.median(x["latency_ms"] for x in results["rounds"] if x["side"] == "heap")
    results["ratio"] = fdw / heap
    print(f"median latency: FDW {fdw:.3f} ms, heap {heap:.3f} ms, ratio {fdw / heap:.1f}")
    save(results, "lookup_bench")


if __name__ == "__main__":
    main()
