"""`omnigraph sql` against DuckDB over the same rows, in one run.

Usage (release build of the command; DuckDB from PyPI):
    bench/shell_bench.sh [--rows 1000000] [--runs 7]
or directly:
    python bench/shell_bench.py --omnigraph target/release/omnigraph --dir DIR [--rows N] [--runs R]

The read benchmark's rows (read_bench.rows) are written as NDJSON, loaded
into a graph with `omnigraph init` + `omnigraph load` and indexed with
`omnigraph optimize`, and written by DuckDB as Parquet from the same file.
Per query: `omnigraph sql --timing` runs it --runs times in one process
(after a warm-up run) and reports each statement's planning + execution +
collection time; DuckDB runs it --runs times in process (after a warm-up),
materialising every row and column (`CREATE TEMP TABLE ... AS`), since
fetching a million rows into Python objects would measure Python. The two
sides alternate query by query, in random order; the ratio is the median
omnigraph time over the median DuckDB time. Raw samples go to
bench/results/ (gitignored).
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from read_bench import SCHEMA, rows  # noqa: E402

QUERIES = [
    ("full scan, every column", "SELECT * FROM item"),
    ("sum of one column", "SELECT sum(amount) FROM item"),
    ("equality on an @index property", "SELECT * FROM item WHERE code = 424242"),
    ("count(*)", "SELECT count(*) FROM item"),
    ("LIMIT 10", "SELECT * FROM item LIMIT 10"),
    ("GROUP BY with a sum", "SELECT category, sum(amount) FROM item GROUP BY category"),
]


def omnigraph_times(binary, graph, sql, runs):
    args = [binary, "sql", graph, "--timing", "--format", "csv"]
    for _ in range(runs + 1):
        args += ["-c", sql]
    r = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"omnigraph sql failed on {sql}: {r.stderr}")
    times = [float(l.split()[1]) for l in r.stderr.splitlines() if l.startswith("Time: ")]
    return times[1:]  # the first run warms caches


def duckdb_times(con, sql, runs):
    # Materialise every row and column, as the shell collects them.
    stmt = f"CREATE OR REPLACE TEMP TABLE sink AS {sql}"
    con.execute(stmt)
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        con.execute(stmt)
        out.append((time.perf_counter() - t) * 1000.0)
    return out


def main():
    import duckdb

    ap = argparse.ArgumentParser()
    ap.add_argument("--omnigraph", required=True, help="path of the omnigraph binary (release build)")
    ap.add_argument("--dir", required=True, help="a scratch directory")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--seed", type=int, default=20261204)
    args = ap.parse_args()
    random.seed(args.seed)
    os.makedirs(args.dir, exist_ok=True)
    graph = os.path.join(args.dir, "graph")
    ndjson = os.path.join(args.dir, "items.ndjson")
    parquet = os.path.join(args.dir, "items.parquet")
    schema = os.path.join(args.dir, "schema.pg")

    if not os.path.exists(os.path.join(graph, "_graph")):
        with open(schema, "w") as f:
            f.write(SCHEMA)
        with open(ndjson, "w") as f:
            for line in rows(args.rows, 0):
                f.write(line + "\n")
        for cmd in (
            ["init", graph, "--schema", schema],
            ["load", graph, ndjson],
            ["optimize", graph],
        ):
            t = time.perf_counter()
            subprocess.run([args.omnigraph, *cmd], check=True, stdout=subprocess.DEVNULL)
            print(f"omnigraph {cmd[0]}: {time.perf_counter() - t:.1f} s")
    con = duckdb.connect()
    if not os.path.exists(parquet):
        con.execute(
            f"COPY (SELECT data.* FROM read_json('{ndjson}', format = 'newline_delimited')) "
            f"TO '{parquet}' (FORMAT parquet)"
        )
    con.execute(f"CREATE VIEW item AS SELECT * FROM read_parquet('{parquet}')")
    con.execute("SET threads = 2")

    results, raw = [], {}
    for label, sql in QUERIES:
        sides = [("omnigraph", lambda: omnigraph_times(args.omnigraph, graph, sql, args.runs)),
                 ("duckdb", lambda: duckdb_times(con, sql, args.runs))]
        random.shuffle(sides)
        got = {name: f() for name, f in sides}
        raw[label] = got
        o, d = statistics.median(got["omnigraph"]), statistics.median(got["duckdb"])
        results.append((label, o, d, o / d))

    print(f"\n{args.rows} rows, median of {args.runs} runs (after one warm-up), 2 threads each")
    print(f"{'query':40} {'omnigraph ms':>13} {'duckdb ms':>10} {'ratio':>7}")
    for label, o, d, ratio in results:
        print(f"{label:40} {o:13.2f} {d:10.2f} {ratio:7.2f}")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"shell_bench_{int(time.time())}.json"), "w") as f:
        json.dump({"rows": args.rows, "runs": args.runs, "samples": raw}, f, indent=1)


if __name__ == "__main__":
    main()
