"""Throughput of many small write transactions: pgbench clients each running
BEGIN; UPDATE ... SET balance = balance + 1 WHERE key = <random>; COMMIT;
on a 200-node graph table and on a heap table with the same rows, in
alternating rounds. pgbench retries serialization failures (40001) with
--max-tries; afterwards the sum of balances must have grown by exactly the
number of committed transactions on both sides (no lost update).

Usage (against a running cluster with the extension installed, release build):
    PGHOST=... PGPORT=... PGUSER=postgres python3 bench/tps_bench.py --graph-dir DIR
"""

import argparse
import os
import random
import re
import statistics
import subprocess
import tempfile

from read_bench import connect, environment, save

SCHEMA = """
node Account {
    key: String @key
    balance: I64
}
"""

PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"


def balance(cur, table):
    cur.execute(f"SELECT sum(balance) FROM {table}")
    return cur.fetchone()[0]


def pgbench(script, options, dbname):
    """pgbench's report of running `script` (a pgbench script) with `options`."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
        path = f.name
    try:
        return subprocess.run([PGBENCH, "-n", *options, "-f", path, dbname],
                              capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(path)


def run(table, clients, seconds, dbname):
    script = ("\\set k random(0, 199)\n"
              "BEGIN;\n"
              f"UPDATE {table} SET balance = balance + 1 WHERE key = 'a' || :k;\n"
              "COMMIT;\n")
    out = pgbench(script, ["-c", str(clients), "-j", "2", "-T", str(seconds), "--max-tries=1000"], dbname)
    tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))
    done = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))
    retried = re.search(r"number of transactions retried: (\d+)", out)
    return tps, done, int(retried.group(1)) if retried else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--graph-dir", required=True)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3, help="alternating FDW/heap rounds")
    args = ap.parse_args()
    dbname = os.environ.get("PGDATABASE", "postgres")
    cur = connect("tbench", args.graph_dir)
    if not os.path.exists(os.path.join(args.graph_dir, "_graph", "graph.json")):
        cur.execute("SELECT omnigraph_create_graph('tbench', %s)", (SCHEMA,))
        lines = "\n".join(f'{{"type": "Account", "data": {{"key": "a{i}", "balance": 0}}}}' for i in range(200))
        cur.execute("SELECT omnigraph_load('tbench', 'main', %s)", (lines,))
    cur.execute("DROP SCHEMA IF EXISTS tbench CASCADE")
    cur.execute("CREATE SCHEMA tbench")
    cur.execute('IMPORT FOREIGN SCHEMA "main" FROM SERVER tbench INTO tbench')
    cur.execute("DROP TABLE IF EXISTS tb_heap")
    cur.execute("CREATE TABLE tb_heap (key text PRIMARY KEY, balance bigint)")
    cur.execute("INSERT INTO tb_heap SELECT key, balance FROM tbench.account")
    results = {"env": environment(cur), "clients": args.clients, "seconds": args.seconds, "rounds": []}
    print(f"{'round':>5} {'side':>5} {'tps':>9} {'committed':>10} {'retried':>8}  balances grew by")
    for r in range(args.rounds):
        sides = [("fdw", "tbench.account"), ("heap", "tb_heap")]
        random.shuffle(sides)
        for side, table in sides:
            before = balance(cur, table)
            tps, done, retried = run(table, args.clients, args.seconds, dbname)
            grew = balance(cur, table) - before
            assert grew == done, f"{side}: {done} transactions committed, balances grew by {grew}"
            results["rounds"].append({"round": r, "side": side, "tps": tps, "committed": done,
                                      "retried": retried, "grew": int(grew)})
            print(f"{r:5} {side:>5} {tps:9.1f} {done:10} {retried:8}  {grew}")
    fdw = [x["tps"] for x in results["rounds"] if x["side"] == "fdw"]
    heap = [x["tps"] for x in results["rounds"] if x["side"] == "heap"]
    ratio = statistics.median(fdw) / statistics.median(heap)
    print(f"median tps: FDW {statistics.median(fdw):.1f}, heap {statistics.median(heap):.1f}, ratio {ratio:.3f}")
    results["ratio"] = ratio
    save(results, "tps_bench")


if __name__ == "__main__":
    main()
