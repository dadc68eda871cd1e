//! `QuerySession` (what `omnigraph sql` runs): writes, transactions that
//! read their own writes, conflicts between sessions, errors.

use omnigraph_engine::{Graph, ReadRef};
use omnigraph_sql::query::{Outcome, QueryError, QuerySession};

const SCHEMA: &str = include_str!("../../examples/social/schema.pg");
const DATA: &str = include_str!("../../examples/social/data.ndjson");

async fn graph(dir: &tempfile::TempDir) -> Graph {
    let uri = dir.path().join("g").to_string_lossy().into_owned();
    let g = Graph::create(&uri, SCHEMA, "t").await.unwrap();
    g.load("main", DATA, omnigraph_engine::LoadMode::Append, "t", "")
        .await
        .unwrap();
    g
}

async fn session(g: &Graph) -> QuerySession {
    QuerySession::new(g.clone(), ReadRef::main(), "tester")
        .await
        .unwrap()
}

/// The rows of the last statement of `sql`, each as its values' display.
async fn rows(s: &mut QuerySession, sql: &str) -> Vec<Vec<String>> {
    let out = s.run(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let Some(Outcome::Rows { batches, .. }) = out.into_iter().last() else {
        panic!("{sql} returned no rows");
    };
    let mut all = Vec::new();
    for b in batches {
        let fmt = omnigraph_engine::deps::lance::deps::datafusion::arrow::util::display::FormatOptions::default().with_null("NULL");
        let cols: Vec<_> = b
            .columns()
            .iter()
            .map(|c| {
                omnigraph_engine::deps::lance::deps::datafusion::arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &fmt).unwrap()
            })
            .collect();
        for r in 0..b.num_rows() {
            all.push(cols.iter().map(|c| c.value(r).to_string()).collect());
        }
    }
    all
}

/// The graph's branches, sorted.
async fn branch_names(g: &Graph) -> Vec<String> {
    let mut names: Vec<String> = g
        .branch_list()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    names.sort();
    names
}

