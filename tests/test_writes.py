"""Write path across sessions: isolation, conflicts (40001) and retries,
multi-branch commits, a backend killed mid-transaction, bulk inserts."""

import io
import os
import signal
import threading

import psycopg2
import pytest
from psycopg2 import errors

from conftest import graph_dir, reconnect


def commits(cur, server, branch="main"):
    cur.execute("SELECT count(*) FROM omnigraph_log(%s, %s)", (server, branch))
    return cur.fetchone()[0]


def count(cur, sql, *args):
    cur.execute(sql, args)
    return cur.fetchone()[0]


def test_other_sessions_see_nothing_until_commit(graph):
    server, schema, connect = graph
    writer, reader = connect(autocommit=False), connect()
    w, r = writer.cursor(), reader.cursor()
    w.execute(f"INSERT INTO {schema}.person (slug, name, status) VALUES ('new', 'New', 'active')")
    w.execute(f"UPDATE {schema}.person SET age = 77 WHERE slug = 'alice'")
    assert count(w, f"SELECT count(*) FROM {schema}.person WHERE slug = 'new'") == 1
    assert count(r, f"SELECT count(*) FROM {schema}.person WHERE slug = 'new'") == 0
    assert count(r, f"SELECT age FROM {schema}.person WHERE slug = 'alice'") == 30
    writer.commit()
    assert count(r, f"SELECT count(*) FROM {schema}.person WHERE slug = 'new'") == 1
    assert count(r, f"SELECT age FROM {schema}.person WHERE slug = 'alice'") == 77


def test_disjoint_writers_both_commit_and_overlapping_ones_get_40001(graph):
    server, schema, connect = graph
    a, b = connect(autocommit=False), connect(autocommit=False)
    ca, cb = a.cursor(), b.cursor()
    before = commits(ca, server)
    ca.execute(f"INSERT INTO {schema}.person (slug, name, status) VALUES ('a1', 'A', 'active')")
    cb.execute(f"INSERT INTO {schema}.person (slug, name, status) VALUES ('b1', 'B', 'active')")
    a.commit()
    b.commit()
    assert commits(ca, server) == before + 2
    a.commit()
    # Both update the same row: the later commit fails with 40001, the earlier stands.
    ca.execute(f"UPDATE {schema}.person SET age = 1 WHERE slug = 'bob'")
    cb.execute(f"UPDATE {schema}.person SET age = 2 WHERE slug = 'bob'")
    a.commit()
    with pytest.raises(errors.SerializationFailure, match="retry|Retry|concurrent") as e:
        b.commit()
    assert e.value.pgcode == "40001"
    assert "Retry" in (e.value.diag.message_hint or "")
    b.rollback()
    assert count(cb, f"SELECT age FROM {schema}.person WHERE slug = 'bob'") == 1
    b.commit()
    # Both insert the same key.
    ca.execute(f"INSERT INTO {schema}.person (slug, name, status) VALUES ('same', 'S', 'active')")
    cb.execute(f"INSERT INTO {schema}.person (slug, name, status) VALUES ('same', 'S', 'active')")
    a.commit()
    with pytest.raises(errors.SerializationFailure):
        b.commit()
    b.rollback()
    # Delete against update.
    ca.execute(f"DELETE FROM {schema}.person WHERE slug = 'charlie'")
    cb.execute(f"UPDATE {schema}.person SET age = 5 WHERE slug = 'charlie'")
    a.commit()
    with pytest.raises(errors.SerializationFailure):
        b.commit()
    b.rollback()
    assert count(cb, f"SELECT count(*) FROM {schema}.person WHERE slug = 'charlie'") == 0


def test_a_value_read_earlier_in_the_transaction_cannot_overwrite_a_concurrent_commit(graph):
    server, schema, connect = graph
    a, b = connect(autocommit=False), connect()
    ca, cb = a.cursor(), b.cursor()
    ca.execute(f"SELECT age FROM {schema}.person WHERE slug = 'alice'")
    seen = ca.fetchone()[0]
    # Another session changes the row after this transaction read it ...
    cb.execute(f"UPDATE {schema}.person SET age = age + 10 WHERE slug = 'alice'")
    # ... so writing back a value computed from the old read must not win.
    ca.execute(f"UPDATE {schema}.person SET age = %s WHERE slug = 'alice'", (seen + 1,))
    with pytest.raises(errors.SerializationFailure) as e:
        a.commit()
    assert e.value.pgcode == "40001"
    a.rollback()
    assert count(cb, f"SELECT age FROM {schema}.person WHERE slug = 'alice'") == seen + 10
    # A transaction that read nothing stale commits.
    ca.execute(f"SELECT age FROM {schema}.person WHERE slug = 'alice'")
    ca.execute(f"UPDATE {schema}.person SET age = %s WHERE slug = 'alice'", (ca.fetchone()[0] + 1,))
    a.commit()
    assert count(cb, f"SELECT age FROM {schema}.person WHERE slug = 'alice'") == seen + 11


