"""Every schema of the reference-language corpus creates a graph, imports
with IMPORT FOREIGN SCHEMA, and every table reads (the DDL Postgres accepts
for each construct)."""

import os

import pytest

from conftest import connect, new_graph

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = sorted(
    [os.path.join(ROOT, "engine", "tests", "fixtures", "corpus", f)
     for f in os.listdir(os.path.join(ROOT, "engine", "tests", "fixtures", "corpus"))]
    + [os.path.join(ROOT, "engine", "tests", "fixtures", f) for f in ("test.pg", "context.pg")]
    + [os.path.join(ROOT, "examples", "social", "schema.pg")]
)


@pytest.mark.parametrize("path", CORPUS, ids=os.path.basename)
def test_corpus_schema_imports_and_reads(database, path):
    with open(path, encoding="utf-8") as f:
        name = new_graph(database, f.read(), prefix="corpus")
    conn = connect(database)
    cur = conn.cursor()
    cur.execute(
        "SELECT foreign_table_name FROM information_schema.foreign_tables WHERE foreign_table_schema = %s",
        (name,),
    )
    tables = [r[0] for r in cur.fetchall()]
    assert tables
    for t in tables:
        cur.execute(f"SELECT * FROM {name}.{t}")
        assert cur.fetchall() == []
    cur.execute(f"DROP SCHEMA {name} CASCADE")
    cur.execute(f"DROP SERVER {name} CASCADE")
