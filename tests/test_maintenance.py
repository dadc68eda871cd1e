"""Operations in SQL: optimize (compaction, indexes, EXPLAIN), cleanup, the
recovery log, a commit killed half way, a rejected operation, and a damaged
graph's isolation."""

import json
import os
import shutil
import signal
import threading

import psycopg2
import pytest

from conftest import GRAPHS, connect, graph_dir, hold_branch_lock, new_graph, reconnect, wait_until

ITEM_SCHEMA = """
node Item {
    sku: String @key
    qty: I32 @index
    active: Bool @index
    status: enum(open, closed) @index
    note: String? @index
    plain: I64?
}
"""


def items(lo, hi):
    return "\n".join(
        '{"type": "Item", "data": {"sku": "s%03d", "qty": %d, "active": %s, "status": "%s", "note": %s, "plain": %d}}'
        % (
            i,
            i % 20,
            "true" if i % 2 == 0 else "false",
            "closed" if i % 3 == 0 else "open",
            "null" if i % 10 == 0 else '"n%03d"' % i,
            i,
        )
        for i in range(lo, hi)
    )


# (filter, the index EXPLAIN must name)
FILTERS = [
    ("qty = 7", "qty (btree)"),
    ("sku IN ('s001', 's002', 's250')", "sku (btree)"),
    ("qty >= 18", "qty (btree)"),
    ("qty BETWEEN 3 AND 4", "qty (btree)"),
    ("note IS NULL", "note (btree)"),
    ("note LIKE 'n01%'", "note (btree)"),
    ("status = 'closed'", "status (bitmap)"),
    ("active", "active (bitmap)"),
    ("qty = 1 OR status = 'closed'", None),
]


def explain(cur, sql):
    cur.execute("EXPLAIN (VERBOSE) " + sql)
    return [r[0] for r in cur.fetchall()]


def everything(cur, schema):
    cur.execute(f"SELECT * FROM {schema}.item ORDER BY sku")
    return cur.fetchall()


def test_optimize_compacts_indexes_and_explain_names_the_index(database):
    name = new_graph(database, ITEM_SCHEMA, prefix="opt")
    conn = connect(database)
    cur = conn.cursor()
    for lo in range(0, 300, 100):
        cur.execute("SELECT omnigraph_load(%s, 'main', %s)", (name, items(lo, lo + 100)))
    cur.execute(f"DELETE FROM {name}.item WHERE sku = 's005'")
    before = everything(cur, name)
    results = {}
    for f, _ in FILTERS:
        cur.execute(f"SELECT sku FROM {name}.item WHERE {f} ORDER BY sku")
        results[f] = cur.fetchall()
        assert not any("Omnigraph Index" in line for line in explain(cur, f"SELECT * FROM {name}.item WHERE {f}"))
    cur.execute("SELECT commit_id FROM omnigraph_log(%s) ORDER BY committed_at DESC LIMIT 1", (name,))
    head = cur.fetchone()[0]

    del conn.notices[:]
    cur.execute(
        "SELECT type_name, fragments_before, fragments_after, rows, indexes FROM omnigraph_optimize(%s)",
        (name,),
    )
    (row,) = cur.fetchall()
    assert row[0] == "Item"
    assert row[1] >= 3 and row[2] == 1, row
    assert row[3] == 299
    assert row[4] == ["id (btree)", "sku (btree)", "qty (btree)", "active (bitmap)", "status (bitmap)", "note (btree)"]
    assert any("Item: " in n and "-> 1 fragments" in n for n in conn.notices), conn.notices
    cur.execute("SELECT message, actor, parents FROM omnigraph_log(%s) ORDER BY committed_at DESC LIMIT 1", (name,))
    message, actor, parents = cur.fetchone()
    assert message == "optimize" and parents == [head]
    cur.execute("SELECT current_user")
    assert actor == cur.fetchone()[0]

    # The same rows, and every filter answered from its index.
    assert everything(cur, name) == before
    for f, index in FILTERS:
        cur.execute(f"SELECT sku FROM {name}.item WHERE {f} ORDER BY sku")
        assert cur.fetchall() == results[f], f
        lines = explain(cur, f"SELECT * FROM {name}.item WHERE {f}")
        used = [line.split("Omnigraph Index: ")[1] for line in lines if "Omnigraph Index: " in line]
        assert used == ([index] if index else ["qty (btree)", "status (bitmap)"]), (f, lines)
    # A filter on an unindexed column, or one Postgres evaluates, names none.
    for f in ("plain = 3", "qty + 1 = 8"):
        assert not any("Omnigraph Index" in line for line in explain(cur, f"SELECT * FROM {name}.item WHERE {f}"))
    # A prepared statement's parameter is typed like a constant.
    cur.execute(f"PREPARE byqty(int) AS SELECT sku FROM {name}.item WHERE qty = $1 ORDER BY sku")
    cur.execute("EXECUTE byqty(7)")
    assert cur.fetchall() == results["qty = 7"]

    # Rows written after the optimize are found, through the index's
    # unindexed fragments.
    cur.execute(f"INSERT INTO {name}.item (sku, qty, active, status) VALUES ('new', 7, true, 'open')")
    cur.execute(f"SELECT sku FROM {name}.item WHERE qty = 7 ORDER BY sku")
    assert cur.fetchall() == sorted(results["qty = 7"] + [("new",)])

    # Nothing left to compact or index: no new commit.
    cur.execute("SELECT * FROM omnigraph_optimize(%s)", (name,))
    cur.execute("SELECT * FROM omnigraph_optimize(%s)", (name,))
    cur.execute("SELECT count(*) FROM omnigraph_log(%s) WHERE message = 'optimize'", (name,))
    assert cur.fetchone()[0] == 2
    conn.close()