def test_four_sessions_fifty_transactions_each_land_exactly_once(graph):
    server, schema, connect = graph
    setup = connect()
    with setup.cursor() as cur:
        cur.execute(f"INSERT INTO {schema}.company (slug, name, founded) VALUES ('ctr', 'Counter', 1800)")
    retries = []
    failures = []

    def worker(n):
        conn = connect(autocommit=False)
        cur = conn.cursor()
        done = 0
        try:
            while done < 50:
                try:
                    # Everyone bumps the shared counter (overlapping) and
                    # inserts its own row (disjoint).
                    cur.execute(f"SELECT founded FROM {schema}.company WHERE slug = 'ctr'")
                    value = cur.fetchone()[0]
                    cur.execute(f"UPDATE {schema}.company SET founded = %s WHERE slug = 'ctr'", (value + 1,))
                    cur.execute(
                        f"INSERT INTO {schema}.person (slug, name, status, age) VALUES (%s, 'W', 'active', %s)",
                        (f"w{n}-{done}", n),
                    )
                    conn.commit()
                    done += 1
                except errors.SerializationFailure:
                    conn.rollback()
                    retries.append(n)
        except Exception as e:  # pragma: no cover - reported below
            failures.append(repr(e))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    with setup.cursor() as cur:
        assert count(cur, f"SELECT founded FROM {schema}.company WHERE slug = 'ctr'") == 2000
        cur.execute(f"SELECT age, count(*) FROM {schema}.person WHERE slug LIKE 'w%%' GROUP BY age ORDER BY age")
        assert cur.fetchall() == [(n, 50) for n in range(4)]
        assert count(cur, "SELECT count(*) FROM omnigraph_log(%s, 'main') WHERE actor = current_user", server) >= 201
    # How many commits had to retry depends on scheduling; the totals above
    # are what must hold.


def test_a_transaction_over_two_branches_commits_once_on_each(graph):
    server, schema, connect = graph
    conn = connect()
    cur = conn.cursor()
    cur.execute("SELECT omnigraph_branch_create(%s, 'side', 'main')", (server,))
    cur.execute(f"CREATE SCHEMA {schema}_side")
    cur.execute(f"IMPORT FOREIGN SCHEMA \"side\" FROM SERVER {server} INTO {schema}_side")
    main_before, side_before = commits(cur, server), commits(cur, server, "side")
    # Both valid: one commit on each branch. (A failure on either branch
    # publishes neither: tests/test_trust.py.)
    cur.execute("BEGIN")
    cur.execute(f"INSERT INTO {schema}.person (slug, name, status) VALUES ('m1', 'M', 'active')")
    cur.execute(f"INSERT INTO {schema}_side.person (slug, name, status) VALUES ('s1', 'S', 'active')")
    cur.execute("COMMIT")
    assert commits(cur, server) == main_before + 1
    assert commits(cur, server, "side") == side_before + 1


def backend_rss_peak_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def spill_root(cur):
    """The server's temporary directory, where spills live."""
    cur.execute("SHOW data_directory")
    return os.path.join(cur.fetchone()[0], "base", "pgsql_tmp")


def spill_dirs(cur, pid):
    """The spill directories backend `pid` holds under base/pgsql_tmp."""
    tmp = spill_root(cur)
    if not os.path.isdir(tmp):
        return []
    return [d for d in os.listdir(tmp) if d.startswith(f"pgsql_tmp_omnigraph_{pid}_")]


def data_file_inodes(*roots):
    """The inodes of the Lance data files (`data/*.lance`) under `roots`."""
    found = set()
    for root in roots:
        for parent, _, files in os.walk(root):
            if os.path.basename(parent) == "data":
                found |= {os.stat(os.path.join(parent, f)).st_ino for f in files if f.endswith(".lance")}
    return found


@pytest.mark.parametrize("budget", ["1MB", "16MB"], ids=["row by row", "by column"])
def test_bulk_insert_spills_and_memory_stays_bounded(graph, budget):
    """With a 1 MB budget the rows' values (1 KiB each) fill it before a
    chunk of 1,024 rows: they are staged row by row and spill past the
    budget. With 16 MB, chunks of about 14,000 rows go to the spill as
    Arrow batches. Either way memory is bounded by the budget, not by the
    rows."""
    server, schema, connect = graph
    peaks = {}
    for rows in (20_000, 200_000):
        conn = connect(autocommit=False)
        cur = conn.cursor()
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
        cur.execute(f"SET omnigraph.staging_memory = '{budget}'")
        cur.execute(
            f"""INSERT INTO {schema}.person (slug, name, status, age, email)
                SELECT 'bulk{rows}-' || i, repeat(md5(i::text), 32), 'active', i %% 90, 'b{rows}-' || i || '@x.org'
                FROM generate_series(1, %s) i""",
            (rows,),
        )
        assert len(spill_dirs(cur, pid)) == 1, "staged rows past the budget move to a spill"
        conn.commit()
        assert spill_dirs(cur, pid) == [], "the spill is removed at COMMIT"
        peaks[rows] = backend_rss_peak_kib(pid)
        assert count(cur, f"SELECT count(*) FROM {schema}.person WHERE slug LIKE %s", f"bulk{rows}-%") == rows
        conn.close()
    # Each row carries a 1 KiB name: 180,000 more rows held in memory would
    # take over 250 MiB. What does grow is bounded by settings, not rows (the
    # staging budget, the spill's read-ahead of 8 MiB and the Lance writer's
    # buffers of 16 MiB), plus a hash of each id (under 40 bytes a row) and
    # the `id` index built at COMMIT.
    assert peaks[200_000] - peaks[20_000] < 120 * 1024, peaks


def test_a_backend_killed_mid_transaction_leaves_the_graph_unchanged(graph, database):
    server, schema, connect = graph
    obs = connect()
    oc = obs.cursor()
    before_commits = commits(oc, server)
    before_rows = count(oc, f"SELECT count(*) FROM {schema}.person")
    victim = connect(autocommit=False)
    vc = victim.cursor()
    vc.execute("SELECT pg_backend_pid()")
    pid = vc.fetchone()[0]
    # A large transaction, spilled to disk, still open.
    vc.execute("SET omnigraph.staging_memory = '1MB'")
    vc.execute(
        f"""INSERT INTO {schema}.person (slug, name, status)
            SELECT 'doomed' || i, 'D', 'active' FROM generate_series(1, 120000) i"""
    )
    assert len(spill_dirs(oc, pid)) == 1
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(psycopg2.Error):
        vc.execute("SELECT 1")
    # The postmaster restarts after a backend crash.
    obs = reconnect(database)
    oc = obs.cursor()
    assert commits(oc, server) == before_commits
    # The crash restart removed the dead backend's spill (remove_temp_files_after_crash).
    assert spill_dirs(oc, pid) == []
    assert count(oc, f"SELECT count(*) FROM {schema}.person") == before_rows
    # And it still takes writes.
    oc.execute(f"INSERT INTO {schema}.person (slug, name, status) VALUES ('after', 'A', 'active')")
    assert count(oc, f"SELECT count(*) FROM {schema}.person") == before_rows + 1


