"""The clients applications use, against the extension: psycopg 3 (server-side
parameters, binary results, prepared statements), JDBC (metadata, prepared
statements, dates, arrays, numeric), SQLAlchemy (reflection and a Core select)
and an Alembic migration that creates a branch and writes on it."""

import datetime
import decimal
import os
import subprocess
import textwrap

import pytest

from conftest import connect, new_graph

SCHEMA = """
node Item {
    k: String @key
    small: I32?
    huge: U64?
    day: Date?
    moment: DateTime?
    words: [String]?
    ratio: F64?
}
edge Link: Item -> Item { weight: F64? }
"""

DATA = "\n".join([
    '{"type": "Item", "data": {"k": "full", "small": 7, "huge": 18446744073709551615, "day": "2024-02-29",'
    ' "moment": "2024-02-29T23:59:59.123456Z", "words": ["a", "ünïcode"], "ratio": 0.5}}',
    '{"type": "Item", "data": {"k": "other", "small": 1, "day": "2000-01-01"}}',
    '{"type": "Item", "data": {"k": "old", "small": 2, "day": "1999-12-31"}}',
    '{"edge": "Link", "from": "full", "to": "other", "data": {"id": "l1", "weight": 2.5}}',
])


@pytest.fixture
def items(database):
    name = new_graph(database, SCHEMA, DATA, prefix="cl")
    return name, name


def test_psycopg3_server_side_parameters_binary_results_and_prepared(database, items):
    import psycopg

    server, schema = items
    with psycopg.connect(dbname=database, autocommit=True) as conn:
        # Server-side binding ($1, $2) with binary results, prepared at once.
        with conn.cursor(binary=True) as cur:
            for _ in range(3):
                cur.execute(
                    f"SELECT k, small, huge, day, moment, words, ratio FROM {schema}.item"
                    " WHERE small >= %s AND day >= %s ORDER BY k",
                    (1, datetime.date(2000, 1, 1)),
                    prepare=True,
                )
                rows = cur.fetchall()
                assert [r[0] for r in rows] == ["full", "other"]
            full = rows[0]
            assert full[1] == 7
            assert full[2] == decimal.Decimal("18446744073709551615")
            assert full[3] == datetime.date(2024, 2, 29)
            assert full[4] == datetime.datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=datetime.timezone.utc)
            assert full[5] == ["a", "ünïcode"]
            assert full[6] == 0.5
            # A text parameter, an array parameter, NULLs.
            cur.execute(f"SELECT k FROM {schema}.item WHERE k = ANY(%s) ORDER BY k", (["old", "full", "nope"],))
            assert [r[0] for r in cur.fetchall()] == ["full", "old"]
            cur.execute(f"SELECT k FROM {schema}.item WHERE ratio IS NULL ORDER BY k")
            assert [r[0] for r in cur.fetchall()] == ["old", "other"]
        # A write in a transaction, with parameters.
        with conn.transaction():
            conn.execute(
                f"INSERT INTO {schema}.item (k, small, words) VALUES (%s, %s, %s)", ("p3", 9, ["x"])
            )
        assert conn.execute(f"SELECT small, words FROM {schema}.item WHERE k = 'p3'").fetchone() == (9, ["x"])


def test_jdbc_metadata_prepared_statements_dates_arrays_numeric(database, items):
    server, schema = items
    jar = "/usr/share/java/postgresql.jar"
    if not os.path.exists(jar):
        pytest.fail("libpostgresql-jdbc-java is not installed (scripts/lib.sh installs it)")
    port = os.environ.get("PGPORT", "5432")
    url = f"jdbc:postgresql://localhost:{port}/{database}?user={os.environ.get('PGUSER', 'postgres')}"
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run(
        ["java", "-cp", jar, os.path.join(here, "jdbc", "OmnigraphJdbc.java"), url, schema],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "jdbc ok" in out.stdout


def sqlalchemy_url(database):
    host = os.environ.get("PGHOST", "/tmp")
    port = os.environ.get("PGPORT", "5432")
    user = os.environ.get("PGUSER", "postgres")
    return f"postgresql+psycopg2://{user}@/{database}?host={host}&port={port}"


def test_sqlalchemy_reflection_and_a_core_select(database, items):
    import sqlalchemy as sa

    server, schema = items
    engine = sa.create_engine(sqlalchemy_url(database))
    with engine.connect() as conn:
        insp = sa.inspect(conn)
        assert sorted(insp.get_foreign_table_names(schema=schema)) == ["item", "link"]
        item = sa.Table("item", sa.MetaData(), autoload_with=conn, schema=schema)
        types = {c.name: type(c.type).__name__ for c in item.columns}
        assert types["small"] == "INTEGER"
        assert types["huge"] == "NUMERIC"
        assert types["day"] == "DATE"
        assert types["moment"] == "TIMESTAMP"
        assert types["words"] == "ARRAY"
        assert item.c.k.nullable is False and item.c.small.nullable is True
        q = (
            sa.select(item.c.k, item.c.small)
            .where(item.c.small > sa.bindparam("lo"))
            .order_by(item.c.k)
        )
        assert conn.execute(q, {"lo": 1}).fetchall() == [("full", 7), ("old", 2)]
    engine.dispose()


def test_an_alembic_migration_creates_a_branch_and_writes_on_it(database, items, tmp_path):
    from alembic import command
    from alembic.config import Config

    server, schema = items
    scripts = tmp_path / "migrations"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "env.py").write_text(textwrap.dedent("""
        from alembic import context
        from sqlalchemy import create_engine

        engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=None)
            with context.begin_transaction():
                context.run_migrations()
    """))
    (scripts / "script.py.mako").write_text("")
    (scripts / "versions" / "0001_branch.py").write_text(textwrap.dedent(f"""
        from alembic import op

        revision = "0001"
        down_revision = None

        def upgrade():
            op.execute("SELECT omnigraph_branch_create('{server}', 'migration')")
            op.execute('CREATE SCHEMA {schema}_mig')
            op.execute('IMPORT FOREIGN SCHEMA "migration" FROM SERVER {server} INTO {schema}_mig')
            op.execute("INSERT INTO {schema}_mig.item (k, small) VALUES ('migrated', 11)")
            op.execute("UPDATE {schema}_mig.item SET small = small + 100 WHERE k = 'old'")

        def downgrade():
            pass
    """))
    cfg = Config()
    cfg.set_main_option("script_location", str(scripts))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(database))
    command.upgrade(cfg, "head")
    conn = connect(database)
    with conn.cursor() as cur:
        cur.execute(f"SELECT k, small FROM {schema}_mig.item WHERE k IN ('migrated', 'old') ORDER BY k")
        assert cur.fetchall() == [("migrated", 11), ("old", 102)]
        # main is untouched; the migration's writes are one commit on the branch
        cur.execute(f"SELECT count(*) FROM {schema}.item WHERE k = 'migrated'")
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT count(*) FROM omnigraph_log(%s, 'migration')", (server,))
        assert cur.fetchone()[0] == 3  # create, load, the migration
        cur.execute("SELECT version_num FROM alembic_version")
        assert cur.fetchone()[0] == "0001"
    conn.close()
