//! Write transactions: savepoints, the transaction's own view, and spills.

mod common;

use std::collections::BTreeMap;

use common::{fingerprint, loaded_graph, props, s};
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
    let rows = omnigraph_engine::value::batch_to_records(&view.rows.unwrap()).unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spilled_inserts_commit_and_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let spill_dir = dir.path().join("spill");
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
    let summary = txn.commit().await.unwrap().unwrap();
    assert_eq!(summary.tables["Person"].inserted, 94);
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
    assert!(
        matches!(&e, Error::Validation(v) if v.kind == ViolationKind::DuplicateKey && v.value == "S050"),
        "{e}"
    );
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
    let e = txn.commit().await.unwrap_err();
    assert!(
        matches!(&e, Error::Validation(v) if v.kind == ViolationKind::DanglingEdge && v.value == "Nobody"),
        "{e}"
    );
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
            matches!(&e, Error::Validation(v) if v.kind == ViolationKind::DuplicateKey && v.value == "Alice"),
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
