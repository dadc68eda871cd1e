"""`omnigraph sql` against the FDW: the same queries over the same graph
give the same rows (NULLs, every type of the social example, filters,
joins, grouping, ordering, LIMIT/OFFSET), on main and on a branch; and the
shell, reading a graph the server owns, writes nothing into it."""

import datetime
import decimal
import json
import os
import shutil
import subprocess

import pytest

from conftest import GRAPHS


def omnigraph_bin():
    explicit = os.environ.get("OMNIGRAPH_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/omnigraph/target"))
    built = os.path.join(target, "debug", "omnigraph")
    return built if os.path.exists(built) else shutil.which("omnigraph")


QUERIES = [
    "SELECT * FROM person ORDER BY id",
    "SELECT * FROM company ORDER BY id",
    "SELECT src, dst, since FROM knows ORDER BY src, dst",
    "SELECT src, dst, role, started_at FROM works_at ORDER BY src",
    "SELECT name FROM person WHERE age > 26 AND status = 'active' ORDER BY name",
    "SELECT p.name, c.name AS company, w.role FROM works_at w "
    "JOIN person p ON p.id = w.src JOIN company c ON c.id = w.dst ORDER BY 1",
    "SELECT status, count(*) AS n, sum(age) AS ages FROM person GROUP BY status ORDER BY status",
    "SELECT id FROM person WHERE email IS NULL ORDER BY id",
    "SELECT id, age FROM person ORDER BY age DESC, id",
    "SELECT id, age FROM person ORDER BY age, id",
    "SELECT id, score FROM person WHERE score >= 9.5 OR score IS NULL ORDER BY id",
    "SELECT slug, founded FROM company WHERE founded BETWEEN 1900 AND 2000 ORDER BY 1",
    "SELECT count(*) FROM knows",
    "SELECT id, joined_on FROM person WHERE joined_on < '2020-06-01' ORDER BY id",
    "SELECT name FROM person WHERE name LIKE 'C%' OR name IN ('Bob', 'Nobody') ORDER BY name",
    "SELECT id FROM person ORDER BY id LIMIT 2 OFFSET 1",
    "SELECT a.name, count(*) AS knows FROM knows k JOIN person a ON a.id = k.src GROUP BY 1 ORDER BY 2 DESC, 1",
    "SELECT id, tags FROM person WHERE tags IS NOT NULL ORDER BY id",
    "SELECT id FROM person WHERE NOT (age > 28) ORDER BY id",
]


# (query, the positions of its jsonb columns, which the shell prints as JSON text)
FUNCTIONS = [
    ("SELECT * FROM omnigraph_log('{server}') ORDER BY committed_at, commit_id", ()),
    ("SELECT * FROM omnigraph_log('{server}', 'feature') ORDER BY committed_at, commit_id", ()),
    ("SELECT * FROM omnigraph_branch_list('{server}') ORDER BY name", ()),
    ("SELECT * FROM omnigraph_diff('{server}', 'main', 'feature') ORDER BY type_name, id", (4, 5)),
    ("SELECT * FROM omnigraph_merge_conflicts('{server}', 'feature') ORDER BY type_name, id", (4, 5, 6)),
    ("SELECT * FROM omnigraph_recovery_status('{server}') ORDER BY branch, type_name", ()),
    ("SELECT * FROM omnigraph_recovery_log('{server}')", ()),
]


def normal(v):
    """A value as the shell's JSON holds it."""
    if isinstance(v, datetime.datetime):
        return v.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, list):
        return [normal(x) for x in v]
    return v


