"""Extension behaviour that golden files cannot show: several connections,
cached plans, cancel, memory after errors."""

import json
import re
import threading
import time

import psycopg2
import pytest
from psycopg2 import errors


def person_line(slug, **props):
    data = {"slug": slug, "name": slug.title(), "status": "active", **props}
    return json.dumps({"type": "Person", "data": data})


def test_repeatable_read_sees_one_commit_across_tables(graph):
    server, schema, connect = graph
    reader = connect(autocommit=False)
    writer = connect()
    reader.set_session(isolation_level="REPEATABLE READ")
    with reader.cursor() as r, writer.cursor() as w:
        r.execute(f"SELECT count(*) FROM {schema}.person")
        people_before = r.fetchone()[0]
        # A commit touching two tables lands while the reader's transaction is open.
        load = "\n".join([person_line("zoe"), json.dumps({"edge": "Knows", "from": "zoe", "to": "alice"})])
        w.execute("SELECT omnigraph_load(%s, 'main', %s)", (server, load))
        r.execute(f"SELECT count(*) FROM {schema}.person")
        assert r.fetchone()[0] == people_before
        r.execute(f"SELECT count(*) FROM {schema}.knows WHERE src = 'zoe'")
        assert r.fetchone()[0] == 0
        reader.commit()
        # The next transaction sees the commit, in both tables.
        r.execute(f"SELECT count(*) FROM {schema}.person")
        assert r.fetchone()[0] == people_before + 1
        r.execute(f"SELECT count(*) FROM {schema}.knows WHERE src = 'zoe'")
        assert r.fetchone()[0] == 1
    reader.rollback()


def test_read_committed_statement_sees_commits_that_finished_before_it(graph):
    server, schema, connect = graph
    reader = connect(autocommit=False)
    writer = connect()
    with reader.cursor() as r, writer.cursor() as w:
        r.execute(f"SELECT count(*) FROM {schema}.person")
        before = r.fetchone()[0]
        w.execute("SELECT omnigraph_load(%s, 'main', %s)", (server, person_line("yan")))
        # Same transaction, new statement: READ COMMITTED sees the new commit.
        r.execute(f"SELECT count(*) FROM {schema}.person")
        assert r.fetchone()[0] == before + 1
        # One statement reading two tables reads one commit: the self-join is consistent.
        r.execute(
            f"SELECT count(*) FROM {schema}.person p JOIN {schema}.person q ON p.id = q.id"
        )
        assert r.fetchone()[0] == before + 1
    reader.rollback()


def test_cached_plans_in_plpgsql_and_generic_prepared_statements(graph):
    server, schema, connect = graph
    conn = connect()
    with conn.cursor() as cur:
        cur.execute(
            f"""CREATE FUNCTION {schema}.older_than(n int) RETURNS bigint LANGUAGE plpgsql AS $$
                BEGIN RETURN (SELECT count(*) FROM {schema}.person WHERE age > n); END $$"""
        )
        results = []
        for n in [0, 26, 30, 100] * 10:
            cur.execute(f"SELECT {schema}.older_than(%s)", (n,))
            results.append(cur.fetchone()[0])
        assert results[:4] == [3, 2, 1, 0]
        assert results == results[:4] * 10
        cur.execute("SET plan_cache_mode = force_generic_plan")
        cur.execute(f"PREPARE older(int) AS SELECT id FROM {schema}.person WHERE age > $1 ORDER BY id")
        for n, expected in [(26, ["alice", "charlie"]), (30, ["charlie"]), (0, ["alice", "bob", "charlie"])] * 5:
            cur.execute("EXECUTE older(%s)", (n,))
            assert [r[0] for r in cur.fetchall()] == expected
        cur.execute(f"EXPLAIN EXECUTE older(1)")
        plan = "\n".join(r[0] for r in cur.fetchall())
        assert "Pushed Filter: age > $1" in plan


