//! Write transactions: savepoints, the transaction's own view, and spills.

mod common;

use std::collections::BTreeMap;

use common::{fingerprint, loaded_graph, props, s, table_files};
use omnigraph_engine::{Error, ReadRef, Value, ViolationKind};

async fn names(g: &omnigraph_engine::Graph) -> Vec<String> {
    common::ids(g, &ReadRef::main(), "Person").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_to_savepoint_discards_exactly_the_later_changes() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let mut txn = g.begin("main", "t").await.unwrap();
    txn.insert_node("Person", props(&[("name", s("Before"))]))
        .await
        .unwrap();
    let outer = txn.savepoint();
    txn.insert_node("Person", props(&[("name", s("Inner"))]))
        .await
        .unwrap();
    txn.update("Person", "Before", props(&[("age", Value::Int(5))]))
        .await
        .unwrap();
    let inner = txn.savepoint();
    txn.delete("Person", "Alice").await.unwrap();
    txn.overwrite("Company").unwrap();
    txn.rollback_to(inner).await.unwrap();
    // The inner savepoint undid the delete and the overwrite only.
    let view = txn
        .view("Person", txn.base())
        .await
        .unwrap()
        .expect("Person was touched");
    assert!(!view.hidden.contains("Alice"));
    assert!(!txn.touches("Company"));
    txn.rollback_to(outer).await.unwrap();
    let summary = txn.commit().await.unwrap().unwrap();
    assert_eq!(summary.tables["Person"].inserted, 1);
    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    let rows = snap
        .rows_by_id("Person", &["Before", "Inner", "Alice"])
        .await
        .unwrap();
    assert_eq!(
        rows["Before"].prop("age"),
        &Value::Null,
        "update after the savepoint undone"
    );
    assert!(!rows.contains_key("Inner"));
    assert!(rows.contains_key("Alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_savepoint_keeps_changes_until_the_enclosing_one_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let before = fingerprint(&g, "main").await;
    let mut txn = g.begin("main", "t").await.unwrap();
    let outer = txn.savepoint();
    let inner = txn.savepoint();
    txn.insert_node("Person", props(&[("name", s("Kept"))]))
        .await
        .unwrap();
    txn.release(inner);
    assert!(txn.touches("Person"));
    txn.rollback_to(outer).await.unwrap();
    assert!(txn.is_empty());
    assert!(txn.commit().await.unwrap().is_none());
    assert_eq!(fingerprint(&g, "main").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_shows_inserts_updates_and_hides_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let mut txn = g.begin("main", "t").await.unwrap();
    txn.insert_node(
        "Person",
        props(&[("name", s("New")), ("age", Value::Int(1))]),
    )
    .await
    .unwrap();
    txn.update("Person", "Bob", props(&[("age", Value::Int(99))]))
        .await
        .unwrap();
    txn.delete("Person", "Alice").await.unwrap();
    let view = txn.view("Person", txn.base()).await.unwrap().unwrap();
    assert!(!view.hide_all);
    let hidden: Vec<&str> = {
        let mut v: Vec<&str> = view.hidden.iter().map(String::as_str).collect();
        v.sort();
        v
    };
    assert_eq!(hidden, ["Alice", "Bob", "New"]);
    let rows = omnigraph_engine::value::batch_to_records(
        &view.rows.unwrap(),
        omnigraph_engine::schema::TypeKind::Node,
    )
    .unwrap();
    let by_id: BTreeMap<&str, &omnigraph_engine::Record> =
        rows.iter().map(|r| (r.id.as_str(), r)).collect();
    assert_eq!(by_id.len(), 2);
    assert_eq!(by_id["Bob"].prop("age"), &Value::Int(99));
    assert_eq!(
        by_id["Bob"].prop("name"),
        &s("Bob"),
        "unchanged properties come from the snapshot"
    );
    assert_eq!(by_id["New"].prop("age"), &Value::Int(1));
    assert!(txn.view("Company", txn.base()).await.unwrap().is_none());
    // Nothing is visible to others before commit.
    assert!(!names(&g).await.contains(&"New".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_values_are_checked_when_staged() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("g").to_string_lossy().into_owned();
    let g = omnigraph_engine::Graph::create(&uri, "node Item { sku: String @key\n qty: I32 }", "t")
        .await
        .unwrap();
    let mut txn = g.begin("main", "t").await.unwrap();
    let e = txn
        .insert_node("Item", props(&[("sku", s("a"))]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Validation(v) if v.kind == ViolationKind::MissingRequired && v.property == "qty"),
        "{e}"
    );
    txn.insert_node("Item", props(&[("sku", s("a")), ("qty", Value::Int(1))]))
        .await
        .unwrap();
    let e = txn
        .update("Item", "a", props(&[("qty", Value::Null)]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Validation(v) if v.kind == ViolationKind::MissingRequired),
        "{e}"
    );
    // The failed update left the staged insert alone.
    assert_eq!(
        txn.commit().await.unwrap().unwrap().tables["Item"].inserted,
        1
    );
}

/// Whether `e` is a validation error of `kind` about `value`.
fn is_violation(e: &Error, kind: ViolationKind, value: &str) -> bool {
    matches!(e, Error::Validation(v) if v.kind == kind && v.value == value)
}

/// Commit `txn`, which must fail with a violation of `kind` about `value`.
async fn commit_refused(txn: omnigraph_engine::WriteTxn, kind: ViolationKind, value: &str) {
    let e = txn.commit().await.unwrap_err();
    assert!(is_violation(&e, kind, value), "{e}");
}

/// The test graph, opened to spill into a directory of its own (returned).
async fn graph_spilling_to(dir: &std::path::Path) -> (omnigraph_engine::Graph, std::path::PathBuf) {
    let g = loaded_graph(dir).await;
    let spill_dir = dir.join("spill");
    std::fs::create_dir_all(&spill_dir).unwrap();
    let g = omnigraph_engine::Graph::open_with(
        g.uri(),
        omnigraph_engine::GraphOptions {
            spill_dir: Some(spill_dir.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    (g, spill_dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spilled_inserts_commit_and_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (g, spill_dir) = graph_spilling_to(dir.path()).await;
    let mut txn = g.begin("main", "t").await.unwrap();
    // A budget of a few rows: memory stays near it however many are inserted.
    txn.set_staging_memory(2_000);
    for i in 0..95 {
        txn.insert_node(
            "Person",
            props(&[("name", s(&format!("S{i:03}"))), ("age", Value::Int(i))]),
        )
        .await
        .unwrap();
        assert!(
            txn.staged_bytes() < 2_000,
            "{} bytes staged",
            txn.staged_bytes()
        );
    }
    assert_eq!(
        std::fs::read_dir(&spill_dir).unwrap().count(),
        1,
        "one spill directory"
    );
    // A spilled row can still be changed, deleted, and seen.
    txn.update("Person", "S005", props(&[("age", Value::Int(500))]))
        .await
        .unwrap();
    txn.delete("Person", "S006").await.unwrap();
    let e = txn
        .insert_node("Person", props(&[("name", s("S007"))]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Validation(v) if v.kind == ViolationKind::DuplicateKey),
        "{e}"
    );
    let view = txn.view("Person", txn.base()).await.unwrap().unwrap();
    assert!(view.spill.is_some());
    // Edges to spilled nodes pass the endpoint check.
    txn.insert_edge("Knows", "S001", "S002", BTreeMap::new())
        .await
        .unwrap();
    let sp = txn.savepoint();
    for i in 95..120 {
        txn.insert_node("Person", props(&[("name", s(&format!("S{i:03}")))]))
            .await
            .unwrap();
    }
    txn.rollback_to(sp).await.unwrap();
    // A rolled-back id is free again; a spilled one still is not.
    txn.insert_node("Person", props(&[("name", s("S100"))]))
        .await
        .unwrap();
    let e = txn
        .insert_node("Person", props(&[("name", s("S090"))]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Validation(v) if v.kind == ViolationKind::DuplicateKey),
        "{e}"
    );
    let summary = txn.commit().await.unwrap().unwrap();
    assert_eq!(summary.tables["Person"].inserted, 95);
    assert_eq!(
        std::fs::read_dir(&spill_dir).unwrap().count(),
        0,
        "spill removed after commit"
    );
    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    let rows = snap
        .rows_by_id("Person", &["S005", "S006", "S094", "S095"])
        .await
        .unwrap();
    assert_eq!(rows["S005"].prop("age"), &Value::Int(500));
    assert!(!rows.contains_key("S006"));
    assert!(rows.contains_key("S094"));
    assert!(
        !rows.contains_key("S095"),
        "rows after the savepoint were rolled back"
    );
    assert_eq!(snap.count("Knows").await.unwrap(), 4);

    // A spilled key that already exists fails the commit and changes nothing.
    let before = fingerprint(&g, "main").await;
    let mut txn = g.begin("main", "t").await.unwrap();
    txn.set_staging_memory(1_000);
    for i in 0..20 {
        txn.insert_node("Person", props(&[("name", s(&format!("T{i}")))]))
            .await
            .unwrap();
    }
    txn.insert_node("Person", props(&[("name", s("S050"))]))
        .await
        .unwrap();
    for i in 20..30 {
        txn.insert_node("Person", props(&[("name", s(&format!("T{i}")))]))
            .await
            .unwrap();
    }
    let e = txn.commit().await.unwrap_err();
    assert!(is_violation(&e, ViolationKind::DuplicateKey, "S050"), "{e}");
    assert_eq!(fingerprint(&g, "main").await, before);

    // A spilled edge with a missing endpoint is refused.
    let mut txn = g.begin("main", "t").await.unwrap();
    txn.set_staging_memory(600);
    for i in 0..10 {
        let dst = if i == 7 { "Nobody" } else { "Alice" };
        txn.insert_edge("Knows", "Bob", dst, BTreeMap::new())
            .await
            .unwrap();
    }
    commit_refused(txn, ViolationKind::DanglingEdge, "Nobody").await;
    assert_eq!(fingerprint(&g, "main").await, before);
}

/// Inserting many ids for the table's size (5,000 into a table of a few
/// rows: over a sixteenth of it) checks them by reading the table's ids
/// once instead of looking them up by chunks; held in memory or spilled,
/// a key the branch holds fails the commit, one a concurrent commit
/// inserted is a conflict, and new keys land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_new_ids_are_checked_against_the_table_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let count = |g: &omnigraph_engine::Graph| {
        let g = g.clone();
        async move {
            g.snapshot(&ReadRef::main())
                .await
                .unwrap()
                .count("Person")
                .await
                .unwrap()
        }
    };
    let rows = count(&g).await;
    assert!(rows * 16 < 5_000, "{rows} rows");
    for (round, staging) in [None, Some(500_000)].into_iter().enumerate() {
        let staged = |clash: &'static str| {
            let g = g.clone();
            async move {
                let mut txn = g.begin("main", "t").await.unwrap();
                if let Some(bytes) = staging {
                    txn.set_staging_memory(bytes);
                }
                // The clashing key first: spilled with the others.
                txn.insert_node("Person", props(&[("name", s(clash))]))
                    .await
                    .unwrap();
                for i in 1..5_000 {
                    txn.insert_node("Person", props(&[("name", s(&format!("M{round}-{i:04}")))]))
                        .await
                        .unwrap();
                }
                assert_eq!(txn.spilled_rows() > 0, staging.is_some());
                txn
            }
        };
        // A key the branch holds.
        let before = fingerprint(&g, "main").await;
        let e = staged("Alice").await.commit().await.unwrap_err();
        assert!(
            is_violation(&e, ViolationKind::DuplicateKey, "Alice"),
            "staging {staging:?}: {e}"
        );
        assert_eq!(fingerprint(&g, "main").await, before);
        // A key a concurrent commit inserted after the transaction began.
        let clash = if round == 0 { "Late0" } else { "Late1" };
        let txn = staged(clash).await;
        common::load_person(&g, clash).await;
        let e = txn.commit().await.unwrap_err();
        assert!(
            matches!(&e, Error::Conflict { .. }),
            "staging {staging:?}: {e}"
        );
        // New keys land, every one.
        let rows = count(&g).await;
        let fresh = if round == 0 { "Fresh0" } else { "Fresh1" };
        let summary = staged(fresh).await.commit().await.unwrap().unwrap();
        assert_eq!(
            summary.tables["Person"].inserted, 5_000,
            "staging {staging:?}"
        );
        assert_eq!(count(&g).await, rows + 5_000);
    }
}

/// Each Person's age on main.
async fn ages(g: &omnigraph_engine::Graph) -> BTreeMap<String, Value> {
    g.snapshot(&ReadRef::main())
        .await
        .unwrap()
        .read_where("Person", None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id.clone(), r.prop("age").clone()))
        .collect()
}

/// A direct UPDATE or DELETE stages one change for many ids at once
/// (`update_ids`, `delete_ids`): committed rows, rows inserted in memory
/// and spilled rows (more than a chunk of them) end as if each had been
/// changed on its own, a savepoint undoes the whole run, and a bad value
/// fails before anything is staged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_staged_for_many_ids_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let committed = ages(&g).await;
    let mut txn = g.begin("main", "t").await.unwrap();
    txn.set_staging_memory(20_000);
    let mut ids: Vec<String> = committed.keys().cloned().collect();
    for i in 0..4_500 {
        ids.push(
            txn.insert_node("Person", props(&[("name", s(&format!("N{i:04}")))]))
                .await
                .unwrap(),
        );
    }
    assert!(txn.spilled_rows() > 4_096, "{}", txn.spilled_rows());
    let updated: Vec<String> = ids.iter().step_by(2).cloned().collect();
    let deleted: Vec<String> = ids.iter().skip(1).step_by(3).cloned().collect();
    // Nothing staged when an update is refused.
    let sp = txn.savepoint();
    let before = txn.staged_bytes();
    let e = txn
        .update_ids("Person", &updated, props(&[("name", s("X"))]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Validation(v) if v.kind == ViolationKind::KeyUpdate),
        "{e}"
    );
    assert_eq!(txn.staged_bytes(), before);
    // A savepoint undoes a whole run (of rows nothing else changes).
    let untouched: Vec<String> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 1 && i % 3 != 1)
        .map(|(_, id)| id.clone())
        .collect();
    txn.update_ids("Person", &untouched, props(&[("age", Value::Int(1))]))
        .await
        .unwrap();
    txn.rollback_to(sp).await.unwrap();
    txn.update_ids("Person", &updated, props(&[("age", Value::Int(7))]))
        .await
        .unwrap();
    txn.delete_ids("Person", &deleted).await.unwrap();
    // The run's rows went back to the spill (the budget is small).
    assert!(
        txn.staged_bytes() < 20_000 + 4_096 * 200,
        "{}",
        txn.staged_bytes()
    );
    // An empty run checks nothing.
    txn.update_ids("Person", &[], props(&[("nope", Value::Int(1))]))
        .await
        .unwrap();
    txn.commit().await.unwrap();

    let expected: BTreeMap<String, Value> = ids
        .iter()
        .filter(|id| !deleted.contains(id))
        .map(|id| {
            let age = if updated.contains(id) {
                Value::Int(7)
            } else {
                committed.get(id).cloned().unwrap_or(Value::Null)
            };
            (id.clone(), age)
        })
        .collect();
    let got = ages(&g).await;
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected);
}

/// `n` Person rows named `{prefix}{i:04}`, column by column, aged `i`.
fn people(prefix: &str, range: std::ops::Range<i64>) -> omnigraph_engine::NewRows {
    omnigraph_engine::NewRows {
        arrays: Vec::new(),
        ids: range.clone().map(|_| None).collect(),
        endpoints: Vec::new(),
        props: vec![
            (
                "name".to_string(),
                range
                    .clone()
                    .map(|i| s(&format!("{prefix}{i:04}")))
                    .collect(),
            ),
            ("age".to_string(), range.map(Value::Int).collect()),
        ],
        lines: Vec::new(),
    }
}

/// Rows given column by column go as one Arrow batch straight to the
/// table's spill (nothing held in memory per row), and behave as rows
/// staged one by one: own reads, changes, savepoints, duplicates, the
/// checks at staging and at commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_given_by_column_are_staged_as_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (g, spill_dir) = graph_spilling_to(dir.path()).await;
    let mut txn = g.begin("main", "t").await.unwrap();
    let ids = txn
        .insert_rows("Person", people("P", 0..2000))
        .await
        .unwrap();
    assert_eq!(ids.len(), 2000);
    assert_eq!(ids[7], "P0007");
    assert_eq!(txn.staged_bytes(), 0, "no row is held in memory");
    assert_eq!(txn.spilled_rows(), 2000);
    assert_eq!(std::fs::read_dir(&spill_dir).unwrap().count(), 1);
    let view = txn.view("Person", txn.base()).await.unwrap().unwrap();
    assert!(view.spill.is_some());
    // A row of the batch can be changed and deleted.
    txn.update("Person", "P0005", props(&[("age", Value::Int(500))]))
        .await
        .unwrap();
    txn.delete("Person", "P0006").await.unwrap();
    // A batch repeating a staged id reports it as the row path does.
    // (A frontend rolls back the failed statement's rows, as here.)
    let statement = txn.savepoint();
    let mut again = people("Q", 0..1100);
    again.props[0].1[1000] = s("P0007");
    let e = txn.insert_rows("Person", again).await.unwrap_err();
    assert!(
        is_violation(&e, ViolationKind::DuplicateKey, "P0007"),
        "{e}"
    );
    txn.rollback_to(statement).await.unwrap();
    // A committed row deleted earlier in the transaction is replaced.
    txn.delete("Person", "Alice").await.unwrap();
    let mut alice = people("R", 0..1100);
    alice.props[0].1[3] = s("Alice");
    alice.props[1].1[3] = Value::Int(99);
    let spilled = txn.spilled_rows();
    txn.insert_rows("Person", alice).await.unwrap();
    assert_eq!(
        txn.spilled_rows(),
        spilled + 1099,
        "the rest of the chunk is still one batch"
    );
    // Rows after a savepoint go, even one a later change brought back to memory.
    let sp = txn.savepoint();
    txn.insert_rows("Person", people("S", 0..1500))
        .await
        .unwrap();
    txn.update("Person", "S0100", props(&[("age", Value::Int(1))]))
        .await
        .unwrap();
    // A row of an earlier batch changed after the savepoint comes back as
    // it was.
    txn.update("Person", "P0009", props(&[("age", Value::Int(1))]))
        .await
        .unwrap();
    txn.rollback_to(sp).await.unwrap();
    // Fewer rows than a batch are staged one by one.
    txn.insert_rows("Person", people("T", 0..10)).await.unwrap();
    assert!(txn.staged_bytes() > 0);
    // Edges by column, endpoints among the batch's nodes.
    let edges = omnigraph_engine::NewRows {
        arrays: Vec::new(),
        ids: (0..1200).map(|_| None).collect(),
        endpoints: (0..1200)
            .map(|i| {
                (
                    format!("P{:04}", 10 + i % 900),
                    format!("R{:04}", 10 + i % 900),
                )
            })
            .collect(),
        props: Vec::new(),
        lines: Vec::new(),
    };
    txn.insert_rows("Knows", edges).await.unwrap();
    let summary = txn.commit().await.unwrap().unwrap();
    // 2000 - P0006 + (1100 R rows, Alice among them replacing hers) + 10 T.
    assert_eq!(summary.tables["Person"].inserted, 1999 + 1099 + 10);
    assert_eq!(summary.tables["Person"].updated, 1);
    assert_eq!(summary.tables["Knows"].inserted, 1200);
    assert_eq!(std::fs::read_dir(&spill_dir).unwrap().count(), 0);
    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    let rows = snap
        .rows_by_id(
            "Person",
            &[
                "P0005", "P0006", "P0009", "P1999", "Alice", "S0000", "S0100", "T0009", "Q0000",
            ],
        )
        .await
        .unwrap();
    assert_eq!(rows["P0005"].prop("age"), &Value::Int(500));
    assert_eq!(rows["P0009"].prop("age"), &Value::Int(9));
    assert_eq!(rows["P1999"].prop("age"), &Value::Int(1999));
    assert_eq!(rows["Alice"].prop("age"), &Value::Int(99));
    assert!(rows.contains_key("T0009"));
    for gone in ["P0006", "S0000", "S0100", "Q0000"] {
        assert!(!rows.contains_key(gone), "{gone}");
    }

    // The checks made at staging, for the whole batch.
    let mut txn = g.begin("main", "t").await.unwrap();
    let mut bad = people("U", 0..1100);
    bad.props[1].1[500] = s("old");
    let e = txn.insert_rows("Person", bad).await.unwrap_err();
    assert!(
        matches!(&e, Error::Validation(v) if v.kind == ViolationKind::InvalidValue && v.property == "age"),
        "{e}"
    );
    let mut keyless = people("U", 0..1100);
    keyless.props[0].1[42] = Value::Null;
    let e = txn.insert_rows("Person", keyless).await.unwrap_err();
    assert!(
        matches!(&e, Error::Validation(v) if v.kind == ViolationKind::MissingRequired && v.property == "name"),
        "{e}"
    );
    let mut unknown = people("U", 0..1100);
    unknown
        .props
        .push(("height".to_string(), vec![Value::Int(1); 1100]));
    let e = txn.insert_rows("Person", unknown).await.unwrap_err();
    assert!(
        matches!(&e, Error::Validation(v) if v.kind == ViolationKind::UnknownProperty && v.property == "height"),
        "{e}"
    );
    let mut ragged = people("U", 0..1100);
    ragged.props[1].1.pop();
    assert!(matches!(
        txn.insert_rows("Person", ragged).await.unwrap_err(),
        Error::InvalidArgument(_)
    ));
    assert!(txn.is_empty(), "a refused batch stages nothing");

    // The checks made at commit: keys on the branch, endpoints.
    let before = fingerprint(&g, "main").await;
    let mut txn = g.begin("main", "t").await.unwrap();
    let mut taken = people("V", 0..1100);
    taken.props[0].1[700] = s("P0700");
    txn.insert_rows("Person", taken).await.unwrap();
    commit_refused(txn, ViolationKind::DuplicateKey, "P0700").await;
    let mut txn = g.begin("main", "t").await.unwrap();
    let mut dangling = omnigraph_engine::NewRows {
        arrays: Vec::new(),
        ids: (0..1100).map(|_| None).collect(),
        endpoints: (0..1100)
            .map(|_| ("P0001".to_string(), "P0002".to_string()))
            .collect(),
        props: Vec::new(),
        lines: Vec::new(),
    };
    dangling.endpoints[900].1 = "Nobody".to_string();
    txn.insert_rows("Knows", dangling).await.unwrap();
    commit_refused(txn, ViolationKind::DanglingEdge, "Nobody").await;
    assert_eq!(fingerprint(&g, "main").await, before);
}

/// Spilled rows are checked at commit against `@range`, `@check` and
/// `@unique` reading only those columns (required values were checked
/// when they were staged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraints_are_checked_on_rows_staged_by_column() {
    const SCHEMA: &str = "node Item {\n    code: String @key\n    score: I64?\n    tag: String? @unique\n    label: String?\n    note: String\n    @range(score, 0..100)\n    @check(label, \"[a-z]+\")\n}\n";
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("g").to_string_lossy().into_owned();
    let g = omnigraph_engine::Graph::create(&uri, SCHEMA, "tester")
        .await
        .unwrap();
    let items = |from: i64, n: i64| omnigraph_engine::NewRows {
        arrays: Vec::new(),
        ids: (0..n).map(|_| None).collect(),
        endpoints: Vec::new(),
        props: vec![
            (
                "code".to_string(),
                (from..from + n).map(|i| s(&format!("c{i}"))).collect(),
            ),
            (
                "score".to_string(),
                (from..from + n).map(|i| Value::Int(i % 100)).collect(),
            ),
            (
                "tag".to_string(),
                (from..from + n).map(|i| s(&format!("t{i}"))).collect(),
            ),
            ("label".to_string(), vec![s("ok"); n as usize]),
            ("note".to_string(), vec![s("n"); n as usize]),
        ],
        lines: Vec::new(),
    };
    let mut txn = g.begin("main", "t").await.unwrap();
    txn.insert_rows("Item", items(0, 1500)).await.unwrap();
    txn.insert_rows("Item", items(1500, 1500)).await.unwrap();
    assert_eq!(txn.spilled_rows(), 3000);
    txn.commit().await.unwrap().unwrap();

    let cases: [(&str, usize, Value, ViolationKind); 3] = [
        (
            "score",
            3,
            Value::Int(500),
            ViolationKind::ConstraintViolation,
        ),
        ("label", 4, s("BAD"), ViolationKind::ConstraintViolation),
        ("tag", 2, s("t1100"), ViolationKind::UniqueViolation),
    ];
    for (column, at, value, kind) in cases {
        let before = fingerprint(&g, "main").await;
        let mut txn = g.begin("main", "t").await.unwrap();
        let mut rows = items(5000, 1200);
        let c = rows.props.iter().position(|(n, _)| n == column).unwrap();
        rows.props[c].1[at] = value.clone();
        txn.insert_rows("Item", rows).await.unwrap();
        let e = txn.commit().await.unwrap_err();
        assert!(
            matches!(&e, Error::Validation(v) if v.kind == kind && v.property == column),
            "{column}: {e}"
        );
        assert_eq!(fingerprint(&g, "main").await, before);
    }
    // Two batches of one transaction holding the same @unique value.
    let mut txn = g.begin("main", "t").await.unwrap();
    let mut first = items(7000, 1100);
    first.props[2].1[10] = s("same");
    let mut second = items(8100, 1100);
    second.props[2].1[20] = s("same");
    txn.insert_rows("Item", first).await.unwrap();
    txn.insert_rows("Item", second).await.unwrap();
    commit_refused(txn, ViolationKind::UniqueViolation, "same").await;
    // A required property missing from the batch is refused when staged.
    let mut txn = g.begin("main", "t").await.unwrap();
    let mut rows = items(9000, 1100);
    rows.props.retain(|(n, _)| n != "note");
    let e = txn.insert_rows("Item", rows).await.unwrap_err();
    assert!(
        matches!(&e, Error::Validation(v) if v.kind == ViolationKind::MissingRequired && v.property == "note"),
        "{e}"
    );
}