def test_a_row_holding_nan_does_not_look_changed_to_a_later_writer(database):
    """Conflict checks compare rows as Postgres compares float8: NaN equals
    NaN, so updating a NaN row after an unrelated commit is no conflict."""
    from conftest import connect as raw_connect, new_graph

    name = new_graph(database, "node M { k: String @key\n x: F64?\n y: I32? }", prefix="nan")
    admin = raw_connect(database)
    a = admin.cursor()
    a.execute(f"INSERT INTO {name}.m (k, x) VALUES ('nan', 'NaN'), ('other', 1)")
    t = raw_connect(database, autocommit=False)
    tc = t.cursor()
    tc.execute(f"SELECT x FROM {name}.m WHERE k = 'nan'")
    # Another session commits a change to the other row of the same table.
    a.execute(f"UPDATE {name}.m SET y = 1 WHERE k = 'other'")
    tc.execute(f"UPDATE {name}.m SET y = 2 WHERE k = 'nan'")
    t.commit()
    a.execute(f"SELECT k, x::text, y FROM {name}.m ORDER BY k")
    assert a.fetchall() == [("nan", "NaN", 2), ("other", "1", 1)]


def plan_text(cur, sql, *args):
    cur.execute(f"EXPLAIN {sql}", args or None)
    return "\n".join(r[0] for r in cur.fetchall())


PERSON_COLUMNS = "id, slug, name, age, email, status::text, tags, joined_on, score"


def rows_of(cur, table):
    cur.execute(f"SELECT {PERSON_COLUMNS} FROM {table} ORDER BY id")
    return cur.fetchall()


