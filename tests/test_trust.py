"""Trusting the extension with production data: one outcome for Postgres
and the graph, durable commits (checked with a syscall trace of the
backend), exclusive graph creation, one lock per graph whatever the uri's
spelling, and cancel/terminate that are always answered."""

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import uuid

import psycopg2
import pytest
from psycopg2 import errors

from conftest import GRAPHS, graph_dir, hold_branch_lock, wait_until


def person_line(slug, **props):
    data = {"slug": slug, "name": slug.title(), "status": "active", **props}
    return json.dumps({"type": "Person", "data": data})


def scalar(cur, sql, *args):
    cur.execute(sql, args)
    return cur.fetchone()[0]


def test_a_serialization_failure_at_commit_leaves_the_graph_unchanged(graph):
    """The graph publishes only after Postgres committed: a SERIALIZABLE
    transaction that fails in COMMIT itself keeps neither its heap nor its
    graph writes."""
    server, schema, connect = graph
    setup = connect()
    s = setup.cursor()
    s.execute(f"CREATE TABLE {schema}_doctors (name text, on_call bool)")
    s.execute(f"INSERT INTO {schema}_doctors VALUES ('alice', true), ('bob', true)")
    commits_before = scalar(s, "SELECT count(*) FROM omnigraph_log(%s)", server)
    t1, t2 = connect(autocommit=False), connect(autocommit=False)
    for t in (t1, t2):
        t.set_session(isolation_level="SERIALIZABLE")
    c1, c2 = t1.cursor(), t2.cursor()
    # Write skew: each reads both rows, then takes a different one off call.
    c1.execute(f"SELECT count(*) FROM {schema}_doctors WHERE on_call")
    c2.execute(f"SELECT count(*) FROM {schema}_doctors WHERE on_call")
    c1.execute(f"UPDATE {schema}_doctors SET on_call = false WHERE name = 'alice'")
    c2.execute(f"UPDATE {schema}_doctors SET on_call = false WHERE name = 'bob'")
    c2.execute(f"INSERT INTO {schema}.person (slug, name, status) VALUES ('pivot', 'Pivot', 'active')")
    t1.commit()
    with pytest.raises(errors.SerializationFailure):
        t2.commit()  # the failure is raised by COMMIT, after the graph's pre-commit
    assert scalar(s, f"SELECT count(*) FROM {schema}.person WHERE slug = 'pivot'") == 0
    assert scalar(s, "SELECT count(*) FROM omnigraph_log(%s)", server) == commits_before
    assert scalar(s, f"SELECT count(*) FROM {schema}_doctors WHERE on_call") == 1
    # The abandoned commit released its lock and left nothing to recover.
    s.execute(f"INSERT INTO {schema}.person (slug, name, status) VALUES ('after', 'After', 'active')")
    assert scalar(s, "SELECT count(*) FROM omnigraph_recover(%s)", server) == 0
    assert scalar(s, "SELECT count(*) FROM omnigraph_log(%s)", server) == commits_before + 1


def test_a_transaction_over_two_branches_publishes_both_or_neither(graph):
    server, schema, connect = graph
    cur = connect().cursor()
    cur.execute("SELECT omnigraph_branch_create(%s, 'side')", (server,))
    cur.execute(f"CREATE SCHEMA {schema}_side")
    cur.execute(f'IMPORT FOREIGN SCHEMA "side" FROM SERVER {server} INTO {schema}_side')
    main_before = scalar(cur, "SELECT count(*) FROM omnigraph_log(%s)", server)
    cur.execute("BEGIN")
    cur.execute(f"INSERT INTO {schema}.person (slug, name, status) VALUES ('m2', 'M', 'active')")
    cur.execute(f"INSERT INTO {schema}_side.knows (id, src, dst) VALUES ('bad', 'alice', 'ghost')")
    with pytest.raises(errors.ForeignKeyViolation):
        cur.execute("COMMIT")
    # Every branch is validated before any is published.
    assert scalar(cur, f"SELECT count(*) FROM {schema}.person WHERE slug = 'm2'") == 0
    assert scalar(cur, "SELECT count(*) FROM omnigraph_log(%s)", server) == main_before


def fsync_trace(pid, out):
    """strace the backend `pid` (all its threads) into `out`."""
    proc = subprocess.Popen(
        ["strace", "-f", "-qq", "-y", "-s", "256", "-e", "signal=none",
         "-e", "trace=openat,fsync,fdatasync,rename,renameat,renameat2,link,linkat,recvfrom",
         "-p", str(pid), "-o", out],
        stderr=subprocess.PIPE,
    )
    return proc


