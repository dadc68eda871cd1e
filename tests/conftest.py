"""Fixtures for the extension tests: connections to the throwaway cluster
that scripts/test.sh starts (PGHOST/PGPORT/PGUSER), and a fresh graph per test."""

import os
import re
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