fn tags(out: Vec<Outcome>) -> Vec<String> {
    out.into_iter()
        .filter_map(|o| match o {
            Outcome::Tag(t) => Some(t.tag),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn autocommit_writes_are_one_commit_each() {
    let dir = tempfile::tempdir().unwrap();
    let g = graph(&dir).await;
    let mut s = session(&g).await;
    let before = g.log("main", 100).await.unwrap().len();
    let out = s
        .run(
            "INSERT INTO person (slug, name, status, age) VALUES ('eve', 'Eve', 'active', 41), ('fay', 'Fay', 'retired', NULL);
             INSERT INTO knows (src, dst, since) VALUES ('eve', 'fay', '2024-02-29');
             UPDATE person SET age = age + 1, status = 'retired' WHERE id IN ('eve', 'bob');
             DELETE FROM person WHERE id = 'alice'",
        )
        .await
        .unwrap();
    assert_eq!(
        tags(out),
        ["INSERT 0 2", "INSERT 0 1", "UPDATE 2", "DELETE 1"]
    );
    let log = g.log("main", 100).await.unwrap();
    assert_eq!(log.len(), before + 4);
    assert_eq!(log[0].actor, "tester");
    assert_eq!(
        rows(&mut s, "SELECT id, age, status FROM person ORDER BY id").await,
        [
            ["bob", "26", "retired"],
            ["charlie", "35", "active"],
            ["diana", "NULL", "retired"],
            ["eve", "42", "retired"],
            ["fay", "NULL", "retired"],
        ]
    );
    // A key's node got its id from the key; the edge a ULID; deleting
    // alice deleted her edges.
    assert_eq!(
        rows(
            &mut s,
            "SELECT src, dst, since FROM knows ORDER BY src, dst"
        )
        .await,
        [["bob", "diana", "NULL"], ["eve", "fay", "2024-02-29"]]
    );
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM works_at WHERE src = 'alice'").await,
        [["0"]]
    );
    // The engine's view agrees.
    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    assert!(
        snap.read_where("Person", Some("slug = 'eve'"))
            .await
            .unwrap()
            .len()
            == 1
    );
}

#[tokio::test]
async fn a_transaction_reads_its_own_writes_and_commits_once() {
    let dir = tempfile::tempdir().unwrap();
    let g = graph(&dir).await;
    let mut s = session(&g).await;
    let before = g.log("main", 100).await.unwrap().len();
    s.run("SET omnigraph.commit_message = 'reorg'; BEGIN")
        .await
        .unwrap();
    assert!(s.in_transaction());
    s.run(
        "INSERT INTO person (slug, name, status) VALUES ('gus', 'Gus', 'active');
         UPDATE person SET age = 99 WHERE id IN ('gus', 'bob');
         DELETE FROM person WHERE id = 'charlie'",
    )
    .await
    .unwrap();
    // Its own rows: inserted, updated (in memory and committed ones), deleted;
    // filters and limits over them.
    assert_eq!(
        rows(
            &mut s,
            "SELECT id, age FROM person WHERE age > 40 ORDER BY id"
        )
        .await,
        [["bob", "99"], ["gus", "99"]]
    );
    assert_eq!(rows(&mut s, "SELECT count(*) FROM person").await, [["4"]]);
    assert_eq!(
        rows(&mut s, "SELECT id FROM person WHERE id = 'charlie'").await,
        Vec::<Vec<String>>::new()
    );
    assert_eq!(
        rows(&mut s, "SELECT id FROM person ORDER BY id LIMIT 2").await,
        [["alice"], ["bob"]]
    );
    // Another session sees none of it.
    let mut other = session(&g).await;
    assert_eq!(
        rows(&mut other, "SELECT count(*) FROM person").await,
        [["4"]]
    );
    assert_eq!(
        rows(&mut other, "SELECT age FROM person WHERE id = 'bob'").await,
        [["25"]]
    );
    let out = s.run("COMMIT").await.unwrap();
    assert_eq!(tags(out), ["COMMIT"]);
    assert!(!s.in_transaction());
    let log = g.log("main", 100).await.unwrap();
    assert_eq!(log.len(), before + 1, "one commit for the transaction");
    assert_eq!(log[0].message, "reorg");
    assert_eq!(
        rows(&mut other, "SELECT id, age FROM person ORDER BY id").await,
        [
            ["alice", "30"],
            ["bob", "99"],
            ["diana", "NULL"],
            ["gus", "99"]
        ]
    );

    // ROLLBACK discards.
    s.run("BEGIN; DELETE FROM person; ROLLBACK").await.unwrap();
    assert_eq!(rows(&mut s, "SELECT count(*) FROM person").await, [["4"]]);
    assert_eq!(g.log("main", 100).await.unwrap().len(), before + 1);
}

#[tokio::test]
async fn a_failed_statement_aborts_the_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let g = graph(&dir).await;
    let mut s = session(&g).await;
    let before = g.log("main", 100).await.unwrap().len();
    s.run("BEGIN; INSERT INTO person (slug, name, status) VALUES ('hal', 'Hal', 'active')")
        .await
        .unwrap();
    // A duplicate key fails when staged.
    let e = s
        .run("INSERT INTO person (slug, name, status) VALUES ('hal', 'Hal 2', 'active')")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("hal"), "{e}");
    let e = s.run("SELECT 1").await.unwrap_err();
    assert!(
        e.to_string().contains("current transaction is aborted"),
        "{e}"
    );
    // COMMIT of a failed transaction rolls back.
    assert_eq!(tags(s.run("COMMIT").await.unwrap()), ["ROLLBACK"]);
    assert_eq!(g.log("main", 100).await.unwrap().len(), before);
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM person WHERE id = 'hal'").await,
        [["0"]]
    );

    // Errors of single statements, by the engine's rules.
    for (sql, needle) in [
        (
            "INSERT INTO person (slug, name, status) VALUES ('bob', 'B', 'active')",
            "bob",
        ),
        (
            "INSERT INTO person (slug, name) VALUES ('ivy', 'Ivy')",
            "status",
        ),
        (
            "INSERT INTO person (slug, name, status) VALUES ('jo', 'Jo', 'asleep')",
            "asleep",
        ),
        (
            "INSERT INTO knows (src, dst) VALUES ('alice', 'nobody')",
            "nobody",
        ),
        ("UPDATE person SET slug = 'robert' WHERE id = 'bob'", "@key"),
        (
            "UPDATE company SET founded = 1200 WHERE id = 'acme'",
            "founded",
        ),
        ("CREATE TABLE t AS SELECT 1", "not supported"),
    ] {
        let e = s.run(sql).await.unwrap_err();
        assert!(e.to_string().contains(needle), "{sql}: {e}");
    }
    assert_eq!(g.log("main", 100).await.unwrap().len(), before);
}