def joined_syscalls(lines):
    """strace -f splits a call that another thread's call interrupts into
    `PID call(args <unfinished ...>` and, later, `PID <... call resumed>
    rest`: join each pair into one line at the place the call returned (a
    commit writes several files at once)."""
    pending = {}
    out = []
    for line in lines:
        m = re.match(r"(\d+)\s+(.*?)\s*<unfinished \.\.\.>$", line)
        if m:
            pending[m.group(1)] = m.group(2)
            continue
        m = re.match(r"(\d+)\s+<\.\.\. \w+ resumed>\s*(.*)$", line)
        if m and m.group(1) in pending:
            out.append(f"{m.group(1)} {pending.pop(m.group(1))}{m.group(2)}")
            continue
        out.append(line)
    return out


@pytest.mark.parametrize("rows", [1, 3000], ids=["one row", "a spilled bulk insert"])
def test_every_file_a_commit_creates_is_fsynced_before_commit_returns(graph, tmp_path, rows):
    """A commit of one row, and of a bulk insert whose spill files the
    table adopts (hard links from the spill): every file it creates or
    links into the graph is durable before it appears, and its directory
    after."""
    if shutil.which("strace") is None:
        pytest.fail("strace is not installed (scripts/lib.sh installs it)")
    server, schema, connect = graph
    conn = connect()
    cur = conn.cursor()
    root = os.path.realpath(graph_dir(cur, server))
    pid = scalar(cur, "SELECT pg_backend_pid()")
    # Warm the backend (open graph, plan) so the trace holds the commit only.
    cur.execute(f"INSERT INTO {schema}.person (slug, name, status) VALUES ('warm', 'W', 'active')")
    out = str(tmp_path / "trace.txt")
    tracer = fsync_trace(pid, out)

    def traced():
        tasks = os.listdir(f"/proc/{pid}/task")
        for task in tasks:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                tracer_pid = next(l for l in f if l.startswith("TracerPid:")).split()[1]
            if int(tracer_pid) != tracer.pid:
                return False
        return True

    wait_until(traced, "strace to attach to every thread of the backend")
    cur.execute(
        f"INSERT INTO {schema}.person (slug, name, status) "
        f"SELECT CASE WHEN i = 1 THEN 'durable' ELSE 'durable' || i END, 'D', 'active' "
        f"FROM generate_series(1, {rows}) i"
    )
    # A marker the backend reads only after COMMIT returned to us; strace
    # writes everything before it on detach.
    cur.execute("SELECT 'omnigraph-after-commit'")
    tracer.send_signal(signal.SIGINT)
    tracer.wait(timeout=60)
    lines = joined_syscalls(open(out).read().splitlines())
    marker = next(i for i, l in enumerate(lines) if "omnigraph-after-commit" in l)
    start = next(i for i, l in enumerate(lines) if "durable" in l and "recvfrom" in l)
    events = lines[start:marker]

    fsynced = {}  # path -> index of its last fsync
    published = []  # (index, final path, staged path)
    for i, line in enumerate(events):
        m = re.search(r"(?:fsync|fdatasync)\(\d+<([^>]*)>\)\s*=\s*0", line)
        if m:
            fsynced[m.group(1)] = i
            continue
        m = re.search(r"(?:link|linkat|rename|renameat|renameat2)\(.*?\"([^\"]+)\".*?\"([^\"]+)\".*\)\s*=\s*0", line)
        if m and m.group(2).startswith(root):
            published.append((i, m.group(2), m.group(1)))
    # Two hints are advisory and not synced: the branch's HEAD and each
    # table's Lance version hint. Readers probe the manifests (contiguous,
    # never removed) from them and list when one is unreadable, so a hint
    # lost or torn in a crash costs a longer probe only (docs/dev/storage.md,
    # docs/dev/architecture.md). Nor is Lance's transaction file of a
    # commit: a copy of the transaction its manifest holds inline, which is
    # what readers read.
    def head_hint(path):
        return re.search(r"/_graph/branches/[^/]+/HEAD(\.[0-9A-Z]+\.tmp)?$", path) is not None

    def lance_hint(path):
        return re.search(r"/_versions/latest_version_hint\.json(#\d+)?$", path) is not None

    def transaction_file(path):
        return re.search(r"/_transactions/[^/]+\.txn(#\d+)?$", path) is not None

    def hint(path):
        return head_hint(path) or lance_hint(path) or transaction_file(path)

    assert any(head_hint(p) for _, p, _ in published), "the commit replaced its branch's HEAD hint"
    lance_hints = [(i, p, staged) for i, p, staged in published if lance_hint(p)]
    assert lance_hints, "the commit's Lance write replaced the table's version hint"
    transactions = [(i, p, staged) for i, p, staged in published if transaction_file(p)]
    assert transactions, "the commit's Lance write wrote a transaction file"
    for _, final, staged in lance_hints + transactions:
        # Written unsynced: the two fsyncs it would cost are saved.
        assert staged not in fsynced and final not in fsynced, f"{final} was fsynced"
    for i, line in enumerate(events):
        m = re.search(r'openat\(.*?"([^"]+)", [^)]*O_CREAT', line)
        if m and m.group(1).startswith(root) and "#" not in m.group(1) and "/_graph/locks/" not in m.group(1) and not hint(m.group(1)):
            assert fsynced.get(m.group(1), -1) > i, f"{m.group(1)} was created and never fsynced"
    names = [p for _, p, _ in published]
    assert any(re.search(r"/nodes/Person/.*data/.*\.lance$", p) for p in names), names
    assert any(re.search(r"/nodes/Person/.*_versions/.*\.manifest$", p) for p in names), names
    assert any(re.search(r"/_graph/branches/main/\d{20}\.json$", p) for p in names), names
    if rows > 1:
        adopted = [p for _, p, staged in published if "/pgsql_tmp/" in staged]
        assert any(re.search(r"/nodes/Person/.*data/.*\.lance$", p) for p in adopted), published
    for i, final, staged in published:
        if "/_graph/locks/" in final or hint(final):
            continue
        assert fsynced.get(staged, len(events)) < i, f"{staged} was not fsynced before it became {final}"
        parent = os.path.dirname(final)
        after = [j for p, j in fsynced.items() if p == parent]
        assert after and max(after) > i, f"directory {parent} was not fsynced after {final} appeared"
    # Order: the Lance manifest is durable before the graph manifest names it.
    lance_at = max(i for i, p, _ in published if p.endswith(".manifest"))
    graph_at = max(i for i, p, _ in published if re.search(r"/_graph/branches/main/\d{20}\.json$", p))
    assert lance_at < graph_at


