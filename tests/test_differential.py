"""Differential test: generated WHERE clauses (every pushed operator, constants
at type edges, NULLs, nesting, ORDER BY and LIMIT) over a foreign table and a
heap copy of the same rows must return the same rows, with and without the
transaction's own uncommitted writes.

CI runs a fixed seed. For a longer run:
    OMNIGRAPH_DIFF_CASES=20000 OMNIGRAPH_DIFF_SEED=7 python3 -m pytest tests/test_differential.py
(against the cluster scripts/test.sh starts; see docs/dev/testing.md).

NaN is among the stored values and the constants (comparisons with NaN or
an infinity stay in Postgres; stored NaN compares above every number on
both sides)."""

import os
import random

import psycopg2
import pytest

SEED = int(os.environ.get("OMNIGRAPH_DIFF_SEED", "20261203"))
CASES = int(os.environ.get("OMNIGRAPH_DIFF_CASES", "1500"))

SCHEMA = """
node Row {
    k: String @key
    i: I32?
    b: I64?
    f: F64?
    t: String?
    d: Date?
    ts: DateTime?
    flag: Bool?
    e: enum(a, b, c)?
}
"""

INTS = ["-2147483648", "2147483647", "0", "-1", "1", "7", "NULL"]
BIGS = ["-9223372036854775808", "9223372036854775807", "0", "-5", "42", "NULL"]
FLOATS = ["0", "'-0'::float8", "1.5", "-1.5", "1e308", "-1e308", "'Infinity'::float8", "'-Infinity'::float8", "2.5e-300", "'NaN'::float8", "NULL"]
TEXTS = ["''", "'a'", "'A'", "'alice'", "'Alice'", "'ÄÖü'", "'O''Brien'", "'a%b'", "'a_b'", "'zz'", "NULL"]
DATES = ["'1970-01-01'", "'2000-02-29'", "'9999-12-31'", "'0001-01-01'", "'1969-12-31'", "NULL"]
STAMPS = ["'1970-01-01 00:00:00+00'", "'2024-02-29 23:59:59.999999+00'", "'1900-06-01 12:00:00+00'", "'2262-04-11 23:47:16+00'", "NULL"]
BOOLS = ["true", "false", "NULL"]
ENUMS = ["'a'", "'b'", "'c'", "NULL"]

COLUMNS = {
    "i": (INTS + ["3000000000", "-3000000000", "2", "100"], "integer"),
    "b": (BIGS + ["1", "-9223372036854775807"], "bigint"),
    "f": (FLOATS + ["0.5", "7", "-2"], "double precision"),
    "t": (TEXTS + ["'b'", "'Z'", "'alicea'"], "text"),
    "d": (DATES + ["'2000-03-01'", "'1500-01-01'"], "date"),
    "ts": (STAMPS + ["'2000-01-01 00:00:00+00'"], "timestamptz"),
    "e": (ENUMS + ["'d'"], "text"),
}


def rows(rng, n):
    out = []
    for i in range(n):
        out.append(
            {
                "k": f"'r{i:03d}'",
                "i": rng.choice(INTS),
                "b": rng.choice(BIGS),
                "f": rng.choice(FLOATS),
                "t": rng.choice(TEXTS),
                "d": rng.choice(DATES),
                "ts": rng.choice(STAMPS),
                "flag": rng.choice(BOOLS),
                "e": rng.choice(ENUMS),
            }
        )
    return out


def insert_sql(table, rs):
    cols = ["k", "i", "b", "f", "t", "d", "ts", "flag", "e"]
    values = ",\n".join("(" + ", ".join(r[c] for c in cols) + ")" for r in rs)
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES {values}"


def atom(rng):
    kind = rng.randrange(10)
    col = rng.choice(list(COLUMNS))
    consts, _ = COLUMNS[col]
    c = lambda: rng.choice([v for v in consts if v != "NULL"] or consts)  # noqa: E731
    if kind <= 3:
        op = rng.choice(["=", "<>", "<", "<=", ">", ">="])
        if rng.random() < 0.15:
            return f"{c()} {op} {col}"
        return f"{col} {op} {c()}"
    if kind == 4:
        vals = ", ".join(rng.choice(consts) for _ in range(rng.randint(1, 4)))
        return f"{col} {'NOT ' if rng.random() < 0.4 else ''}IN ({vals})"
    if kind == 5:
        return f"{col} IS {'NOT ' if rng.random() < 0.5 else ''}NULL"
    if kind == 6:
        lo, hi = c(), c()
        return f"{col} {'NOT ' if rng.random() < 0.2 else ''}BETWEEN {lo} AND {hi}"
    if kind == 7:
        prefix = rng.choice(["", "a", "A", "al", "O''", "Ä", "z", "a\\%"])
        return f"t LIKE '{prefix}%'"
    if kind == 8:
        return rng.choice(["flag", "NOT flag", "flag = false", "flag = true", "flag <> true",
                           "flag IS TRUE", "flag IS NOT FALSE", "flag IS UNKNOWN"])
    return f"{col} = ANY(ARRAY[{c()}, {c()}]::{COLUMNS[col][1]}[])"