def test_direct_modify_changes_the_rows_postgres_would_in_one_commit(graph):
    """An UPDATE with the same values for every row, or a DELETE, whose
    whole WHERE is pushed runs inside the scan (Direct Modify in EXPLAIN):
    it changes exactly the rows the same statement changes in a heap copy,
    makes one graph commit per transaction, reads the transaction's own
    writes (spilled ones too), follows savepoints, and fails as the row
    path does. Statements that need a row (RETURNING, a local condition,
    a value read from the row) take the row path, with the same results."""
    server, schema, connect = graph
    conn = connect()
    cur = conn.cursor()
    t = f"{schema}.person"
    cur.execute(f"CREATE TEMP TABLE heap AS SELECT {PERSON_COLUMNS.replace('::text', '')} FROM {t}")
    statements = [
        ("UPDATE {t} SET age = 40 WHERE status = 'active'", True),
        ("UPDATE {t} SET score = NULL, tags = ARRAY['x', 'y'] WHERE age > 26", True),
        ("UPDATE {t} SET name = 'N' || 'x', joined_on = DATE '2020-01-01' + 3 WHERE email IS NULL", True),
        ("UPDATE {t} SET joined_on = current_date - 1 WHERE id IN ('bob', 'diana', 'nobody')", True),
        ("UPDATE {t} SET age = 1 WHERE slug = 'nobody'", True),
        ("UPDATE {t} SET age = (SELECT max(age) + 1 FROM heap) WHERE slug = 'charlie'", True),
        ("UPDATE {t} SET (age, score) = (SELECT 50, 1.25) WHERE slug = 'alice'", False),
        ("UPDATE {t} p SET (age, score) = (SELECT h.age + 1, 2.0 FROM heap h WHERE h.id = p.id) "
         "WHERE status = 'active'", False),
        ("UPDATE {t} SET age = age + 1 WHERE status = 'active'", False),
        ("UPDATE {t} SET score = 2.5 WHERE length(name) > 3", False),
        ("UPDATE {t} SET score = random() * 0 WHERE age = 40", False),
        ("UPDATE {t} SET name = 'Same', age = age + 2 WHERE slug IN ('alice', 'bob')", False),
        ("DELETE FROM {t} WHERE age < 30", True),
        ("DELETE FROM {t} WHERE length(name) = 2", False),
    ]
    for sql, direct in statements:
        plan = plan_text(cur, sql.format(t=t))
        assert ("Direct Modify:" in plan) == direct, (sql, plan)
        if direct:
            assert "Foreign Update" in plan or "Foreign Delete" in plan, plan
            assert "Filter: (" not in plan.replace("Pushed Filter", ""), plan
            assert "Columns Read: id\n" in plan + "\n", "only ids are read"
        before = commits(cur, server)
        cur.execute(sql.format(t=t))
        changed = cur.rowcount
        cur.execute(sql.format(t="heap"))
        assert changed == cur.rowcount, sql
        assert rows_of(cur, t) == rows_of(cur, "heap"), sql
        assert commits(cur, server) == before + (1 if changed else 0), sql

    # A writable CTE's rows are not the statement's; EXPLAIN ANALYZE
    # counts the rows changed.
    cur.execute(f"WITH d AS (UPDATE {t} SET score = 3.5 WHERE status = 'active') SELECT 1")
    assert cur.rowcount == 1
    assert count(cur, f"SELECT count(*) FROM {t} WHERE score = 3.5") == 2
    cur.execute("BEGIN")
    plan = plan_text(cur, f"(ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) UPDATE {t} SET score = 4.5 WHERE status = 'active'")
    assert "Foreign Update on person (actual rows=2 loops=1)" in plan, plan
    cur.execute("ROLLBACK")
    cur.execute("UPDATE heap SET score = 3.5 WHERE status = 'active'")
    assert rows_of(cur, t) == rows_of(cur, "heap")

    # Edges: by endpoint, directly.
    e = f"{schema}.knows"
    sql = f"UPDATE {e} SET since = DATE '2000-01-02' WHERE src = 'alice'"
    assert "Direct Modify: set since" in plan_text(cur, sql)
    cur.execute(sql)
    assert cur.rowcount == count(cur, f"SELECT count(*) FROM {e} WHERE src = 'alice'") > 0
    cur.execute(f"SELECT DISTINCT since::text FROM {e} WHERE src = 'alice'")
    assert cur.fetchall() == [("2000-01-02",)]

    # RETURNING takes the row path and returns the rows.
    cur.execute(f"INSERT INTO {t} (slug, name, status, age) VALUES ('eve', 'Eve', 'active', 61), ('fay', 'Fay', 'retired', 62)")
    sql = f"UPDATE {t} SET age = 7 WHERE age > 60 RETURNING slug"
    assert "Direct Modify" not in plan_text(cur, sql)
    cur.execute(sql)
    assert sorted(r[0] for r in cur.fetchall()) == ["eve", "fay"]

    # Two direct statements in one transaction: one commit; they see the
    # transaction's own rows, staged and spilled.
    w = connect(autocommit=False)
    wc = w.cursor()
    before = commits(cur, server)
    wc.execute("SET omnigraph.staging_memory = '64kB'")
    wc.execute(
        f"INSERT INTO {t} (slug, name, status, age) "
        "SELECT 'bulk' || i, repeat('n', 200), 'active', 70 FROM generate_series(1, 3000) i"
    )
    wc.execute(f"UPDATE {t} SET status = 'retired', score = 1.5 WHERE age = 70")
    assert wc.rowcount == 3000
    wc.execute(f"DELETE FROM {t} WHERE score = 1.5 AND slug < 'bulk2'")
    deleted = wc.rowcount
    assert deleted == 1111, deleted  # bulk1, bulk10..19, bulk100..199, bulk1000..1999
    wc.execute(f"SELECT count(*), min(status::text), max(status::text) FROM {t} WHERE age = 70")
    assert wc.fetchone() == (3000 - deleted, "retired", "retired")
    assert count(cur, f"SELECT count(*) FROM {t} WHERE age = 70") == 0, "nothing is visible before COMMIT"
    w.commit()
    assert commits(cur, server) == before + 1
    assert count(cur, f"SELECT count(*) FROM {t} WHERE age = 70 AND status = 'retired' AND score = 1.5") == 3000 - deleted

    # A savepoint taken before rows are inserted and spilled: rolling back
    # to it removes them and undoes direct changes to the earlier ones.
    wc.execute("SET omnigraph.staging_memory = '64kB'")
    wc.execute(
        f"INSERT INTO {t} (slug, name, status, age) "
        "SELECT 'early' || i, repeat('n', 200), 'active', 71 FROM generate_series(1, 1000) i"
    )
    wc.execute("SAVEPOINT before_late")
    wc.execute(
        f"INSERT INTO {t} (slug, name, status, age) "
        "SELECT 'late' || i, repeat('n', 200), 'active', 71 FROM generate_series(1, 2000) i"
    )
    wc.execute(f"UPDATE {t} SET score = 9.5 WHERE age = 71")
    assert wc.rowcount == 3000
    wc.execute(f"DELETE FROM {t} WHERE age = 71 AND (slug < 'early5' OR slug >= 'late')")
    assert wc.rowcount == 445 + 2000  # early1..4, early10..49, early100..499, early1000; every late
    wc.execute("ROLLBACK TO SAVEPOINT before_late")
    wc.execute(f"SELECT count(*), count(score) FROM {t} WHERE age = 71")
    assert wc.fetchone() == (1000, 0)
    w.commit()
    assert count(cur, f"SELECT count(*) FROM {t} WHERE age = 71 AND score IS NULL") == 1000

    # A savepoint rolls a direct update back; the transaction goes on.
    wc.execute(f"SELECT age FROM {t} WHERE slug = 'charlie'")
    charlie = wc.fetchone()[0]
    wc.execute("SAVEPOINT s")
    wc.execute(f"UPDATE {t} SET age = 99 WHERE slug = 'charlie'")
    assert count(wc, f"SELECT age FROM {t} WHERE slug = 'charlie'") == 99
    wc.execute("ROLLBACK TO SAVEPOINT s")
    assert count(wc, f"SELECT age FROM {t} WHERE slug = 'charlie'") == charlie
    wc.execute(f"UPDATE {t} SET age = 98 WHERE slug = 'charlie'")
    w.commit()
    assert count(cur, f"SELECT age FROM {t} WHERE slug = 'charlie'") == 98

    # Parameters in a generic plan: in the filter and as the value.
    cur.execute("SET plan_cache_mode = force_generic_plan")
    cur.execute(f"PREPARE set_age(int, text) AS UPDATE {t} SET age = $1 WHERE slug = $2")
    assert "Direct Modify: set age" in plan_text(cur, "EXECUTE set_age(1, 'x')")
    cur.execute("EXECUTE set_age(12, 'charlie')")
    assert cur.rowcount == 1
    cur.execute("EXECUTE set_age(NULL, 'charlie')")
    assert count(cur, f"SELECT count(*) FROM {t} WHERE slug = 'charlie' AND age IS NULL") == 1
    cur.execute("RESET plan_cache_mode")

    # Errors are the row path's, and change nothing.
    before = commits(cur, server)
    failures = []
    for where in ["slug = 'charlie'", "slug = 'charlie' AND length(name) > 0"]:
        sql = f"UPDATE {t} SET name = NULL WHERE {where}"
        assert ("Direct Modify" in plan_text(cur, sql)) == ("length" not in where)
        with pytest.raises(errors.NotNullViolation, match="charlie") as e:
            cur.execute(sql)
        failures.append((e.value.pgcode, e.value.pgerror.splitlines()[0]))
    assert failures[0] == failures[1], failures
    with pytest.raises(errors.FeatureNotSupported, match='cannot UPDATE column "slug"'):
        cur.execute(f"UPDATE {t} SET slug = 'x' WHERE slug = 'charlie'")
    with pytest.raises(errors.InvalidTextRepresentation):
        cur.execute(f"UPDATE {t} SET status = 'asleep' WHERE slug = 'charlie'")
    assert commits(cur, server) == before

    # Deleting nodes deletes their edges, as the row path does.
    cur.execute(f"SELECT count(*) FROM {schema}.knows WHERE src = 'charlie' OR dst = 'charlie'")
    incident = cur.fetchone()[0]
    assert incident > 0
    sql = f"DELETE FROM {t} WHERE slug = 'charlie'"
    assert "Direct Modify: delete" in plan_text(cur, sql)
    conn.notices.clear()
    cur.execute(sql)
    assert cur.rowcount == 1
    assert any("also deletes" in n for n in conn.notices), conn.notices
    assert count(cur, f"SELECT count(*) FROM {schema}.knows WHERE src = 'charlie' OR dst = 'charlie'") == 0

    # A table pinned to a commit refuses, as the row path does.
    cur.execute("SELECT commit_id FROM omnigraph_log(%s) LIMIT 1", (server,))
    commit = cur.fetchone()[0]
    cur.execute(f"CREATE SCHEMA {schema}_at")
    cur.execute(f'IMPORT FOREIGN SCHEMA "main" FROM SERVER {server} INTO {schema}_at OPTIONS (commit %s)', (commit,))
    with pytest.raises(errors.WrongObjectType, match="read-only"):
        cur.execute(f"UPDATE {schema}_at.person SET age = 1 WHERE slug = 'alice'")