/// The inodes of the Lance data files under `dir` (any depth).
fn data_file_inodes(dir: &std::path::Path) -> std::collections::BTreeSet<u64> {
    use std::os::unix::fs::MetadataExt;
    let data = |path: &std::path::Path| {
        path.extension().is_some_and(|x| x == "lance")
            && path.parent().is_some_and(|p| p.ends_with("data"))
    };
    common::files_under(dir, &data)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().ino())
        .collect()
}

/// At COMMIT the spill's data files become the table's (hard links: the
/// rows are not written again) and read back as staged, for every type
/// of column. A spill fragment that lost rows to a later change is
/// streamed into the table instead, with the same result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spilled_files_are_adopted_by_the_table_at_commit() {
    const SCHEMA: &str = "node Item {\n    code: String @key\n    n: I64?\n    small: U32?\n    f: F64?\n    flag: Bool?\n    day: Date?\n    at: DateTime?\n    tags: [String]?\n    v: Vector(3)?\n    raw: Blob?\n    tier: enum(low, high)?\n}\n";
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("g").to_string_lossy().into_owned();
    omnigraph_engine::Graph::create(&uri, SCHEMA, "tester")
        .await
        .unwrap();
    let spill_dir = dir.path().join("spill");
    std::fs::create_dir_all(&spill_dir).unwrap();
    let g = omnigraph_engine::Graph::open_with(
        &uri,
        omnigraph_engine::GraphOptions {
            spill_dir: Some(spill_dir.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let value = |i: i64, column: &str| -> Value {
        if i % 7 == 3 {
            return Value::Null;
        }
        match column {
            "code" => s(&format!("c{i:05}")),
            "n" => Value::Int(i * 1_000_003),
            "small" => Value::UInt(i as u64),
            "f" => Value::Float(i as f64 / 4.0),
            "flag" => Value::Bool(i % 2 == 0),
            "day" => Value::Date(i as i32),
            "at" => Value::DateTime(i * 1_000_000),
            "tags" => Value::List(vec![s("t"), s(&i.to_string())]),
            "v" => Value::List(vec![
                Value::Float(0.5),
                Value::Float(i as f64),
                Value::Float(-2.0),
            ]),
            "raw" => Value::Bytes(vec![i as u8, 0, 255]),
            _ => s(if i % 2 == 0 { "low" } else { "high" }),
        }
    };
    let columns = [
        "code", "n", "small", "f", "flag", "day", "at", "tags", "v", "raw", "tier",
    ];
    let rows = |range: std::ops::Range<i64>| omnigraph_engine::NewRows {
        arrays: Vec::new(),
        ids: range.clone().map(|_| None).collect(),
        endpoints: Vec::new(),
        props: columns
            .iter()
            .map(|c| {
                let values = range
                    .clone()
                    .map(|i| match *c {
                        "code" => s(&format!("c{i:05}")),
                        _ => value(i, c),
                    })
                    .collect();
                (c.to_string(), values)
            })
            .collect(),
        lines: Vec::new(),
    };
    let check = |records: &[omnigraph_engine::Record], range: std::ops::Range<i64>| {
        for i in range {
            let id = format!("c{i:05}");
            let r = records.iter().find(|r| r.id == id).expect("every row");
            for c in &columns[1..] {
                assert_eq!(r.prop(c), &value(i, c), "{id}.{c}");
            }
        }
    };

    let mut txn = g.begin("main", "t").await.unwrap();
    txn.insert_rows("Item", rows(0..3000)).await.unwrap();
    let spilled = data_file_inodes(&spill_dir);
    assert!(!spilled.is_empty());
    txn.commit().await.unwrap().unwrap();
    let table = data_file_inodes(std::path::Path::new(&uri));
    assert!(
        spilled.is_subset(&table),
        "the spill's files are the table's: {spilled:?} in {table:?}"
    );
    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    let all = snap.read_all("Item").await.unwrap();
    assert_eq!(all.len(), 3000);
    check(&all, 0..3000);

    // A spilled row changed later: its fragment has a deletion file, and
    // its rows are written again; the other fragment is still adopted.
    let mut txn = g.begin("main", "t").await.unwrap();
    txn.insert_rows("Item", rows(3000..5000)).await.unwrap();
    let changed = data_file_inodes(&spill_dir);
    txn.insert_rows("Item", rows(5000..7000)).await.unwrap();
    let clean: std::collections::BTreeSet<u64> = data_file_inodes(&spill_dir)
        .difference(&changed)
        .copied()
        .collect();
    txn.update("Item", "c03010", props(&[("n", Value::Int(7))]))
        .await
        .unwrap();
    txn.commit().await.unwrap().unwrap();
    let table = data_file_inodes(std::path::Path::new(&uri));
    assert!(
        !changed.is_empty() && changed.is_disjoint(&table),
        "rows rewritten, not adopted"
    );
    assert!(
        !clean.is_empty() && clean.is_subset(&table),
        "clean fragment adopted"
    );
    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    let all = snap.read_all("Item").await.unwrap();
    assert_eq!(all.len(), 7000);
    let c03010 = all.iter().find(|r| r.id == "c03010").unwrap();
    assert_eq!(c03010.prop("n"), &Value::Int(7));
    check(&all, 0..3010);
    check(&all, 3011..7000);
}

/// A node type may have properties named `src` and `dst`: they stay
/// properties through the spill, a change of a spilled row, and COMMIT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_properties_named_like_endpoints_survive_the_spill() {
    const SCHEMA: &str =
        "node Wire {\n    code: String @key\n    src: String\n    dst: String?\n}\n";
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("g").to_string_lossy().into_owned();
    let g = omnigraph_engine::Graph::create(&uri, SCHEMA, "tester")
        .await
        .unwrap();
    let mut txn = g.begin("main", "t").await.unwrap();
    let rows = omnigraph_engine::NewRows {
        arrays: Vec::new(),
        ids: vec![None; 1500],
        endpoints: Vec::new(),
        props: vec![
            (
                "code".to_string(),
                (0..1500).map(|i| s(&format!("w{i}"))).collect(),
            ),
            (
                "src".to_string(),
                (0..1500).map(|i| s(&format!("from{i}"))).collect(),
            ),
            (
                "dst".to_string(),
                (0..1500).map(|i| s(&format!("to{i}"))).collect(),
            ),
        ],
        lines: Vec::new(),
    };
    txn.insert_rows("Wire", rows).await.unwrap();
    assert_eq!(txn.spilled_rows(), 1500);
    txn.update("Wire", "w7", props(&[("dst", s("changed"))]))
        .await
        .unwrap();
    txn.commit().await.unwrap().unwrap();
    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    let rows = snap.rows_by_id("Wire", &["w7", "w8"]).await.unwrap();
    assert_eq!(rows["w7"].prop("src"), &s("from7"));
    assert_eq!(rows["w7"].prop("dst"), &s("changed"));
    assert_eq!(rows["w8"].prop("src"), &s("from8"));
    assert_eq!(rows["w8"].prop("dst"), &s("to8"));
    assert_eq!(rows["w8"].endpoints, None);
}

/// Columns given as Arrow arrays of the properties' stored types (as the
/// FDW's INSERT and COPY hand them over) are checked as a whole and staged
/// as they are: the rows committed, and every error, are those of the same
/// columns given as values. An array of another type is taken as values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_given_as_arrow_arrays_act_as_the_same_values() {
    use omnigraph_engine::deps::arrow_array::builder::TimestampMicrosecondBuilder;
    use omnigraph_engine::deps::arrow_array::{
        Array, ArrayRef, BooleanArray, Date32Array, Float32Array, Float64Array, Int64Array,
        StringArray,
    };
    use std::sync::Arc;

    const SCHEMA: &str = "node Item {\n    code: I64 @key\n    name: String\n    tier: enum(gold, silver)?\n    score: F64?\n    small: F32?\n    n32: I32?\n    flag: Bool?\n    day: Date?\n    at: DateTime?\n}\n";
    const N: usize = 1500;
    let odd_nan = f64::from_bits(0x7ff8_0000_0000_0001);
    let name = |i: usize| match i {
        7 => None,
        i => Some(format!("n{i}")),
    };
    let tier = |i: usize| [Some("gold"), Some("silver"), None][i % 3];
    let score = |i: usize| match i % 5 {
        0 => None,
        1 => Some(odd_nan),
        2 => Some(-f64::NAN),
        _ => Some(i as f64 / 3.0),
    };
    let small =
        |i: usize| (!i.is_multiple_of(4)).then(|| if i % 4 == 1 { -f32::NAN } else { i as f32 });
    // As arrays, and as the same values.
    let arrays = |name: &dyn Fn(usize) -> Option<String>,
                  tier: &dyn Fn(usize) -> Option<&'static str>| {
        let mut at = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        for i in 0..N {
            at.append_option((i % 2 == 0).then_some(i as i64 * 1_000_000));
        }
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("code", Arc::new(Int64Array::from_iter_values(0..N as i64))),
            ("name", Arc::new((0..N).map(name).collect::<StringArray>())),
            ("tier", Arc::new((0..N).map(tier).collect::<StringArray>())),
            (
                "score",
                Arc::new((0..N).map(score).collect::<Float64Array>()),
            ),
            (
                "small",
                Arc::new((0..N).map(small).collect::<Float32Array>()),
            ),
            // Not the stored type (I32 is Int32): taken as values.
            (
                "n32",
                Arc::new(Int64Array::from_iter_values((0..N).map(|i| i as i64 - 700))),
            ),
            (
                "flag",
                Arc::new((0..N).map(|i| Some(i % 2 == 0)).collect::<BooleanArray>()),
            ),
            (
                "day",
                Arc::new(Date32Array::from_iter_values((0..N).map(|i| i as i32))),
            ),
            ("at", Arc::new(at.finish())),
        ];
        omnigraph_engine::NewRows {
            ids: vec![None; N],
            endpoints: Vec::new(),
            props: Vec::new(),
            arrays: columns
                .into_iter()
                .map(|(n, a)| (n.to_string(), a))
                .collect(),
            lines: Vec::new(),
        }
    };
    let as_values = |rows: omnigraph_engine::NewRows| omnigraph_engine::NewRows {
        props: rows
            .arrays
            .iter()
            .map(|(n, a)| {
                let values = (0..a.len())
                    .map(|i| match a.is_null(i) {
                        true => Value::Null,
                        false => omnigraph_engine::value::batch_to_records(
                            &omnigraph_engine::deps::arrow_array::RecordBatch::try_from_iter([
                                ("id", Arc::new(StringArray::from(vec!["x"])) as ArrayRef),
                                (n.as_str(), a.slice(i, 1)),
                            ])
                            .unwrap(),
                            omnigraph_engine::schema::TypeKind::Node,
                        )
                        .unwrap()[0]
                            .prop(n)
                            .clone(),
                    })
                    .collect();
                (n.clone(), values)
            })
            .collect(),
        arrays: Vec::new(),
        ..rows
    };
    let named = |i: usize| Some(format!("n{i}"));
    let dir = tempfile::tempdir().unwrap();
    let mut graphs = Vec::new();
    for (k, by_array) in [false, true].into_iter().enumerate() {
        let uri = dir
            .path()
            .join(format!("g{k}"))
            .to_string_lossy()
            .into_owned();
        let g = omnigraph_engine::Graph::create(&uri, SCHEMA, "tester")
            .await
            .unwrap();
        let given = |rows: omnigraph_engine::NewRows| match by_array {
            true => rows,
            false => as_values(rows),
        };
        // The same errors, each refusing the whole chunk.
        let mut errors = Vec::new();
        let nul = |i: usize| {
            Some(if i == 9 {
                "a\0b".to_string()
            } else {
                format!("n{i}")
            })
        };
        let bronze = |i: usize| if i == 11 { Some("bronze") } else { tier(i) };
        let mut unknown = arrays(&named, &tier);
        unknown.arrays.push((
            "nope".into(),
            Arc::new(Int64Array::from_iter_values(0..N as i64)),
        ));
        let mut wide = arrays(&named, &tier);
        wide.arrays[5].1 = Arc::new(Int64Array::from_iter_values(
            (0..N).map(|i| i as i64 * (1 << 33)),
        ));
        for rows in [
            arrays(&name, &tier),
            arrays(&nul, &tier),
            arrays(&named, &bronze),
            unknown,
            wide,
        ] {
            let mut txn = g.begin("main", "t").await.unwrap();
            errors.push(
                txn.insert_rows("Item", given(rows))
                    .await
                    .unwrap_err()
                    .to_string(),
            );
            assert_eq!(txn.spilled_rows(), 0);
        }
        let mut txn = g.begin("main", "t").await.unwrap();
        txn.insert_rows("Item", given(arrays(&named, &tier)))
            .await
            .unwrap();
        assert_eq!(txn.spilled_rows(), N as u64);
        txn.commit().await.unwrap().unwrap();
        graphs.push((g, errors));
    }
    let (b, b_errors) = graphs.pop().unwrap();
    let (a, a_errors) = graphs.pop().unwrap();
    assert_eq!(a_errors, b_errors);
    assert!(
        a_errors[0].contains("'7'") && a_errors[0].contains("name"),
        "{}",
        a_errors[0]
    );
    assert!(a_errors[1].contains("\\u0000"), "{}", a_errors[1]);
    assert!(a_errors[2].contains("bronze"), "{}", a_errors[2]);
    assert!(a_errors[3].contains("nope"), "{}", a_errors[3]);
    assert!(a_errors[4].contains("n32"), "{}", a_errors[4]);
    let rows = |g: omnigraph_engine::Graph| async move {
        let snap = g.snapshot(&ReadRef::main()).await.unwrap();
        let all = snap.read_all("Item").await.unwrap();
        let ds = snap.dataset("Item").await.unwrap();
        let batch = ds
            .scan()
            .project(&["score", "small"])
            .unwrap()
            .try_into_batch()
            .await
            .unwrap();
        let bits: Vec<(Option<u64>, Option<u32>)> = (0..batch.num_rows())
            .map(|i| {
                let f = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .unwrap();
                let g = batch
                    .column(1)
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .unwrap();
                (
                    (!f.is_null(i)).then(|| f.value(i).to_bits()),
                    (!g.is_null(i)).then(|| g.value(i).to_bits()),
                )
            })
            .collect();
        (format!("{all:?}"), bits)
    };
    let (a_rows, a_bits) = rows(a).await;
    let (b_rows, b_bits) = rows(b).await;
    assert_eq!(a_rows, b_rows);
    assert_eq!(a_bits, b_bits);
    // One NaN, whatever bits it was given with.
    let nans: std::collections::BTreeSet<u64> = a_bits
        .iter()
        .filter_map(|(f, _)| f.filter(|f| f64::from_bits(*f).is_nan()))
        .collect();
    assert_eq!(nans, [f64::NAN.to_bits()].into());
    assert!(a_bits.iter().any(|(_, g)| *g == Some(f32::NAN.to_bits())));
}

