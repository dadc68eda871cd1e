"""Version control in SQL: merge with conflicts as rows, diff, merge base,
and branch operations that follow the caller's transaction."""

import os
import subprocess
import tempfile

import psycopg2
import pytest

from conftest import connect, new_graph

SCHEMA = """
node Person {
    name: String @key
    age: I64?
    city: String?
    email: String? @unique
}
node Company { name: String @key }
edge Knows: Person -> Person
edge WorksAt: Person -> Company @card(0..1)
"""

DATA = "\n".join([
    '{"type": "Person", "data": {"name": "Alice", "age": 30, "city": "Oslo"}}',
    '{"type": "Person", "data": {"name": "Bob", "age": 25}}',
    '{"type": "Person", "data": {"name": "Carol", "age": 40}}',
    '{"type": "Company", "data": {"name": "Acme"}}',
    '{"edge": "Knows", "from": "Alice", "to": "Bob", "data": {"id": "k1"}}',
])


@pytest.fixture
def g(database):
    """(server, cursor on an autocommit connection, connect) with `main`
    imported into schema <server> and branch `feature` into <server>_f."""
    name = new_graph(database, SCHEMA, DATA, prefix="mg")
    conn = connect(database)
    cur = conn.cursor()
    cur.execute("SELECT omnigraph_branch_create(%s, 'feature')", (name,))
    cur.execute(f"CREATE SCHEMA {name}_f")
    cur.execute(f'IMPORT FOREIGN SCHEMA "feature" FROM SERVER {name} INTO {name}_f')
    yield name, cur, lambda autocommit=True: connect(database, autocommit)
    conn.close()


def merge(cur, server, on_conflict="fail", source="feature", target="main"):
    cur.execute(
        "SELECT * FROM omnigraph_branch_merge(%s, %s, %s, %s)",
        (server, source, target, on_conflict),
    )
    return cur.fetchone()


def head(cur, server, branch="main"):
    cur.execute(
        "SELECT commit_id, parents FROM omnigraph_log(%s, %s) LIMIT 1", (server, branch)
    )
    return cur.fetchone()


def age(cur, server, name, schema=None):
    cur.execute(f"SELECT age FROM {schema or server}.person WHERE name = %s", (name,))
    row = cur.fetchone()
    return row and row[0]


def branches(cur, server):
    cur.execute("SELECT name FROM omnigraph_branch_list(%s) ORDER BY 1", (server,))
    return [r[0] for r in cur.fetchall()]


def test_outcomes_log_parents_and_merge_base(g):
    server, cur, _ = g
    before, _ = head(cur, server)
    assert merge(cur, server) == ("up_to_date", before, 0, 0, 0, 0)
    cur.execute(f"UPDATE {server}_f.person SET age = 26 WHERE name = 'Bob'")
    source, _ = head(cur, server, "feature")
    cur.execute("SELECT omnigraph_merge_base(%s, 'main', 'feature')", (server,))
    assert cur.fetchone()[0] == before
    status, commit_id, ins, upd, dele, conflicts = merge(cur, server)
    assert (status, ins, upd, dele, conflicts) == ("fast_forward", 0, 1, 0, 0)
    assert head(cur, server) == (commit_id, [before, source])
    assert age(cur, server, "Bob") == 26
    assert merge(cur, server)[0] == "up_to_date"
    cur.execute("SELECT omnigraph_merge_base(%s, 'main', %s)", (server, source))
    assert cur.fetchone()[0] == source
    # Both sides move: a merge commit.
    cur.execute(f"UPDATE {server}.person SET age = 31 WHERE name = 'Alice'")
    cur.execute(f"INSERT INTO {server}_f.person (name, age) VALUES ('Dave', 5)")
    status, commit_id, ins, upd, dele, conflicts = merge(cur, server)
    assert (status, ins, upd, dele, conflicts) == ("merged", 1, 0, 0, 0)
    assert len(head(cur, server)[1]) == 2
    assert age(cur, server, "Dave") == 5 and age(cur, server, "Alice") == 31