def test_concurrent_creates_of_one_graph_leave_one_and_its_schema(database, tmp_path):
    from conftest import connect as raw_connect

    uri = os.path.join(GRAPHS, f"concurrent_{uuid.uuid4().hex[:10]}")
    admin = raw_connect(database)
    with admin.cursor() as cur:
        cur.execute("CREATE SERVER cc_a FOREIGN DATA WRAPPER omnigraph OPTIONS (uri %s)", (uri,))
        # The same directory, spelled as a file:// URI with a %-escape.
        escaped = "file://" + uri.replace("/concurrent_", "/%63oncurrent_")
        cur.execute("CREATE SERVER cc_b FOREIGN DATA WRAPPER omnigraph OPTIONS (uri %s)", (escaped,))
    schemas = {"cc_a": "node A { x: I32 }", "cc_b": "node B { y: String }"}
    barrier = threading.Barrier(2)
    outcome = {}

    def create(server):
        conn = raw_connect(database)
        with conn.cursor() as cur:
            barrier.wait()
            try:
                cur.execute("SELECT omnigraph_create_graph(%s, %s)", (server, schemas[server]))
                outcome[server] = "ok"
            except psycopg2.Error as e:
                outcome[server] = e.pgcode
        conn.close()

    threads = [threading.Thread(target=create, args=(s,)) for s in schemas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(outcome.values()) == ["42710", "ok"], outcome
    winner = next(s for s, o in outcome.items() if o == "ok")
    with admin.cursor() as cur:
        for server in schemas:
            assert scalar(cur, "SELECT omnigraph_schema(%s)", server) == schemas[winner]
        # A create over an existing graph is refused, naming it.
        with pytest.raises(errors.DuplicateObject, match="already exists"):
            cur.execute("SELECT omnigraph_create_graph('cc_a', 'node C { z: I32 }')")
        # And it runs only as a statement of its own.
        cur.execute("BEGIN")
        with pytest.raises(errors.ActiveSqlTransaction):
            cur.execute("SELECT omnigraph_create_graph('cc_a', 'node C { z: I32 }')")
        cur.execute("ROLLBACK")
        cur.execute("DROP SERVER cc_a")
        cur.execute("DROP SERVER cc_b")


def test_two_spellings_of_a_uri_share_one_lock(graph):
    server, schema, connect = graph
    conn = connect()
    cur = conn.cursor()
    root = graph_dir(cur, server)
    escaped = "file://" + root.replace("/graphs/", "/graph%73/")
    cur.execute(f"CREATE SERVER {server}_esc FOREIGN DATA WRAPPER omnigraph OPTIONS (uri %s)", (escaped,))
    cur.execute(f"CREATE SCHEMA {schema}_esc")
    cur.execute(f'IMPORT FOREIGN SCHEMA "main" FROM SERVER {server}_esc INTO {schema}_esc')
    lock = hold_branch_lock(root)
    try:
        cur.execute("SET omnigraph.lock_timeout = '200ms'")
        with pytest.raises(errors.LockNotAvailable):
            cur.execute(f"INSERT INTO {schema}_esc.person (slug, name, status) VALUES ('esc', 'E', 'active')")
    finally:
        lock.close()
    cur.execute(f"INSERT INTO {schema}_esc.person (slug, name, status) VALUES ('esc', 'E', 'active')")
    cur.execute(f"INSERT INTO {schema}.person (slug, name, status) VALUES ('plain', 'P', 'active')")
    # One lineage: each spelling sees both commits.
    for s in (schema, f"{schema}_esc"):
        assert scalar(cur, f"SELECT count(*) FROM {s}.person WHERE slug IN ('esc', 'plain')") == 2


def test_terminate_answers_a_commit_waiting_for_the_branch_lock(graph):
    server, schema, connect = graph
    obs = connect()
    oc = obs.cursor()
    root = graph_dir(oc, server)
    before = scalar(oc, "SELECT count(*) FROM omnigraph_log(%s)", server)
    waiter = connect(autocommit=False)
    wc = waiter.cursor()
    pid = scalar(wc, "SELECT pg_backend_pid()")
    wc.execute("SET omnigraph.lock_timeout = '10min'")
    wc.execute(f"INSERT INTO {schema}.person (slug, name, status) VALUES ('waiting', 'W', 'active')")
    lock = hold_branch_lock(root)
    result = {}

    def commit():
        try:
            waiter.commit()
            result["outcome"] = "committed"
        except psycopg2.Error as e:
            result["outcome"] = type(e).__name__

    t = threading.Thread(target=commit)
    try:
        t.start()
        wait_until(
            lambda: scalar(oc, "SELECT query FROM pg_stat_activity WHERE pid = %s", pid) == "COMMIT",
            "the COMMIT to start",
        )
        oc.execute("SELECT pg_terminate_backend(%s)", (pid,))
        t.join(timeout=60)
        assert not t.is_alive(), "terminate was not answered during the lock wait"
    finally:
        lock.close()
    assert result["outcome"] != "committed"
    assert scalar(oc, f"SELECT count(*) FROM {schema}.person WHERE slug = 'waiting'") == 0
    assert scalar(oc, "SELECT count(*) FROM omnigraph_log(%s)", server) == before
    oc.execute(f"INSERT INTO {schema}.person (slug, name, status) VALUES ('next', 'N', 'active')")
    assert scalar(oc, "SELECT count(*) FROM omnigraph_log(%s)", server) == before + 1


def test_a_cancelled_load_is_all_or_nothing_every_time(graph):
    """statement_timeout hits a load at a different point each round (staging,
    validation, the lock wait or the write): the rows of a round are either
    all published, with one commit, or none."""
    server, schema, connect = graph
    conn = connect()
    cur = conn.cursor()
    for round_ in range(12):
        rows = "\n".join(person_line(f"r{round_}-{i}") for i in range(3000))
        commits = scalar(cur, "SELECT count(*) FROM omnigraph_log(%s)", server)
        cur.execute(f"SET statement_timeout = '{5 + 40 * round_}ms'")
        was_cancelled = False
        try:
            cur.execute("SELECT omnigraph_load(%s, 'main', %s)", (server, rows))
        except errors.QueryCanceled:
            was_cancelled = True
        cur.execute("RESET statement_timeout")
        landed = scalar(cur, f"SELECT count(*) FROM {schema}.person WHERE slug LIKE %s", f"r{round_}-%")
        # Reported cancelled: nothing published. Reported done: all of it.
        assert landed == (0 if was_cancelled else 3000), (round_, was_cancelled, landed)
        after = scalar(cur, "SELECT count(*) FROM omnigraph_log(%s)", server)
        assert after == commits + (1 if landed else 0)
        assert scalar(cur, "SELECT count(*) FROM omnigraph_recover(%s)", server) == 0
    # Which rounds were cancelled depends on the machine's speed; the rule
    # above holds for each either way, so there is nothing to count here.
    # The graph takes writes after all of it.
    cur.execute(f"INSERT INTO {schema}.person (slug, name, status) VALUES ('end', 'E', 'active')")
    assert scalar(cur, f"SELECT count(*) FROM {schema}.person WHERE slug = 'end'") == 1


def test_a_torn_newest_manifest_does_not_make_the_branch_unreadable(graph):
    server, schema, connect = graph
    cur = connect().cursor()
    root = graph_dir(cur, server)
    people = scalar(cur, f"SELECT count(*) FROM {schema}.person")
    cur.execute(f"INSERT INTO {schema}.person (slug, name, status) VALUES ('torn', 'T', 'active')")
    branch_dir = os.path.join(root, "_graph", "branches", "main")
    newest = max(f for f in os.listdir(branch_dir) if re.fullmatch(r"\d{20}\.json", f))
    path = os.path.join(branch_dir, newest)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 3])
    fresh = connect().cursor()  # a new backend: nothing cached
    assert scalar(fresh, f"SELECT count(*) FROM {schema}.person") == people
    fresh.execute(f"INSERT INTO {schema}.person (slug, name, status) VALUES ('after', 'A', 'active')")
    assert scalar(fresh, f"SELECT count(*) FROM {schema}.person") == people + 1


