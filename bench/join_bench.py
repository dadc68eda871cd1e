"""Join benchmark: hops over an edge table from one selective node, on an
omnigraph graph (after omnigraph_optimize built its id/src/dst indexes) and
on heap tables with btree indexes on the same columns, in one run.

Usage (against a running cluster with the extension installed, release build):
    PGHOST=... PGPORT=... PGUSER=postgres python3 bench/join_bench.py --graph-dir DIR [--edges 1000000]

The protocol is read_bench.py's (docs/dev/performance.md): a warm-up, then
--runs pairs in random order, the median per-pair ratio of planning +
execution time with its spread, at max_parallel_workers_per_gather 0 and at
the default. Raw samples go to bench/results/.
"""

import argparse
import json
import os
import time

from read_bench import connect, environment, measure, plan_shape, print_header, save

SCHEMA = """
node P {
    slug: String @key
    n: I32
}
edge Knows: P -> P {
    w: I32
}
"""

QUERIES = [
    ("one hop from one node",
     "SELECT k.dst, k.w FROM {p} p JOIN {k} k ON k.src = p.id WHERE p.slug = 'p0004242'"),
    ("two hops from one node",
     "SELECT k2.dst, k2.w FROM {p} p JOIN {k} k1 ON k1.src = p.id "
     "JOIN {k} k2 ON k2.src = k1.dst WHERE p.slug = 'p0004242'"),
    ("two hops, then the nodes",
     "SELECT p2.slug, p2.n FROM {p} p JOIN {k} k1 ON k1.src = p.id "
     "JOIN {k} k2 ON k2.src = k1.dst JOIN {p} p2 ON p2.id = k2.dst WHERE p.slug = 'p0004242'"),
]


def node_lines(nodes):
    for i in range(nodes):
        yield json.dumps({"type": "P", "data": {"slug": f"p{i:07d}", "n": i % 100}})


def edge_lines(nodes, edges):
    """`edges // nodes` edges from every node, to scattered nodes."""
    per = edges // nodes
    for i in range(nodes):
        for j in range(per):
            dst = (i * 7919 + j * 104729 + 1) % nodes
            yield json.dumps({"edge": "Knows", "from": f"p{i:07d}", "to": f"p{dst:07d}", "data": {"w": j}})


def load(cur, lines, chunk=100_000):
    batch = []
    for line in lines:
        batch.append(line)
        if len(batch) == chunk:
            cur.execute("SELECT omnigraph_load('jbench', 'main', %s)", ("\n".join(batch),))
            batch = []
    if batch:
        cur.execute("SELECT omnigraph_load('jbench', 'main', %s)", ("\n".join(batch),))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--graph-dir", required=True, help="directory the server process can write")
    ap.add_argument("--edges", type=int, default=1_000_000)
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=11, help="pairs per query and setting")
    args = ap.parse_args()
    cur = connect("jbench", args.graph_dir)
    if not os.path.exists(os.path.join(args.graph_dir, "_graph", "graph.json")):
        cur.execute("SELECT omnigraph_create_graph('jbench', %s)", (SCHEMA,))
        t0 = time.perf_counter()
        # Nodes first: edges need their endpoints.
        load(cur, node_lines(args.nodes))
        load(cur, edge_lines(args.nodes, args.edges))
        cur.execute("SELECT count(*) FROM omnigraph_optimize('jbench')")
        print(f"load of {args.nodes} nodes and {args.edges} edges, and optimize: {time.perf_counter() - t0:.1f} s")
    cur.execute("DROP SCHEMA IF EXISTS jbench CASCADE")
    cur.execute("CREATE SCHEMA jbench")
    cur.execute('IMPORT FOREIGN SCHEMA "main" FROM SERVER jbench INTO jbench')
    cur.execute("ANALYZE jbench.p")
    cur.execute("ANALYZE jbench.knows")
    cur.execute("DROP TABLE IF EXISTS jb_p, jb_knows")
    cur.execute("CREATE TABLE jb_p AS SELECT * FROM jbench.p")
    cur.execute("CREATE TABLE jb_knows AS SELECT * FROM jbench.knows")
    for t, c in (("jb_p", "id"), ("jb_p", "slug"), ("jb_knows", "src"), ("jb_knows", "dst")):
        cur.execute(f"CREATE INDEX ON {t} ({c})")
    cur.execute("VACUUM ANALYZE jb_p")
    cur.execute("VACUUM ANALYZE jb_knows")
    results = {"env": environment(cur), "nodes": args.nodes, "edges": args.edges, "runs": args.runs, "queries": []}
    print_header()
    for label, q in QUERIES:
        fdw_sql = q.format(p="jbench.p", k="jbench.knows")
        heap_sql = q.format(p="jb_p", k="jb_knows")
        cur.execute(f"SELECT count(*) FROM ({fdw_sql}) f")
        n_fdw = cur.fetchone()[0]
        cur.execute(f"SELECT count(*) FROM ({heap_sql}) h")
        assert n_fdw == cur.fetchone()[0], label
        measure(cur, results, label, q, fdw_sql, heap_sql, args.runs, rows=n_fdw)
    save(results, "join_bench")
    print("plan of two hops (FDW):")
    for line in plan_shape(cur, QUERIES[1][1].format(p="jbench.p", k="jbench.knows")):
        print("   ", line)


if __name__ == "__main__":
    main()
