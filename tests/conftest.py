"""Fixtures for the extension tests: connections to the throwaway cluster
that scripts/test.sh starts (PGHOST/PGPORT/PGUSER), and a fresh graph per test."""

import fcntl
import os
import re
import time
import uuid

import psycopg2
import pytest

GRAPHS = os.environ.get("OMNIGRAPH_TEST_GRAPHS", "/tmp/omnigraph-graphs")
FIXTURES = os.environ.get("OMNIGRAPH_TEST_FIXTURES", "")


def connect(dbname="postgres", autocommit=True):
    conn = psycopg2.connect(dbname=dbname)
    conn.autocommit = autocommit
    return conn


@pytest.fixture(scope="session")
def database():
    """A database with the extension, created once per run."""
    name = "omnigraph_pytest"
    admin = connect()
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        cur.execute(f"CREATE DATABASE {name}")
    admin.close()
    conn = connect(name)
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION omnigraph_fdw")
    conn.close()
    return name


def reconnect(dbname, timeout=60):
    """Connect once the server accepts again (after a backend crash the
    postmaster restarts every backend)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect(dbname)
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise


def wait_until(predicate, what, timeout=60):
    """Poll an observable state (not a sleep standing in for one)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def graph_dir(cur, server):
    """The graph directory of a server (its `uri` option)."""
    cur.execute("SELECT srvoptions FROM pg_foreign_server WHERE srvname = %s", (server,))
    return dict(o.split("=", 1) for o in cur.fetchone()[0])["uri"]


def hold_branch_lock(root, branch_id="main"):
    """Take a branch's write lock as another process would (flock)."""
    path = os.path.join(root, "_graph", "locks", f"{branch_id}.lock")
    owner = os.stat(root)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    f = open(path, "a")
    # The test runs as root; the server, as the graph's owner, opens it too.
    for p in (os.path.dirname(path), path):
        os.chown(p, owner.st_uid, owner.st_gid)
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return f


def fixture_text(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        return f.read()


def new_graph(database, schema_text, ndjson=None, prefix="g"):
    """A server on a new graph of `schema_text` (loaded with `ndjson`), its
    main branch imported into a schema of the same name. Returns that name
    (server and schema)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = connect(database)
    with conn.cursor() as cur:
        cur.execute(
            f"CREATE SERVER {name} FOREIGN DATA WRAPPER omnigraph OPTIONS (uri %s)",
            (os.path.join(GRAPHS, name),),
        )
        cur.execute("SELECT omnigraph_create_graph(%s, %s)", (name, schema_text))
        if ndjson:
            cur.execute("SELECT omnigraph_load(%s, 'main', %s)", (name, ndjson))
        cur.execute(f"CREATE SCHEMA {name}")
        cur.execute(f'IMPORT FOREIGN SCHEMA "main" FROM SERVER {name} INTO {name}')
    conn.close()
    return name


@pytest.fixture
def graph(database):
    """A new graph loaded with the social example. Yields (server, schema,
    connect)."""
    name = new_graph(database, fixture_text("schema.pg"), fixture_text("data.ndjson"))
    yield name, name, lambda autocommit=True: connect(database, autocommit)


@pytest.fixture(scope="session", autouse=True)
def no_crashed_backends():
    """Fail the run if any backend crashed (SIGSEGV, abort, PANIC) while the
    tests ran. Backends the tests kill on purpose (SIGKILL) are allowed."""
    log = os.path.join(os.environ.get("PGHOST", ""), "server.log")
    start = os.path.getsize(log) if os.path.isfile(log) else None
    yield
    if start is None:
        return
    with open(log, errors="replace") as f:
        f.seek(start)
        text = f.read()
    crashes = [
        line
        for line in text.splitlines()
        if re.search(r"terminated by signal (?!9\b)\d+|PANIC:|stack depth limit exceeded", line)
    ]
    assert not crashes, "backends crashed during the tests:\n" + "\n".join(crashes)
