"""The raw-Lance peer of bench/read_bench.py: pylance 14.0.2 (the Lance the
engine is built on) answering the read benchmark's queries on a copy of
the benchmark table's directory, with no Postgres or graph in between.

Runs in the benchmark's own Python environment (pylance and pyarrow; see
`ensure_lance_peer` in scripts/lib.sh), as a child of read_bench.py:

    lance_peer.py TABLE_DIR

reads one query label per line on stdin, runs that query once and answers
one line of JSON: {"ms": elapsed milliseconds, "rows": rows produced}. An
unknown label answers {"error": ...}. Each answer is a whole Arrow result
(every requested column decoded, as the foreign scan must produce them for
Postgres); Lance uses its own threads, as it does by default.
"""

import json
import sys
import time

import lance
import pyarrow.compute as pc

ALL_COLUMNS = ["id", "key", "name", "category", "tier", "qty", "amount", "price", "ratio", "active",
               "created", "updated", "note", "code"]


def group_sum(ds, by):
    return ds.to_table(columns=[by, "amount"]).group_by(by).aggregate([("amount", "sum")])


# read_bench.py's query labels and what the same query is in pylance.
QUERIES = {
    "full scan, SELECT *": lambda ds: ds.to_table(columns=ALL_COLUMNS),
    "full scan, every column produced": lambda ds: ds.to_table(columns=ALL_COLUMNS),
    "sum of one column": lambda ds: pc.sum(ds.to_table(columns=["amount"])["amount"]),
    "count(*)": lambda ds: ds.count_rows(),
    "GROUP BY an enum, with a sum": lambda ds: group_sum(ds, "tier"),
    "GROUP BY 100 values, with a sum": lambda ds: group_sum(ds, "category"),
    "equality on an @index property, no index built":
        lambda ds: ds.to_table(columns=ALL_COLUMNS, filter="code = 424242"),
    "LIMIT 10": lambda ds: ds.to_table(columns=ALL_COLUMNS, limit=10),
}


def rows_of(result):
    """Rows of an Arrow result; a count is its own answer."""
    if hasattr(result, "num_rows"):
        return result.num_rows
    if isinstance(result, int):
        return result
    return 1


def main():
    ds = lance.dataset(sys.argv[1])
    for line in sys.stdin:
        label = line.strip()
        if not label:
            continue
        query = QUERIES.get(label)
        if query is None:
            print(json.dumps({"error": f"no pylance form of {label!r}"}), flush=True)
            continue
        t = time.perf_counter()
        result = query(ds)
        ms = (time.perf_counter() - t) * 1000
        print(json.dumps({"ms": ms, "rows": rows_of(result)}), flush=True)


if __name__ == "__main__":
    main()