/// Commit `waiter` while the branch lock is held by the caller: `waiter`
/// resolves and writes its files against the head, then waits for the
/// lock (its cancel check is asked only while it waits); then `release`
/// runs, which publishes what holds the lock and releases it, and
/// `waiter` takes the lock at the head that includes it.
async fn commit_while_locked(
    mut waiter: omnigraph_engine::WriteTxn,
    release: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = std::sync::Mutex::new(Some(tx));
    waiter.set_cancel_check(std::sync::Arc::new(move || {
        if let Some(tx) = tx.lock().unwrap().take() {
            let _ = tx.send(());
        }
        false
    }));
    let release = async {
        rx.await.expect("the waiter waits for the lock");
        release.await;
    };
    // Boxed: a commit's future is too large for a test thread's stack twice.
    let (committed, ()) = futures::join!(Box::pin(waiter.commit()), Box::pin(release));
    committed.map(|_| ())
}

/// [`commit_while_locked`] behind `holder`'s commit.
async fn commit_behind(
    holder: omnigraph_engine::WriteTxn,
    waiter: omnigraph_engine::WriteTxn,
) -> Result<(), Error> {
    let prepared = Box::pin(holder.prepare()).await.unwrap().expect("a commit");
    Box::pin(commit_while_locked(waiter, async {
        prepared.publish().await.expect("the holder publishes");
    }))
    .await
}

