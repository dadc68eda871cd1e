"""Read-path benchmark: the same queries over an omnigraph foreign table and
over a native heap table holding the same rows, measured in one run.

Usage (against a running cluster with the extension installed, release build):
    PGHOST=... PGPORT=... PGUSER=postgres python3 bench/read_bench.py --graph-dir DIR [--rows 1000000]

Protocol (docs/dev/performance.md): per query, one warm-up run per side,
then --runs pairs, each an FDW run and a heap run in random order. Each
run is EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON), which gives the planning
and the execution time (rows are not sent to the client). The ratio is
computed per pair, on planning + execution; the table shows its median and
its spread (min..max), and both sides' median times. The primary line runs
with max_parallel_workers_per_gather = 0 (neither side in parallel); a
second line per query runs at the server's default, where the heap may use
parallel workers and the foreign scan cannot. Raw samples go to
bench/results/ (gitignored).

Raw Lance: the same queries answered by pylance 14.0.2 (bench/lance_peer.py)
on a copy of the table's directory, in pairs with the FDW in random order
(FDW: planning + execution at max_parallel_workers_per_gather = 0; Lance:
the Python call, producing an Arrow result, on Lance's own threads). It
runs when a Python with pylance is found: --lance-python, else the
environment scripts/lib.sh's ensure_lance_peer makes (bench/run.sh does).
"""

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import tempfile
import time

import psycopg2

SCHEMA = """
node Item {
    key: String @key
    name: String
    category: String @index
    tier: enum(bronze, silver, gold, platinum)
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

ALL_COLUMNS = "id, key, name, category, tier, qty, amount, price, ratio, active, created, updated, note, code"

QUERIES = [
    # The heap never forms its tuples' columns here (EXPLAIN discards them).
    ("full scan, SELECT *", "SELECT * FROM {t}"),
    # Both sides must produce every column (num_nonnulls is never pushed).
    ("full scan, every column produced",
     f"SELECT count(*) FROM {{t}} WHERE num_nonnulls({ALL_COLUMNS}) >= 0"),
    ("sum of one column", "SELECT sum(amount) FROM {t}"),
    ("count(*)", "SELECT count(*) FROM {t}"),
    ("GROUP BY an enum, with a sum", "SELECT tier, sum(amount) FROM {t} GROUP BY tier"),
    ("GROUP BY 100 values, with a sum", "SELECT category, sum(amount) FROM {t} GROUP BY category"),
    # The graph is not optimized, so the index `@index` declares is not
    # built (omnigraph_optimize builds it; bench/lookup_bench.py measures
    # lookups through it); the heap's index is.
    ("equality on an @index property, no index built", "SELECT * FROM {t} WHERE code = 424242"),
    ("LIMIT 10", "SELECT * FROM {t} LIMIT 10"),
]

TIERS = ["bronze", "silver", "gold", "platinum"]


def rows(n, start):
    for i in range(start, start + n):
        yield json.dumps({"type": "Item", "data": {
            "key": f"k{i:08d}", "name": f"item number {i}", "category": f"cat{i % 100}", "tier": TIERS[i % 4],
            "qty": i % 1000, "amount": i * 3, "price": i * 0.25, "ratio": (i % 7) / 7.0,
            "active": i % 2 == 0, "created": f"20{10 + i % 15:02d}-0{1 + i % 9}-1{i % 10}",
            "updated": f"2024-01-01T00:00:{i % 60:02d}Z",
            "note": None if i % 3 == 0 else f"note {i % 17}", "code": i}})


def explain(cur, sql):
    """(planning ms, execution ms) of one run."""
    cur.execute("EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON) " + sql)
    lines = [r[0] for r in cur.fetchall()]

    def ms(prefix):
        line = [x for x in lines if x.startswith(prefix)][0]
        return float(line.split(":")[1].split()[0])

    return ms("Planning Time"), ms("Execution Time")


def plan_shape(cur, sql):
    cur.execute("EXPLAIN (COSTS OFF) " + sql)
    return [r[0] for r in cur.fetchall()]


def paired(runs, sides):
    """Warm up each side (a name and a function timing one run), then
    `runs` pairs with the sides in random order. Returns the raw samples:
    per pair, the side that went first and each side's timing."""
    for run in sides.values():
        run()
    out = []
    for _ in range(runs):
        order = list(sides)
        random.shuffle(order)
        sample = {"first": order[0]}
        for side in order:
            sample[side] = sides[side]()
        out.append(sample)
    return out