def test_conflicts_are_rows_and_the_callers_transaction_goes_on(g):
    server, cur, connect = g
    cur.execute(f"UPDATE {server}.person SET age = 31 WHERE name = 'Alice'")
    cur.execute(f"UPDATE {server}_f.person SET age = 32 WHERE name = 'Alice'")
    cur.execute(f"DELETE FROM {server}.person WHERE name = 'Carol'")
    cur.execute(f"UPDATE {server}_f.person SET city = 'Rome' WHERE name = 'Carol'")
    # A different property of one node on each side is no conflict.
    cur.execute(f"UPDATE {server}.person SET city = 'Lima' WHERE name = 'Bob'")
    cur.execute(f"UPDATE {server}_f.person SET age = 99 WHERE name = 'Bob'")
    before = head(cur, server)
    conn = connect(autocommit=False)
    c = conn.cursor()
    c.execute("CREATE TEMP TABLE audit (x int)")
    c.execute("INSERT INTO audit VALUES (1)")
    c.execute("SELECT * FROM omnigraph_branch_merge(%s, 'feature')", (server,))
    status, commit_id, *_, conflicts = c.fetchone()
    assert (status, commit_id, conflicts) == ("conflicts", None, 2)
    c.execute(
        "SELECT type_name, id, kind, property, base, ours, theirs, detail"
        " FROM omnigraph_merge_conflicts(%s, 'feature', 'main') ORDER BY id",
        (server,),
    )
    rows = c.fetchall()
    assert [r[:4] for r in rows] == [
        ("Person", "Alice", "update_update", "age"),
        ("Person", "Carol", "delete_update", None),
    ]
    assert rows[0][4:7] == (30, 31, 32)
    assert rows[1][5] is None and rows[1][6]["city"] == "Rome"
    assert "'main'" in rows[0][7] and "'feature'" in rows[0][7]
    c.execute("SELECT count(*) FROM audit")
    assert c.fetchone()[0] == 1
    conn.commit()
    assert head(cur, server) == before, "nothing merged"
    # Resolved by side.
    assert merge(cur, server, "ours")[0] == "merged"
    assert age(cur, server, "Alice") == 31 and age(cur, server, "Carol") is None
    cur.execute(f"SELECT age, city FROM {server}.person WHERE name = 'Bob'")
    assert cur.fetchone() == (99, "Lima")
    conn.close()


def test_theirs_takes_the_source_side(g):
    server, cur, _ = g
    cur.execute(f"UPDATE {server}.person SET age = 31 WHERE name = 'Alice'")
    cur.execute(f"UPDATE {server}_f.person SET age = 32 WHERE name = 'Alice'")
    cur.execute(f"DELETE FROM {server}_f.person WHERE name = 'Bob'")
    cur.execute(f"UPDATE {server}.person SET city = 'X' WHERE name = 'Bob'")
    assert merge(cur, server, "theirs")[:1] == ("merged",)
    assert age(cur, server, "Alice") == 32
    assert age(cur, server, "Bob") is None
    cur.execute(f"SELECT count(*) FROM {server}.knows")
    assert cur.fetchone()[0] == 0, "Bob's edge went with him"


def test_orphan_unique_and_cardinality_conflicts(g):
    server, cur, _ = g
    cur.execute(f"DELETE FROM {server}.person WHERE name = 'Carol'")
    cur.execute(f"INSERT INTO {server}_f.knows (id, src, dst) VALUES ('k2', 'Bob', 'Carol')")
    cur.execute(f"UPDATE {server}.person SET email = 'a@x' WHERE name = 'Alice'")
    cur.execute(f"UPDATE {server}_f.person SET email = 'a@x' WHERE name = 'Bob'")
    cur.execute(f"INSERT INTO {server}.works_at (src, dst) VALUES ('Bob', 'Acme')")
    cur.execute(f"INSERT INTO {server}_f.company (name) VALUES ('Globex')")
    cur.execute(f"INSERT INTO {server}_f.works_at (src, dst) VALUES ('Bob', 'Globex')")
    cur.execute(
        "SELECT kind, type_name, property FROM omnigraph_merge_conflicts(%s, 'feature') ORDER BY kind",
        (server,),
    )
    assert cur.fetchall() == [
        ("cardinality", "WorksAt", "src"),
        ("orphan_edge", "Knows", "dst"),
        ("unique", "Person", "email"),
    ]
    assert merge(cur, server, "theirs")[0] == "conflicts"
    # @card holds for ordinary writes too.
    with pytest.raises(psycopg2.Error) as e:
        cur.execute(f"INSERT INTO {server}.works_at (src, dst) VALUES ('Bob', 'Acme')")
    assert e.value.pgcode == "23514"
    assert "@card(0..1)" in e.value.pgerror