def test_spill_files_count_against_temp_file_limit(graph):
    server, schema, connect = graph
    conn = connect(autocommit=False)
    cur = conn.cursor()
    before = scalar(cur, f"SELECT count(*) FROM {schema}.person")
    # About 4 MB of names that do not compress below 2 MB (hex digests),
    # spilled in 256 kB steps.
    insert = f"""INSERT INTO {schema}.person (slug, name, status)
                 SELECT 'limit' || i,
                        (SELECT string_agg(md5(i::text || '-' || j::text), '') FROM generate_series(1, 16) j),
                        'active'
                 FROM generate_series(1, 8000) i"""
    cur.execute("SET omnigraph.staging_memory = '256kB'")
    cur.execute("SET temp_file_limit = '1MB'")
    with pytest.raises(errors.ConfigurationLimitExceeded, match="temp_file_limit"):
        cur.execute(insert)
    conn.rollback()
    assert scalar(cur, f"SELECT count(*) FROM {schema}.person") == before
    # Within the limit the same spill works.
    cur.execute("SET omnigraph.staging_memory = '256kB'")
    cur.execute("SET temp_file_limit = '1GB'")
    cur.execute(insert)
    conn.commit()
    assert scalar(cur, f"SELECT count(*) FROM {schema}.person") == before + 8000