async fn person_rows(g: &omnigraph_engine::Graph) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for r in g
        .snapshot(&ReadRef::main())
        .await
        .unwrap()
        .read_all("Person")
        .await
        .unwrap()
    {
        assert!(
            out.insert(r.id.clone(), r.prop("age").clone()).is_none(),
            "Person '{}' is there twice",
            r.id
        );
    }
    out
}

/// A commit resolves and writes its files before it takes the branch lock.
/// Under the lock it must see what was published meanwhile: a commit that
/// changed the same rows, or rows its checks read, makes it resolve again
/// (a conflict, a violation, a cascade reaching the new rows), and one
/// that changed other rows leaves its work standing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_done_before_the_lock_answers_to_what_was_published_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let age = |n: i64| props(&[("age", Value::Int(n))]);

    // Other rows of the same table: both commits stand.
    let mut a = g.begin("main", "t").await.unwrap();
    a.update("Person", "Alice", age(31)).await.unwrap();
    let mut b = g.begin("main", "t").await.unwrap();
    b.update("Person", "Bob", age(26)).await.unwrap();
    let record = dir
        .path()
        .join("g/_graph/changes")
        .join(format!("{}.json", b.commit_id()));
    let prepared = Box::pin(a.prepare()).await.unwrap().expect("a commit");
    Box::pin(commit_while_locked(b, async {
        // The waiter's change record was written before the lock.
        assert!(record.exists(), "{record:?}");
        prepared.publish().await.unwrap();
    }))
    .await
    .unwrap();
    let rows = person_rows(&g).await;
    assert_eq!(rows["Alice"], Value::Int(31));
    assert_eq!(rows["Bob"], Value::Int(26));
    assert_eq!(rows.len(), 4);
    // And names its row only.
    let record = std::fs::read_to_string(&record).unwrap();
    assert_eq!(record, r#"{"tables":{"Person":{"ids":["Bob"]}}}"#);

    // The same row: the later commit is refused, not lost over the first;
    // the files it wrote early are removed.
    let data_files = data_file_inodes(&dir.path().join("g")).len();
    let mut a = g.begin("main", "t").await.unwrap();
    a.update("Person", "Alice", age(32)).await.unwrap();
    let mut b = g.begin("main", "t").await.unwrap();
    b.update("Person", "Alice", age(40)).await.unwrap();
    let e = commit_behind(a, b).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert_eq!(person_rows(&g).await["Alice"], Value::Int(32));
    assert_eq!(
        data_file_inodes(&dir.path().join("g")).len(),
        data_files + 1,
        "the refused commit's data file is gone"
    );

    // The same new key.
    let mut a = g.begin("main", "t").await.unwrap();
    a.insert_node("Person", props(&[("name", s("Eve"))]))
        .await
        .unwrap();
    let mut b = g.begin("main", "t").await.unwrap();
    b.insert_node(
        "Person",
        props(&[("name", s("Eve")), ("age", Value::Int(9))]),
    )
    .await
    .unwrap();
    assert!(commit_behind(a, b).await.is_err());
    assert_eq!(person_rows(&g).await["Eve"], Value::Null);

    // An edge to a node deleted meanwhile.
    let mut a = g.begin("main", "t").await.unwrap();
    a.delete("Person", "Diana").await.unwrap();
    let mut b = g.begin("main", "t").await.unwrap();
    b.insert_edge("Knows", "Alice", "Diana", BTreeMap::new())
        .await
        .unwrap();
    let e = commit_behind(a, b).await.unwrap_err();
    assert!(
        is_violation(&e, ViolationKind::DanglingEdge, "Diana"),
        "{e}"
    );

    // A node deleted while an edge to it was added: the delete cascades
    // to the new edge.
    let mut a = g.begin("main", "t").await.unwrap();
    a.insert_edge("Knows", "Bob", "Charlie", BTreeMap::new())
        .await
        .unwrap();
    let mut b = g.begin("main", "t").await.unwrap();
    b.delete("Person", "Charlie").await.unwrap();
    commit_behind(a, b).await.unwrap();
    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    for edge in ["Knows", "WorksAt"] {
        for r in snap.read_all(edge).await.unwrap() {
            let (src, dst) = r.endpoints.expect("an edge");
            assert!(
                src != "Charlie" && dst != "Charlie",
                "{edge} {src} -> {dst}"
            );
        }
    }
    assert!(!person_rows(&g).await.contains_key("Charlie"));
}