def test_row_path_changes_are_staged_in_chunks_and_triggers_see_them(graph):
    """UPDATE and DELETE that need the row (a value read from it, a local
    condition) stage their rows a chunk at a time: rows the transaction
    inserted past its staging budget come back from the spill per chunk,
    with the results of staging them one by one. With a trigger on the
    table rows are staged as they come, so an AFTER trigger sees the
    statement's changes."""
    server, schema, connect = graph
    t = f"{schema}.person"
    w = connect(autocommit=False)
    wc = w.cursor()
    wc.execute("SET omnigraph.staging_memory = '64kB'")
    wc.execute(
        f"INSERT INTO {t} (slug, name, status, age, score) "
        "SELECT 'row' || i, repeat('n', 200), 'active', i % 100, i FROM generate_series(1, 5000) i"
    )
    sql = f"UPDATE {t} SET score = score * 2, age = age + 1 WHERE slug LIKE 'row%'"
    assert "Direct Modify" not in plan_text(wc, sql)
    wc.execute(sql)
    assert wc.rowcount == 5000
    sql = f"DELETE FROM {t} WHERE slug LIKE 'row%' AND age + 0 > 90"
    assert "Direct Modify" not in plan_text(wc, sql)
    wc.execute(sql)
    assert wc.rowcount == 500  # i % 100 in 90..99
    kept = [i for i in range(1, 5001) if i % 100 + 1 <= 90]
    expected = (len(kept), 2.0 * sum(kept), sum(i % 100 + 1 for i in kept))
    query = f"SELECT count(*), sum(score), sum(age) FROM {t} WHERE slug LIKE 'row%'"
    wc.execute(query)
    assert wc.fetchone() == expected
    w.commit()
    cur = connect().cursor()
    cur.execute(query)
    assert cur.fetchone() == expected

    # A statement trigger (AFTER) sees the rows its statement changed.
    cur.execute("CREATE TABLE seen (n bigint)")
    cur.execute(
        "CREATE FUNCTION note_seen() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"INSERT INTO seen SELECT count(*) FROM {t} WHERE age = 555; RETURN NULL; END $$"
    )
    cur.execute(f"CREATE TRIGGER seen_after AFTER UPDATE OR DELETE ON {t} FOR EACH STATEMENT EXECUTE FUNCTION note_seen()")
    try:
        cur.execute(f"UPDATE {t} SET age = 555 + 0 * age WHERE slug IN ('alice', 'bob')")
        assert cur.rowcount == 2
        cur.execute(f"DELETE FROM {t} WHERE slug = 'bob' AND age + 0 = 555")
        assert cur.rowcount == 1
        cur.execute("SELECT n FROM seen")
        assert [r[0] for r in cur.fetchall()] == [2, 1]
    finally:
        cur.execute(f"DROP TRIGGER seen_after ON {t}")
        cur.execute("DROP TABLE seen")
        cur.execute("DROP FUNCTION note_seen()")