def test_any_of_an_array_parameter_is_pushed_and_answers_as_postgres(graph):
    """`col = ANY($1)` (how drivers send a list) and `<> ALL($1)` in a
    generic plan, and `= ANY(ARRAY(SELECT ...))` (an initplan's value), are
    pushed as an IN list whose values are the array's elements when the
    scan starts: never a full scan filtered row by row. The answers are
    Postgres's: NULL elements match nothing, a NULL array matches nothing,
    and an empty one nothing (or everything, for <> ALL). A date parameter
    at infinity compares as infinity does."""
    server, schema, connect = graph
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("SET plan_cache_mode = force_generic_plan")
        t = f"{schema}.person"
        cur.execute(f"PREPARE any_id(text[]) AS SELECT id FROM {t} WHERE id = ANY($1) ORDER BY id")
        cur.execute(f"PREPARE all_id(text[]) AS SELECT id FROM {t} WHERE id <> ALL($1) ORDER BY id")
        cur.execute(f"PREPARE any_age(int[]) AS SELECT id FROM {t} WHERE age = ANY($1) ORDER BY id")
        cur.execute(f"PREPARE before(date) AS SELECT id FROM {t} WHERE joined_on < $1 ORDER BY id")
        for name in ["any_id(ARRAY['alice'])", "all_id(ARRAY['alice'])", "any_age(ARRAY[1])"]:
            cur.execute(f"EXPLAIN EXECUTE {name}")
            plan = "\n".join(r[0] for r in cur.fetchall())
            assert re.search(r"Pushed Filter: \w+ (NOT )?IN \(\$1\)", plan), plan
            assert "Filter: (" not in plan.replace("Pushed Filter", ""), plan
        everyone = ["alice", "bob", "charlie", "diana"]
        for query, arg, expected in [
            ("any_id", ["alice", "charlie"], ["alice", "charlie"]),
            ("any_id", ["charlie", "nobody", "charlie"], ["charlie"]),
            ("any_id", ["bob", None], ["bob"]),
            ("any_id", [], []),
            ("any_id", None, []),
            ("all_id", ["alice"], ["bob", "charlie", "diana"]),
            ("all_id", [], everyone),
            ("all_id", ["alice", None], []),
            ("all_id", None, []),
            ("any_age", [25, 35, 99], ["bob", "charlie"]),
        ]:
            cast = "int[]" if query == "any_age" else "text[]"
            cur.execute(f"EXECUTE {query}(%s::{cast})", (arg,))
            assert [r[0] for r in cur.fetchall()] == expected, (query, arg)
        # joined_on: alice 2021-03-04, diana 2019-11-30, the others NULL.
        for arg, expected in [
            ("infinity", ["alice", "diana"]),
            ("-infinity", []),
            ("2021-03-05", ["alice", "diana"]),
            ("2021-03-04", ["diana"]),
        ]:
            cur.execute("EXECUTE before(%s::date)", (arg,))
            assert [r[0] for r in cur.fetchall()] == expected, arg
        # An initplan's array.
        q = f"SELECT id FROM {t} WHERE id = ANY(ARRAY(SELECT 'ali' || 'ce' UNION ALL SELECT 'bob')) ORDER BY id"
        cur.execute(f"EXPLAIN {q}")
        plan = "\n".join(r[0] for r in cur.fetchall())
        assert "Pushed Filter: id IN ($1)" in plan, plan
        cur.execute(q)
        assert [r[0] for r in cur.fetchall()] == ["alice", "bob"]
        # An UPDATE through the parameter changes exactly those rows.
        cur.execute("BEGIN")
        cur.execute(f"PREPARE older(text[]) AS UPDATE {t} SET age = age + 100 WHERE id = ANY($1)")
        cur.execute("EXECUTE older(ARRAY['alice', 'charlie'])")
        assert cur.rowcount == 2
        cur.execute(f"SELECT id, age FROM {t} ORDER BY id")
        assert cur.fetchall() == [("alice", 130), ("bob", 25), ("charlie", 135), ("diana", None)]
        cur.execute("ROLLBACK")


def test_a_new_branch_commit_is_seen_through_the_session_branch(graph):
    server, schema, connect = graph
    conn = connect()
    with conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}_s")
        cur.execute(
            f"IMPORT FOREIGN SCHEMA \"main\" FROM SERVER {server} INTO {schema}_s OPTIONS (session_branch 'true')"
        )
        cur.execute("SELECT omnigraph_branch_create(%s, 'work')", (server,))
        cur.execute("SELECT omnigraph_load(%s, 'work', %s)", (server, person_line("wendy")))
        cur.execute(f"SELECT count(*) FROM {schema}_s.person WHERE id = 'wendy'")
        assert cur.fetchone()[0] == 0
        cur.execute("SET omnigraph.branch = 'work'")
        cur.execute(f"SELECT count(*) FROM {schema}_s.person WHERE id = 'wendy'")
        assert cur.fetchone()[0] == 1
        cur.execute("SET omnigraph.branch = 'nope'")
        with pytest.raises(errors.UndefinedObject, match="branch 'nope' does not exist"):
            cur.execute(f"SELECT count(*) FROM {schema}_s.person")


@pytest.fixture
def big_graph(graph):
    """The social graph plus 100,000 more people."""
    server, schema, connect = graph
    conn = connect()
    with conn.cursor() as cur:
        cur.execute(
            """SELECT omnigraph_load(%s, 'main', string_agg(json_build_object('type', 'Person', 'data',
                 json_build_object('slug', 'bulk' || i, 'name', repeat('n', 40) || i, 'age', i %% 90,
                                   'status', 'active', 'email', 'b' || i || '@x.org'))::text, E'\n'))
               FROM generate_series(1, 100000) i""",
            (server,),
        )
    return graph


