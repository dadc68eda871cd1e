"""Every schema of the reference-language corpus creates a graph, imports
with IMPORT FOREIGN SCHEMA, and every table reads (the DDL Postgres accepts
for each construct)."""

import os
import uuid

import pytest

from conftest import GRAPHS, connect

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
    suffix = uuid.uuid4().hex[:8]
    conn = connect(database)
    cur = conn.cursor()
    server, schema = f"corpus_{suffix}", f"corpus_{suffix}"
    cur.execute(
        f"CREATE SERVER {server} FOREIGN DATA WRAPPER omnigraph OPTIONS (uri %s)",
        (os.path.join(GRAPHS, server),),
    )
    with open(path, encoding="utf-8") as f:
        cur.execute("SELECT omnigraph_create_graph(%s, %s)", (server, f.read()))
    cur.execute(f"CREATE SCHEMA {schema}")
    cur.execute(f'IMPORT FOREIGN SCHEMA "main" FROM SERVER {server} INTO {schema}')
    cur.execute(
        "SELECT foreign_table_name FROM information_schema.foreign_tables WHERE foreign_table_schema = %s",
        (schema,),
    )
    tables = [r[0] for r in cur.fetchall()]
    assert tables
    for t in tables:
        cur.execute(f"SELECT * FROM {schema}.{t}")
        assert cur.fetchall() == []
    cur.execute(f"DROP SCHEMA {schema} CASCADE")
    cur.execute(f"DROP SERVER {server} CASCADE")