def test_statements_with_other_writers_stage_row_by_row(graph):
    """Rows are buffered only when nothing else in the statement can look at
    the table first. A writable CTE that changes the same table runs after
    the main statement's rows were read, and sees the table as it was: both
    parts apply, as they did row by row. An UPDATE of a partitioned table
    that would move a row into a foreign partition it also updates is
    refused with a clear error (its state is the UPDATE's), not a crash."""
    server, schema, connect = graph
    t = f"{schema}.person"
    conn = connect()
    cur = conn.cursor()
    # The CTE runs after the DELETE and no longer sees charlie (a heap
    # table gives the same: a row changed twice by one statement keeps
    # the first change).
    cur.execute(
        f"WITH u AS (UPDATE {t} SET age = age + 100 WHERE slug IN ('alice', 'charlie')) "
        f"DELETE FROM {t} WHERE slug = 'charlie' AND age + 0 > 0"
    )
    cur.execute(f"SELECT slug, age FROM {t} ORDER BY slug")
    assert cur.fetchall() == [("alice", 130), ("bob", 25), ("diana", None)]

    # A heap table partitioned by status, with the graph table as the
    # partition of active rows.
    cur.execute(f"CREATE TABLE people (LIKE {t}) PARTITION BY LIST ((status::text))")
    cur.execute("CREATE TABLE people_rest PARTITION OF people DEFAULT")
    cur.execute(f"ALTER TABLE people ATTACH PARTITION {t} FOR VALUES IN ('active')")
    try:
        cur.execute("INSERT INTO people_rest (id, slug, name, status) VALUES ('erin', 'erin', 'Erin', 'retired')")
        with pytest.raises(errors.FeatureNotSupported, match="cannot route rows into foreign table") as e:
            cur.execute("UPDATE people SET status = 'active', age = 1 WHERE slug IN ('erin', 'alice')")
        assert e.value.diag.message_hint
        cur.execute(f"SELECT slug, age FROM {t} ORDER BY slug")
        assert cur.fetchall() == [("alice", 130), ("bob", 25), ("diana", None)]
        cur.execute("UPDATE people SET age = 2 WHERE slug IN ('alice', 'erin')")
        assert cur.rowcount == 2
        cur.execute(f"SELECT age FROM {t} WHERE slug = 'alice'")
        assert cur.fetchone() == (2,)
    finally:
        cur.execute(f"ALTER TABLE people DETACH PARTITION {t}")
        cur.execute("DROP TABLE people")


def test_infinite_dates_and_times_are_refused_on_every_insert_path(graph):
    """A date or timestamptz at infinity cannot be stored: one row, a bulk
    INSERT (values read into Arrow columns) and COPY all refuse it with
    the same error naming the property, and stage nothing."""
    server, schema, connect = graph
    cur = connect().cursor()
    before = commits(cur, server)
    t = f"{schema}.person"
    statements = [
        (f"INSERT INTO {t} (slug, name, status, joined_on) VALUES ('inf', 'I', 'active', 'infinity')", None),
        (f"INSERT INTO {t} (slug, name, status, joined_on) SELECT 'inf' || i, 'I', 'active', "
         "CASE WHEN i = 2500 THEN '-infinity'::date ELSE date '2020-01-01' END FROM generate_series(1, 3000) i", None),
        (f"COPY {t} (slug, name, status, joined_on) FROM STDIN",
         "".join(f"inf{i}\tI\tactive\t{'infinity' if i == 1500 else '2020-01-01'}\n" for i in range(2000))),
        (f"INSERT INTO {schema}.works_at (src, dst, started_at) VALUES ('alice', 'acme', 'infinity')", None),
    ]
    messages = []
    for sql, data in statements:
        with pytest.raises(errors.DatetimeFieldOverflow, match="infinite") as e:
            if data is None:
                cur.execute(sql)
            else:
                cur.copy_expert(sql, io.StringIO(data))
        messages.append(e.value.pgerror.splitlines()[0])
    assert messages[0] == messages[1] == messages[2], messages
    assert "joinedOn" in messages[0] and "startedAt" in messages[3], messages
    assert count(cur, f"SELECT count(*) FROM {t} WHERE slug LIKE 'inf%%'") == 0
    assert commits(cur, server) == before