#[tokio::test]
async fn concurrent_sessions_conflict_instead_of_losing_an_update() {
    let dir = tempfile::tempdir().unwrap();
    let g = graph(&dir).await;
    let mut a = session(&g).await;
    let mut b = session(&g).await;
    a.run("BEGIN; UPDATE person SET age = age + 1 WHERE id = 'bob'")
        .await
        .unwrap();
    b.run("UPDATE person SET age = age + 10 WHERE id = 'bob'")
        .await
        .unwrap();
    let e = a.run("COMMIT").await.unwrap_err();
    assert!(
        matches!(
            &e,
            QueryError::Engine(omnigraph_engine::Error::Conflict { .. })
        ),
        "{e}"
    );
    assert!(!a.in_transaction());
    assert_eq!(
        rows(&mut a, "SELECT age FROM person WHERE id = 'bob'").await,
        [["35"]]
    );
    // Disjoint rows both land.
    a.run("BEGIN; UPDATE person SET age = 1 WHERE id = 'alice'")
        .await
        .unwrap();
    b.run("UPDATE person SET age = 2 WHERE id = 'charlie'")
        .await
        .unwrap();
    a.run("COMMIT").await.unwrap();
    assert_eq!(
        rows(
            &mut b,
            "SELECT id, age FROM person WHERE id IN ('alice', 'charlie') ORDER BY id"
        )
        .await,
        [["alice", "1"], ["charlie", "2"]]
    );
}

#[tokio::test]
async fn a_commit_is_read_only_and_branches_are_written_where_read() {
    let dir = tempfile::tempdir().unwrap();
    let g = graph(&dir).await;
    let head = g
        .snapshot(&ReadRef::main())
        .await
        .unwrap()
        .commit()
        .id
        .clone();
    g.branch_create("feature", &ReadRef::main()).await.unwrap();
    let mut s = session(&g).await;
    s.run(&format!("SET omnigraph.commit = '{head}'"))
        .await
        .unwrap();
    let e = s.run("DELETE FROM person").await.unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    let e = s.run("BEGIN").await.unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    s.run("SET omnigraph.branch = 'feature'; DELETE FROM person WHERE id = 'bob'")
        .await
        .unwrap();
    assert_eq!(rows(&mut s, "SELECT count(*) FROM person").await, [["3"]]);
    let mut main = session(&g).await;
    assert_eq!(
        rows(&mut main, "SELECT count(*) FROM person").await,
        [["4"]]
    );
    assert_eq!(g.log("feature", 1).await.unwrap()[0].branch, "feature");
    // No switching branch inside a transaction.
    s.run("BEGIN").await.unwrap();
    let e = s.run("SET omnigraph.branch = 'main'").await.unwrap_err();
    assert!(e.to_string().contains("COMMIT or ROLLBACK first"), "{e}");
}

#[tokio::test]
async fn a_large_transaction_spills_and_still_reads_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let g = graph(&dir).await;
    let mut s = session(&g).await;
    s.run("SET omnigraph.staging_memory = '256kB'; BEGIN")
        .await
        .unwrap();
    s.run(
        "INSERT INTO person (slug, name, status, age)
         SELECT 'p' || CAST(value AS VARCHAR), 'P', 'active', CAST(value % 90 AS INT) FROM generate_series(1, 20000)",
    )
    .await
    .unwrap();
    s.run("UPDATE person SET age = 0 WHERE id = 'alice'")
        .await
        .unwrap();
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM person").await,
        [["20004"]]
    );
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM person WHERE age = 89").await,
        [["222"]]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT id, age FROM person WHERE id IN ('p19999', 'alice') ORDER BY id"
        )
        .await,
        [["alice", "0"], ["p19999", "19"]]
    );
    s.run("COMMIT").await.unwrap();
    let mut other = session(&g).await;
    assert_eq!(
        rows(&mut other, "SELECT count(*) FROM person").await,
        [["20004"]]
    );
    // Rows staged by column are checked as rows are: a key the branch
    // holds fails the statement, which commits nothing.
    let e = s
        .run(
            "INSERT INTO person (slug, name, status)
             SELECT 'q' || CAST(value AS VARCHAR), 'Q', 'active' FROM generate_series(1, 3000)
             UNION ALL SELECT 'p7', 'Q', 'active'",
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("'p7' already exists"), "{e}");
    assert_eq!(
        rows(&mut other, "SELECT count(*) FROM person").await,
        [["20004"]]
    );
    let e = s
        .run("SET omnigraph.staging_memory = '1 parsec'")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("invalid unit"), "{e}");
}