def test_statement_timeout_and_cancel_stop_a_scan(big_graph):
    server, schema, connect = big_graph
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = '100ms'")
        with pytest.raises(errors.QueryCanceled):
            cur.execute(
                f"SELECT count(*) FROM {schema}.person a, {schema}.person b WHERE a.name < b.name"
            )
        cur.execute("RESET statement_timeout")
        cur.execute("SELECT 1")
        assert cur.fetchone()[0] == 1
        # pg_cancel_backend from another session
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
        started = threading.Event()

        def canceller():
            other = connect()
            try:
                with other.cursor() as o:
                    started.wait()
                    # Cancel once the query is running in the target backend
                    # (polling its state, with a pause and a deadline).
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline:
                        o.execute("SELECT state, query FROM pg_stat_activity WHERE pid = %s", (pid,))
                        state, query = o.fetchone()
                        if state == "active" and "a.name < b.name" in query:
                            o.execute("SELECT pg_cancel_backend(%s)", (pid,))
                            return
                        time.sleep(0.01)
            finally:
                other.close()

        t = threading.Thread(target=canceller)
        t.start()
        started.set()
        # A guard: if the cancel never came, the timeout ends the query and
        # the test fails on the message instead of hanging.
        cur.execute("SET statement_timeout = '120s'")
        with pytest.raises(errors.QueryCanceled, match="user request"):
            cur.execute(f"SELECT count(*) FROM {schema}.person a, {schema}.person b WHERE a.name < b.name")
        cur.execute("RESET statement_timeout")
        t.join()
        cur.execute(f"SELECT count(*) FROM {schema}.person")
        assert cur.fetchone()[0] == 100004


def context_bytes(cur):
    cur.execute("SELECT sum(total_bytes) FROM pg_backend_memory_contexts")
    return cur.fetchone()[0]


def test_an_error_mid_scan_leaves_no_memory_behind(big_graph):
    server, schema, connect = big_graph
    conn = connect()
    with conn.cursor() as cur:
        failing = f"SELECT sum(1 / (age - 45)) FROM {schema}.person"

        def fail_once():
            with pytest.raises(errors.DivisionByZero):
                cur.execute(failing)

        fail_once()
        fail_once()
        before = context_bytes(cur)
        for _ in range(15):
            fail_once()
        after = context_bytes(cur)
        # 15 failed scans of 100,000 rows: no scan state survives its query.
        assert after - before < 256 * 1024, (before, after)


def test_backend_survives_bad_inputs(graph):
    server, schema, connect = graph
    conn = connect()
    with conn.cursor() as cur:
        for sql, error in [
            ("SELECT omnigraph_schema('no_such_server')", errors.UndefinedObject),
            (f"SELECT * FROM omnigraph_log('{server}', 'ghost')", errors.UndefinedObject),
            (f"CREATE FOREIGN TABLE {schema}.bad (id text) SERVER {server} OPTIONS (type 'Nope')", None),
            (f"SELECT * FROM {schema}.bad", errors.UndefinedObject),
            (f"SELECT omnigraph_branch_create('{server}', 'x', '01ARZ3NDEKTSV4RRFFQ69G5FAV')", errors.UndefinedObject),
        ]:
            if error is None:
                cur.execute(sql)
            else:
                with pytest.raises(error):
                    cur.execute(sql)
        cur.execute(f"SELECT count(*) FROM {schema}.person")
        assert cur.fetchone()[0] == 4


def test_a_commit_whose_table_version_was_reclaimed_gives_a_clear_error(graph, tmp_path):
    """Cleanup (version GC) may remove an old table version; a table pinned
    to a commit that needs it must fail with 55000 naming the type, not crash."""
    import glob
    import os

    from conftest import GRAPHS

    server, schema, connect = graph
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("SELECT commit_id FROM omnigraph_log(%s) LIMIT 1", (server,))
        old = cur.fetchone()[0]
        cur.execute("SELECT omnigraph_load(%s, 'main', %s)", (server, person_line("xavier")))
        cur.execute(f"CREATE SCHEMA {schema}_old")
        cur.execute(f"IMPORT FOREIGN SCHEMA \"main\" FROM SERVER {server} INTO {schema}_old OPTIONS (commit %s)", (old,))
        cur.execute(f"SELECT count(*) FROM {schema}_old.person")
        assert cur.fetchone()[0] == 4
        # Remove every Person manifest but the newest, as version GC would.
        cur.execute("SELECT srvoptions FROM pg_foreign_server WHERE srvname = %s", (server,))
        uri = cur.fetchone()[0][0].split("=", 1)[1]
        manifests = sorted(glob.glob(os.path.join(uri, "nodes", "Person", "_versions", "*.manifest")))
        assert len(manifests) >= 2
        # Lance's v2 names count down from u64::MAX: the newest version has
        # the smallest number (older layouts count up).
        numbers = {m: int(os.path.basename(m).split(".")[0]) for m in manifests}
        descending = all(n > 1 << 63 for n in numbers.values())
        newest = (min if descending else max)(manifests, key=numbers.get)
        for m in manifests:
            if m != newest:
                os.remove(m)
        # A new session: nothing cached.
        fresh = connect()
        with fresh.cursor() as f:
            with pytest.raises(errors.ObjectNotInPrerequisiteState, match="Person"):
                f.execute(f"SELECT count(*) FROM {schema}_old.person")
            f.execute(f"SELECT count(*) FROM {schema}.person")
            assert f.fetchone()[0] == 5