def pairs(cur, fdw_sql, heap_sql, runs):
    """FDW and heap pairs: per pair, (planning, execution) of each side."""
    return paired(runs, {"fdw": lambda: explain(cur, fdw_sql), "heap": lambda: explain(cur, heap_sql)})


def summary(samples):
    total = {side: [sum(s[side]) for s in samples] for side in ("fdw", "heap")}
    ratios = sorted(f / h for f, h in zip(total["fdw"], total["heap"]))
    return {
        "fdw_ms": statistics.median(total["fdw"]),
        "heap_ms": statistics.median(total["heap"]),
        "fdw_plan_ms": statistics.median(s["fdw"][0] for s in samples),
        "heap_plan_ms": statistics.median(s["heap"][0] for s in samples),
        "ratio": statistics.median(ratios),
        "spread": (ratios[0], ratios[-1]),
    }


def environment(cur):
    cur.execute("SELECT version()")
    version = cur.fetchone()[0]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {"postgres": version, "commit": commit, "kernel": platform.release(),
            "cpus": os.cpu_count(), "loadavg": load, "time": time.time()}


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


def connect(server, graph_dir):
    """An autocommit connection with jit off, and `server` pointing at `graph_dir`."""
    conn = psycopg2.connect(dbname=os.environ.get("PGDATABASE", "postgres"))
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SET jit = off")
    cur.execute("CREATE EXTENSION IF NOT EXISTS omnigraph_fdw")
    cur.execute(f"DROP SERVER IF EXISTS {server} CASCADE")
    cur.execute(f"CREATE SERVER {server} FOREIGN DATA WRAPPER omnigraph OPTIONS (uri %s)", (graph_dir,))
    return cur


def print_header():
    print(f"{'query':42} {'workers':>7} {'fdw ms':>9} {'plan':>6} {'heap ms':>9} {'plan':>6} {'ratio':>7}  spread")


def measure(cur, results, label, sql, fdw_sql, heap_sql, runs, **extra):
    """Pairs of one query at max_parallel_workers_per_gather 0 and at the
    default: printed, and recorded in `results` with the plans."""
    for workers in ("0", "default"):
        if workers == "0":
            cur.execute("SET max_parallel_workers_per_gather = 0")
        else:
            cur.execute("RESET max_parallel_workers_per_gather")
        samples = pairs(cur, fdw_sql, heap_sql, runs)
        s = summary(samples)
        results["queries"].append({"query": label, "sql": sql, "workers": workers, "samples": samples,
                                   "summary": s, "fdw_plan": plan_shape(cur, fdw_sql),
                                   "heap_plan": plan_shape(cur, heap_sql), **extra})
        lo, hi = s["spread"]
        print(f"{label[:42]:42} {workers:>7} {s['fdw_ms']:9.3f} {s['fdw_plan_ms']:6.2f} "
              f"{s['heap_ms']:9.3f} {s['heap_plan_ms']:6.2f} {s['ratio']:7.2f}  {lo:.2f}..{hi:.2f}")
    cur.execute("RESET max_parallel_workers_per_gather")


def lance_python(given):
    """The Python with pylance for the raw-Lance peer, or None."""
    cache = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
    for path in (given, os.path.join(cache, "omnigraph", "bench-venv", "bin", "python")):
        if path and os.access(path, os.X_OK) and \
                subprocess.run([path, "-c", "import lance"], capture_output=True).returncode == 0:
            return path
    return None