def shell(root, sql, *args):
    r = subprocess.run(
        [omnigraph_bin(), "sql", root, "--format", "json", "-c", sql, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, f"{sql}: {r.stderr}"
    return [tuple(row.values()) for row in json.loads(r.stdout)]


def fdw(cur, schema, sql):
    cur.execute(f"SET search_path = {schema}, public")
    cur.execute(sql)
    return [tuple(normal(v) for v in row) for row in cur.fetchall()]


def owners(root):
    return {os.stat(os.path.join(d, f)).st_uid for d, _, files in os.walk(root) for f in files} | {
        os.stat(d).st_uid for d, _, _ in os.walk(root)
    }


def test_the_shell_and_the_fdw_return_the_same_rows(graph):
    if omnigraph_bin() is None:
        pytest.fail("the omnigraph binary is not built (cargo build --workspace)")
    server, schema, connect = graph
    root = os.path.join(GRAPHS, server)
    before = owners(root)
    cur = connect().cursor()
    for q in QUERIES:
        assert shell(root, q) == fdw(cur, schema, q), q

    # A branch with its own changes: both frontends read it.
    cur.execute("SELECT omnigraph_branch_create(%s, 'feature')", (server,))
    cur.execute(f"CREATE SCHEMA {schema}_f")
    cur.execute(f'IMPORT FOREIGN SCHEMA "feature" FROM SERVER {server} INTO {schema}_f')
    cur.execute(f"UPDATE {schema}_f.person SET age = NULL, tags = ARRAY['x', NULL] WHERE id = 'alice'")
    cur.execute(f"INSERT INTO {schema}_f.person (slug, name, status, score) VALUES ('eve', 'Eve', 'active', -0.5)")
    cur.execute(f"DELETE FROM {schema}_f.knows WHERE src = 'bob'")
    for q in QUERIES:
        assert shell(root, q, "--branch", "feature") == fdw(cur, f"{schema}_f", q), q
        # SET omnigraph.branch switches the same way.
        assert shell(root, "SET omnigraph.branch = 'feature'; " + q) == fdw(cur, f"{schema}_f", q), q
    # main is unchanged.
    assert shell(root, QUERIES[0]) == fdw(cur, schema, QUERIES[0])

    # The extension's read-only functions: same names, arguments, columns,
    # rows (with a conflict to list: alice's age changed on both sides).
    cur.execute(f"UPDATE {schema}.person SET age = 77 WHERE id = 'alice'")
    for q, jsonb in FUNCTIONS:
        q = q.format(server=server)
        mine, theirs = shell(root, q), fdw(cur, schema, q)
        # jsonb arrives parsed from the server; the shell prints JSON text.
        mine = [
            tuple(json.loads(v) if i in jsonb and v is not None else v for i, v in enumerate(row))
            for row in mine
        ]
        assert mine == theirs, q
        assert mine or "recovery_log" in q, q

    # The shell ran as root over the server's files and left none of its own.
    assert owners(root) == before


def test_the_interactive_shell_on_a_terminal(graph, tmp_path):
    """On a terminal: a prompt naming the branch, statements over several
    lines, \\d and \\d TABLE, an error that does not end the session, SET,
    history kept in ~/.omnigraph_history, \\q."""
    import pty
    import select

    server, _, _ = graph
    root = os.path.join(GRAPHS, server)
    master, slave = pty.openpty()
    env = dict(os.environ, HOME=str(tmp_path), TERM="dumb")
    proc = subprocess.Popen([omnigraph_bin(), "sql", root], stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    script = [
        "\\d",
        "\\d works_at",
        "SELECT count(*) AS people",
        "FROM person;",
        "SELECT * FROM nope;",
        "SET omnigraph.branch = 'main';",
        "SELECT name FROM person WHERE id = 'bob';",
        "\\q",
    ]
    for line in script:
        os.write(master, (line + "\n").encode())
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        assert ready, "the shell stopped answering: " + out.decode(errors="replace")
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=60) == 0
    text = out.decode(errors="replace")
    assert "main=>" in text, text
    for want in ("knows", "works_at", "started_at", "Timestamp", "people", " 4", "ERROR:", "nope", "reading branch main", "Bob"):
        assert want in text, (want, text)
    history = (tmp_path / ".omnigraph_history").read_text()
    assert "SELECT count(*) AS people" in history and "\\d works_at" in history, history
