//! Three-way merge, diff and merge bases.

use omnigraph_engine::{
    ChangeKind, ConflictKind, Error, Graph, LoadMode, MergeStatus, OnConflict, ReadRef, Side, Value,
};

const SCHEMA: &str = r#"
node Person {
    name: String @key
    age: I64?
    city: String?
    email: String? @unique
}
node Company {
    name: String @key
}
edge Knows: Person -> Person {
    since: Date?
}
edge WorksAt: Person -> Company @card(0..1)
"#;

const SEED: &str = r#"{"type": "Person", "data": {"name": "Alice", "age": 30, "city": "Oslo"}}
{"type": "Person", "data": {"name": "Bob", "age": 25}}
{"type": "Person", "data": {"name": "Carol", "age": 40}}
{"type": "Company", "data": {"name": "Acme"}}
{"type": "Company", "data": {"name": "Globex"}}
{"edge": "Knows", "from": "Alice", "to": "Bob", "data": {"id": "k1"}}
{"edge": "WorksAt", "from": "Alice", "to": "Acme", "data": {"id": "w1"}}"#;

async fn seeded(dir: &std::path::Path) -> Graph {
    let uri = dir.join("g").to_string_lossy().into_owned();
    let g = Graph::create(&uri, SCHEMA, "t").await.unwrap();
    g.load("main", SEED, LoadMode::Append, "t", "seed")
        .await
        .unwrap();
    g.branch_create("feature", &ReadRef::main()).await.unwrap();
    g
}

async fn load(g: &Graph, branch: &str, ndjson: &str) {
    g.load(branch, ndjson, LoadMode::Merge, "t", "")
        .await
        .unwrap();
}

async fn set(g: &Graph, branch: &str, id: &str, prop: &str, v: Value) {
    let mut t = g.begin(branch, "t").await.unwrap();
    t.update("Person", id, [(prop.to_string(), v)].into())
        .await
        .unwrap();
    t.commit().await.unwrap();
}

async fn delete(g: &Graph, branch: &str, ty: &str, id: &str) {
    let mut t = g.begin(branch, "t").await.unwrap();
    t.delete(ty, id).await.unwrap();
    t.commit().await.unwrap();
}

async fn person(g: &Graph, branch: &str, id: &str) -> Option<omnigraph_engine::Record> {
    g.snapshot(&ReadRef::Branch(branch.into()))
        .await
        .unwrap()
        .rows_by_id("Person", &[id])
        .await
        .unwrap()
        .remove(id)
}

async fn head(g: &Graph, branch: &str) -> omnigraph_engine::CommitInfo {
    g.snapshot(&ReadRef::Branch(branch.into()))
        .await
        .unwrap()
        .commit()
        .clone()
}

/// The committed heads of `feature` and `main`, as merge sides.
async fn feature_and_main(g: &Graph) -> (Side<'static>, Side<'static>) {
    let at = |b: &str| {
        let b = b.to_string();
        async move { g.snapshot(&ReadRef::Branch(b)).await.unwrap() }
    };
    (
        Side::new("feature", at("feature").await, None),
        Side::new("main", at("main").await, None),
    )
}