def test_a_write_begun_before_optimize_lands(graph):
    server, schema, connect_ = graph
    writer = connect_(autocommit=False)
    w = writer.cursor()
    w.execute(f"UPDATE {schema}.person SET age = 99 WHERE slug = 'alice'")
    w.execute(f"INSERT INTO {schema}.person (slug, name, status) VALUES ('zed', 'Zed', 'active')")
    op = connect_()
    o = op.cursor()
    o.execute("SELECT type_name, indexes FROM omnigraph_optimize(%s) ORDER BY 1", (server,))
    indexes = dict(o.fetchall())
    assert indexes["Person"] == ["id (btree)", "slug (btree)", "email (btree)"]
    assert indexes["Knows"] == ["id (btree)", "src (btree)", "dst (btree)"]
    writer.commit()  # no 40001: optimize changed no row
    o.execute(f"SELECT age FROM {schema}.person WHERE slug IN ('alice', 'zed') ORDER BY slug")
    assert o.fetchall() == [(99,), (None,)]
    o.execute("SELECT message FROM omnigraph_log(%s) ORDER BY committed_at DESC LIMIT 2", (server,))
    assert [r[0] for r in o.fetchall()][1] == "optimize"
    writer.close()
    op.close()


def test_optimize_needs_ownership_and_the_logs_only_usage(graph):
    server, schema, connect_ = graph
    conn = connect_()
    cur = conn.cursor()
    cur.execute("CREATE ROLE maint_reader")
    try:
        cur.execute(f"GRANT USAGE ON FOREIGN SERVER {server} TO maint_reader")
        cur.execute("SET ROLE maint_reader")
        for call in ("omnigraph_optimize(%s)", "omnigraph_recover(%s)"):
            with pytest.raises(psycopg2.Error) as e:
                cur.execute(f"SELECT * FROM {call}", (server,))
            assert e.value.pgcode == "42501", call
            assert "needs ownership of the server" in e.value.pgerror
        cur.execute("SELECT count(*) FROM omnigraph_recovery_log(%s)", (server,))
        assert cur.fetchone()[0] == 0
    finally:
        cur.execute("RESET ROLE")
        cur.execute("DROP OWNED BY maint_reader")
        cur.execute("DROP ROLE maint_reader")
    conn.close()


def test_a_rejected_operation_leaves_no_recovery_work(graph):
    server, schema, connect_ = graph
    conn = connect_()
    cur = conn.cursor()
    for bad, code in (
        (f"INSERT INTO {schema}.person (slug, name, status) VALUES ('alice', 'A2', 'active')", "23505"),
        (f"UPDATE {schema}.company SET founded = 1200 WHERE slug = 'acme'", "23514"),
        (f"INSERT INTO {schema}.knows (src, dst) VALUES ('alice', 'nobody')", "23503"),
    ):
        with pytest.raises(psycopg2.Error) as e:
            cur.execute(bad)
        assert e.value.pgcode == code, (bad, e.value.pgerror)
    cur.execute("SELECT DISTINCT state FROM omnigraph_recovery_status(%s)", (server,))
    assert cur.fetchall() == [("clean",)]
    cur.execute("SELECT * FROM omnigraph_recover(%s)", (server,))
    assert cur.fetchall() == []
    cur.execute("SELECT count(*) FROM omnigraph_recovery_log(%s)", (server,))
    assert cur.fetchone()[0] == 0
    conn.close()