class LancePeer:
    """bench/lance_peer.py on a copy of a table directory."""

    def __init__(self, python, table_dir):
        self.dir = tempfile.mkdtemp(prefix="omnigraph-lance-peer-")
        self.copy = os.path.join(self.dir, os.path.basename(table_dir))
        shutil.copytree(table_dir, self.copy)
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lance_peer.py")
        self.proc = subprocess.Popen([python, script, self.copy], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def run(self, label):
        """(milliseconds, rows) of one run of the query `label`."""
        self.proc.stdin.write(label + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["ms"], answer["rows"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def lance_pairs(cur, peer, label, fdw_sql, runs):
    """FDW and pylance pairs: per pair the FDW's (planning, execution) and
    Lance's milliseconds."""
    return paired(runs, {"fdw": lambda: explain(cur, fdw_sql), "lance": lambda: peer.run(label)[0]})


def measure_lance(cur, results, peer, runs, only):
    """The FDW against raw Lance, query by query: printed and recorded."""
    cur.execute("SET max_parallel_workers_per_gather = 0")
    print(f"\n{'query (FDW against pylance 14.0.2)':42} {'fdw ms':>9} {'lance ms':>9} {'ratio':>7}  spread")
    for label, q in QUERIES:
        if only and not any(o in label for o in only):
            continue
        samples = lance_pairs(cur, peer, label, q.format(t="bench.item"), runs)
        fdw = [sum(s["fdw"]) for s in samples]
        lance_ms = [s["lance"] for s in samples]
        ratios = sorted(f / max(l, 1e-6) for f, l in zip(fdw, lance_ms))
        summary = {"fdw_ms": statistics.median(fdw), "lance_ms": statistics.median(lance_ms),
                   "ratio": statistics.median(ratios), "spread": (ratios[0], ratios[-1])}
        results["lance_peer"].append({"query": label, "samples": samples, "summary": summary})
        print(f"{label[:42]:42} {summary['fdw_ms']:9.3f} {summary['lance_ms']:9.3f} "
              f"{summary['ratio']:7.2f}  {ratios[0]:.2f}..{ratios[-1]:.2f}")
    cur.execute("RESET max_parallel_workers_per_gather")


def save(results, name):
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}_{int(time.time())}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print(f"raw samples: {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--graph-dir", required=True, help="directory the server process can write")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=11, help="pairs per query and setting")
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--only", action="append", default=[],
                    help="run only the queries whose label contains this (repeatable)")
    ap.add_argument("--lance-python", help="a Python with pylance 14.0.2, for the raw-Lance peer")
    args = ap.parse_args()
    cur = connect("bench", args.graph_dir)
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
    results = {"env": environment(cur), "rows": args.rows, "runs": args.runs, "queries": []}
    print_header()
    for label, q in QUERIES:
        if args.only and not any(o in label for o in args.only):
            continue
        measure(cur, results, label, q, q.format(t="bench.item"), q.format(t="bench_heap"), args.runs)
    python = lance_python(args.lance_python)
    if python is None:
        print("\nno Python with pylance (scripts/lib.sh ensure_lance_peer): the raw-Lance peer is skipped")
    else:
        peer = LancePeer(python, os.path.join(args.graph_dir, "nodes", "Item"))
        try:
            # The copy holds the rows the foreign table shows.
            cur.execute("SELECT count(*) FROM bench.item")
            fdw_rows = cur.fetchone()[0]
            _, lance_rows = peer.run("count(*)")
            assert fdw_rows == lance_rows, f"the copy holds {lance_rows} rows, the table {fdw_rows}"
            results["lance_peer"] = []
            measure_lance(cur, results, peer, args.runs, args.only)
        finally:
            peer.close()
    save(results, "read_bench")
    for n in (args.rows // 10, args.rows):
        print(f"backend peak memory after scanning {n} rows: {peak_memory_kb(n) / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
