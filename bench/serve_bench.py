"""`omnigraph serve` against the extension, both queried through psycopg2
on the same graph, in one run.

Usage (release builds; a throwaway cluster):
    bench/serve_bench.sh [--rows 1000000] [--samples 9]

The read benchmark's rows (read_bench.rows) are loaded into a graph with
`omnigraph init` + `omnigraph load` + `omnigraph optimize`; the cluster's
extension reads the same directory through a foreign server
(IMPORT FOREIGN SCHEMA), and `omnigraph serve` serves it. Per query, the
client wall time of execute + fetchall is sampled in pairs (one serve run
and one FDW run, the first side chosen at random, after warm-ups); the
ratio is the median of the per-pair serve/FDW ratios, with its spread
(min..max of the pairs). The FDW side runs with jit off and no parallel
workers (the protocol of performance-notes §7); both sides return every
row to Python, so a full scan measures the wire and the client as much as
the engines. Raw samples go to bench/results/ (gitignored).
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from read_bench import SCHEMA, rows  # noqa: E402
from shell_bench import QUERIES  # noqa: E402  (the same six queries)



def timed(conn, sql):
    cur = conn.cursor()
    t = time.perf_counter()
    cur.execute(sql)
    cur.fetchall()
    return (time.perf_counter() - t) * 1000.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--omnigraph", required=True, help="path of the omnigraph binary (release build)")
    ap.add_argument("--dir", required=True, help="a scratch directory the cluster's user can read")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=9)
    ap.add_argument("--warm", type=int, default=2)
    ap.add_argument("--seed", type=int, default=20261204)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    graph = os.path.join(args.dir, "serve_bench")
    if not os.path.exists(os.path.join(graph, "_graph")):
        schema = os.path.join(args.dir, "serve_bench.pg")
        ndjson = os.path.join(args.dir, "serve_bench.ndjson")
        with open(schema, "w") as f:
            f.write(SCHEMA)
        with open(ndjson, "w") as f:
            for line in rows(args.rows, 0):
                f.write(line + "\n")
        for cmd in (["init", graph, "--schema", schema], ["load", graph, ndjson], ["optimize", graph]):
            subprocess.run([args.omnigraph, *cmd], check=True, stdout=subprocess.DEVNULL)
        os.remove(ndjson)
        # The cluster's user owns the graph, as for graphs it creates.
        subprocess.run(["chown", "-R", "postgres:postgres", graph], check=True)

    # The extension over the same directory.
    fdw = psycopg2.connect(dbname=os.environ.get("PGDATABASE", "postgres"))
    fdw.autocommit = True
    cur = fdw.cursor()
    cur.execute("CREATE EXTENSION IF NOT EXISTS omnigraph_fdw")
    cur.execute("DROP SERVER IF EXISTS serve_bench CASCADE")
    cur.execute("CREATE SERVER serve_bench FOREIGN DATA WRAPPER omnigraph OPTIONS (uri %s)", (graph,))
    cur.execute("DROP SCHEMA IF EXISTS serve_bench CASCADE")
    cur.execute("CREATE SCHEMA serve_bench")
    cur.execute('IMPORT FOREIGN SCHEMA "main" FROM SERVER serve_bench INTO serve_bench')
    cur.execute("SET search_path = serve_bench")
    cur.execute("SET jit = off")
    cur.execute("SET max_parallel_workers_per_gather = 0")

    server = subprocess.Popen(
        [args.omnigraph, "serve", graph, "--listen", "127.0.0.1:0"], stderr=subprocess.PIPE, text=True
    )
    try:
        port = None
        for line in server.stderr:
            if "listening on" in line:
                port = int(line.rsplit(":", 1)[1])
                break
        if port is None:
            raise SystemExit("omnigraph serve did not start")
        serve = psycopg2.connect(host="127.0.0.1", port=port, dbname="serve_bench", user="bench")
        serve.autocommit = True

        results, raw = [], {}
        for label, sql in QUERIES:
            for _ in range(args.warm):
                timed(serve, sql)
                timed(fdw, sql)
            pairs = []
            for _ in range(args.samples):
                sides = [("serve", serve), ("fdw", fdw)]
                rng.shuffle(sides)
                got = {name: timed(conn, sql) for name, conn in sides}
                pairs.append((got["serve"], got["fdw"]))
            raw[label] = pairs
            ratios = sorted(s / f for s, f in pairs)
            results.append((
                label,
                statistics.median(s for s, _ in pairs),
                statistics.median(f for _, f in pairs),
                statistics.median(ratios),
                ratios[0],
                ratios[-1],
            ))
    finally:
        server.kill()
        server.wait()

    print(f"\n{args.rows} rows; median of {args.samples} pairs (random order, {args.warm} warm-ups each side)")
    print(f"{'query':34} {'serve ms':>10} {'fdw ms':>10} {'ratio':>7}  spread")
    for label, s, f, r, lo, hi in results:
        print(f"{label:34} {s:10.2f} {f:10.2f} {r:7.2f}  {lo:.2f}..{hi:.2f}")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"serve_bench_{int(time.time())}.json"), "w") as f:
        json.dump({"rows": args.rows, "samples": raw}, f, indent=1)


if __name__ == "__main__":
    main()