def test_a_damaged_graph_fails_only_its_own_server(database):
    schema_text = "node Person { slug: String @key }\nnode Company { slug: String @key }"
    data = '{"type": "Person", "data": {"slug": "p"}}\n{"type": "Company", "data": {"slug": "c"}}'
    damaged = new_graph(database, schema_text, data, prefix="dmg")
    healthy = new_graph(database, schema_text, data, prefix="ok")
    shutil.rmtree(os.path.join(GRAPHS, damaged, "nodes", "Company"))
    conn = connect(database)
    cur = conn.cursor()
    with pytest.raises(psycopg2.Error) as e:
        cur.execute(f"SELECT * FROM {damaged}.company")
    assert e.value.pgcode == "58030", e.value.pgerror
    assert "Company" in e.value.pgerror and "nodes/Company" in e.value.pgerror
    # The damaged graph's other tables, and the other server, still work.
    cur.execute(f"SELECT slug FROM {damaged}.person")
    assert cur.fetchall() == [("p",)]
    for table in ("person", "company"):
        cur.execute(f"SELECT slug FROM {healthy}.{table}")
        assert len(cur.fetchall()) == 1
    cur.execute(f"INSERT INTO {healthy}.company (slug) VALUES ('c2')")
    with pytest.raises(psycopg2.Error) as e:
        cur.execute("SELECT * FROM omnigraph_recovery_status(%s)", (damaged,))
    assert e.value.pgcode == "58030" and "Company" in e.value.pgerror
    cur.execute("SELECT DISTINCT state FROM omnigraph_recovery_status(%s)", (healthy,))
    assert cur.fetchall() == [("clean",)]
    conn.close()


def graph_files(name):
    out = {}
    for root, _, files in os.walk(os.path.join(GRAPHS, name)):
        for f in files:
            p = os.path.join(root, f)
            out[p] = os.path.getsize(p)
    return out


def cleanup(cur, server, older_than="0", dry_run=False):
    cur.execute(
        "SELECT type_name, lance_branch, version, action, reason, bytes"
        " FROM omnigraph_cleanup(%s, %s::interval, %s)",
        (server, older_than, dry_run),
    )
    return cur.fetchall()


def test_cleanup_explains_reclaims_and_keeps_what_is_needed(database):
    name = new_graph(database, ITEM_SCHEMA, items(0, 50), prefix="cln")
    conn = connect(database)
    cur = conn.cursor()
    cur.execute("SELECT commit_id FROM omnigraph_log(%s) ORDER BY committed_at DESC LIMIT 1", (name,))
    old = cur.fetchone()[0]
    cur.execute(f"CREATE SCHEMA {name}_old")
    cur.execute(f'IMPORT FOREIGN SCHEMA "main" FROM SERVER {name} INTO {name}_old OPTIONS (commit %s)', (old,))
    cur.execute(f"UPDATE {name}.item SET plain = 0 WHERE sku = 's003'")
    cur.execute("SELECT omnigraph_branch_create(%s, 'feature')", (name,))
    cur.execute(f"CREATE SCHEMA {name}_f")
    cur.execute(f'IMPORT FOREIGN SCHEMA "feature" FROM SERVER {name} INTO {name}_f')
    cur.execute(f"UPDATE {name}_f.item SET qty = 100 WHERE sku = 's001'")
    for i in range(3):
        cur.execute(f"UPDATE {name}.item SET plain = plain + 1 WHERE sku = 's002'")
    main_rows = everything(cur, name)
    feature_rows = everything(cur, f"{name}_f")
    old_rows = everything(cur, f"{name}_old")

    # A scan of the old commit is open while cleanup runs.
    reader = connect(database, autocommit=False)
    rc = reader.cursor("old_scan")
    rc.itersize = 1
    rc.execute(f"SELECT * FROM {name}_old.item ORDER BY sku")
    first = rc.fetchone()

    # Recent commits are all kept.
    rows = cleanup(cur, name, "1 hour")
    assert all(r[3] == "keep" or "no commit pins it" in r[4] for r in rows), rows
    assert everything(cur, f"{name}_old") == old_rows

    before = graph_files(name)
    dry = cleanup(cur, name, "0", True)
    assert graph_files(name) == before, "a dry run changes nothing"
    removed = [r for r in dry if r[3] == "remove"]
    assert removed and all(r[5] >= 0 for r in removed)

    rows = cleanup(cur, name, "0")
    assert [r[:5] for r in rows] == [r[:5] for r in dry]
    kept = {r[4] for r in rows if r[3] == "keep"}
    assert {"head of branch main", "head of branch feature", "base of unmerged branch feature"} <= kept, kept
    assert any(r[4].startswith("commit ") and r[4].endswith("is older than older_than") for r in removed)
    after = graph_files(name)
    assert sum(before.values()) - sum(after.values()) == sum(r[5] for r in rows)

    # Heads read as before; the reclaimed commit gives 55000.
    assert everything(cur, name) == main_rows
    assert everything(cur, f"{name}_f") == feature_rows
    with pytest.raises(psycopg2.Error) as e:
        everything(cur, f"{name}_old")
    assert e.value.pgcode == "55000", e.value.pgerror
    # The scan that was open sees its rows or 55000, never wrong rows.
    try:
        rest = rc.fetchall()
        assert [first] + rest == old_rows
    except psycopg2.Error as err:
        assert err.pgcode == "55000", err.pgerror
    reader.close()
    # The branch still merges: its base was kept.
    cur.execute("SELECT status FROM omnigraph_branch_merge(%s, 'feature')", (name,))
    assert cur.fetchone()[0] == "merged"
    conn.close()