def test_a_chunk_staged_in_the_background_belongs_to_its_statement(graph):
    """A bulk INSERT hands each full chunk (65,536 rows) to a worker thread
    and goes on reading rows. The chunk is still the statement's: its error
    fails that statement, with the row path's message, and undoes only it;
    subtransactions started inside the statement (a PL/pgSQL exception
    block per row) wait for the chunk in flight, and keep its error for the
    statement; a cancel mid-statement leaves the transaction usable; the
    rows commit once."""
    server, schema, connect = graph
    t = f"{schema}.person"
    conn = connect(autocommit=False)
    cur = conn.cursor()
    obs = connect().cursor()
    before = commits(obs, server)
    cur.execute(f"INSERT INTO {t} (slug, name, status) VALUES ('kept', 'K', 'active')")
    n = 70000  # a chunk staged in the background, and the rest at the end

    # Row 100 is in the first chunk; the statement reads past it.
    cur.execute("SAVEPOINT s")
    with pytest.raises(errors.NotNullViolation, match="bg100") as e:
        cur.execute(
            f"INSERT INTO {t} (slug, name, status) "
            "SELECT 'bg' || i, CASE WHEN i <> 100 THEN 'B' END, 'active' "
            f"FROM generate_series(1, {n}) i"
        )
    assert "person" in e.value.pgerror
    cur.execute("ROLLBACK TO SAVEPOINT s")
    assert count(cur, f"SELECT count(*) FROM {t} WHERE slug LIKE 'bg%%'") == 0

    # A subtransaction per row: each one's start waits for the chunk in
    # flight; one of them fails and is caught.
    cur.execute(
        "CREATE FUNCTION pg_temp.guarded(i int) RETURNS text LANGUAGE plpgsql AS $$ "
        "BEGIN IF i = 69000 THEN PERFORM 1 / 0; END IF; RETURN 'sub' || i; "
        "EXCEPTION WHEN division_by_zero THEN RETURN 'caught' || i; END $$"
    )
    cur.execute("SAVEPOINT g")
    with pytest.raises(errors.NotNullViolation, match="sub7"):
        cur.execute(
            f"INSERT INTO {t} (slug, name, status) "
            "SELECT pg_temp.guarded(i), CASE WHEN i <> 7 THEN 'S' END, 'active' "
            f"FROM generate_series(1, {n}) i"
        )
    cur.execute("ROLLBACK TO SAVEPOINT g")
    # The chunk's error raised inside the statement by a read of the table,
    # and caught there, still fails the statement.
    cur.execute(
        "CREATE FUNCTION pg_temp.peeking(i int, t text) RETURNS text LANGUAGE plpgsql AS $$ "
        "BEGIN IF i = 69000 THEN EXECUTE 'SELECT count(*) FROM ' || t; END IF; RETURN 'sub' || i; "
        "EXCEPTION WHEN not_null_violation THEN RETURN 'caught' || i; END $$"
    )
    with pytest.raises(errors.NotNullViolation, match="sub7"):
        cur.execute(
            f"INSERT INTO {t} (slug, name, status) "
            "SELECT pg_temp.peeking(i, %s), CASE WHEN i <> 7 THEN 'S' END, 'active' "
            f"FROM generate_series(1, {n}) i",
            (t,),
        )
    cur.execute("ROLLBACK TO SAVEPOINT g")
    # Exactly one chunk: it is staged in the background and the statement
    # ends with nothing left to stage, and still fails with it.
    lines = "".join(f"one{i}\t{'' if i == 10 else 'O'}\tactive\n" for i in range(65536))
    with pytest.raises(errors.NotNullViolation, match="one10"):
        cur.copy_expert(f"COPY {t} (slug, name, status) FROM STDIN NULL ''", io.StringIO(lines))
    cur.execute("ROLLBACK TO SAVEPOINT g")
    # Columns read as Arrow arrays (text, integer, date, double) beside
    # one read as values (a list), then edges with endpoints; the
    # transaction reads and changes rows of the chunk staged in the
    # background.
    cur.execute(
        f"INSERT INTO {t} (slug, name, status, age, joined_on, score, tags) "
        "SELECT pg_temp.guarded(i), 'S', 'active', i % 60, date '2020-01-01' + i % 100, i * 0.5, "
        f"ARRAY['t' || i % 3] FROM generate_series(1, {n}) i"
    )
    assert cur.rowcount == n
    cur.execute(
        f"INSERT INTO {schema}.knows (src, dst, since) "
        "SELECT 'sub' || i, 'sub' || (i + 1), date '2021-01-01' + i % 10 FROM generate_series(1, 68000) i"
    )
    assert cur.rowcount == 68000
    cur.execute(f"UPDATE {t} SET age = 59 WHERE slug = 'sub5'")
    cur.execute(f"SELECT age, joined_on, score, tags FROM {t} WHERE slug IN ('sub5', 'sub66001') ORDER BY slug")
    staged = cur.fetchall()
    assert [r[0] for r in staged] == [59, 66001 % 60]

    # Cancelled mid-statement, with a chunk in flight or about to be.
    cur.execute("SAVEPOINT c")
    cur.execute("SET LOCAL statement_timeout = '1s'")
    with pytest.raises(errors.QueryCanceled):
        cur.execute(
            f"INSERT INTO {t} (slug, name, status) "
            "SELECT 'cx' || i, 'C', 'active' FROM generate_series(1, 50000000) i"
        )
    cur.execute("ROLLBACK TO SAVEPOINT c")
    conn.commit()
    assert commits(obs, server) == before + 1
    obs.execute(
        f"SELECT count(*) FILTER (WHERE slug LIKE 'sub%%'), sum(age) FILTER (WHERE slug LIKE 'sub%%'), "
        f"count(*) FILTER (WHERE slug = 'caught69000'), count(*) FILTER (WHERE slug = 'kept'), "
        f"count(*) FILTER (WHERE slug LIKE 'bg%%' OR slug LIKE 'cx%%' OR slug LIKE 'one%%') FROM {t}"
    )
    ages = sum(i % 60 for i in range(1, n + 1) if i != 69000) - 5 + 59
    assert obs.fetchone() == (n - 1, ages, 1, 1, 0)
    obs.execute(f"SELECT age, joined_on, score, tags FROM {t} WHERE slug IN ('sub5', 'sub66001') ORDER BY slug")
    assert obs.fetchall() == staged
    assert [str(r[1]) for r in staged] == ["2020-01-06", "2020-01-02"]
    assert [(r[2], r[3]) for r in staged] == [(2.5, ["t2"]), (33000.5, ["t1"])]
    obs.execute(
        f"SELECT count(*), count(DISTINCT since), min(dst) FROM {schema}.knows WHERE src LIKE 'sub%%'"
    )
    assert obs.fetchone() == (68000, 10, "sub10")