#[tokio::test]
async fn identity_is_not_updatable_and_no_op_updates_commit_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let g = graph(&dir).await;
    let mut s = session(&g).await;
    let before = g.log("main", 100).await.unwrap().len();
    for sql in [
        "UPDATE person SET id = 'bob', age = 1 WHERE id = 'alice'",
        "UPDATE person SET slug = 'al' WHERE id = 'alice'",
        "UPDATE knows SET src = 'diana' WHERE src = 'alice'",
    ] {
        let e = s.run(sql).await.unwrap_err();
        assert!(
            e.to_string().contains("identity never changes"),
            "{sql}: {e}"
        );
    }
    assert_eq!(
        rows(
            &mut s,
            "SELECT id, age FROM person WHERE id IN ('alice', 'bob') ORDER BY id"
        )
        .await,
        [["alice", "30"], ["bob", "25"]]
    );
    // `SET age = age` touches nothing: no commit.
    let out = s
        .run("UPDATE person SET age = age WHERE id = 'alice'")
        .await
        .unwrap();
    assert_eq!(tags(out), ["UPDATE 1"]);
    assert_eq!(g.log("main", 100).await.unwrap().len(), before);
    // An edge without an endpoint fails at once, naming the column.
    let e = s
        .run("INSERT INTO knows (src, dst) VALUES (NULL, 'bob')")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("\"src\""), "{e}");
}

#[tokio::test]
async fn deleting_a_node_in_a_transaction_hides_its_edges_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let g = graph(&dir).await;
    let mut s = session(&g).await;
    s.run("BEGIN").await.unwrap();
    let out = s
        .run("DELETE FROM person WHERE id = 'alice'")
        .await
        .unwrap();
    assert_eq!(tags(out), ["DELETE 1"]);
    assert_eq!(
        rows(&mut s, "SELECT src, dst FROM knows ORDER BY src, dst").await,
        [["bob", "diana"]]
    );
    assert_eq!(rows(&mut s, "SELECT count(*) FROM works_at").await, [["1"]]);
    // A syntax error aborts the transaction too.
    assert!(s.run("SELEC 1").await.is_err());
    let e = s.run("SELECT 1").await.unwrap_err();
    assert!(e.to_string().contains("aborted"), "{e}");
    assert_eq!(tags(s.run("ROLLBACK").await.unwrap()), ["ROLLBACK"]);
    assert_eq!(rows(&mut s, "SELECT count(*) FROM knows").await, [["3"]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_changing_functions_run_when_executed_and_join_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let g = graph(&dir).await;
    let mut s = session(&g).await;
    // A scalar function, as migrations call it in the extension.
    let head = rows(
        &mut s,
        "SELECT omnigraph_branch_create('social', 'feature')",
    )
    .await;
    assert_eq!(head[0][0], g.log("main", 1).await.unwrap()[0].id);
    s.run("SET omnigraph.branch = 'feature'; UPDATE person SET age = 77 WHERE id = 'bob'; SET omnigraph.branch = 'main'")
        .await
        .unwrap();
    // main moves on too: a three-way merge, not a fast-forward.
    s.run("UPDATE person SET age = 31 WHERE id = 'alice'")
        .await
        .unwrap();

    // Planning alone (EXPLAIN) merges nothing.
    let before = g.log("main", 100).await.unwrap().len();
    s.run("EXPLAIN SELECT * FROM omnigraph_branch_merge('social', 'feature')")
        .await
        .unwrap();
    assert_eq!(g.log("main", 100).await.unwrap().len(), before);

    // Inside a transaction the calls join it, as in the extension: the
    // merge is read back before COMMIT, a new branch appears only at
    // COMMIT, and ROLLBACK leaves neither.
    s.run("BEGIN").await.unwrap();
    let staged = rows(
        &mut s,
        "SELECT * FROM omnigraph_branch_merge('social', 'feature')",
    )
    .await;
    assert_eq!(staged[0][0], "merged");
    assert_eq!(
        rows(&mut s, "SELECT age FROM person WHERE id = 'bob'").await,
        [["77"]]
    );
    rows(&mut s, "SELECT omnigraph_branch_create('social', 'tmp')").await;
    assert_eq!(g.branch_list().await.unwrap().len(), 2);
    // Other forms of the call are refused rather than published early.
    let e = s
        .run("SELECT status FROM omnigraph_branch_merge('social', 'feature')")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("inside BEGIN"), "{e}");
    s.run("ROLLBACK").await.unwrap();
    assert_eq!(g.log("main", 100).await.unwrap().len(), before);
    assert_eq!(g.branch_list().await.unwrap().len(), 2);
    assert_eq!(
        rows(&mut s, "SELECT age FROM person WHERE id = 'bob'").await,
        [["25"]]
    );
    s.run("BEGIN; SELECT omnigraph_branch_create('social', 'tmp'); SELECT omnigraph_branch_delete('social', 'tmp'); SELECT omnigraph_branch_create('social', 'kept'); COMMIT")
        .await
        .unwrap();
    assert_eq!(branch_names(&g).await, ["feature", "kept", "main"]);
    // Deleting twice in one transaction: the second finds no branch (and
    // does not wait for the lock the first holds).
    let e = s
        .run("BEGIN; SELECT omnigraph_branch_delete('social', 'kept'); SELECT omnigraph_branch_delete('social', 'kept')")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    s.run("ROLLBACK").await.unwrap();
    s.run("SELECT omnigraph_branch_delete('social', 'kept')")
        .await
        .unwrap();

    // Executed: one merge commit, the extension's columns.
    let merged = rows(
        &mut s,
        "SELECT status, inserted, updated, deleted, conflicts FROM omnigraph_branch_merge('social', 'feature', 'main', 'fail', 'from sql')",
    )
    .await;
    assert_eq!(merged, [["merged", "0", "1", "0", "0"]]);
    let log = g.log("main", 1).await.unwrap();
    assert_eq!(
        (log[0].message.as_str(), log[0].actor.as_str()),
        ("from sql", "tester")
    );
    assert_eq!(
        rows(&mut s, "SELECT age FROM person WHERE id = 'bob'").await,
        [["77"]]
    );

    // optimize, a dry-run cleanup with an interval, recover, delete.
    let opt = rows(
        &mut s,
        "SELECT type_name, rows FROM omnigraph_optimize('social') ORDER BY type_name",
    )
    .await;
    assert_eq!(opt.len(), 4);
    let kept = rows(
        &mut s,
        "SELECT count(*) FROM omnigraph_cleanup('social', interval '0 seconds', true) WHERE action = 'keep'",
    )
    .await;
    assert_ne!(kept[0][0], "0");
    assert!(
        rows(&mut s, "SELECT * FROM omnigraph_recover('social')")
            .await
            .is_empty()
    );
    rows(
        &mut s,
        "SELECT omnigraph_branch_delete('social', 'feature')",
    )
    .await;
    assert_eq!(branch_names(&g).await, ["main"]);
    let e = s
        .run("SELECT * FROM omnigraph_branch_merge('social', 'main')")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("into itself"), "{e}");
}