def test_cleanup_needs_ownership_unless_dry_and_refuses_a_negative_interval(graph):
    server, schema, connect_ = graph
    conn = connect_()
    cur = conn.cursor()
    with pytest.raises(psycopg2.Error) as e:
        cleanup(cur, server, "-1 day")
    assert e.value.pgcode == "22023" and "older_than" in e.value.pgerror
    cur.execute("CREATE ROLE cleanup_reader")
    try:
        cur.execute(f"GRANT USAGE ON FOREIGN SERVER {server} TO cleanup_reader")
        cur.execute("SET ROLE cleanup_reader")
        assert cleanup(cur, server, "0", True)
        with pytest.raises(psycopg2.Error) as e:
            cleanup(cur, server, "0")
        assert e.value.pgcode == "42501"
    finally:
        cur.execute("RESET ROLE")
        cur.execute("DROP OWNED BY cleanup_reader")
        cur.execute("DROP ROLE cleanup_reader")
    conn.close()


def recovery_states(cur, server):
    cur.execute("SELECT branch, type_name, state FROM omnigraph_recovery_status(%s)", (server,))
    return {(b, t): state for b, t, state in cur.fetchall()}


def test_cleanup_recovers_and_reclaims_what_a_killed_commit_wrote(graph, database):
    """A backend killed (SIGKILL) in the middle of COMMIT, after writing
    main's tables and before publishing them, leaves unpublished versions:
    status says interrupted; cleanup rolls them back (one audit row) and
    removes their files; the graph reads as before and takes writes."""
    server, schema, connect_ = graph
    oc = connect_().cursor()
    root = graph_dir(oc, server)
    oc.execute("SELECT omnigraph_branch_create(%s, 'side')", (server,))
    oc.execute(f"CREATE SCHEMA {schema}_side")
    oc.execute(f'IMPORT FOREIGN SCHEMA "side" FROM SERVER {server} INTO {schema}_side')
    with open(os.path.join(root, "_graph", "refs", "side.json")) as f:
        side_id = json.load(f)["id"]
    oc.execute(f"SELECT * FROM {schema}.person ORDER BY slug")
    people = oc.fetchall()
    files_before = set(graph_files(server))

    victim = connect_(autocommit=False)
    vc = victim.cursor()
    vc.execute("SELECT pg_backend_pid()")
    pid = vc.fetchone()[0]
    vc.execute(f"INSERT INTO {schema}.person (slug, name, status) VALUES ('doomed', 'D', 'active')")
    vc.execute(f"INSERT INTO {schema}_side.person (slug, name, status) VALUES ('doomed', 'D', 'active')")
    vc.execute("SET omnigraph.lock_timeout = '10min'")

    def commit():
        try:
            victim.commit()
        except psycopg2.Error:
            pass

    # Branches are prepared in name order: main is written (and its lock
    # held) while the commit waits for side's lock, which the test holds.
    lock = hold_branch_lock(root, side_id)
    t = threading.Thread(target=commit)
    try:
        t.start()
        wait_until(
            lambda: recovery_states(oc, server)[("main", "Person")] == "in_progress",
            "main's Person table to be written and not yet published",
        )
        os.kill(pid, signal.SIGKILL)
        t.join(timeout=60)
        assert not t.is_alive()
    finally:
        lock.close()

    cur = reconnect(database).cursor()
    states = recovery_states(cur, server)
    assert states[("main", "Person")] == "interrupted", states
    written = {p for p in set(graph_files(server)) - files_before if p.endswith(".lance")}
    assert written, "the killed commit wrote no data file"

    rows = cleanup(cur, server, "1 hour")
    assert any(r[0] == "Person" and r[3] == "remove" for r in rows), rows
    assert set(recovery_states(cur, server).values()) == {"clean"}
    cur.execute("SELECT current_user")
    me = cur.fetchone()[0]
    cur.execute("SELECT actor, branch, type_name FROM omnigraph_recovery_log(%s)", (server,))
    assert cur.fetchall() == [(me, "main", "Person")]
    left = {p for p in written if os.path.exists(p)}
    assert not left, f"files of the killed commit remain: {left}"

    cur.execute(f"SELECT * FROM {schema}.person ORDER BY slug")
    assert cur.fetchall() == people
    cur.execute(f"INSERT INTO {schema}.person (slug, name, status) VALUES ('after', 'A', 'active')")
    cur.execute(f"SELECT count(*) FROM {schema}.person")
    assert cur.fetchone()[0] == len(people) + 1