def test_bulk_inserts_are_staged_by_column_in_one_commit(graph):
    """INSERT ... SELECT and COPY hand rows over column by column: a chunk
    of them goes as one Arrow batch straight to the spill (with the
    default staging budget, nothing per row stays in memory), and behaves
    as rows staged one by one: the transaction reads its own rows, changes
    them, rolls back to a savepoint, gets the same errors, and commits
    once."""
    server, schema, connect = graph
    t = f"{schema}.person"
    conn = connect(autocommit=False)
    cur = conn.cursor()
    cur.execute("SELECT pg_backend_pid()")
    pid = cur.fetchone()[0]
    obs = connect().cursor()
    before = commits(obs, server)
    # More rows than one staged chunk (65,536): a chunk and the rest.
    n = 70000
    cur.execute(
        f"INSERT INTO {t} (slug, name, status, age, email, score) "
        "SELECT 'bulk' || i, 'B' || i, 'active', i % 90, 'bulk' || i || '@x.org', i * 0.5 "
        f"FROM generate_series(1, {n}) i"
    )
    assert cur.rowcount == n
    assert len(spill_dirs(cur, pid)) == 1, "the batches went to a spill"
    assert count(cur, f"SELECT count(*) FROM {t} WHERE slug LIKE 'bulk%%'") == n
    assert count(obs, f"SELECT count(*) FROM {t} WHERE slug LIKE 'bulk%%'") == 0
    cur.execute(f"UPDATE {t} SET age = 500 + 0 * age WHERE slug = 'bulk17'")
    cur.execute(f"DELETE FROM {t} WHERE slug = 'bulk18' AND age + 0 >= 0")
    cur.execute("SAVEPOINT s")
    cur.execute(
        f"INSERT INTO {t} (slug, name, status) "
        "SELECT 'later' || i, 'L', 'retired' FROM generate_series(1, 20000) i"
    )
    cur.execute(f"UPDATE {t} SET age = 7 + 0 * age WHERE slug = 'bulk19'")
    cur.execute("ROLLBACK TO SAVEPOINT s")
    # A statement that repeats a key within itself fails as a whole.
    cur.execute("SAVEPOINT d")
    with pytest.raises(errors.UniqueViolation, match="bulk30"):
        cur.execute(
            f"INSERT INTO {t} (slug, name, status) "
            "SELECT 'dup' || i, 'D', 'active' FROM generate_series(1, 3000) i "
            "UNION ALL SELECT 'bulk30', 'D', 'active'"
        )
    cur.execute("ROLLBACK TO SAVEPOINT d")
    # COPY: rows staged in chunks too, landing with the rest.
    spill_files = lambda: data_file_inodes(*[os.path.join(spill_root(cur), d) for d in spill_dirs(cur, pid)])
    before_copy = spill_files()
    lines = "".join(f"copy{i}\tC{i}\tretired\t{i % 50}\n" for i in range(5000))
    cur.copy_expert(f"COPY {t} (slug, name, status, age) FROM STDIN", io.StringIO(lines))
    assert cur.rowcount == 5000
    copied = spill_files() - before_copy
    assert before_copy and copied
    cur.execute(
        f"SELECT count(*), sum(age), sum(score), count(*) FILTER (WHERE status = 'retired') "
        f"FROM {t} WHERE slug LIKE 'bulk%%' OR slug LIKE 'copy%%' OR slug LIKE 'later%%'"
    )
    inside = cur.fetchone()
    conn.commit()
    assert commits(obs, server) == before + 1
    assert spill_dirs(cur, pid) == []
    # The COPY's spilled file became the graph's (its rows were not written
    # again); the INSERT chunk that lost rows to the UPDATE and DELETE, and
    # the rolled-back one, were written again.
    graph_files = data_file_inodes(graph_dir(obs, server))
    assert copied <= graph_files
    assert before_copy - graph_files
    ages = [i % 90 for i in range(1, n + 1) if i != 18]
    ages[16] = 500  # bulk17
    expected = (
        n - 1 + 5000,
        sum(ages) + sum(i % 50 for i in range(5000)),
        sum(i * 0.5 for i in range(1, n + 1) if i != 18),
        5000,
    )
    assert inside == expected
    obs.execute(
        f"SELECT count(*), sum(age), sum(score), count(*) FILTER (WHERE status = 'retired') "
        f"FROM {t} WHERE slug LIKE 'bulk%%' OR slug LIKE 'copy%%' OR slug LIKE 'later%%'"
    )
    assert obs.fetchone() == expected
    obs.execute(f"SELECT name, age, email FROM {t} WHERE slug IN ('bulk19', 'copy4999') ORDER BY slug")
    assert obs.fetchall() == [("B19", 19, "bulk19@x.org"), ("C4999", 49, None)]

    # Checks at COMMIT read the spilled rows' checked columns: a key the
    # branch holds, an @unique email, a missing endpoint.
    for sql, error in [
        (f"INSERT INTO {t} (slug, name, status) SELECT 'k' || i, 'K', 'active' FROM generate_series(1, 2999) i "
         "UNION ALL SELECT 'bulk5', 'K', 'active'", errors.UniqueViolation),
        (f"INSERT INTO {t} (slug, name, status, email) SELECT 'e' || i, 'E', 'active', 'e' || i FROM generate_series(1, 2999) i "
         "UNION ALL SELECT 'e-last', 'E', 'active', 'bulk6@x.org'", errors.UniqueViolation),
        (f"INSERT INTO {schema}.knows (src, dst) SELECT 'bulk' || i, 'bulk' || (i + 1) FROM generate_series(1, 2999) i "
         "UNION ALL SELECT 'bulk1', 'nobody'", errors.ForeignKeyViolation),
    ]:
        cur.execute(sql)
        with pytest.raises(error):
            conn.commit()
        conn.rollback()
    assert commits(obs, server) == before + 1
    # The same edges without the bad one land.
    cur.execute(
        f"INSERT INTO {schema}.knows (src, dst) SELECT 'bulk' || i, 'bulk' || (i + 1) FROM generate_series(20, 3019) i"
    )
    conn.commit()
    assert count(obs, f"SELECT count(*) FROM {schema}.knows WHERE src LIKE 'bulk%%'") == 3000

    # A COPY alone: its rows go to a spill as one batch, not into memory
    # (the default budget holds 3,000 such rows row by row).
    lines = "".join(f"solo{i}\tS{i}\tactive\n" for i in range(3000))
    cur.copy_expert(f"COPY {t} (slug, name, status) FROM STDIN", io.StringIO(lines))
    assert len(spill_dirs(cur, pid)) == 1
    conn.commit()
    assert count(obs, f"SELECT count(*) FROM {t} WHERE slug LIKE 'solo%%'") == 3000

    # RETURNING takes rows one by one and gives back every id.
    cur.execute(
        f"INSERT INTO {t} (slug, name, status) SELECT 'ret' || i, 'R', 'active' "
        "FROM generate_series(1, 1500) i RETURNING id"
    )
    assert sorted(r[0] for r in cur.fetchall()) == sorted(f"ret{i}" for i in range(1, 1501))
    conn.commit()