/// `@unique` values are found by value, not by id: a commit whose value
/// another commit took meanwhile is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_value_taken_before_the_lock_is_refused() {
    const SCHEMA: &str = "node Person {\n    name: String @key\n    email: String? @unique\n}\n";
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("g").to_string_lossy().into_owned();
    let g = omnigraph_engine::Graph::create(&uri, SCHEMA, "t")
        .await
        .unwrap();
    let person = |name: &str| props(&[("name", s(name)), ("email", s("x@example.com"))]);
    let mut a = g.begin("main", "t").await.unwrap();
    a.insert_node("Person", person("A")).await.unwrap();
    let mut b = g.begin("main", "t").await.unwrap();
    b.insert_node("Person", person("B")).await.unwrap();
    let e = commit_behind(a, b).await.unwrap_err();
    assert!(
        is_violation(&e, ViolationKind::UniqueViolation, "x@example.com"),
        "{e}"
    );
    assert_eq!(
        common::ids(&g, &ReadRef::main(), "Person").await,
        vec!["A".to_string()]
    );
}

/// A commit's deletion files are written against the head it resolved
/// against. When what was published meanwhile rewrote the fragment they
/// apply to (an optimize merging small fragments), the deletions are redone
/// against the new fragments: the updated row is neither left twice nor
/// lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_written_before_a_compaction_are_redone_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    // A few small fragments for optimize to merge.
    for name in ["p1", "p2", "p3"] {
        let mut txn = g.begin("main", "t").await.unwrap();
        txn.insert_node("Person", props(&[("name", s(name))]))
            .await
            .unwrap();
        txn.commit().await.unwrap();
    }
    let before = person_rows(&g).await;
    let mut b = g.begin("main", "t").await.unwrap();
    b.update("Person", "Bob", props(&[("age", Value::Int(2))]))
        .await
        .unwrap();
    let mut optimizer = g.optimize_begin("main", "t").await.unwrap();
    commit_while_locked(b, async {
        let t = optimizer.optimize_table("Person").await.unwrap();
        assert!(
            t.fragments_after < t.fragments_before,
            "optimize merged fragments: {t:?}"
        );
        optimizer.finish().await.unwrap();
    })
    .await
    .unwrap();
    let rows = person_rows(&g).await;
    assert_eq!(rows.len(), before.len());
    assert_eq!(rows["Bob"], Value::Int(2));
    for (id, age) in &before {
        if id != "Bob" {
            assert_eq!(&rows[id], age, "{id}");
        }
    }
}