async fn merge(g: &Graph, on: OnConflict) -> omnigraph_engine::MergeResult {
    g.merge("feature", "main", on, None, "t").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_up_to_date_fast_forward_merged() {
    let dir = tempfile::tempdir().unwrap();
    let g = seeded(dir.path()).await;
    let before = head(&g, "main").await;
    let r = merge(&g, OnConflict::Fail).await;
    assert_eq!(r.status, MergeStatus::UpToDate);
    assert_eq!(r.commit_id.as_deref(), Some(before.id.as_str()));
    assert_eq!(
        head(&g, "main").await,
        before,
        "up_to_date publishes nothing"
    );

    // Only the source changed: a fast-forward, one commit with two parents.
    set(&g, "feature", "Bob", "age", Value::Int(26)).await;
    let source = head(&g, "feature").await;
    let r = merge(&g, OnConflict::Fail).await;
    assert_eq!(r.status, MergeStatus::FastForward);
    assert_eq!(
        (r.inserted, r.updated, r.deleted, r.conflicts),
        (0, 1, 0, 0)
    );
    let merged = head(&g, "main").await;
    assert_eq!(r.commit_id.as_deref(), Some(merged.id.as_str()));
    assert_eq!(merged.parents, vec![before.id.clone(), source.id.clone()]);
    assert_eq!(
        person(&g, "main", "Bob").await.unwrap().prop("age"),
        &Value::Int(26)
    );
    // The log walks both parents.
    let log: Vec<String> = g
        .log("main", 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert!(log.contains(&source.id) && log.contains(&before.id));
    // Merging again, either way, has nothing to do.
    assert_eq!(
        merge(&g, OnConflict::Fail).await.status,
        MergeStatus::UpToDate
    );
    let back = g
        .merge("main", "feature", OnConflict::Fail, None, "t")
        .await
        .unwrap();
    assert_eq!(
        back.status,
        MergeStatus::FastForward,
        "feature lacks only the merge commit"
    );
    assert_eq!((back.inserted, back.updated, back.deleted), (0, 0, 0));

    // Both changed: a merge commit.
    set(&g, "main", "Alice", "age", Value::Int(31)).await;
    load(
        &g,
        "feature",
        r#"{"type": "Person", "data": {"name": "Dave"}}"#,
    )
    .await;
    let r = merge(&g, OnConflict::Fail).await;
    assert_eq!(r.status, MergeStatus::Merged);
    assert_eq!((r.inserted, r.updated, r.deleted), (1, 0, 0));
    assert!(person(&g, "main", "Dave").await.is_some());
    assert_eq!(
        person(&g, "main", "Alice").await.unwrap().prop("age"),
        &Value::Int(31)
    );
    assert_eq!(head(&g, "main").await.parents.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disjoint_property_edits_of_one_node_both_win() {
    let dir = tempfile::tempdir().unwrap();
    let g = seeded(dir.path()).await;
    set(&g, "main", "Alice", "age", Value::Int(31)).await;
    set(
        &g,
        "feature",
        "Alice",
        "city",
        Value::String("Bergen".into()),
    )
    .await;
    // Both sides setting the same value is no conflict either.
    set(&g, "main", "Bob", "age", Value::Int(50)).await;
    set(&g, "feature", "Bob", "age", Value::Int(50)).await;
    let r = merge(&g, OnConflict::Fail).await;
    assert_eq!(r.status, MergeStatus::Merged, "{r:?}");
    assert_eq!(r.updated, 1);
    let alice = person(&g, "main", "Alice").await.unwrap();
    assert_eq!(alice.prop("age"), &Value::Int(31));
    assert_eq!(alice.prop("city"), &Value::String("Bergen".into()));
}

/// Set up one conflict of each row-level kind, plus a clean change.
async fn conflicted(dir: &std::path::Path) -> Graph {
    let g = seeded(dir).await;
    // update_update on Alice.age
    set(&g, "main", "Alice", "age", Value::Int(31)).await;
    set(&g, "feature", "Alice", "age", Value::Int(32)).await;
    // delete_update: main deletes Carol, feature changes her
    delete(&g, "main", "Person", "Carol").await;
    set(&g, "feature", "Carol", "age", Value::Int(41)).await;
    // update_delete: main changes Bob, feature deletes him (and k1 with him)
    set(&g, "main", "Bob", "city", Value::String("Rome".into())).await;
    delete(&g, "feature", "Person", "Bob").await;
    // insert_insert: Eve inserted on both with different ages
    load(
        &g,
        "main",
        r#"{"type": "Person", "data": {"name": "Eve", "age": 1}}"#,
    )
    .await;
    load(
        &g,
        "feature",
        r#"{"type": "Person", "data": {"name": "Eve", "age": 2}}"#,
    )
    .await;
    // a clean insert on the source
    load(
        &g,
        "feature",
        r#"{"type": "Company", "data": {"name": "Initech"}}"#,
    )
    .await;
    g
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_are_data_and_fail_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let g = conflicted(dir.path()).await;
    let before = head(&g, "main").await;
    let conflicts = g.merge_conflicts("feature", "main").await.unwrap();
    let kinds: Vec<(&str, &str, Option<&str>)> = conflicts
        .iter()
        .map(|c| (c.kind.as_str(), c.id.as_str(), c.property.as_deref()))
        .collect();
    assert!(
        kinds.contains(&("update_update", "Alice", Some("age"))),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("delete_update", "Carol", None)),
        "{kinds:?}"
    );
    assert!(kinds.contains(&("update_delete", "Bob", None)), "{kinds:?}");
    assert!(kinds.contains(&("insert_insert", "Eve", None)), "{kinds:?}");
    let alice = conflicts.iter().find(|c| c.id == "Alice").unwrap();
    assert_eq!(
        (alice.base.clone(), alice.ours.clone(), alice.theirs.clone()),
        (Some(30.into()), Some(31.into()), Some(32.into()))
    );
    assert!(alice.detail.contains("'main'") && alice.detail.contains("'feature'"));
    let r = merge(&g, OnConflict::Fail).await;
    assert_eq!(r.status, MergeStatus::Conflicts);
    assert_eq!(r.conflicts, conflicts.len() as u64);
    assert_eq!(r.commit_id, None);
    assert_eq!(head(&g, "main").await, before, "nothing published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_and_theirs_resolve_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let g = conflicted(dir.path()).await;
    let theirs_dir = tempfile::tempdir().unwrap();
    let g2 = conflicted(theirs_dir.path()).await;

    let r = merge(&g, OnConflict::Ours).await;
    assert_eq!(r.status, MergeStatus::Merged, "{r:?}");
    assert_eq!(
        person(&g, "main", "Alice").await.unwrap().prop("age"),
        &Value::Int(31)
    );
    assert!(
        person(&g, "main", "Carol").await.is_none(),
        "main's delete kept"
    );
    assert_eq!(
        person(&g, "main", "Bob").await.unwrap().prop("city"),
        &Value::String("Rome".into())
    );
    assert_eq!(
        person(&g, "main", "Eve").await.unwrap().prop("age"),
        &Value::Int(1)
    );
    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    assert_eq!(
        snap.rows_by_id("Company", &["Initech"])
            .await
            .unwrap()
            .len(),
        1
    );

    let r = g2
        .merge("feature", "main", OnConflict::Theirs, None, "t")
        .await
        .unwrap();
    assert_eq!(r.status, MergeStatus::Merged, "{r:?}");
    assert_eq!(
        person(&g2, "main", "Alice").await.unwrap().prop("age"),
        &Value::Int(32)
    );
    assert_eq!(
        person(&g2, "main", "Carol").await.unwrap().prop("age"),
        &Value::Int(41)
    );
    assert!(
        person(&g2, "main", "Bob").await.is_none(),
        "feature's delete taken"
    );
    assert_eq!(
        person(&g2, "main", "Eve").await.unwrap().prop("age"),
        &Value::Int(2)
    );
    // Bob's edge went with him.
    let snap = g2.snapshot(&ReadRef::main()).await.unwrap();
    assert!(snap.rows_by_id("Knows", &["k1"]).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_edges_unique_and_cardinality() {
    let dir = tempfile::tempdir().unwrap();
    let g = seeded(dir.path()).await;
    // orphan_edge: main deletes Carol; feature adds an edge to her.
    delete(&g, "main", "Person", "Carol").await;
    load(
        &g,
        "feature",
        r#"{"edge": "Knows", "from": "Bob", "to": "Carol", "data": {"id": "k2"}}"#,
    )
    .await;
    // unique: both give a different person the same email.
    set(&g, "main", "Alice", "email", Value::String("x@y".into())).await;
    set(&g, "feature", "Bob", "email", Value::String("x@y".into())).await;
    // cardinality: WorksAt is 0..1; Bob gets one job on each side.
    load(
        &g,
        "main",
        r#"{"edge": "WorksAt", "from": "Bob", "to": "Acme", "data": {"id": "w2"}}"#,
    )
    .await;
    load(
        &g,
        "feature",
        r#"{"edge": "WorksAt", "from": "Bob", "to": "Globex", "data": {"id": "w3"}}"#,
    )
    .await;
    let conflicts = g.merge_conflicts("feature", "main").await.unwrap();
    let find = |k: ConflictKind| {
        conflicts
            .iter()
            .find(|c| c.kind == k)
            .unwrap_or_else(|| panic!("no {k:?} in {conflicts:?}"))
    };
    let orphan = find(ConflictKind::OrphanEdge);
    assert_eq!(
        (
            orphan.type_name.as_str(),
            orphan.id.as_str(),
            orphan.property.as_deref()
        ),
        ("Knows", "k2", Some("dst"))
    );
    let unique = find(ConflictKind::Unique);
    assert_eq!(unique.type_name, "Person");
    assert!(unique.detail.contains("x@y"), "{}", unique.detail);
    let card = find(ConflictKind::Cardinality);
    assert_eq!(
        (card.type_name.as_str(), card.id.as_str()),
        ("WorksAt", "Bob")
    );
    // unique and cardinality are not a side's to resolve.
    let r = merge(&g, OnConflict::Theirs).await;
    assert_eq!(r.status, MergeStatus::Conflicts);

    // Without them, theirs restores Carol for the edge; ours drops the edge.
    let dir2 = tempfile::tempdir().unwrap();
    let g2 = seeded(dir2.path()).await;
    delete(&g2, "main", "Person", "Carol").await;
    load(
        &g2,
        "feature",
        r#"{"edge": "Knows", "from": "Bob", "to": "Carol", "data": {"id": "k2"}}"#,
    )
    .await;
    let dir3 = tempfile::tempdir().unwrap();
    let g3 = seeded(dir3.path()).await;
    delete(&g3, "main", "Person", "Carol").await;
    load(
        &g3,
        "feature",
        r#"{"edge": "Knows", "from": "Bob", "to": "Carol", "data": {"id": "k2"}}"#,
    )
    .await;
    assert_eq!(
        g2.merge("feature", "main", OnConflict::Fail, None, "t")
            .await
            .unwrap()
            .status,
        MergeStatus::Conflicts
    );
    assert_eq!(
        g2.merge("feature", "main", OnConflict::Theirs, None, "t")
            .await
            .unwrap()
            .status,
        MergeStatus::Merged
    );
    assert!(person(&g2, "main", "Carol").await.is_some());
    let k2 = |g: Graph| async move {
        g.snapshot(&ReadRef::main())
            .await
            .unwrap()
            .rows_by_id("Knows", &["k2"])
            .await
            .unwrap()
            .len()
    };
    assert_eq!(k2(g2.clone()).await, 1);
    assert_eq!(
        g3.merge("feature", "main", OnConflict::Ours, None, "t")
            .await
            .unwrap()
            .status,
        MergeStatus::Merged
    );
    assert!(person(&g3, "main", "Carol").await.is_none());
    assert_eq!(k2(g3.clone()).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cardinality_is_enforced_on_ordinary_writes() {
    let dir = tempfile::tempdir().unwrap();
    let g = seeded(dir.path()).await;
    let e = g
        .load(
            "main",
            r#"{"edge": "WorksAt", "from": "Alice", "to": "Globex"}"#,
            LoadMode::Append,
            "t",
            "",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Validation(v) if v.kind == omnigraph_engine::ViolationKind::Cardinality && v.value == "Alice"),
        "{e}"
    );
    // Moving the job in one commit is fine.
    let mut t = g.begin("main", "t").await.unwrap();
    t.delete("WorksAt", "w1").await.unwrap();
    t.insert_edge("WorksAt", "Alice", "Globex", Default::default())
        .await
        .unwrap();
    t.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_path_compares_only_changed_rows() {
    let dir = tempfile::tempdir().unwrap();
    let g = seeded(dir.path()).await;
    let many: String = (0..500)
        .map(|i| {
            format!("{{\"type\": \"Person\", \"data\": {{\"name\": \"P{i}\", \"age\": {i}}}}}\n")
        })
        .collect();
    load(&g, "main", &many).await;
    g.branch_delete("feature").await.unwrap();
    g.branch_create("feature", &ReadRef::main()).await.unwrap();
    set(&g, "main", "P1", "age", Value::Int(-1)).await;
    set(&g, "feature", "P2", "age", Value::Int(-2)).await;
    delete(&g, "feature", "Person", "P3").await;
    let (theirs, ours) = feature_and_main(&g).await;
    let plan = g
        .plan_merge(&theirs, &ours, OnConflict::Fail)
        .await
        .unwrap();
    assert!(plan.full_compare.is_empty());
    assert_eq!(
        plan.compared, 2,
        "P2 and P3, the source's changes, of 503 people"
    );
    assert_eq!((plan.updated, plan.deleted), (1, 1));
    let diff = g.diff(&ours, &theirs).await.unwrap();
    assert!(diff.full_compare.is_empty());
    assert_eq!(diff.changes.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_of_nodes_and_edges_between_branches_and_commits() {
    let dir = tempfile::tempdir().unwrap();
    let g = seeded(dir.path()).await;
    let start = head(&g, "feature").await.id;
    load(
        &g,
        "feature",
        r#"{"type": "Person", "data": {"name": "Dave", "age": 9}}
{"edge": "Knows", "from": "Dave", "to": "Alice", "data": {"id": "k9"}}"#,
    )
    .await;
    set(
        &g,
        "feature",
        "Alice",
        "city",
        Value::String("Paris".into()),
    )
    .await;
    delete(&g, "feature", "Knows", "k1").await;
    let d = g
        .diff_refs(&ReadRef::main(), &ReadRef::Branch("feature".into()))
        .await
        .unwrap();
    let got: Vec<(&str, &str, &str, Vec<String>)> = d
        .changes
        .iter()
        .map(|c| {
            (
                c.type_name.as_str(),
                c.id.as_str(),
                c.change.as_str(),
                c.properties.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("Person", "Alice", "update", vec!["city".to_string()]),
            (
                "Person",
                "Dave",
                "insert",
                vec!["name".to_string(), "age".to_string()]
            ),
            (
                "Knows",
                "k1",
                "delete",
                vec!["src".to_string(), "dst".to_string()]
            ),
            (
                "Knows",
                "k9",
                "insert",
                vec!["src".to_string(), "dst".to_string()]
            ),
        ]
    );
    let alice = &d.changes[0];
    assert_eq!(alice.before.as_ref().unwrap()["city"], "Oslo");
    assert_eq!(alice.after.as_ref().unwrap()["city"], "Paris");
    assert!(d.changes[2].after.is_none() && d.changes[3].before.is_none());
    // Between commits, and reversed.
    let end = head(&g, "feature").await.id;
    let back = g
        .diff_refs(&ReadRef::Commit(end), &ReadRef::Commit(start))
        .await
        .unwrap();
    assert_eq!(back.changes.len(), 4);
    assert_eq!(back.changes[1].change, ChangeKind::Delete);
    assert!(
        g.diff_refs(&ReadRef::main(), &ReadRef::main())
            .await
            .unwrap()
            .changes
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_after_the_source_is_deleted_and_criss_cross() {
    let dir = tempfile::tempdir().unwrap();
    let g = seeded(dir.path()).await;
    set(&g, "feature", "Bob", "age", Value::Int(99)).await;
    let source_head = head(&g, "feature").await.id;
    merge(&g, OnConflict::Fail).await;
    g.branch_delete("feature").await.unwrap();
    assert_eq!(
        person(&g, "main", "Bob").await.unwrap().prop("age"),
        &Value::Int(99)
    );
    let old = g.snapshot(&ReadRef::Commit(source_head)).await.unwrap();
    assert_eq!(
        old.rows_by_id("Person", &["Bob"]).await.unwrap()["Bob"].prop("age"),
        &Value::Int(99)
    );

    // Criss-cross: a and b merge each other from the same state, then both move on.
    g.branch_create("a", &ReadRef::main()).await.unwrap();
    g.branch_create("b", &ReadRef::main()).await.unwrap();
    set(&g, "a", "Alice", "age", Value::Int(1)).await;
    set(&g, "b", "Carol", "age", Value::Int(2)).await;
    let a0 = head(&g, "a").await;
    g.merge("b", "a", OnConflict::Fail, None, "t")
        .await
        .unwrap();
    // b merges a's state before a's merge.
    let mut t = g.begin("b", "t").await.unwrap();
    let plan = g
        .plan_merge(
            &Side::new(
                "a",
                g.snapshot(&ReadRef::Commit(a0.id.clone())).await.unwrap(),
                None,
            ),
            &Side::new("b", t.base().clone(), None),
            OnConflict::Fail,
        )
        .await
        .unwrap();
    t.stage_merge(&plan).await.unwrap();
    t.commit().await.unwrap();
    set(&g, "a", "Bob", "city", Value::String("A".into())).await;
    set(&g, "b", "Bob", "age", Value::Int(7)).await;
    let base = g
        .merge_base(&ReadRef::Branch("a".into()), &ReadRef::Branch("b".into()))
        .await
        .unwrap()
        .unwrap();
    let again = g
        .merge_base(&ReadRef::Branch("b".into()), &ReadRef::Branch("a".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(base.id, again.id, "the pick does not depend on the order");
    let r = g
        .merge("b", "a", OnConflict::Fail, None, "t")
        .await
        .unwrap();
    assert_eq!(r.status, MergeStatus::Merged, "{r:?}");
    let bob = person(&g, "a", "Bob").await.unwrap();
    assert_eq!(
        (bob.prop("age"), bob.prop("city")),
        (&Value::Int(7), &Value::String("A".into()))
    );
    assert_eq!(
        person(&g, "a", "Carol").await.unwrap().prop("age"),
        &Value::Int(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_commit_like_writes_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let g = seeded(dir.path()).await;
    g.branch_create("other", &ReadRef::main()).await.unwrap();
    set(&g, "feature", "Alice", "age", Value::Int(1)).await;
    set(&g, "other", "Bob", "age", Value::Int(2)).await;
    // Two merges from the same target state: disjoint, both land.
    let plan_for = |src: &'static str| {
        let g = g.clone();
        async move {
            let mut t = g.begin("main", "t").await.unwrap();
            let theirs = Side::new(
                src,
                g.snapshot(&ReadRef::Branch(src.into())).await.unwrap(),
                None,
            );
            let plan = g
                .plan_merge(
                    &theirs,
                    &Side::new("main", t.base().clone(), None),
                    OnConflict::Fail,
                )
                .await
                .unwrap();
            t.stage_merge(&plan).await.unwrap();
            t
        }
    };
    let t1 = plan_for("feature").await;
    let t2 = plan_for("other").await;
    t1.commit().await.unwrap();
    t2.commit().await.unwrap();
    assert_eq!(
        person(&g, "main", "Alice").await.unwrap().prop("age"),
        &Value::Int(1)
    );
    assert_eq!(
        person(&g, "main", "Bob").await.unwrap().prop("age"),
        &Value::Int(2)
    );
    // A merge racing a writer of the same row: the later commit gets a conflict.
    set(&g, "feature", "Carol", "age", Value::Int(3)).await;
    let t3 = plan_for("feature").await;
    set(&g, "main", "Carol", "age", Value::Int(4)).await;
    assert!(matches!(t3.commit().await, Err(Error::Conflict { .. })));
    assert_eq!(
        person(&g, "main", "Carol").await.unwrap().prop("age"),
        &Value::Int(4),
        "no write lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_branch_written_and_merged_before_anything_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let g = seeded(dir.path()).await;
    let main_snap = g.snapshot(&ReadRef::main()).await.unwrap();
    let pending = g.branch_create_pending("mig", &main_snap).await.unwrap();
    assert!(
        matches!(
            g.snapshot(&ReadRef::Branch("mig".into())).await,
            Err(Error::BranchNotFound { .. })
        ),
        "invisible until published"
    );
    // A second creator of the name waits for it (and times out here).
    g.set_lock_timeout(std::time::Duration::from_millis(50));
    assert!(matches!(
        g.branch_create("mig", &ReadRef::main()).await,
        Err(Error::LockTimeout { .. })
    ));
    let mut on_branch = pending.begin("t");
    on_branch
        .update(
            "Person",
            "Bob",
            [("age".to_string(), Value::Int(77))].into(),
        )
        .await
        .unwrap();
    let mut on_main = g.begin("main", "t").await.unwrap();
    let plan = g
        .plan_merge(
            &Side::new("mig", pending.snapshot().clone(), Some(&on_branch)),
            &Side::new("main", on_main.base().clone(), Some(&on_main)),
            OnConflict::Fail,
        )
        .await
        .unwrap();
    assert_eq!(plan.status, MergeStatus::FastForward);
    assert_eq!(plan.source_commit, on_branch.commit_id());
    on_main.stage_merge(&plan).await.unwrap();
    let branch_commit = on_branch.commit_id().to_string();
    let main_commit = on_main.commit_id().to_string();
    let p1 = on_branch.prepare().await.unwrap().unwrap();
    let p2 = on_main.prepare().await.unwrap().unwrap();
    p1.publish().await.unwrap();
    p2.publish().await.unwrap();
    pending.publish().await.unwrap();
    assert_eq!(head(&g, "mig").await.id, branch_commit);
    let h = head(&g, "main").await;
    assert_eq!(h.id, main_commit);
    assert_eq!(h.parents[1], branch_commit);
    assert_eq!(
        person(&g, "main", "Bob").await.unwrap().prop("age"),
        &Value::Int(77)
    );
    // Dropping a pending branch creates nothing.
    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    drop(g.branch_create_pending("gone", &snap).await.unwrap());
    assert!(
        g.branch_list()
            .await
            .unwrap()
            .iter()
            .all(|b| b.name != "gone")
    );
    g.branch_create("gone", &ReadRef::main()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_index_serves_lookups_on_branches_of_branches() {
    use omnigraph_engine::deps::lance::index::DatasetIndexExt;
    let dir = tempfile::tempdir().unwrap();
    let g = seeded(dir.path()).await;
    let many: String = (0..12_000)
        .map(|i| {
            format!("{{\"type\": \"Person\", \"data\": {{\"name\": \"N{i}\", \"age\": {i}}}}}\n")
        })
        .collect();
    load(&g, "main", &many).await;
    let ds = g
        .snapshot(&ReadRef::main())
        .await
        .unwrap()
        .dataset("Person")
        .await
        .unwrap();
    let names: Vec<String> = ds
        .load_indices()
        .await
        .unwrap()
        .iter()
        .map(|i| i.name.clone())
        .collect();
    assert_eq!(
        names,
        vec!["id_idx".to_string()],
        "built by the commit that crossed the threshold"
    );
    let uses_index = |ds: omnigraph_engine::deps::lance::Dataset| async move {
        let mut scan = omnigraph_engine::scanner(&ds);
        scan.filter("id IN ('N1', 'N2')").unwrap();
        scan.explain_plan(true)
            .await
            .unwrap()
            .contains("ScalarIndexQuery")
    };
    assert!(uses_index(ds).await, "lookups by id use the index");
    // A branch of a branch forks the table twice; its lookups still work.
    g.branch_create("a", &ReadRef::main()).await.unwrap();
    set(&g, "a", "N5", "age", Value::Int(-5)).await;
    g.branch_create("b", &ReadRef::Branch("a".into()))
        .await
        .unwrap();
    set(&g, "b", "N6", "age", Value::Int(-6)).await;
    let b = g.snapshot(&ReadRef::Branch("b".into())).await.unwrap();
    assert!(
        uses_index(b.dataset("Person").await.unwrap()).await,
        "the fork of a fork keeps the index"
    );
    let rows = b.rows_by_id("Person", &["N5", "N6", "N7"]).await.unwrap();
    assert_eq!(rows["N5"].prop("age"), &Value::Int(-5));
    assert_eq!(rows["N6"].prop("age"), &Value::Int(-6));
    assert_eq!(rows["N7"].prop("age"), &Value::Int(7));
    let r = g
        .merge("b", "main", OnConflict::Fail, None, "t")
        .await
        .unwrap();
    assert_eq!((r.status, r.updated), (MergeStatus::FastForward, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_without_change_records_is_compared_whole_and_said_so() {
    let dir = tempfile::tempdir().unwrap();
    let g = seeded(dir.path()).await;
    set(&g, "main", "Alice", "age", Value::Int(31)).await;
    set(&g, "feature", "Bob", "age", Value::Int(26)).await;
    // Graphs written before change records existed have none.
    std::fs::remove_dir_all(dir.path().join("g/_graph/changes")).unwrap();
    let g = Graph::open(g.uri()).await.unwrap();
    let (theirs, ours) = feature_and_main(&g).await;
    let plan = g
        .plan_merge(&theirs, &ours, OnConflict::Fail)
        .await
        .unwrap();
    assert_eq!(plan.full_compare, vec!["Person".to_string()]);
    assert_eq!(plan.compared, 3, "every person");
    assert_eq!((plan.status, plan.updated), (MergeStatus::Merged, 1));
    let r = g
        .merge("feature", "main", OnConflict::Fail, None, "t")
        .await
        .unwrap();
    assert_eq!(r.full_compare, vec!["Person".to_string()]);
    let bob = person(&g, "main", "Bob").await.unwrap();
    assert_eq!(bob.prop("age"), &Value::Int(26));
    assert_eq!(
        person(&g, "main", "Alice").await.unwrap().prop("age"),
        &Value::Int(31)
    );
}