def predicate(rng, depth=0):
    r = rng.random()
    if depth >= 3 or r < 0.45:
        return atom(rng)
    if r < 0.7:
        return f"({predicate(rng, depth + 1)} AND {predicate(rng, depth + 1)})"
    if r < 0.92:
        return f"({predicate(rng, depth + 1)} OR {predicate(rng, depth + 1)})"
    return f"NOT ({predicate(rng, depth + 1)})"


def query(rng, table, pred):
    if rng.random() < 0.3:
        col = rng.choice(list(COLUMNS) + ["flag"])
        direction = rng.choice(["", " DESC"])
        nulls = rng.choice(["", " NULLS FIRST", " NULLS LAST"])
        limit = rng.choice(["", f" LIMIT {rng.randint(0, 12)}", f" LIMIT 5 OFFSET {rng.randint(0, 5)}"])
        return f"SELECT k FROM {table} WHERE {pred} ORDER BY {col}{direction}{nulls}, k{limit}"
    return f"SELECT k FROM {table} WHERE {pred} ORDER BY k"


def run(cur, q):
    """Rows of `q`, or its SQLSTATE; the transaction goes on either way."""
    cur.execute("SAVEPOINT q")
    try:
        cur.execute(q)
        result = ([r[0] for r in cur.fetchall()], None)
    except psycopg2.Error as e:
        cur.execute("ROLLBACK TO SAVEPOINT q")
        result = (None, e.pgcode)
    cur.execute("RELEASE SAVEPOINT q")
    return result


def compare(cur, rng, fdw, heap, cases):
    mismatches = []
    for _ in range(cases):
        pred = predicate(rng)
        state = rng.getstate()
        q_fdw = query(rng, fdw, pred)
        rng.setstate(state)
        q_heap = query(rng, heap, pred)
        want, heap_error = run(cur, q_heap)
        got, fdw_error = run(cur, q_fdw)
        if (got, fdw_error) != (want, heap_error):
            mismatches.append(f"{q_fdw}\n    fdw {got or fdw_error} != heap {want or heap_error}")
    return mismatches


@pytest.fixture(scope="module")
def tables(database):
    from conftest import connect, new_graph

    name = new_graph(database, SCHEMA, prefix="diff")
    fdw, heap = f"{name}.row", f"{name}_heap"
    conn = connect(database)
    cur = conn.cursor()
    cur.execute(insert_sql(fdw, rows(random.Random(SEED), 60)))
    cur.execute(f"CREATE TABLE {heap} AS SELECT * FROM {fdw}")
    cur.execute(f"ANALYZE {heap}")
    conn.close()
    return fdw, heap


def test_pushed_filters_give_the_heap_s_rows(tables, database):
    from conftest import connect

    fdw, heap = tables
    conn = connect(database, autocommit=False)
    cur = conn.cursor()
    rng = random.Random(SEED + 1)
    bad = compare(cur, rng, fdw, heap, CASES)
    conn.rollback()
    assert not bad, f"{len(bad)} of {CASES} queries differ (seed {SEED}); first ones:\n" + "\n".join(bad[:10])


def test_and_with_the_transaction_s_own_writes(tables, database):
    from conftest import connect

    fdw, heap = tables
    conn = connect(database, autocommit=False)
    cur = conn.cursor()
    rng = random.Random(SEED + 2)
    extra = rows(rng, 15)
    for r in extra:
        r["k"] = r["k"].replace("'r", "'n")
    for table in (fdw, heap):
        cur.execute(insert_sql(table, extra))
        cur.execute(f"UPDATE {table} SET i = 7, t = 'updated', flag = NULL WHERE k IN ('r001', 'r002', 'n003')")
        cur.execute(f"UPDATE {table} SET f = NULL, d = '2000-02-29' WHERE k LIKE 'r01%'")
        cur.execute(f"DELETE FROM {table} WHERE k IN ('r005', 'r006', 'n007')")
    bad = compare(cur, rng, fdw, heap, CASES // 3)
    conn.rollback()
    assert not bad, f"{len(bad)} of {CASES // 3} queries differ (seed {SEED}); first ones:\n" + "\n".join(bad[:10])
