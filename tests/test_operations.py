"""Operations in SQL: the recovery status of every table of every branch."""

import psycopg2
import pytest


def test_recovery_status_lists_every_table_of_every_branch(graph):
    server, schema, connect = graph
    conn = connect()
    cur = conn.cursor()
    cur.execute("SELECT omnigraph_branch_create(%s, 'side')", (server,))
    cur.execute(f"CREATE SCHEMA {schema}_side")
    cur.execute(f'IMPORT FOREIGN SCHEMA "side" FROM SERVER {server} INTO {schema}_side')
    cur.execute(f"INSERT INTO {schema}_side.person (slug, name, status) VALUES ('r1', 'R', 'active')")
    cur.execute(
        "SELECT branch, type_name, pinned_version, latest_version, state"
        " FROM omnigraph_recovery_status(%s) ORDER BY 1, 2",
        (server,),
    )
    rows = cur.fetchall()
    cur.execute("SELECT count(*) FROM omnigraph_branch_list(%s)", (server,))
    branches = cur.fetchone()[0]
    types = {r[1] for r in rows}
    assert {"Person", "Company"} <= types
    assert len(rows) == branches * len(types)
    assert all(r[4] == "clean" and r[2] == r[3] for r in rows), rows
    pinned = {(r[0], r[1]): r[2] for r in rows}
    # The branch wrote Person (its own fork, a newer version) and reads
    # Company from main's lineage (the same pin).
    assert pinned[("side", "Person")] > pinned[("main", "Person")]
    assert pinned[("side", "Company")] == pinned[("main", "Company")]
    # USAGE is enough to look; without it, 42501.
    cur.execute("CREATE ROLE status_reader")
    try:
        cur.execute(f"GRANT USAGE ON FOREIGN SERVER {server} TO status_reader")
        cur.execute("SET ROLE status_reader")
        cur.execute("SELECT count(*) FROM omnigraph_recovery_status(%s)", (server,))
        assert cur.fetchone()[0] == len(rows)
        cur.execute("RESET ROLE")
        cur.execute(f"REVOKE USAGE ON FOREIGN SERVER {server} FROM status_reader")
        cur.execute("SET ROLE status_reader")
        with pytest.raises(psycopg2.Error) as e:
            cur.execute("SELECT count(*) FROM omnigraph_recovery_status(%s)", (server,))
        assert e.value.pgcode == "42501"
    finally:
        cur.execute("RESET ROLE")
        cur.execute("DROP ROLE status_reader")
    conn.close()
