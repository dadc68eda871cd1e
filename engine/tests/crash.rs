//! Crash safety: failpoints between the table writes and the publish, and a
//! process killed there. Failpoints are process-global, so these tests live
//! in their own binary and take a lock around each configuration.
#![cfg(feature = "failpoints")]
// The registry lock is held across awaits on purpose: it serialises whole
// tests, each on its own runtime, so nothing else waits on it.
#![allow(clippy::await_holding_lock)]

mod common;

use std::io::BufReader;

use common::*;
use omnigraph_engine::failpoints::names;
use omnigraph_engine::{Error, Graph, LoadMode, MergeStatus, OnConflict, ReadRef, RecoveryState};

/// Serialises tests that configure the process-global failpoint registry.
static FAILPOINTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

async fn orphan_rows_are_gone(g: &Graph) {
    // The next commit succeeds without manual repair and does not carry
    // the interrupted commit's rows.
    g.load(
        "main",
        r#"{"type": "Person", "data": {"name": "After"}}"#,
        LoadMode::Append,
        "t",
        "",
    )
    .await
    .unwrap();
    let people = ids(g, &ReadRef::main(), "Person").await;
    assert!(people.contains(&"After".to_string()));
    assert!(!people.iter().any(|p| p.starts_with("Ghost")), "{people:?}");
    assert_eq!(
        g.snapshot(&ReadRef::main())
            .await
            .unwrap()
            .count("Company")
            .await
            .unwrap(),
        2
    );
}