def test_rollback_undoes_branch_create_delete_and_merge(g):
    server, cur, connect = g
    cur.execute(f"UPDATE {server}_f.person SET age = 50 WHERE name = 'Bob'")
    before = head(cur, server)
    conn = connect(autocommit=False)
    c = conn.cursor()
    c.execute("SELECT omnigraph_branch_create(%s, 'tmp')", (server,))
    assert "tmp" in [b for b in branches(c, server)], "the transaction sees its branch"
    assert "tmp" not in branches(cur, server), "nobody else does yet"
    c.execute("SELECT status FROM omnigraph_branch_merge(%s, 'feature')", (server,))
    assert c.fetchone()[0] == "fast_forward"
    assert age(c, server, "Bob") == 50, "the merge is read back in the transaction"
    c.execute("SELECT omnigraph_branch_delete(%s, 'feature')", (server,))
    with pytest.raises(psycopg2.Error) as e:
        c.execute(f"SELECT count(*) FROM {server}_f.person")
    assert e.value.pgcode == "42704"
    conn.rollback()
    assert branches(cur, server) == ["feature", "main"]
    assert head(cur, server) == before
    assert age(cur, server, "Bob") == 25
    # ROLLBACK TO SAVEPOINT undoes them too.
    c.execute("SAVEPOINT s")
    c.execute("SELECT omnigraph_branch_create(%s, 'tmp2')", (server,))
    c.execute("SELECT omnigraph_branch_delete(%s, 'feature')", (server,))
    c.execute("ROLLBACK TO SAVEPOINT s")
    c.execute("SELECT omnigraph_branch_create(%s, 'kept')", (server,))
    conn.commit()
    assert branches(cur, server) == ["feature", "kept", "main"]
    conn.close()


MIGRATION = """
\\set ON_ERROR_STOP 1
BEGIN;
SELECT omnigraph_branch_create(:'srv', 'mig');
CREATE SCHEMA :"srv"_mig;
IMPORT FOREIGN SCHEMA "mig" FROM SERVER :"srv" INTO :"srv"_mig;
INSERT INTO :"srv"_mig.person (name, age) VALUES ('Mia', 7);
UPDATE :"srv"_mig.person SET age = age + 1 WHERE name = 'Mia';
SELECT status FROM omnigraph_branch_merge(:'srv', 'mig');
UPDATE :"srv".person SET city = 'Turku' WHERE name = 'Mia';
SELECT 1 / :fail;
COMMIT;
"""


def run_migration(server, database, fail):
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(MIGRATION.replace(':"srv"_mig', f"{server}_mig"))
    try:
        return subprocess.run(
            ["psql", "-X", "-q", "-d", database, "-v", f"srv={server}", "-v", f"fail={0 if fail else 1}", "-f", f.name],
            capture_output=True, text=True,
        )
    finally:
        os.unlink(f.name)


def test_a_psql_migration_creates_writes_merges_and_commits(g, database):
    server, cur, _ = g
    before, _ = head(cur, server)
    failed = run_migration(server, database, fail=True)
    assert failed.returncode != 0 and "division by zero" in failed.stderr
    assert branches(cur, server) == ["feature", "main"], "no branch left behind"
    assert head(cur, server)[0] == before and age(cur, server, "Mia") is None
    done = run_migration(server, database, fail=False)
    assert done.returncode == 0, done.stderr
    commit_id, parents = head(cur, server)
    mig_head, _ = head(cur, server, "mig")
    assert parents == [before, mig_head]
    cur.execute(f"SELECT age, city FROM {server}.person WHERE name = 'Mia'")
    assert cur.fetchone() == (8, "Turku")
    cur.execute("SELECT message FROM omnigraph_log(%s) LIMIT 1", (server,))
    assert cur.fetchone()[0] == "merge 'mig' into 'main'"