/// A cleanup takes the branch lock and removes the files no version refers
/// to, which a commit's files written before the lock are until it commits
/// them. A commit whose files are gone when it takes the lock writes them
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_removed_before_the_lock_is_taken_are_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let before = table_files(&dir.path().join("g"));
    let mut b = g.begin("main", "t").await.unwrap();
    b.update("Person", "Bob", props(&[("age", Value::Int(2))]))
        .await
        .unwrap();
    let optimizer = g.optimize_begin("main", "t").await.unwrap();
    commit_while_locked(b, async {
        // As a cleanup would: the staged data file and deletion file.
        let staged: Vec<_> = table_files(&dir.path().join("g"))
            .difference(&before)
            .cloned()
            .collect();
        assert_eq!(staged.len(), 2, "{staged:?}");
        for f in staged {
            std::fs::remove_file(f).unwrap();
        }
        optimizer.abandon().await;
    })
    .await
    .unwrap();
    let rows = person_rows(&g).await;
    assert_eq!(rows["Bob"], Value::Int(2));
    assert_eq!(rows["Alice"], Value::Int(30));
    assert_eq!(rows.len(), 4);
}

/// The data file of rows a commit only inserts is written while the commit
/// resolves. It is removed when resolving refuses the rows, and written
/// again with the deletions when the commit also removes rows of the table
/// (edges reached by a cascade).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_while_resolving_follow_what_resolving_decides() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let files = data_file_inodes(&dir.path().join("g"));
    let mut txn = g.begin("main", "t").await.unwrap();
    txn.insert_node("Person", props(&[("name", s("Alice"))]))
        .await
        .unwrap();
    commit_refused(txn, ViolationKind::DuplicateKey, "Alice").await;
    assert_eq!(data_file_inodes(&dir.path().join("g")), files);

    // New Knows edges, and a node whose Knows edges the delete cascades to.
    let mut txn = g.begin("main", "t").await.unwrap();
    txn.insert_edge("Knows", "Charlie", "Alice", BTreeMap::new())
        .await
        .unwrap();
    txn.delete("Person", "Diana").await.unwrap();
    let summary = txn.commit().await.unwrap().unwrap();
    assert_eq!(summary.cascaded_edges, 1);
    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    let mut knows: Vec<(String, String)> = snap
        .read_all("Knows")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| r.endpoints)
        .collect();
    knows.sort();
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        knows,
        vec![
            pair("Alice", "Bob"),
            pair("Alice", "Charlie"),
            pair("Charlie", "Alice")
        ]
    );
}