fn ghost_load() -> &'static str {
    r#"{"type": "Person", "data": {"name": "Ghost1"}}
{"type": "Company", "data": {"name": "GhostCo"}}
{"edge": "WorksAt", "from": "Ghost1", "to": "GhostCo"}"#
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_before_publish_leaves_nothing_visible() {
    let _guard = FAILPOINTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let before = fingerprint(&g, "main").await;
    fail::cfg(names::COMMIT_BEFORE_PUBLISH, "return").unwrap();
    let err = g
        .load("main", ghost_load(), LoadMode::Append, "t", "")
        .await
        .unwrap_err();
    fail::remove(names::COMMIT_BEFORE_PUBLISH);
    assert!(err.to_string().contains("failpoint"), "{err}");
    assert_eq!(fingerprint(&g, "main").await, before);
    orphan_rows_are_gone(&g).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_between_table_writes_and_publish_is_recovered_by_the_next_commit() {
    let _guard = FAILPOINTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let before = fingerprint(&g, "main").await;
    // A panic skips the in-process rollback, like a crash: the Lance
    // tables keep versions that no manifest publishes.
    fail::cfg(names::COMMIT_BEFORE_PUBLISH, "panic").unwrap();
    let g2 = g.clone();
    let joined = tokio::spawn(async move {
        g2.load("main", ghost_load(), LoadMode::Append, "t", "")
            .await
    })
    .await;
    fail::remove(names::COMMIT_BEFORE_PUBLISH);
    assert!(joined.is_err(), "the commit task must have panicked");
    assert_eq!(
        fingerprint(&g, "main").await,
        before,
        "readers see nothing of the interrupted commit"
    );
    let person = g
        .snapshot(&ReadRef::main())
        .await
        .unwrap()
        .dataset("Person")
        .await
        .unwrap();
    assert!(
        person.latest_version_id().await.unwrap() > person.version_id(),
        "unpublished Lance versions exist"
    );
    orphan_rows_are_gone(&g).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_rolls_back_every_table() {
    let _guard = FAILPOINTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    fail::cfg(names::COMMIT_BEFORE_PUBLISH, "panic").unwrap();
    let g2 = g.clone();
    let _ = tokio::spawn(async move {
        g2.load("main", ghost_load(), LoadMode::Append, "t", "")
            .await
    })
    .await;
    fail::remove(names::COMMIT_BEFORE_PUBLISH);
    assert!(g.recovery_log().await.unwrap().is_empty());
    // Two recoveries at once: they serialise on the branch lock, and the
    // second finds nothing left to roll back.
    let (a, b) = tokio::join!(g.recover("main", "alice"), g.recover("main", "bob"));
    let mut restored = [a.unwrap(), b.unwrap()].concat();
    restored.sort();
    assert_eq!(restored, ["Company", "Person", "WorksAt"]);
    assert!(
        g.recover("main", "test").await.unwrap().is_empty(),
        "recover is idempotent"
    );
    let log = g.recovery_log().await.unwrap();
    let mut logged: Vec<&str> = log.iter().map(|r| r.type_name.as_str()).collect();
    logged.sort();
    assert_eq!(
        logged,
        ["Company", "Person", "WorksAt"],
        "one record per table"
    );
    let head = g.snapshot(&ReadRef::main()).await.unwrap();
    for r in &log {
        assert_eq!(r.branch, "main");
        assert!(r.actor == "alice" || r.actor == "bob", "{r:?}");
        assert!(r.to_version > r.from_version, "{r:?}");
        assert!(
            r.from_version > head.table(&r.type_name).unwrap().version,
            "{r:?}"
        );
    }
    orphan_rows_are_gone(&g).await;
    assert_eq!(
        g.recovery_log().await.unwrap().len(),
        3,
        "nothing left to recover"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_recovers_first_logs_it() {
    let _guard = FAILPOINTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    fail::cfg(names::COMMIT_BEFORE_PUBLISH, "panic").unwrap();
    let g2 = g.clone();
    let _ = tokio::spawn(async move {
        g2.load("main", ghost_load(), LoadMode::Append, "t", "")
            .await
    })
    .await;
    fail::remove(names::COMMIT_BEFORE_PUBLISH);
    // A rejected operation moves nothing and leaves no recovery work.
    let before = g.recovery_status().await.unwrap();
    let dup = r#"{"type": "Person", "data": {"name": "After"}}
{"type": "Person", "data": {"name": "After"}}"#;
    assert!(
        g.load("main", dup, LoadMode::Append, "t", "")
            .await
            .is_err()
    );
    assert_eq!(g.recovery_status().await.unwrap(), before);
    assert!(g.recovery_log().await.unwrap().is_empty());
    // The next commit writes Person (and rolls back only what it writes).
    orphan_rows_are_gone(&g).await;
    let log = g.recovery_log().await.unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        (log[0].type_name.as_str(), log[0].actor.as_str()),
        ("Person", "t")
    );
    let status = g.recovery_status().await.unwrap();
    let dirty: Vec<&str> = status
        .iter()
        .filter(|s| s.state != RecoveryState::Clean)
        .map(|s| s.type_name.as_str())
        .collect();
    assert_eq!(dirty, ["Company", "WorksAt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_interrupted_before_its_ref_does_not_exist() {
    let _guard = FAILPOINTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    fail::cfg(names::BRANCH_CREATE_BEFORE_REF, "return").unwrap();
    assert!(g.branch_create("half", &ReadRef::main()).await.is_err());
    fail::remove(names::BRANCH_CREATE_BEFORE_REF);
    assert!(matches!(
        g.snapshot(&ReadRef::Branch("half".into())).await,
        Err(Error::BranchNotFound { .. })
    ));
    g.branch_create("half", &ReadRef::main()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_before_publish_leaves_the_graph_unchanged() {
    let _guard = FAILPOINTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let before = fingerprint(&g, "main").await;
    kill_at_failpoint("crash-before-publish", &g);
    assert_eq!(fingerprint(&g, "main").await, before);
    let person = g
        .snapshot(&ReadRef::main())
        .await
        .unwrap()
        .dataset("Person")
        .await
        .unwrap();
    assert!(
        person.latest_version_id().await.unwrap() > person.version_id(),
        "the child wrote Lance versions"
    );
    orphan_rows_are_gone(&g).await;
}

/// Run a child process in `role` up to its failpoint, then SIGKILL it there.
fn kill_at_failpoint(role: &str, g: &Graph) {
    let mut child = spawn_child(role, g.uri());
    let mut out = BufReader::new(child.stdout.take().unwrap());
    assert_eq!(read_word(&mut out), "AT-FAILPOINT");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A graph whose `feature` branch and `main` both changed since they forked.
async fn diverged(dir: &std::path::Path) -> Graph {
    let g = loaded_graph(dir).await;
    g.branch_create("feature", &ReadRef::main()).await.unwrap();
    g.load(
        "feature",
        r#"{"type": "Person", "data": {"name": "Merged1"}}"#,
        LoadMode::Append,
        "t",
        "",
    )
    .await
    .unwrap();
    load_person(&g, "OnMain").await;
    g
}

/// The merge of `diverged` runs and brings its row.
async fn merge_lands(g: &Graph) {
    let r = g
        .merge("feature", "main", OnConflict::Fail, None, "t")
        .await
        .unwrap();
    assert_eq!(r.status, MergeStatus::Merged);
    assert!(
        ids(g, &ReadRef::main(), "Person")
            .await
            .contains(&"Merged1".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_interrupted_before_publish_leaves_nothing() {
    let _guard = FAILPOINTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let g = diverged(dir.path()).await;
    let before = fingerprint(&g, "main").await;
    fail::cfg(names::COMMIT_BEFORE_PUBLISH, "return").unwrap();
    let err = g
        .merge("feature", "main", OnConflict::Fail, None, "t")
        .await
        .unwrap_err();
    fail::remove(names::COMMIT_BEFORE_PUBLISH);
    assert!(err.to_string().contains("failpoint"), "{err}");
    assert_eq!(fingerprint(&g, "main").await, before);
    merge_lands(&g).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_in_a_merge_before_publish_leaves_the_graph_unchanged() {
    let _guard = FAILPOINTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let g = diverged(dir.path()).await;
    let before = fingerprint(&g, "main").await;
    kill_at_failpoint("merge-crash-before-publish", &g);
    assert_eq!(fingerprint(&g, "main").await, before);
    // The next commit on main rolls back what the merge wrote, and the
    // merge can run again.
    load_person(&g, "After").await;
    let people = ids(&g, &ReadRef::main(), "Person").await;
    assert!(!people.contains(&"Merged1".to_string()), "{people:?}");
    merge_lands(&g).await;
}

/// (type, state) of every table of `main` whose state is not clean.
async fn unclean(g: &Graph) -> Vec<(String, RecoveryState)> {
    g.recovery_status()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.branch == "main" && t.state != RecoveryState::Clean)
        .map(|t| (t.type_name, t.state))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_status_shows_an_interrupted_commit_until_recovered() {
    let _guard = FAILPOINTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    assert_eq!(unclean(&g).await, vec![]);
    kill_at_failpoint("crash-before-publish", &g);
    let status = g.recovery_status().await.unwrap();
    let person = status
        .iter()
        .find(|t| t.branch == "main" && t.type_name == "Person")
        .unwrap();
    assert!(person.latest_version > person.pinned_version, "{person:?}");
    assert_eq!(
        unclean(&g).await,
        vec![
            ("Company".to_string(), RecoveryState::Interrupted),
            ("Person".to_string(), RecoveryState::Interrupted),
        ]
    );
    let mut restored = g.recover("main", "test").await.unwrap();
    restored.sort();
    assert_eq!(restored, vec!["Company".to_string(), "Person".to_string()]);
    assert_eq!(
        unclean(&g).await,
        vec![],
        "recover leaves every table clean"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_in_progress_is_not_reported_as_interrupted() {
    // Configures no failpoint, but commits: another test's must not fire here.
    let _guard = FAILPOINTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let prepared = staged_person(&g, "Pending")
        .await
        .prepare()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        unclean(&g).await,
        vec![("Person".to_string(), RecoveryState::InProgress)]
    );
    // Recovery, optimize and cleanup wait for the branch lock the live
    // writer holds; none of them rolls back what it is about to publish.
    g.set_lock_timeout(std::time::Duration::from_millis(100));
    assert!(matches!(
        g.recover("main", "op").await,
        Err(Error::LockTimeout { .. })
    ));
    assert!(matches!(
        g.optimize("main", "op").await,
        Err(Error::LockTimeout { .. })
    ));
    assert!(matches!(
        g.cleanup(std::time::Duration::ZERO, false, "op").await,
        Err(Error::LockTimeout { .. })
    ));
    assert!(g.recovery_log().await.unwrap().is_empty());
    let summary = prepared.publish().await.unwrap();
    assert!(
        ids(&g, &ReadRef::main(), "Person")
            .await
            .contains(&"Pending".to_string())
    );
    assert_eq!(summary.tables["Person"].inserted, 1);
    assert_eq!(unclean(&g).await, vec![]);
}

/// Entry point of the child processes the multi-process tests spawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the multi-process tests as a child process"]
async fn child_process_entry() {
    common::run_child().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_recovers_and_reclaims_what_failed_writes_left() {
    let _guard = FAILPOINTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    fail::cfg(names::COMMIT_BEFORE_PUBLISH, "panic").unwrap();
    let g2 = g.clone();
    let _ = tokio::spawn(async move {
        g2.load("main", ghost_load(), LoadMode::Append, "t", "")
            .await
    })
    .await;
    fail::remove(names::COMMIT_BEFORE_PUBLISH);
    // What a writer killed between writing a data file and committing it
    // leaves: a file no version refers to.
    let stray = dir.path().join("g/nodes/Person/data/killed-writer.lance");
    std::fs::write(&stray, vec![7u8; 4096]).unwrap();
    let before = fingerprint(&g, "main").await;

    let dry = g
        .cleanup(std::time::Duration::ZERO, true, "op")
        .await
        .unwrap();
    assert!(stray.exists(), "a dry run removes nothing");
    assert!(g.recovery_log().await.unwrap().is_empty(), "nor recovers");
    assert!(dry.iter().any(|r| r.version.is_none() && r.bytes == 4096));

    let rows = g
        .cleanup(std::time::Duration::ZERO, false, "op")
        .await
        .unwrap();
    assert!(!stray.exists());
    let orphan: Vec<_> = rows.iter().filter(|r| r.version.is_none()).collect();
    assert_eq!(orphan.len(), 1, "{rows:?}");
    assert_eq!(orphan[0].type_name.as_deref(), Some("Person"));
    assert_eq!(orphan[0].bytes, 4096);
    assert!(orphan[0].reason.contains("no version refers to"));
    // The interrupted commit was rolled back first (and logged), and its
    // versions reclaimed.
    let log = g.recovery_log().await.unwrap();
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|r| r.actor == "op"));
    assert!(
        g.recovery_status()
            .await
            .unwrap()
            .iter()
            .all(|s| s.state == RecoveryState::Clean)
    );
    assert!(rows.iter().any(|r| r.reason.contains("no commit pins it")));
    assert_eq!(fingerprint(&g, "main").await, before);
    orphan_rows_are_gone(&g).await;
}

/// A commit that fails after writing its first table, having written the
/// files of both before the branch lock: the files of the table it did not
/// reach are removed, and the graph is as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_failing_between_tables_removes_what_it_staged_for_the_rest() {
    let _guard = FAILPOINTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let before = fingerprint(&g, "main").await;
    let person_files = || table_files(&dir.path().join("g/nodes/Person"));
    let files = person_files();
    assert!(!files.is_empty());
    // Knows is written before Person (tables are written in name order).
    let mut txn = g.begin("main", "t").await.unwrap();
    txn.insert_edge("Knows", "Charlie", "Diana", Default::default())
        .await
        .unwrap();
    txn.update(
        "Person",
        "Bob",
        props(&[("age", omnigraph_engine::Value::Int(2))]),
    )
    .await
    .unwrap();
    fail::cfg(names::COMMIT_BETWEEN_TABLES, "return").unwrap();
    let err = Box::pin(txn.commit()).await.unwrap_err();
    fail::remove(names::COMMIT_BETWEEN_TABLES);
    assert!(err.to_string().contains("failpoint"), "{err}");
    assert_eq!(person_files(), files);
    assert_eq!(fingerprint(&g, "main").await, before);
}

/// NDJSON of `n` people (each line with its own set of properties) and a
/// chain of `Knows` edges between them.
fn people(n: usize) -> String {
    let mut lines: Vec<String> = (0..n)
        .map(|i| match i % 3 {
            0 => format!(r#"{{"type": "Person", "data": {{"slug": "p{i}", "name": "P {i}", "status": "active"}}}}"#),
            1 => format!(r#"{{"type": "Person", "data": {{"age": {i}, "slug": "p{i}", "name": "P {i}", "status": "retired", "tags": ["a"]}}}}"#),
            _ => format!(r#"{{"type": "Person", "data": {{"slug": "p{i}", "email": "p{i}@x.org", "name": "P {i}", "status": "on-leave"}}}}"#),
        })
        .collect();
    lines.extend(
        (1..n).map(|i| format!(r#"{{"edge": "Knows", "from": "p{}", "to": "p{i}"}}"#, i - 1)),
    );
    lines.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_chunk_that_fails_is_taken_back_and_staged_line_by_line() {
    let _guard = FAILPOINTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("g").to_string_lossy().into_owned();
    let g = Graph::create(&uri, SOCIAL_SCHEMA, "t").await.unwrap();
    let ndjson = people(2_000);
    // A load over the staging budget goes by column: the failpoint after a
    // staged chunk is reached.
    fail::cfg(names::LOAD_CHUNK_STAGED, "panic").unwrap();
    let (g2, text) = (g.clone(), ndjson.clone());
    let reached = tokio::spawn(async move {
        let mut txn = g2.begin("main", "t").await.unwrap();
        txn.set_staging_memory(10_000);
        txn.load_ndjson(&text, LoadMode::Append).await
    })
    .await;
    fail::remove(names::LOAD_CHUNK_STAGED);
    assert!(
        reached.is_err_and(|e| e.is_panic()),
        "the load went by column"
    );
    // Well-formed lines are staged by column at the first try.
    fail::cfg(names::LOAD_CHUNK_RETRIED, "return").unwrap();
    let mut txn = g.begin("main", "t").await.unwrap();
    txn.set_staging_memory(10_000);
    let loaded = txn.load_ndjson(&ndjson, LoadMode::Append).await;
    fail::remove(names::LOAD_CHUNK_RETRIED);
    assert_eq!(loaded.unwrap(), 3_999, "no chunk was taken back");
    drop(txn);
    // A chunk stopped by the spill limit is not staged again line by line:
    // the limit's error is the load's.
    fail::cfg(names::LOAD_CHUNK_RETRIED, "return").unwrap();
    let mut txn = g.begin("main", "t").await.unwrap();
    txn.set_staging_memory(10_000);
    txn.set_spill_limit(Some(1));
    let loaded = txn.load_ndjson(&ndjson, LoadMode::Append).await;
    fail::remove(names::LOAD_CHUNK_RETRIED);
    assert!(matches!(loaded, Err(Error::ResourceLimit(_))), "{loaded:?}");
    drop(txn);
    // A chunk that fails after it was staged is taken back whole: its lines
    // staged one by one do not collide with its own rows.
    fail::cfg(names::LOAD_CHUNK_STAGED, "return").unwrap();
    let mut txn = g.begin("main", "t").await.unwrap();
    txn.set_staging_memory(10_000);
    let loaded = txn.load_ndjson(&ndjson, LoadMode::Append).await;
    fail::remove(names::LOAD_CHUNK_STAGED);
    assert_eq!(loaded.unwrap(), 3_999);
    let summary = txn.commit().await.unwrap().unwrap();
    assert_eq!(summary.tables["Person"].inserted, 2_000);
    assert_eq!(summary.tables["Knows"].inserted, 1_999);
    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    assert_eq!(snap.count("Person").await.unwrap(), 2_000);
    assert_eq!(snap.count("Knows").await.unwrap(), 1_999);
}