def test_a_table_definition_follows_alter_in_every_session(graph, database):
    """Backends keep a foreign table's resolved definition; a change to the
    table, its columns or its server made anywhere is seen by the next
    statement of every session."""
    from conftest import graph_dir, new_graph, fixture_text

    server, schema, connect = graph
    reader, admin = connect(), connect()
    other = new_graph(
        database, fixture_text("schema.pg"), person_line("yves", email="yves@example.com")
    )
    with reader.cursor() as r, admin.cursor() as a:
        query = f"SELECT id, name FROM {schema}.person WHERE id IN ('alice', 'yves') ORDER BY id"
        r.execute(query)
        assert r.fetchall() == [("alice", "Alice")]
        # A column mapped onto another property.
        a.execute(f"ALTER FOREIGN TABLE {schema}.person ALTER COLUMN name OPTIONS (ADD property 'email')")
        r.execute(query)
        assert r.fetchall() == [("alice", "alice@example.com")]
        # A column whose type no longer fits its property.
        a.execute(f"ALTER FOREIGN TABLE {schema}.person ALTER COLUMN name TYPE integer")
        with pytest.raises(errors.DatatypeMismatch, match=r'column "name" of foreign table "person" is integer'):
            r.execute(query)
        a.execute(f"ALTER FOREIGN TABLE {schema}.person ALTER COLUMN name TYPE text")
        r.execute(query)
        assert r.fetchall() == [("alice", "alice@example.com")]
        # The table renamed: errors name it by its new name.
        a.execute(f"ALTER FOREIGN TABLE {schema}.person OPTIONS (SET type 'Robot')")
        a.execute(f"ALTER FOREIGN TABLE {schema}.person RENAME TO people")
        with pytest.raises(errors.UndefinedObject, match=r"foreign table \"people\": type 'Robot'"):
            r.execute(f"SELECT count(*) FROM {schema}.people")
        a.execute(f"ALTER FOREIGN TABLE {schema}.people OPTIONS (SET type 'Person')")
        # The server pointed at another graph.
        a.execute(f"ALTER SERVER {server} OPTIONS (SET uri %s)", (graph_dir(a, other),))
        r.execute(query.replace(".person", ".people"))
        assert r.fetchall() == [("yves", "yves@example.com")]
    reader.close()
    admin.close()


def test_a_graph_created_again_at_its_location_is_read_anew(graph):
    """A backend that read a graph, which is then deleted and created
    again at the same location: its next statement reads the new graph,
    not the tables it kept of the old one."""
    import shutil

    from conftest import fixture_text, graph_dir

    server, schema, connect = graph
    reader, admin = connect(), connect()
    with reader.cursor() as r, admin.cursor() as a:
        r.execute(f"SELECT count(*) FROM {schema}.person")
        assert r.fetchone()[0] > 1
        r.execute(f"SELECT id FROM {schema}.person ORDER BY id LIMIT 1")
        assert r.fetchone()[0] == "alice"
        shutil.rmtree(graph_dir(a, server))
        a.execute("SELECT omnigraph_create_graph(%s, %s)", (server, fixture_text("schema.pg")))
        a.execute("SELECT omnigraph_load(%s, 'main', %s)", (server, person_line("zed")))
        for query in (
            f"SELECT id FROM {schema}.person",
            f"SELECT id FROM {schema}.person ORDER BY id LIMIT 1",
            f"SELECT id FROM {schema}.person WHERE id = 'zed'",
        ):
            r.execute(query)
            assert r.fetchall() == [("zed",)], query
        r.execute(f"SELECT count(*) FROM {schema}.person WHERE id = 'alice'")
        assert r.fetchone()[0] == 0
    reader.close()
    admin.close()
