//! Engine integration tests: load, commits, concurrency (threads and OS
//! processes), branches and time travel, on a local graph.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use omnigraph_engine::{Error, Graph, LoadMode, ReadRef, Value, ViolationKind};

// ---------------------------------------------------------------- load

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_append_creates_one_commit_with_keyed_ids() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    assert_eq!(
        ids(&g, &ReadRef::main(), "Person").await,
        ["Alice", "Bob", "Charlie", "Diana"]
    );
    let knows = g
        .snapshot(&ReadRef::main())
        .await
        .unwrap()
        .read_all("Knows")
        .await
        .unwrap();
    let mut ends: Vec<(String, String)> =
        knows.iter().map(|r| r.endpoints.clone().unwrap()).collect();
    ends.sort();
    assert_eq!(ends[0], ("Alice".to_string(), "Bob".to_string()));
    let log = g.log("main", 10).await.unwrap();
    assert_eq!(log.len(), 2, "create + one load");
    assert_eq!(log[0].message, "seed");
    assert_eq!(log[0].actor, "tester");
    assert_eq!(log[0].parents, vec![log[1].id.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_merge_upserts_and_overwrite_replaces_named_tables() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let merge = r#"{"type": "Person", "data": {"name": "Alice", "age": 31}}
{"type": "Person", "data": {"name": "Eve", "age": 22}}"#;
    let summary = g
        .load("main", merge, LoadMode::Merge, "t", "")
        .await
        .unwrap();
    assert_eq!(summary.tables["Person"].updated, 1);
    assert_eq!(summary.tables["Person"].inserted, 1);
    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    let people = snap
        .rows_by_id("Person", &["Alice", "Eve", "Bob"])
        .await
        .unwrap();
    assert_eq!(people["Alice"].prop("age"), &Value::Int(31));
    assert_eq!(people["Eve"].prop("age"), &Value::Int(22));
    assert_eq!(
        people["Bob"].prop("age"),
        &Value::Int(25),
        "rows absent from a merge are kept"
    );

    // Overwrite Company: the file names Acme and Globex again plus Initech.
    let ow = r#"{"type": "Company", "data": {"name": "Acme"}}
{"type": "Company", "data": {"name": "Globex"}}
{"type": "Company", "data": {"name": "Initech"}}"#;
    g.load("main", ow, LoadMode::Overwrite, "t", "")
        .await
        .unwrap();
    assert_eq!(
        ids(&g, &ReadRef::main(), "Company").await,
        ["Acme", "Globex", "Initech"]
    );
    assert_eq!(
        ids(&g, &ReadRef::main(), "Person").await.len(),
        5,
        "tables not named are kept"
    );

    // Overwriting Company without Acme would strand the WorksAt edge to it.
    let err = g
        .load(
            "main",
            r#"{"type": "Company", "data": {"name": "Initech"}}"#,
            LoadMode::Overwrite,
            "t",
            "",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Validation(v) if v.kind == ViolationKind::DanglingEdge),
        "{err}"
    );
}

/// NDJSON of `n` people (varying properties, some absent) and a chain of
/// `Knows` edges between them.
fn people_ndjson(n: usize) -> Vec<String> {
    let mut lines: Vec<String> = (0..n)
        .map(|i| match i % 3 {
            0 => format!(
                r#"{{"type": "Person", "data": {{"slug": "p{i}", "name": "P {i}", "status": "active", "age": {i}, "tags": ["t{i}"]}}}}"#
            ),
            1 => format!(
                r#"{{"type": "Person", "data": {{"slug": "p{i}", "name": "P {i}", "status": "retired", "email": "p{i}@example.com"}}}}"#
            ),
            _ => format!(
                r#"{{"type": "Person", "data": {{"name": "P {i}", "slug": "p{i}", "status": "on-leave", "score": {i}.5}}}}"#
            ),
        })
        .collect();
    lines.extend((1..n).map(|i| {
        format!(
            r#"{{"edge": "Knows", "from": "p{}", "to": "p{i}", "data": {{"since": "2020-01-01"}}}}"#,
            i - 1
        )
    }));
    lines
}