def test_lock_timeout_set_after_first_use_applies_to_branch_operations(graph):
    server, schema, connect = graph
    cur = connect().cursor()
    root = graph_dir(cur, server)
    cur.execute("SELECT count(*) FROM omnigraph_branch_list(%s)", (server,))  # the graph is open now
    cur.execute("SELECT omnigraph_branch_create(%s, 'locked')", (server,))
    branch_id = None
    for name in os.listdir(os.path.join(root, "_graph", "refs")):
        if name == "locked.json":
            branch_id = json.load(open(os.path.join(root, "_graph", "refs", name)))["id"]
    lock = hold_branch_lock(root, branch_id)
    try:
        cur.execute("SET omnigraph.lock_timeout = '100ms'")
        with pytest.raises(errors.LockNotAvailable):
            cur.execute("SELECT omnigraph_branch_delete(%s, 'locked')", (server,))
    finally:
        lock.close()
    cur.execute("SELECT omnigraph_branch_delete(%s, 'locked')", (server,))
    assert scalar(cur, "SELECT count(*) FROM omnigraph_branch_list(%s) WHERE name = 'locked'", server) == 0


def test_a_database_that_is_not_utf8_is_refused_clearly(database, tmp_path):
    from conftest import connect as raw_connect

    admin = raw_connect()
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS omnigraph_latin1")
        cur.execute(
            "CREATE DATABASE omnigraph_latin1 TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'"
        )
    conn = raw_connect("omnigraph_latin1")
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION omnigraph_fdw")
        cur.execute(
            "CREATE SERVER latin FOREIGN DATA WRAPPER omnigraph OPTIONS (uri %s)",
            (os.path.join(GRAPHS, f"latin_{uuid.uuid4().hex[:8]}"),),
        )
        with pytest.raises(errors.FeatureNotSupported, match="encoding UTF8; this one is LATIN1"):
            cur.execute("SELECT omnigraph_create_graph('latin', 'node A { x: String }')")
    conn.close()
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE omnigraph_latin1")
