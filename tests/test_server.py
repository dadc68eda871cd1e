"""`omnigraph serve` with real clients: psql (\\dt, \\d, queries,
variables), psycopg 2 (transactions, errors and their SQLSTATEs, conflicts
between sessions), psycopg 3 (server-side parameters, binary results,
prepared statements), JDBC (metadata, prepared statements, fetch size,
commit), SQLAlchemy (reflection with keys, a Core select); two sessions on
different branches at once; cancel; SCRAM authentication; the connection
limit; a malformed protocol message; a refused start without a password
on a public address. Each test starts its own server on a fresh graph
(no PostgreSQL cluster involved)."""

import os
import shutil
import socket
import struct
import subprocess
import threading

import psycopg2
import psycopg2.errors
import pytest

from test_shell import omnigraph_bin

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "examples", "social")


def run(*args, env=None):
    r = subprocess.run([omnigraph_bin(), *args], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, f"{args}: {r.stderr}"
    return r


@pytest.fixture
def social(tmp_path):
    if omnigraph_bin() is None:
        pytest.fail("the omnigraph binary is not built (cargo build --workspace)")
    root = str(tmp_path / "social")
    run("init", root, "--schema", os.path.join(EXAMPLE, "schema.pg"))
    run("load", root, os.path.join(EXAMPLE, "data.ndjson"))
    return root


class Server:
    """`omnigraph serve` on a free loopback port; stopped at the end."""

    def __init__(self, root, *args, env=None):
        self.proc = subprocess.Popen(
            [omnigraph_bin(), "serve", root, "--listen", "127.0.0.1:0", *args],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        # The server prints its address once it listens: no polling.
        for line in self.proc.stderr:
            if "listening on" in line:
                self.port = int(line.rsplit(":", 1)[1])
                break
        else:
            raise AssertionError(f"the server did not start (exit {self.proc.wait()})")

    def dsn(self, dbname="social", **kw):
        parts = dict(host="127.0.0.1", port=self.port, dbname=dbname, user="tester", **kw)
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def connect(self, dbname="social", **kw):
        return psycopg2.connect(self.dsn(dbname, **kw))

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def server(social):
    s = Server(social)
    yield s
    assert s.proc.poll() is None, "the server died during the test"
    s.stop()


def psql(server, *commands, dbname="social"):
    args = ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(server.port), "-U", "tester", "-d", dbname]
    for c in commands:
        args += ["-c", c]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def test_psql_lists_describes_and_queries(server):
    r = psql(server, "\\dt", "\\d works_at", "SELECT name, age FROM person WHERE age > 26 ORDER BY name")
    assert r.returncode == 0, r.stderr
    for want in ("person", "company", "knows", "works_at", "started_at", "Alice", "Charlie", "(2 rows)"):
        assert want in r.stdout, (want, r.stdout)
    assert "Bob" not in r.stdout
    # \d shows the keys: `id` is the primary key, an edge's src/dst refer
    # to its endpoints (deleting a node deletes its edges); \d+ works too.
    r = psql(server, "\\d works_at", "\\d+ person")
    assert r.returncode == 0, r.stderr
    for want in (
        '"works_at_pkey" PRIMARY KEY, btree (id)',
        '"works_at_src_fkey" FOREIGN KEY (src) REFERENCES person(id) ON DELETE CASCADE',
        '"works_at_dst_fkey" FOREIGN KEY (dst) REFERENCES company(id) ON DELETE CASCADE',
        '"person_pkey" PRIMARY KEY, btree (id)',
        'TABLE "knows" CONSTRAINT "knows_src_fkey" FOREIGN KEY (src) REFERENCES person(id) ON DELETE CASCADE',
        'TABLE "works_at" CONSTRAINT "works_at_src_fkey" FOREIGN KEY (src) REFERENCES person(id) ON DELETE CASCADE',
        # The types the wire sends, not text for what the emulation does not know.
        "started_at | timestamp with time zone",
        "tags      | text[]",
    ):
        assert want in r.stdout, (want, r.stdout)
    # psql variables are interpolated by psql, then sent as one query.
    r = subprocess.run(
        ["psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(server.port), "-U", "t", "-d", "social", "-v", "who=bob"],
        input="SELECT name FROM person WHERE id = :'who';\nSELECT version();\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "Bob" and lines[1].startswith("PostgreSQL 15.0 (omnigraph "), lines
    # An unknown table: an error, and the session goes on.
    r = psql(server, "SELECT * FROM nope")
    assert r.returncode != 0 and "nope" in r.stderr and "not found" in r.stderr, r.stderr


def test_psycopg2_transactions_errors_and_conflicts(server):
    conn = server.connect()
    cur = conn.cursor()
    cur.execute("SELECT id, age, tags, joined_on, score FROM person WHERE id = %s", ("alice",))
    row = cur.fetchone()
    assert row[0] == "alice" and row[1] == 30 and row[2] == ["rust", "postgres"] and row[4] == 9.5
    assert str(row[3]) == "2021-03-04"

    # One transaction: its own writes are visible to it, not to others,
    # until COMMIT; ROLLBACK drops them.
    other = server.connect()
    other.autocommit = True
    ocur = other.cursor()
    cur.execute("INSERT INTO person (slug, name, status, age) VALUES ('zed', 'Zed', 'active', 50)")
    assert cur.statusmessage == "INSERT 0 1"
    cur.execute("UPDATE person SET age = 31 WHERE id = 'alice'")
    assert cur.rowcount == 1
    cur.execute("SELECT age FROM person WHERE id IN ('zed', 'alice') ORDER BY id")
    assert cur.fetchall() == [(31,), (50,)]
    ocur.execute("SELECT count(*) FROM person WHERE id = 'zed'")
    assert ocur.fetchone() == (0,)
    conn.commit()
    ocur.execute("SELECT age FROM person WHERE id IN ('zed', 'alice') ORDER BY id")
    assert ocur.fetchall() == [(31,), (50,)]
    cur.execute("DELETE FROM person WHERE id = 'zed'")
    conn.rollback()
    ocur.execute("SELECT count(*) FROM person WHERE id = 'zed'")
    assert ocur.fetchone() == (1,)

    # Errors carry Postgres's SQLSTATEs; a failed statement aborts the
    # transaction until ROLLBACK.
    with pytest.raises(psycopg2.errors.UndefinedTable):
        cur.execute("SELECT * FROM nope")
    with pytest.raises(psycopg2.errors.InFailedSqlTransaction):
        cur.execute("SELECT 1")
    conn.rollback()
    with pytest.raises(psycopg2.errors.UndefinedColumn):
        cur.execute("SELECT nope FROM person")
    conn.rollback()
    # Nothing touches the file system: DataFusion's CREATE EXTERNAL TABLE
    # is not even Postgres syntax; DDL and COPY to a file are refused.
    with pytest.raises(psycopg2.errors.SyntaxError):
        cur.execute("CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'")
    conn.rollback()
    with pytest.raises(psycopg2.errors.FeatureNotSupported, match="schema"):
        cur.execute("CREATE TABLE t (a int)")
    conn.rollback()
    with pytest.raises((psycopg2.errors.FeatureNotSupported, psycopg2.errors.SyntaxError)):
        cur.execute("COPY person TO '/tmp/omnigraph-copy-test.csv'")
    conn.rollback()
    assert not os.path.exists("/tmp/omnigraph-copy-test.csv")
    # Validation runs as in the extension (a duplicate @key fails at the
    # latest at COMMIT, with 23505).
    with pytest.raises(psycopg2.errors.UniqueViolation):
        cur.execute("INSERT INTO person (slug, name, status) VALUES ('alice', 'Again', 'active')")
        conn.commit()
    conn.rollback()
    with pytest.raises(psycopg2.errors.InvalidTextRepresentation, match="not a value of Person.status"):
        cur.execute("INSERT INTO person (slug, name, status) VALUES ('x1', 'X', 'bogus')")
        conn.commit()
    conn.rollback()

    # Two transactions update the same row: the second COMMIT fails with
    # 40001 instead of losing the first one's update.
    cur.execute("UPDATE person SET age = 1 WHERE id = 'bob'")
    ocur.execute("BEGIN")
    ocur.execute("UPDATE person SET age = 2 WHERE id = 'bob'")
    ocur.execute("COMMIT")
    with pytest.raises(psycopg2.errors.SerializationFailure):
        conn.commit()
    ocur.execute("SELECT age FROM person WHERE id = 'bob'")
    assert ocur.fetchone() == (2,)

    # Several statements in one query string stop at the first failure,
    # even one raised while rows are computed: the UPDATE never runs.
    conn.rollback()
    with pytest.raises(psycopg2.Error):
        cur.execute("SELECT 1 / (age - age) FROM person; UPDATE person SET age = 5 WHERE id = 'bob'")
    conn.rollback()
    cur.execute("SELECT age FROM person WHERE id = 'bob'")
    assert cur.fetchone() == (2,)

    # Savepoints, and the transaction status libpq sees through them.
    from psycopg2.extensions import TRANSACTION_STATUS_INERROR, TRANSACTION_STATUS_INTRANS

    cur.execute("UPDATE person SET age = 10 WHERE id = 'bob'")
    cur.execute("SAVEPOINT a")
    cur.execute("UPDATE person SET age = 11 WHERE id = 'bob'")
    with pytest.raises(psycopg2.errors.UndefinedTable):
        cur.execute("SELECT * FROM nope")
    assert conn.get_transaction_status() == TRANSACTION_STATUS_INERROR
    cur.execute("ROLLBACK TO SAVEPOINT a")
    assert conn.get_transaction_status() == TRANSACTION_STATUS_INTRANS
    cur.execute("SELECT age FROM person WHERE id = 'bob'")
    assert cur.fetchone() == (10,)
    with pytest.raises(psycopg2.errors.InvalidSavepointSpecification):
        cur.execute("RELEASE SAVEPOINT nope")
    conn.rollback()
    conn.close()
    other.close()


def test_psycopg3_parameters_binary_and_prepared(server):
    import psycopg

    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        with conn.cursor(binary=True) as cur:
            for _ in range(3):
                cur.execute(
                    "SELECT id, age, joined_on, score FROM person WHERE age >= %s AND status = %s ORDER BY id",
                    (26, "active"),
                    prepare=True,
                )
                rows = cur.fetchall()
                assert [r[0] for r in rows] == ["alice", "charlie"]
            assert rows[0][1] == 30 and str(rows[0][2]) == "2021-03-04" and rows[0][3] == 9.5
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO person (slug, name, status, age) VALUES (%s, %s, %s, %s)",
                [("p1", "P One", "active", 61), ("p2", "P Two", "retired", 62)],
            )
            cur.execute("SELECT name FROM person WHERE age > %s ORDER BY age", (60,))
            assert cur.fetchall() == [("P One",), ("P Two",)]
            with pytest.raises(psycopg.errors.UndefinedTable):
                cur.execute("SELECT * FROM nope WHERE x = %s", (1,))


def test_jdbc_metadata_prepared_fetch_size_and_commit(server):
    jar = "/usr/share/java/postgresql.jar"
    if not os.path.exists(jar) or shutil.which("java") is None:
        pytest.fail("libpostgresql-jdbc-java / a JDK is not installed (scripts/lib.sh installs them)")
    url = f"jdbc:postgresql://127.0.0.1:{server.port}/social?user=tester"
    r = subprocess.run(
        ["java", "-cp", jar, os.path.join(HERE, "jdbc", "ServeJdbc.java"), url],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0 and "jdbc ok" in r.stdout, r.stdout + r.stderr


def test_sqlalchemy_reflects_keys_and_runs_a_core_select(server):
    import sqlalchemy as sa

    engine = sa.create_engine(f"postgresql+psycopg2://tester@127.0.0.1:{server.port}/social")
    insp = sa.inspect(engine)
    assert sorted(insp.get_table_names()) == ["company", "knows", "person", "works_at"]
    columns = {c["name"]: c for c in insp.get_columns("person")}
    assert isinstance(columns["age"]["type"], sa.Integer) and isinstance(columns["joined_on"]["type"], sa.Date)
    assert isinstance(columns["tags"]["type"], sa.ARRAY) and isinstance(columns["tags"]["type"].item_type, sa.Text)
    started = {c["name"]: c for c in insp.get_columns("works_at")}["started_at"]["type"]
    assert isinstance(started, sa.TIMESTAMP) and started.timezone, started
    assert insp.get_pk_constraint("person")["constrained_columns"] == ["id"]
    fks = {(f["constrained_columns"][0], f["referred_table"], f["referred_columns"][0]) for f in insp.get_foreign_keys("works_at")}
    assert fks == {("src", "person", "id"), ("dst", "company", "id")}
    assert all(f["options"].get("ondelete") == "CASCADE" for f in insp.get_foreign_keys("works_at"))

    md = sa.MetaData()
    person = sa.Table("person", md, autoload_with=engine)
    works = sa.Table("works_at", md, autoload_with=engine)
    assert [fk.target_fullname for fk in works.c.src.foreign_keys] == ["person.id"]
    with engine.connect() as c:
        rows = c.execute(sa.select(person.c.name).where(person.c.age > 26).order_by(person.c.name)).fetchall()
        assert [r[0] for r in rows] == ["Alice", "Charlie"]
        # The join BI tools infer from the foreign keys.
        company = sa.Table("company", md, autoload_with=engine)
        q = sa.select(person.c.name, company.c.name).select_from(person.join(works).join(company)).order_by(person.c.name)
        assert len(c.execute(q).fetchall()) >= 1


def test_two_sessions_on_two_branches(social, server):
    admin = server.connect()
    admin.autocommit = True
    admin.cursor().execute("SELECT omnigraph_branch_create('social', 'feature')")
    main, feature = server.connect(), server.connect("social/feature")
    main.autocommit = feature.autocommit = True
    mc, fc = main.cursor(), feature.cursor()
    fc.execute("UPDATE person SET age = 99 WHERE id = 'alice'")
    fc.execute("DELETE FROM knows")
    fc.execute("SHOW omnigraph.branch")
    assert fc.fetchone() == ("feature",)
    mc.execute("SELECT age FROM person WHERE id = 'alice'")
    assert mc.fetchone() == (30,)
    mc.execute("SELECT count(*) FROM knows")
    assert mc.fetchone()[0] > 0
    fc.execute("SELECT age FROM person WHERE id = 'alice'")
    assert fc.fetchone() == (99,)
    fc.execute("SELECT count(*) FROM knows")
    assert fc.fetchone() == (0,)
    # A migration merges in a transaction: ROLLBACK undoes it, COMMIT
    # publishes it (psycopg2 opens the transaction itself).
    mig = server.connect()
    c = mig.cursor()
    c.execute("SELECT * FROM omnigraph_branch_merge('social', 'feature')")
    assert c.fetchone()[0] == "fast_forward"
    c.execute("SELECT age FROM person WHERE id = 'alice'")
    assert c.fetchone() == (99,)
    mig.rollback()
    mc.execute("SELECT age FROM person WHERE id = 'alice'")
    assert mc.fetchone() == (30,)
    c.execute("SELECT * FROM omnigraph_branch_merge('social', 'feature')")
    mig.commit()
    mc.execute("SELECT age FROM person WHERE id = 'alice'")
    assert mc.fetchone() == (99,)
    mig.close()
    # SET omnigraph.branch switches a session.
    mc.execute("SET omnigraph.branch = 'feature'")
    mc.execute("SELECT age FROM person WHERE id = 'alice'")
    assert mc.fetchone() == (99,)
    # Unknown graph or branch: the connection fails as for an unknown database.
    with pytest.raises(psycopg2.OperationalError, match='database "social/nope" does not exist'):
        server.connect("social/nope")
    with pytest.raises(psycopg2.OperationalError, match='database "other" does not exist'):
        server.connect("other")


def test_cancel_stops_a_running_query(server):
    conn = server.connect()
    conn.autocommit = True
    cur = conn.cursor()
    started = threading.Event()
    errors = []

    def long_query():
        try:
            started.set()
            cur.execute("SELECT count(*) FROM generate_series(1, 1000000000000)")
        except Exception as e:  # noqa: BLE001 - the error is the result
            errors.append(e)

    t = threading.Thread(target=long_query)
    t.start()
    started.wait()
    # Cancel until the query is gone: a cancel before the query reached the
    # server is dropped, as in Postgres.
    while t.is_alive():
        conn.cancel()
        t.join(0.05)
    assert len(errors) == 1 and isinstance(errors[0], psycopg2.errors.QueryCanceled), errors
    assert "user request" in str(errors[0])
    cur.execute("SELECT 1")
    assert cur.fetchone() == (1,)

    # statement_timeout stops it the same way.
    cur.execute("SET statement_timeout = 200")
    with pytest.raises(psycopg2.errors.QueryCanceled, match="statement timeout"):
        cur.execute("SELECT count(*) FROM generate_series(1, 1000000000000)")
    cur.execute("SET statement_timeout = 0")
    cur.execute("SELECT count(*) FROM person")
    assert cur.fetchone()[0] > 0


def test_password_authentication(social):
    env = dict(os.environ, OMNIGRAPH_PASSWORD="s3cret")
    s = Server(social, env=env)
    try:
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            s.connect(password="wrong")
        with pytest.raises(psycopg2.OperationalError):
            s.connect()  # no password at all
        conn = s.connect(password="s3cret")
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM person")
        assert cur.fetchone()[0] > 0
        conn.close()
    finally:
        s.stop()
    # Without a password, only loopback is served.
    r = subprocess.run(
        [omnigraph_bin(), "serve", social, "--listen", "0.0.0.0:0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "OMNIGRAPH_PASSWORD"},
    )
    assert r.returncode == 1 and "without a password" in r.stderr and "OMNIGRAPH_PASSWORD" in r.stderr, r.stderr


def test_connection_limit(social):
    s = Server(social, "--max-connections", "2")
    try:
        a, b = s.connect(), s.connect()
        with pytest.raises(psycopg2.OperationalError, match="too many clients"):
            s.connect()
        a.close()
        # A closed connection frees its slot (its task ends when the socket
        # closes; retry until the server has noticed).
        for _ in range(1000):
            try:
                c = s.connect()
                break
            except psycopg2.OperationalError:
                continue
        else:
            raise AssertionError("the freed slot was never reused")
        c.close()
        b.close()
    finally:
        s.stop()


def test_a_malformed_message_does_not_bring_the_server_down(server):
    # A startup packet that claims a huge length, then garbage.
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(struct.pack("!I", 0x7FFFFFF0) + b"\xff" * 64)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(30)
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass
    # After startup: a message type that does not exist, with a bad length.
    conn = server.connect()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        user = b"user\x00tester\x00database\x00social\x00\x00"
        sock.sendall(struct.pack("!II", 8 + len(user), 196608) + user)
        sock.settimeout(30)
        got = b""
        while b"Z" not in got[-6:]:
            chunk = sock.recv(4096)
            assert chunk, "the server closed the connection during startup"
            got += chunk
        sock.sendall(b"\x01" + struct.pack("!I", 3) + b"junk" * 4)
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM person")
    assert cur.fetchone()[0] > 0
    assert server.proc.poll() is None