/// A commit that gives up waiting for the branch lock (cancelled here; a
/// timeout alike) leaves none of the files it wrote before the lock, nor
/// its change record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_gives_up_on_the_lock_leaves_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let mut holder = g.begin("main", "t").await.unwrap();
    holder
        .update("Person", "Alice", props(&[("age", Value::Int(1))]))
        .await
        .unwrap();
    let prepared = Box::pin(holder.prepare()).await.unwrap().expect("a commit");
    let files = table_files(&dir.path().join("g"));
    let changes = std::fs::read_dir(dir.path().join("g/_graph/changes"))
        .unwrap()
        .count();
    let mut waiter = g.begin("main", "t").await.unwrap();
    waiter
        .update("Person", "Bob", props(&[("age", Value::Int(2))]))
        .await
        .unwrap();
    waiter.set_cancel_check(std::sync::Arc::new(|| true));
    let e = Box::pin(waiter.commit()).await.unwrap_err();
    assert!(matches!(e, Error::Cancelled), "{e}");
    assert_eq!(table_files(&dir.path().join("g")), files);
    prepared.publish().await.unwrap();
    let rows = person_rows(&g).await;
    assert_eq!(rows["Alice"], Value::Int(1));
    assert_eq!(rows["Bob"], Value::Int(25));
    // Nor its change record.
    assert_eq!(
        std::fs::read_dir(dir.path().join("g/_graph/changes"))
            .unwrap()
            .count(),
        changes,
        "the records of the graph's commits and the holder's only"
    );
}