def test_diff_between_branches_and_commits(g):
    server, cur, _ = g
    start, _ = head(cur, server, "feature")
    cur.execute(f"INSERT INTO {server}_f.person (name, age) VALUES ('Dave', 9)")
    cur.execute(f"UPDATE {server}_f.person SET city = 'Paris' WHERE name = 'Alice'")
    cur.execute(f"DELETE FROM {server}_f.knows WHERE id = 'k1'")
    cur.execute(f"INSERT INTO {server}_f.knows (id, src, dst) VALUES ('k9', 'Dave', 'Alice')")
    cur.execute(
        "SELECT type_name, id, change, properties, before->>'city', after->>'city'"
        " FROM omnigraph_diff(%s, 'main', 'feature')",
        (server,),
    )
    assert cur.fetchall() == [
        ("Person", "Alice", "update", ["city"], "Oslo", "Paris"),
        ("Person", "Dave", "insert", ["name", "age"], None, None),
        ("Knows", "k1", "delete", ["src", "dst"], None, None),
        ("Knows", "k9", "insert", ["src", "dst"], None, None),
    ]
    end, _ = head(cur, server, "feature")
    cur.execute("SELECT change, count(*) FROM omnigraph_diff(%s, %s, %s) GROUP BY 1 ORDER BY 1", (server, end, start))
    assert cur.fetchall() == [("delete", 2), ("insert", 1), ("update", 1)]


def test_errors_name_the_object(g, database):
    server, cur, connect = g
    cases = [
        ("SELECT * FROM omnigraph_branch_merge(%s, 'main', 'main')", "22023", "into itself"),
        ("SELECT * FROM omnigraph_branch_merge(%s, 'feature', 'main', 'mine')", "22023", "on_conflict"),
        ("SELECT * FROM omnigraph_branch_merge(%s, 'nope')", "42704", "nope"),
        ("SELECT * FROM omnigraph_diff(%s, 'main', '01ARZ3NDEKTSV4RRFFQ69G5FAV')", "42704", "01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        ("SELECT omnigraph_branch_create(%s, 'feature')", "42710", "feature"),
        ("SELECT omnigraph_branch_delete(%s, 'nope')", "42704", "nope"),
    ]
    for sql, code, word in cases:
        with pytest.raises(psycopg2.Error) as e:
            cur.execute(sql, (server,))
        assert (e.value.pgcode, word in e.value.pgerror) == (code, True), (sql, e.value.pgerror)
    cur.execute("CREATE ROLE merger_nobody LOGIN")
    cur.execute(f"GRANT USAGE ON FOREIGN SERVER {server} TO merger_nobody")
    try:
        cur.execute("SET ROLE merger_nobody")
        with pytest.raises(psycopg2.Error) as e:
            cur.execute("SELECT * FROM omnigraph_branch_merge(%s, 'feature')", (server,))
        assert e.value.pgcode == "42501"
        cur.execute("SELECT count(*) FROM omnigraph_diff(%s, 'main', 'feature')", (server,))
    finally:
        cur.execute("RESET ROLE")
        cur.execute(f"REVOKE USAGE ON FOREIGN SERVER {server} FROM merger_nobody")
        cur.execute("DROP ROLE merger_nobody")


def test_a_merge_racing_writers_loses_no_write(g):
    server, cur, connect = g
    cur.execute(f"UPDATE {server}_f.person SET age = 1 WHERE name = 'Carol'")
    a = connect(autocommit=False)
    ac = a.cursor()
    ac.execute("SELECT status FROM omnigraph_branch_merge(%s, 'feature')", (server,))
    assert ac.fetchone()[0] == "fast_forward"
    # A disjoint concurrent commit: both land.
    cur.execute(f"UPDATE {server}.person SET age = 2 WHERE name = 'Alice'")
    a.commit()
    assert (age(cur, server, "Carol"), age(cur, server, "Alice")) == (1, 2)
    # An overlapping one: the merge's COMMIT gets 40001, the write stands.
    cur.execute(f"UPDATE {server}_f.person SET age = 3 WHERE name = 'Bob'")
    ac.execute("SELECT status FROM omnigraph_branch_merge(%s, 'feature')", (server,))
    assert ac.fetchone()[0] == "merged"
    cur.execute(f"UPDATE {server}.person SET age = 4 WHERE name = 'Bob'")
    with pytest.raises(psycopg2.Error) as e:
        a.commit()
    assert e.value.pgcode == "40001"
    assert age(cur, server, "Bob") == 4
    a.close()