#[tokio::test]
async fn savepoints_undo_exactly_the_later_changes() {
    let dir = tempfile::tempdir().unwrap();
    let g = graph(&dir).await;
    let mut s = session(&g).await;
    let e = s.run("SAVEPOINT a").await.unwrap_err();
    assert!(
        matches!(
            e,
            QueryError::State {
                sqlstate: "25P01",
                ..
            }
        ),
        "{e}"
    );
    s.run(
        "BEGIN;
         UPDATE person SET age = 1 WHERE id = 'alice';
         SAVEPOINT a;
         UPDATE person SET age = 2 WHERE id = 'alice';
         INSERT INTO person (slug, name, status) VALUES ('eve', 'Eve', 'active');
         SAVEPOINT b;
         DELETE FROM person WHERE id = 'bob';
         ROLLBACK TO SAVEPOINT a",
    )
    .await
    .unwrap();
    assert_eq!(
        rows(
            &mut s,
            "SELECT id, age FROM person WHERE id IN ('alice', 'bob', 'eve') ORDER BY id"
        )
        .await,
        [["alice", "1"], ["bob", "25"]]
    );
    // A failed statement: only ROLLBACK TO gets the transaction going again.
    assert!(s.run("SELECT * FROM nope").await.is_err());
    assert!(matches!(
        s.run("SELECT 1").await.unwrap_err(),
        QueryError::Aborted
    ));
    s.run("ROLLBACK TO a; UPDATE person SET age = 3 WHERE id = 'charlie'; SAVEPOINT c; RELEASE a")
        .await
        .unwrap();
    let e = s.run("ROLLBACK TO c").await.unwrap_err();
    assert!(
        matches!(
            e,
            QueryError::State {
                sqlstate: "3B001",
                ..
            }
        ),
        "{e}"
    );
    s.run("ROLLBACK").await.unwrap();
    s.run("BEGIN; UPDATE person SET age = 1 WHERE id = 'alice'; SAVEPOINT a; UPDATE person SET age = 3 WHERE id = 'charlie'; RELEASE SAVEPOINT a; COMMIT")
        .await
        .unwrap();
    assert_eq!(
        rows(
            &mut s,
            "SELECT id, age FROM person WHERE id IN ('alice', 'charlie') ORDER BY id"
        )
        .await,
        [["alice", "1"], ["charlie", "3"]]
    );
}