/// Every Person row, and the `Knows` edges by endpoints, on main.
async fn people_and_knows(g: &Graph) -> (Vec<String>, Vec<(String, String)>) {
    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    let mut people: Vec<String> = snap
        .read_all("Person")
        .await
        .unwrap()
        .into_iter()
        .map(|r| format!("{} {:?}", r.id, r.props))
        .collect();
    people.sort();
    let mut knows: Vec<(String, String)> = snap
        .read_all("Knows")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.endpoints.unwrap())
        .collect();
    knows.sort();
    (people, knows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_staged_by_column_gives_the_rows_of_one_staged_row_by_row() {
    let dir = tempfile::tempdir().unwrap();
    let ndjson = people_ndjson(3_000).join("\n");
    let mut loaded = Vec::new();
    // A merge load is staged row by row; into an empty graph it inserts
    // what an append does. The append spills past its small budget.
    for (name, mode) in [("rows", LoadMode::Merge), ("columns", LoadMode::Append)] {
        let uri = dir.path().join(name).to_string_lossy().into_owned();
        let g = Graph::create(&uri, SOCIAL_SCHEMA, "t").await.unwrap();
        let mut txn = g.begin("main", "t").await.unwrap();
        txn.set_staging_memory(10_000);
        assert_eq!(txn.load_ndjson(&ndjson, mode).await.unwrap(), 5_999);
        let summary = txn.commit().await.unwrap().unwrap();
        assert_eq!(summary.tables["Person"].inserted, 3_000);
        loaded.push(people_and_knows(&g).await);
    }
    assert_eq!(loaded[0].0.len(), 3_000);
    assert_eq!(loaded[0].1.len(), 2_999);
    assert_eq!(
        loaded[0], loaded[1],
        "by column, the same rows as row by row"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_staged_by_column_names_the_line_of_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("g").to_string_lossy().into_owned();
    let g = Graph::create(&uri, SOCIAL_SCHEMA, "t").await.unwrap();
    let cases = [
        // A required property missing, a key repeated within the load, a
        // value of the wrong type.
        (
            r#"{"type": "Person", "data": {"slug": "x", "status": "active"}}"#,
            Some(ViolationKind::MissingRequired),
        ),
        (
            r#"{"type": "Person", "data": {"slug": "p10", "name": "again", "status": "active"}}"#,
            Some(ViolationKind::DuplicateKey),
        ),
        (
            r#"{"type": "Person", "data": {"slug": "y", "name": "Y", "status": "active", "age": "old"}}"#,
            Some(ViolationKind::InvalidValue),
        ),
    ];
    for (bad, kind) in cases {
        let mut lines = people_ndjson(3_000);
        lines.insert(2_500, bad.to_string());
        let mut txn = g.begin("main", "t").await.unwrap();
        txn.set_staging_memory(10_000);
        let e = txn
            .load_ndjson(&lines.join("\n"), LoadMode::Append)
            .await
            .unwrap_err();
        match (&e, kind) {
            (Error::Validation(v), Some(kind)) => {
                assert_eq!(v.kind, kind, "{e}");
                assert_eq!(v.line, Some(2_501), "{e}");
            }
            _ => panic!("unexpected error for {bad}: {e}"),
        }
    }
    // Errors the commit finds in rows staged by column (spilled) name
    // their lines too: a key the branch holds, an edge to no node, a
    // `@unique` value taken.
    g.load("main", SOCIAL_DATA, LoadMode::Append, "t", "")
        .await
        .unwrap();
    let cases = [
        (
            r#"{"type": "Person", "data": {"slug": "alice", "name": "A", "status": "active"}}"#,
            2_501,
            ViolationKind::DuplicateKey,
        ),
        (
            r#"{"edge": "Knows", "from": "p1", "to": "nobody"}"#,
            2_501,
            ViolationKind::DanglingEdge,
        ),
        (
            r#"{"type": "Person", "data": {"slug": "z", "name": "Z", "status": "active", "email": "alice@example.com"}}"#,
            2_501,
            ViolationKind::UniqueViolation,
        ),
    ];
    for (bad, line, kind) in cases {
        let mut lines = people_ndjson(3_000);
        lines.insert(line - 1, bad.to_string());
        let mut txn = g.begin("main", "t").await.unwrap();
        txn.set_staging_memory(10_000);
        txn.load_ndjson(&lines.join("\n"), LoadMode::Append)
            .await
            .unwrap();
        assert!(
            txn.spilled_rows() > 2_500,
            "{} rows spilled",
            txn.spilled_rows()
        );
        let e = txn.commit().await.unwrap_err();
        match &e {
            Error::Validation(v) => {
                assert_eq!(v.kind, kind, "{e}");
                assert_eq!(v.line, Some(line), "{e}");
            }
            _ => panic!("unexpected error for {bad}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_errors_name_the_line_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("social").to_string_lossy().into_owned();
    let g = Graph::create(&uri, SOCIAL_SCHEMA, "t").await.unwrap();
    g.load("main", SOCIAL_DATA, LoadMode::Append, "t", "")
        .await
        .unwrap();
    let before = fingerprint(&g, "main").await;
    let good = r#"{"type": "Person", "data": {"slug": "zed", "name": "Zed", "status": "active"}}"#;
    let cases: Vec<(String, usize, Option<ViolationKind>, &str)> = vec![
        (
            format!(
                "{good}\n{{\"type\": \"Person\", \"data\": {{\"slug\": \"x\", \"name\": \"X\", \"status\": \"active\", \"age\": \"old\"}}}}"
            ),
            2,
            Some(ViolationKind::InvalidValue),
            "age",
        ),
        (
            format!("{good}\n\n{{\"type\": \"Robot\", \"data\": {{}}}}"),
            3,
            None,
            "unknown type 'Robot'",
        ),
        (
            format!(
                "{good}\n{{\"type\": \"Person\", \"data\": {{\"slug\": \"x\", \"name\": \"X\", \"status\": \"asleep\"}}}}"
            ),
            2,
            Some(ViolationKind::InvalidEnum),
            "asleep",
        ),
        (
            format!(
                "{good}\n{{\"type\": \"Person\", \"data\": {{\"slug\": \"x\", \"status\": \"active\"}}}}"
            ),
            2,
            Some(ViolationKind::MissingRequired),
            "name",
        ),
        (
            format!(
                "{good}\n{{\"type\": \"Person\", \"data\": {{\"slug\": \"alice\", \"name\": \"A\", \"status\": \"active\"}}}}"
            ),
            2,
            Some(ViolationKind::DuplicateKey),
            "alice",
        ),
        (
            format!("{good}\n{good}"),
            2,
            Some(ViolationKind::DuplicateKey),
            "zed",
        ),
        (
            format!("{good}\n{{\"edge\": \"Knows\", \"from\": \"zed\", \"to\": \"nobody\"}}"),
            2,
            Some(ViolationKind::DanglingEdge),
            "nobody",
        ),
        (
            format!(
                "{good}\n{{\"type\": \"Person\", \"data\": {{\"slug\": \"x\", \"name\": \"X\", \"status\": \"active\", \"email\": \"alice@example.com\"}}}}"
            ),
            2,
            Some(ViolationKind::UniqueViolation),
            "alice@example.com",
        ),
        (
            format!(
                "{good}\n{{\"type\": \"Company\", \"data\": {{\"slug\": \"old\", \"name\": \"Old\", \"founded\": 1200}}}}"
            ),
            2,
            Some(ViolationKind::ConstraintViolation),
            "1200",
        ),
        (
            format!(
                "{good}\n{{\"type\": \"Person\", \"data\": {{\"slug\": \"x\", \"name\": \"X\", \"status\": \"active\", \"height\": 2}}}}"
            ),
            2,
            Some(ViolationKind::UnknownProperty),
            "height",
        ),
        (format!("{good}\nnot json"), 2, None, "malformed JSON"),
        (
            format!("{good}\n{{\"edge\": \"Knows\", \"from\": \"alice\"}}"),
            2,
            None,
            "'to'",
        ),
    ];
    for (input, line, kind, fragment) in cases {
        let err = g
            .load("main", &input, LoadMode::Append, "t", "")
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with(&format!("line {line}: ")), "{text}");
        assert!(text.contains(fragment), "{text} lacks {fragment}");
        match (kind, &err) {
            (Some(k), Error::Validation(v)) => {
                assert_eq!(v.kind, k, "{text}");
                assert_eq!(v.line, Some(line));
            }
            (None, Error::Load { .. } | Error::UnknownType { .. }) => {}
            (expected, e) => panic!("expected {expected:?}, got {e:?}"),
        }
        assert_eq!(
            fingerprint(&g, "main").await,
            before,
            "a failed load must not change the graph"
        );
    }
}

// ---------------------------------------------------------------- commits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_update_delete_and_cascade() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let mut txn = g.begin("main", "t").await.unwrap();
    txn.update("Person", "Bob", props(&[("age", Value::Int(26))]))
        .await
        .unwrap();
    let e = txn
        .update("Person", "Bob", props(&[("name", s("Robert"))]))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Validation(v) if v.kind == ViolationKind::KeyUpdate));
    txn.delete("Person", "Alice").await.unwrap();
    let summary = txn.commit().await.unwrap().unwrap();
    assert_eq!(
        summary.cascaded_edges, 3,
        "Alice's two Knows and one WorksAt"
    );
    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    assert_eq!(
        snap.rows_by_id("Person", &["Bob"]).await.unwrap()["Bob"].prop("age"),
        &Value::Int(26)
    );
    assert_eq!(snap.count("Knows").await.unwrap(), 1);
    assert_eq!(snap.count("WorksAt").await.unwrap(), 1);

    let mut txn = g.begin("main", "t").await.unwrap();
    txn.update("Person", "Nobody", props(&[("age", Value::Int(1))]))
        .await
        .unwrap();
    let e = txn.commit().await.unwrap_err();
    assert!(matches!(e, Error::Validation(v) if v.kind == ViolationKind::NotFound));

    // An empty transaction makes no commit.
    let txn = g.begin("main", "t").await.unwrap();
    assert!(txn.commit().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_table_commit_is_seen_whole_by_a_concurrent_reader() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let counts = |g: Graph| async move {
        let snap = g.snapshot(&ReadRef::main()).await.unwrap();
        let mut out = Vec::new();
        for t in ["Person", "Company", "WorksAt"] {
            out.push(snap.count(t).await.unwrap());
        }
        out
    };
    // Seed: 4 people, 2 companies, 2 WorksAt; each commit adds one of each.
    for i in 0..3u64 {
        let mut txn = g.begin("main", "w").await.unwrap();
        let p = txn
            .insert_node("Person", props(&[("name", s(&format!("P{i}")))]))
            .await
            .unwrap();
        let c = txn
            .insert_node("Company", props(&[("name", s(&format!("C{i}")))]))
            .await
            .unwrap();
        txn.insert_edge("WorksAt", &p, &c, BTreeMap::new())
            .await
            .unwrap();
        // All three tables hold the commit's new Lance versions now, but the
        // manifest is not published: a reader sees none of it...
        let prepared = txn.prepare().await.unwrap().unwrap();
        assert_eq!(counts(g.clone()).await, [4 + i, 2 + i, 2 + i]);
        // ...and, once it is, all of it.
        prepared.publish().await.unwrap();
        assert_eq!(counts(g.clone()).await, [5 + i, 3 + i, 3 + i]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_both_land() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let mut a = g.begin("main", "a").await.unwrap();
    let mut b = g.begin("main", "b").await.unwrap();
    for i in 0..50 {
        a.insert_node("Person", props(&[("name", s(&format!("A{i}")))]))
            .await
            .unwrap();
        b.insert_node("Person", props(&[("name", s(&format!("B{i}")))]))
            .await
            .unwrap();
    }
    let (ra, rb) = tokio::join!(a.commit(), b.commit());
    ra.unwrap().unwrap();
    rb.unwrap().unwrap();
    assert_eq!(ids(&g, &ReadRef::main(), "Person").await.len(), 104);
    assert_eq!(g.log("main", 10).await.unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_updates_give_one_typed_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let mut a = g.begin("main", "a").await.unwrap();
    let mut b = g.begin("main", "b").await.unwrap();
    a.update("Person", "Alice", props(&[("age", Value::Int(40))]))
        .await
        .unwrap();
    b.update("Person", "Alice", props(&[("age", Value::Int(50))]))
        .await
        .unwrap();
    let (ra, rb) = tokio::join!(a.commit(), b.commit());
    let (ok, conflict): (Vec<_>, Vec<_>) = [ra, rb].into_iter().partition(|r| r.is_ok());
    assert_eq!((ok.len(), conflict.len()), (1, 1));
    let err = conflict.into_iter().next().unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::Conflict { .. }) && err.is_retryable(),
        "{err}"
    );
    let won = ok.into_iter().next().unwrap().unwrap().unwrap();
    let age = g
        .snapshot(&ReadRef::main())
        .await
        .unwrap()
        .rows_by_id("Person", &["Alice"])
        .await
        .unwrap()["Alice"]
        .prop("age")
        .clone();
    assert_eq!(
        age,
        if won.commit.actor == "a" {
            Value::Int(40)
        } else {
            Value::Int(50)
        },
        "the winner's write stands"
    );

    // Inserting the same new key concurrently is a conflict for the later one.
    let mut a = g.begin("main", "a").await.unwrap();
    let mut b = g.begin("main", "b").await.unwrap();
    a.insert_node("Person", props(&[("name", s("Zoe"))]))
        .await
        .unwrap();
    b.insert_node("Person", props(&[("name", s("Zoe"))]))
        .await
        .unwrap();
    a.commit().await.unwrap();
    assert!(matches!(
        b.commit().await.unwrap_err(),
        Error::Conflict { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_to_a_concurrently_deleted_node_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let mut a = g.begin("main", "a").await.unwrap();
    let mut b = g.begin("main", "b").await.unwrap();
    a.delete("Person", "Diana").await.unwrap();
    b.insert_edge("Knows", "Charlie", "Diana", BTreeMap::new())
        .await
        .unwrap();
    a.commit().await.unwrap();
    let e = b.commit().await.unwrap_err();
    assert!(
        matches!(e, Error::Validation(v) if v.kind == ViolationKind::DanglingEdge && v.value == "Diana")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_deleting_and_adding_rows_writes_one_lance_version_per_table() {
    const ITEMS: usize = 12_000;
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("g").to_string_lossy().into_owned();
    let g = Graph::create(
        &uri,
        "node Item {\n    code: I64 @key\n    n: I64\n}\n",
        "t",
    )
    .await
    .unwrap();
    let data: String = (0..ITEMS)
        .map(|i| format!("{{\"type\": \"Item\", \"data\": {{\"code\": {i}, \"n\": {i}}}}}\n"))
        .collect();
    g.load("main", &data, LoadMode::Append, "t", "")
        .await
        .unwrap();
    let before = g.snapshot(&ReadRef::main()).await.unwrap();
    let id_index = |indexes: Vec<omnigraph_engine::TableIndex>| {
        indexes
            .into_iter()
            .find(|i| i.column == "id")
            .expect("the id index")
    };
    assert_eq!(
        id_index(before.indexes("Item").await.unwrap()).uncovered_rows,
        0
    );

    // Updates, a delete and an insert: the deletion files and the new
    // fragment are one Lance version.
    let mut txn = g.begin("main", "t").await.unwrap();
    for code in ["10", "11"] {
        txn.update("Item", code, props(&[("n", Value::Int(-1))]))
            .await
            .unwrap();
    }
    txn.delete("Item", "12").await.unwrap();
    txn.insert_node(
        "Item",
        props(&[("code", Value::Int(99_999)), ("n", Value::Int(7))]),
    )
    .await
    .unwrap();
    let summary = txn.commit().await.unwrap().unwrap();
    assert_eq!(
        (
            summary.tables["Item"].updated,
            summary.tables["Item"].deleted,
            summary.tables["Item"].inserted
        ),
        (2, 1, 1)
    );
    let after = g.snapshot(&ReadRef::main()).await.unwrap();
    assert_eq!(
        after.table("Item").unwrap().version,
        before.table("Item").unwrap().version + 1
    );
    // The untouched rows stay indexed; the moved and new rows are not yet.
    assert_eq!(
        id_index(after.indexes("Item").await.unwrap()).uncovered_rows,
        3
    );
    assert_eq!(after.count("Item").await.unwrap(), ITEMS as u64);
    let rows = after
        .rows_by_id("Item", &["10", "11", "12", "13", "99999"])
        .await
        .unwrap();
    assert_eq!(rows["10"].prop("n"), &Value::Int(-1));
    assert_eq!(rows["11"].prop("n"), &Value::Int(-1));
    assert_eq!(rows["13"].prop("n"), &Value::Int(13));
    assert_eq!(rows["99999"].prop("n"), &Value::Int(7));
    assert!(!rows.contains_key("12"));
    // The commit before is unchanged.
    assert_eq!(
        before.rows_by_id("Item", &["10", "12"]).await.unwrap()["10"].prop("n"),
        &Value::Int(10)
    );

    // More deletes than one filter takes: in steps, with the same result.
    let mut txn = g.begin("main", "t").await.unwrap();
    for code in 1_000..6_000 {
        txn.delete("Item", &code.to_string()).await.unwrap();
    }
    txn.commit().await.unwrap();
    let last = g.snapshot(&ReadRef::main()).await.unwrap();
    assert_eq!(last.count("Item").await.unwrap(), ITEMS as u64 - 5_000);
    let rows = last
        .rows_by_id("Item", &["999", "1000", "5999", "6000"])
        .await
        .unwrap();
    let mut kept: Vec<&str> = rows.keys().map(String::as_str).collect();
    kept.sort();
    assert_eq!(kept, ["6000", "999"]);
}

// ---------------------------------------------------------------- branches and time travel

fn table_files(root: &Path) -> Vec<String> {
    fn walk(p: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                let path = e.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|x| x == "lance") {
                    out.push(path.to_string_lossy().into_owned());
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&root.join("nodes"), &mut out);
    walk(&root.join("edges"), &mut out);
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branches_are_isolated_and_copy_no_data() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let root = dir.path().join("g");
    let files_before = table_files(&root);
    assert!(!files_before.is_empty());
    let b = g
        .branch_create("feature/x", &ReadRef::main())
        .await
        .unwrap();
    assert_eq!(
        table_files(&root),
        files_before,
        "creating a branch writes no table data files"
    );
    assert_eq!(
        b.head_commit,
        g.snapshot(&ReadRef::main()).await.unwrap().commit().id
    );

    let mut txn = g.begin("feature/x", "t").await.unwrap();
    txn.insert_node("Person", props(&[("name", s("Frank"))]))
        .await
        .unwrap();
    txn.update("Person", "Alice", props(&[("age", Value::Int(99))]))
        .await
        .unwrap();
    txn.commit().await.unwrap();
    let feature = ReadRef::Branch("feature/x".into());
    assert!(
        ids(&g, &feature, "Person")
            .await
            .contains(&"Frank".to_string())
    );
    assert!(
        !ids(&g, &ReadRef::main(), "Person")
            .await
            .contains(&"Frank".to_string()),
        "main unchanged"
    );
    let main_alice = g
        .snapshot(&ReadRef::main())
        .await
        .unwrap()
        .rows_by_id("Person", &["Alice"])
        .await
        .unwrap();
    assert_eq!(main_alice["Alice"].prop("age"), &Value::Int(30));

    // main moves on independently.
    g.load(
        "main",
        r#"{"type": "Person", "data": {"name": "Gina"}}"#,
        LoadMode::Append,
        "t",
        "",
    )
    .await
    .unwrap();
    assert!(
        !ids(&g, &feature, "Person")
            .await
            .contains(&"Gina".to_string())
    );

    // A branch of a branch.
    g.branch_create("feature/x2", &feature).await.unwrap();
    let mut txn = g.begin("feature/x2", "t").await.unwrap();
    txn.insert_node("Person", props(&[("name", s("Hank"))]))
        .await
        .unwrap();
    txn.commit().await.unwrap();
    let x2 = ids(&g, &ReadRef::Branch("feature/x2".into()), "Person").await;
    assert!(x2.contains(&"Frank".to_string()) && x2.contains(&"Hank".to_string()));
    assert!(
        !ids(&g, &feature, "Person")
            .await
            .contains(&"Hank".to_string())
    );

    let names: Vec<String> = g
        .branch_list()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, ["feature/x", "feature/x2", "main"]);
    let log = g.log("feature/x2", 100).await.unwrap();
    assert_eq!(log.len(), 4, "x2 commit, feature commit, seed load, create");
    assert_eq!(log[0].branch, "feature/x2");
    assert_eq!(log[1].branch, "feature/x");

    assert!(matches!(
        g.branch_create("feature/x", &ReadRef::main()).await,
        Err(Error::BranchExists { .. })
    ));
    assert!(matches!(
        g.branch_create("bad name", &ReadRef::main()).await,
        Err(Error::InvalidBranchName { .. })
    ));
    assert!(matches!(
        g.branch_create("y", &ReadRef::Branch("nope".into())).await,
        Err(Error::BranchNotFound { .. })
    ));
    assert!(matches!(
        g.branch_delete("main").await,
        Err(Error::CannotDeleteMain)
    ));
    g.branch_delete("feature/x").await.unwrap();
    assert!(matches!(
        g.snapshot(&feature).await,
        Err(Error::BranchNotFound { .. })
    ));
    // The deleted branch's commits stay readable by id, and its child still works.
    assert!(
        ids(&g, &ReadRef::Commit(log[1].id.clone()), "Person")
            .await
            .contains(&"Frank".to_string())
    );
    assert!(
        ids(&g, &ReadRef::Branch("feature/x2".into()), "Person")
            .await
            .contains(&"Frank".to_string())
    );
    // A re-created name starts fresh.
    g.branch_create("feature/x", &ReadRef::main())
        .await
        .unwrap();
    assert!(
        !ids(&g, &feature, "Person")
            .await
            .contains(&"Frank".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_and_branch_from_an_old_commit() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let old = g
        .snapshot(&ReadRef::main())
        .await
        .unwrap()
        .commit()
        .id
        .clone();
    g.load(
        "main",
        r#"{"type": "Person", "data": {"name": "Ivan", "age": 50}}"#,
        LoadMode::Append,
        "t",
        "",
    )
    .await
    .unwrap();
    let mut txn = g.begin("main", "t").await.unwrap();
    txn.delete("Person", "Bob").await.unwrap();
    txn.update("Person", "Alice", props(&[("age", Value::Int(77))]))
        .await
        .unwrap();
    txn.commit().await.unwrap();

    let at_old = ReadRef::Commit(old.clone());
    assert_eq!(
        ids(&g, &at_old, "Person").await,
        ["Alice", "Bob", "Charlie", "Diana"]
    );
    let alice = g
        .snapshot(&at_old)
        .await
        .unwrap()
        .rows_by_id("Person", &["Alice"])
        .await
        .unwrap();
    assert_eq!(alice["Alice"].prop("age"), &Value::Int(30));
    assert_eq!(
        g.snapshot(&at_old)
            .await
            .unwrap()
            .count("Knows")
            .await
            .unwrap(),
        3
    );

    g.branch_create("from-old", &at_old).await.unwrap();
    assert_eq!(
        ids(&g, &ReadRef::Branch("from-old".into()), "Person").await,
        ["Alice", "Bob", "Charlie", "Diana"]
    );
    let mut txn = g.begin("from-old", "t").await.unwrap();
    txn.delete("Person", "Charlie").await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(
        ids(&g, &ReadRef::Branch("from-old".into()), "Person").await,
        ["Alice", "Bob", "Diana"]
    );
    assert!(
        ids(&g, &ReadRef::main(), "Person")
            .await
            .contains(&"Charlie".to_string())
    );
    assert!(matches!(
        g.snapshot(&ReadRef::Commit("01NOTACOMMIT".into())).await,
        Err(Error::CommitNotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_errors_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("none").to_string_lossy().into_owned();
    assert!(matches!(
        Graph::open(&uri).await,
        Err(Error::GraphNotFound { .. })
    ));
    let g = loaded_graph(dir.path()).await;
    assert!(matches!(
        Graph::create(g.uri(), TEST_SCHEMA, "t").await,
        Err(Error::GraphExists { .. })
    ));
    assert!(matches!(
        Graph::create(&uri, "node {", "t").await,
        Err(Error::Schema(_))
    ));
    let reopened = Graph::open(g.uri()).await.unwrap();
    assert_eq!(reopened.schema_source(), TEST_SCHEMA);
}

// ---------------------------------------------------------------- two OS processes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_appending_both_land() {
    let (g, results) = two_processes(["append-a", "append-b"]).await;
    assert_eq!(results, ["OK", "OK"]);
    let people = ids(&g, &ReadRef::main(), "Person").await;
    assert!(people.contains(&"ProcA".to_string()) && people.contains(&"ProcB".to_string()));
    std::fs::remove_dir_all(Path::new(g.uri()).parent().unwrap()).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_updating_one_node_give_one_conflict() {
    let (g, results) = two_processes(["update-41", "update-42"]).await;
    assert_eq!(results, ["CONFLICT", "OK"]);
    let alice = g
        .snapshot(&ReadRef::main())
        .await
        .unwrap()
        .rows_by_id("Person", &["Alice"])
        .await
        .unwrap();
    assert!(matches!(alice["Alice"].prop("age"), Value::Int(41 | 42)));
    assert_eq!(
        g.log("main", 10).await.unwrap().len(),
        3,
        "exactly one of the two commits landed"
    );
    std::fs::remove_dir_all(Path::new(g.uri()).parent().unwrap()).ok();
}

/// Entry point of the child processes the multi-process tests spawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the multi-process tests as a child process"]
async fn child_process_entry() {
    common::run_child().await;
}

/// Stage an insert on `branch`, run `meanwhile`, then commit: the branch the
/// transaction began on is gone, so the commit must fail and write nothing.
async fn commit_after(g: &Graph, branch: &str, meanwhile: impl std::future::Future<Output = ()>) {
    let mut txn = g.begin(branch, "t").await.unwrap();
    txn.insert_node("Person", props(&[("name", s("Orphan"))]))
        .await
        .unwrap();
    meanwhile.await;
    assert!(matches!(
        txn.commit().await,
        Err(Error::BranchNotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_to_a_branch_deleted_meanwhile_fails() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    g.branch_create("short-lived", &ReadRef::main())
        .await
        .unwrap();
    commit_after(&g, "short-lived", async {
        g.branch_delete("short-lived").await.unwrap()
    })
    .await;
    // A new branch of the same name does not receive the write either.
    g.branch_create("short-lived", &ReadRef::main())
        .await
        .unwrap();
    commit_after(&g, "short-lived", async {
        g.branch_delete("short-lived").await.unwrap();
        g.branch_create("short-lived", &ReadRef::main())
            .await
            .unwrap();
    })
    .await;
    assert!(
        !ids(&g, &ReadRef::Branch("short-lived".into()), "Person")
            .await
            .contains(&"Orphan".to_string())
    );
}

// ---------------------------------------------------------------------------
// Hardening: torn manifests, exclusive create, one uri per graph, two-phase
// commits, bounded input.
// ---------------------------------------------------------------------------

/// The newest manifest file of main, by its 20-digit seq.
fn newest_main_manifest(root: &Path) -> std::path::PathBuf {
    let dir = root.join("_graph").join("branches").join("main");
    let mut seqs: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let seq = p.file_stem()?.to_str()?.parse::<u64>().ok()?;
            (p.extension()? == "json").then_some((seq, p))
        })
        .collect();
    seqs.sort();
    seqs.pop().unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_newest_manifest_is_skipped_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let root = dir.path().join("g");
    let before = fingerprint(&g, "main").await;
    load_person(&g, "Torn").await;
    // Tear the newest manifest: half its bytes, as a lost write would leave it.
    let newest = newest_main_manifest(&root);
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    let reopened = Graph::open(root.to_str().unwrap()).await.unwrap();
    assert_eq!(
        fingerprint(&reopened, "main").await,
        before,
        "readers see the commit before"
    );
    // The next commit repairs the tail and publishes in its place.
    load_person(&reopened, "After").await;
    let people = ids(&reopened, &ReadRef::main(), "Person").await;
    assert!(people.contains(&"After".to_string()) && !people.contains(&"Torn".to_string()));
    // An empty newest manifest (a crash before any byte reached the disk) too.
    std::fs::write(newest_main_manifest(&root), b"").unwrap();
    let reopened = Graph::open(root.to_str().unwrap()).await.unwrap();
    assert_eq!(
        ids(&reopened, &ReadRef::main(), "Person").await.len(),
        people.len() - 1
    );
}

/// A handle keeps the refs and manifests it parsed, and the head it read
/// last: it must still read what the files say now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_handle_reads_what_the_metadata_files_say_now() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let root = dir.path().join("g");
    let uri = root.to_string_lossy().into_owned();
    let before = fingerprint(&g, "main").await;
    load_person(&g, "Torn").await;
    assert!(has_person(&g, "Torn").await);
    // The manifest this handle just read, torn where it lies.
    let newest = newest_main_manifest(&root);
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    assert_eq!(
        fingerprint(&g, "main").await,
        before,
        "the torn head is skipped"
    );
    // The graph deleted and created again at its path, with fewer commits
    // than the head this handle read last: the old handle (its schema, its
    // kept tables) must not read it, a new one reads the new graph.
    std::fs::remove_dir_all(&root).unwrap();
    let fresh = Graph::create(&uri, TEST_SCHEMA, "t").await.unwrap();
    load_person(&fresh, "New").await;
    for at in [ReadRef::main(), ReadRef::Commit(before.0.clone())] {
        match g.snapshot(&at).await {
            Err(Error::GraphReplaced { uri: u }) => assert_eq!(u, g.uri()),
            other => panic!("{at:?}: {:?}", other.map(|s| s.commit().id.clone())),
        }
    }
    let reopened = Graph::open(&uri).await.unwrap();
    let head = reopened.snapshot(&ReadRef::main()).await.unwrap();
    assert_eq!(head.commit().id, fingerprint(&fresh, "main").await.0);
    assert_eq!(
        ids(&reopened, &ReadRef::main(), "Person").await,
        vec!["New".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_graph_leave_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("g").to_string_lossy().into_owned();
    let schemas = ["node A { x: I32 }", "node B { y: String }"];
    let tasks: Vec<_> = schemas
        .iter()
        .map(|s| {
            let (uri, s) = (uri.clone(), s.to_string());
            tokio::spawn(async move { Graph::create(&uri, &s, "t").await.map(|_| s) })
        })
        .collect();
    let mut won = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(s) => won.push(s),
            Err(e) => assert!(matches!(e, Error::GraphExists { .. }), "{e:?}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one create succeeds");
    let g = Graph::open(&uri).await.unwrap();
    assert_eq!(
        g.schema_source(),
        won[0],
        "the stored schema is the winner's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_whose_graph_json_is_lost_is_not_recreated_over() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let before = fingerprint(&g, "main").await;
    let root = dir.path().join("g");
    std::fs::remove_file(root.join("_graph").join("graph.json")).unwrap();
    let e = Graph::create(root.to_str().unwrap(), TEST_SCHEMA, "t")
        .await
        .err()
        .unwrap();
    assert!(matches!(e, Error::GraphExists { .. }), "{e:?}");
    // The tables are untouched: restoring graph.json gives the graph back.
    assert!(root.join("nodes").join("Person").exists());
    assert_eq!(fingerprint(&g, "main").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_a_uri_opens_one_graph() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let real = std::fs::canonicalize(dir.path()).unwrap();
    let escaped = format!("file://{}/%67", real.display());
    let other = Graph::open(&escaped).await.unwrap();
    assert_eq!(other.uri(), g.uri());
    assert_eq!(other.uri(), format!("{}/g", real.display()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_commit_is_invisible_until_published_and_abandon_restores() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let before = fingerprint(&g, "main").await;
    let p = staged_person(&g, "Prepared")
        .await
        .prepare()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        fingerprint(&g, "main").await,
        before,
        "prepared is not visible"
    );
    p.abandon().await;
    assert_eq!(fingerprint(&g, "main").await, before);
    // The lock was released and the tables restored: a commit lands cleanly.
    let p = staged_person(&g, "Published")
        .await
        .prepare()
        .await
        .unwrap()
        .unwrap();
    let id = p.commit_id().to_string();
    assert_eq!(p.publish().await.unwrap().commit.id, id);
    assert!(has_person(&g, "Published").await && !has_person(&g, "Prepared").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_wait_answers_its_cancel_check() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let held = staged_person(&g, "Holder")
        .await
        .prepare()
        .await
        .unwrap()
        .unwrap();
    let mut waiter = staged_person(&g, "Waiter").await;
    waiter.set_lock_timeout(std::time::Duration::from_secs(600));
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    // Says "cancelled" the third time it is asked: the wait is polling it.
    waiter.set_cancel_check(Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst) >= 2
    }));
    let e = waiter.commit().await.unwrap_err();
    assert!(matches!(e, Error::Cancelled), "{e:?}");
    assert!(asked.load(Ordering::SeqCst) >= 3);
    held.publish().await.unwrap();
    assert!(has_person(&g, "Holder").await && !has_person(&g, "Waiter").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_messages_and_branch_names_that_are_not_commit_ids() {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let before = fingerprint(&g, "main").await;
    let mut t = staged_person(&g, "Long").await;
    t.set_message("m".repeat(omnigraph_engine::MAX_MESSAGE_BYTES + 1));
    let e = t.commit().await.unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument(ref m) if m.contains("at most 65536 bytes")),
        "{e:?}"
    );
    assert_eq!(fingerprint(&g, "main").await, before);
    let e = g
        .branch_create("01ARZ3NDEKTSV4RRFFQ69G5FAV", &ReadRef::main())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidBranchName { .. }), "{e:?}");
    // Lower case is not a commit id; such names stay valid.
    g.branch_create("01arz3ndektsv4rrffq69g5fav", &ReadRef::main())
        .await
        .unwrap();
}
