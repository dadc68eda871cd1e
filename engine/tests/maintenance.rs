//! Optimize: compaction, indexes, the maintenance commit.

use omnigraph_engine::{Graph, IndexKind, LoadMode, OPTIMIZE_MESSAGE, ReadRef, Value};

const SCHEMA: &str = r#"
node Item {
    sku: String @key
    qty: I32 @index
    active: Bool @index
    status: enum(open, closed) @index
    tags: [String]?
    emb: Vector(4)? @index
}
edge Rel: Item -> Item {
    w: I64?
}
"#;

fn items(from: usize, to: usize) -> String {
    (from..to)
        .map(|i| {
            format!(
                r#"{{"type": "Item", "data": {{"sku": "s{i:05}", "qty": {q}, "active": {a}, "status": "{s}", "emb": [{i}.0, 1.0, 2.0, 3.0]}}}}"#,
                q = i % 50,
                a = i % 2 == 0,
                s = if i % 3 == 0 { "closed" } else { "open" },
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn graph(dir: &std::path::Path, loads: usize, per_load: usize) -> Graph {
    let uri = dir.join("g").to_string_lossy().into_owned();
    let g = Graph::create(&uri, SCHEMA, "t").await.unwrap();
    for l in 0..loads {
        g.load(
            "main",
            &items(l * per_load, (l + 1) * per_load),
            LoadMode::Append,
            "t",
            "",
        )
        .await
        .unwrap();
    }
    g.load(
        "main",
        r#"{"edge": "Rel", "from": "s00001", "to": "s00002", "data": {"id": "r1"}}"#,
        LoadMode::Append,
        "t",
        "",
    )
    .await
    .unwrap();
    g
}

async fn everything(g: &Graph, at: &ReadRef) -> Vec<Vec<omnigraph_engine::value::Record>> {
    let s = g.snapshot(at).await.unwrap();
    vec![
        s.read_all("Item").await.unwrap(),
        s.read_all("Rel").await.unwrap(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_compacts_indexes_and_commits_once() {
    let dir = tempfile::tempdir().unwrap();
    let g = graph(dir.path(), 4, 30).await;
    // Deletes leave deletion files for compaction to fold in.
    let mut t = g.begin("main", "t").await.unwrap();
    t.delete("Item", "s00007").await.unwrap();
    t.commit().await.unwrap();
    let before = everything(&g, &ReadRef::main()).await;
    let head_before = g.log("main", 1).await.unwrap()[0].id.clone();

    let (commit, tables) = g.optimize("main", "op").await.unwrap();
    let commit = commit.expect("optimize changed the tables");
    assert_eq!(commit.message, OPTIMIZE_MESSAGE);
    assert_eq!(commit.actor, "op");
    assert_eq!(commit.parents, std::slice::from_ref(&head_before));
    assert_eq!(g.log("main", 1).await.unwrap()[0].id, commit.id);

    let item = tables.iter().find(|t| t.type_name == "Item").unwrap();
    assert_eq!((item.fragments_before, item.fragments_after), (4, 1));
    assert_eq!(item.rows, 119);
    assert_eq!(
        item.indexes,
        [
            "id (btree)",
            "sku (btree)",
            "qty (btree)",
            "active (bitmap)",
            "status (bitmap)",
            "emb (no vector index: needs 256 rows to train, has 119)",
        ]
    );
    let rel = tables.iter().find(|t| t.type_name == "Rel").unwrap();
    assert_eq!(rel.indexes, ["id (btree)", "src (btree)", "dst (btree)"]);

    // Same rows, and no change for diffs.
    assert_eq!(everything(&g, &ReadRef::main()).await, before);
    let diff = g
        .diff_refs(&ReadRef::Commit(head_before), &ReadRef::main())
        .await
        .unwrap();
    assert!(diff.changes.is_empty(), "{:?}", diff.changes);

    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    let kinds: Vec<(String, IndexKind)> = snap
        .indexes("Item")
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.column, i.kind))
        .collect();
    assert!(
        kinds.contains(&("qty".into(), IndexKind::BTree)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("status".into(), IndexKind::Bitmap)),
        "{kinds:?}"
    );

    // Nothing left to do: no second commit.
    let (again, tables) = g.optimize("main", "op").await.unwrap();
    assert!(again.is_none());
    assert!(tables.iter().all(|t| !t.changed));
    assert_eq!(g.log("main", 1).await.unwrap()[0].id, commit.id);

    // Rows written after the optimize are found through the index's
    // unindexed fragments, and the next optimize folds them in.
    g.load("main", &items(500, 510), LoadMode::Append, "t", "")
        .await
        .unwrap();
    let s = g.snapshot(&ReadRef::main()).await.unwrap();
    let found = s.read_where("Item", Some("qty = 0")).await.unwrap();
    let mut skus: Vec<String> = found.iter().map(|r| r.id.clone()).collect();
    skus.sort();
    assert_eq!(skus, ["s00000", "s00050", "s00100", "s00500"]);
    let stale = s.indexes("Item").await.unwrap();
    assert!(stale.iter().all(|i| i.uncovered_rows == 10), "{stale:?}");
    let (c, _) = g.optimize("main", "op").await.unwrap();
    assert!(c.is_some());
    let fresh = g
        .snapshot(&ReadRef::main())
        .await
        .unwrap()
        .indexes("Item")
        .await
        .unwrap();
    assert!(fresh.iter().all(|i| i.uncovered_rows == 0), "{fresh:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_began_before_optimize_commits_without_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let g = graph(dir.path(), 3, 10).await;
    let mut t = g.begin("main", "w").await.unwrap();
    t.update(
        "Item",
        "s00003",
        [("qty".to_string(), Value::Int(999))].into(),
    )
    .await
    .unwrap();
    t.delete("Item", "s00004").await.unwrap();
    let (c, _) = g.optimize("main", "op").await.unwrap();
    assert!(c.is_some());
    t.commit().await.unwrap().expect("the write lands");
    let s = g.snapshot(&ReadRef::main()).await.unwrap();
    let rows = s.rows_by_id("Item", &["s00003", "s00004"]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows["s00003"].props.get("qty"), Some(&Value::Int(999)));
    assert_eq!(s.count("Item").await.unwrap(), 29);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_of_a_branch_leaves_main_alone_and_trains_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let g = graph(dir.path(), 2, 150).await;
    g.branch_create("feature", &ReadRef::main()).await.unwrap();
    let main_before = g.snapshot(&ReadRef::main()).await.unwrap();
    let (c, tables) = g.optimize("feature", "op").await.unwrap();
    assert_eq!(c.unwrap().branch, "feature");
    let item = tables.iter().find(|t| t.type_name == "Item").unwrap();
    assert!(
        item.indexes.contains(&"emb (ivf_flat)".to_string()),
        "{item:?}"
    );
    let main_after = g.snapshot(&ReadRef::main()).await.unwrap();
    assert_eq!(main_after.commit().id, main_before.commit().id);
    assert!(main_after.indexes("Item").await.unwrap().len() <= 1);
    assert_eq!(
        everything(&g, &ReadRef::Branch("feature".into())).await,
        everything(&g, &ReadRef::main()).await
    );
}

mod cleanup {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use omnigraph_engine::{CleanupAction, CleanupRow, Error, Graph, LoadMode, ReadRef};

    use super::{everything, graph, items};

    /// Every file under the graph, with its size.
    fn files(dir: &std::path::Path) -> BTreeMap<String, u64> {
        fn walk(d: &std::path::Path, out: &mut BTreeMap<String, u64>) {
            for e in std::fs::read_dir(d).unwrap().flatten() {
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    walk(&e.path(), out);
                } else {
                    out.insert(e.path().to_string_lossy().into_owned(), m.len());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(dir, &mut out);
        out
    }

    fn reasons(rows: &[CleanupRow], action: CleanupAction) -> Vec<String> {
        rows.iter()
            .filter(|r| r.action == action)
            .map(|r| r.reason.clone())
            .collect()
    }

    async fn commit(g: &Graph, branch: &str, from: usize) -> String {
        g.load(branch, &items(from, from + 5), LoadMode::Append, "t", "")
            .await
            .unwrap()
            .commit
            .id
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cleanup_explains_every_version_and_reclaims_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let g = graph(dir.path(), 3, 5).await;
        // The graph's first commit (empty tables).
        let old = g.log("main", 100).await.unwrap().last().unwrap().id.clone();
        g.branch_create("feature", &ReadRef::main()).await.unwrap();
        commit(&g, "feature", 100).await;
        commit(&g, "main", 200).await;
        g.branch_create("gone", &ReadRef::main()).await.unwrap();
        commit(&g, "gone", 300).await;
        g.branch_delete("gone").await.unwrap();
        commit(&g, "main", 400).await;
        let heads = (
            everything(&g, &ReadRef::main()).await,
            everything(&g, &ReadRef::Branch("feature".into())).await,
        );

        // Every commit is recent: only versions no commit pins go (forks'
        // first versions, the steps of multi-step commits), and every
        // version says why.
        let rows = g
            .cleanup(Duration::from_secs(3600), false, "op")
            .await
            .unwrap();
        let removed = reasons(&rows, CleanupAction::Remove);
        assert!(
            removed.iter().all(|r| r.contains("no commit pins it")),
            "{rows:?}"
        );
        let kept = reasons(&rows, CleanupAction::Keep);
        for want in [
            "head of branch main",
            "head of branch feature",
            "is newer than older_than",
        ] {
            assert!(kept.iter().any(|r| r.contains(want)), "{want}: {kept:?}");
        }

        // A dry run says what would go, and changes nothing.
        let before = files(dir.path());
        let dry = g.cleanup(Duration::ZERO, true, "op").await.unwrap();
        assert_eq!(files(dir.path()), before);
        assert!(!reasons(&dry, CleanupAction::Remove).is_empty());

        let rows = g.cleanup(Duration::ZERO, false, "op").await.unwrap();
        // Every field but the byte counts.
        let strip = |rows: &[CleanupRow]| -> Vec<CleanupRow> {
            rows.iter()
                .map(|r| CleanupRow {
                    bytes: 0,
                    ..r.clone()
                })
                .collect()
        };
        assert_eq!(
            strip(&rows),
            strip(&dry),
            "the dry run said what cleanup did"
        );
        let kept = reasons(&rows, CleanupAction::Keep);
        for want in [
            "head of branch main",
            "head of branch feature",
            "base of unmerged branch feature",
        ] {
            assert!(kept.iter().any(|r| r.contains(want)), "{want}: {kept:?}");
        }
        let removed = reasons(&rows, CleanupAction::Remove);
        assert!(
            removed
                .iter()
                .any(|r| r.contains("is older than older_than")),
            "{removed:?}"
        );
        assert!(
            removed.iter().any(|r| r.contains("was deleted")),
            "{removed:?}"
        );
        let freed: u64 = rows.iter().map(|r| r.bytes).sum();
        let after = files(dir.path());
        let on_disk = |f: &BTreeMap<String, u64>| f.values().sum::<u64>();
        assert!(freed > 0 && on_disk(&after) < on_disk(&before));
        let gone: Vec<_> = before
            .iter()
            .filter(|(p, _)| !after.contains_key(*p))
            .collect();
        assert_eq!(
            on_disk(&before) - on_disk(&after),
            freed,
            "bytes account for what went: {gone:#?} {rows:#?}"
        );
        assert!(
            !after.keys().any(|p| p.contains("/tree/")
                && rows.iter().any(|r| r.reason.contains("was deleted")
                    && p.contains(r.lance_branch.as_deref().unwrap()))),
            "the deleted branch's forks are gone"
        );

        // Heads read as before; an old commit is reclaimed (55000 in SQL).
        assert_eq!(everything(&g, &ReadRef::main()).await, heads.0);
        assert_eq!(
            everything(&g, &ReadRef::Branch("feature".into())).await,
            heads.1
        );
        let s = g.snapshot(&ReadRef::Commit(old)).await.unwrap();
        assert!(matches!(
            s.read_all("Item").await,
            Err(Error::VersionReclaimed { .. })
        ));
        // Merging the branch still finds its base.
        let merged = g
            .merge(
                "feature",
                "main",
                omnigraph_engine::OnConflict::Fail,
                None,
                "op",
            )
            .await
            .unwrap();
        assert_eq!(merged.status, omnigraph_engine::MergeStatus::Merged);

        // Writes go on, and a second cleanup finds only what they made.
        commit(&g, "main", 500).await;
        let again = g.cleanup(Duration::ZERO, false, "op").await.unwrap();
        assert!(
            reasons(&again, CleanupAction::Remove).len()
                < reasons(&rows, CleanupAction::Remove).len()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tagged_versions_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let g = graph(dir.path(), 3, 5).await;
        let uri = dir
            .path()
            .join("g/nodes/Item")
            .to_string_lossy()
            .into_owned();
        let mut ds = omnigraph_engine::deps::lance::Dataset::open(&uri)
            .await
            .unwrap();
        ds.tags().create("release", 2).await.unwrap();
        drop(ds.checkout_latest().await);
        let rows = g.cleanup(Duration::ZERO, false, "op").await.unwrap();
        let tagged: Vec<_> = rows
            .iter()
            .filter(|r| r.reason == "tagged release")
            .map(|r| (r.type_name.as_deref(), r.version, r.action))
            .collect();
        assert_eq!(tagged, [(Some("Item"), Some(2), CleanupAction::Keep)]);
        let ds = omnigraph_engine::deps::lance::Dataset::open(&uri)
            .await
            .unwrap();
        assert!(ds.checkout_version(2).await.is_ok());
        assert!(ds.checkout_version(3).await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_merge_small_fragments_as_they_gather() {
    let dir = tempfile::tempdir().unwrap();
    let g = graph(dir.path(), 1, 3).await;
    for i in 3..80 {
        g.load("main", &items(i, i + 1), LoadMode::Append, "t", "")
            .await
            .unwrap();
        let s = g.snapshot(&ReadRef::main()).await.unwrap();
        let fragments = s.dataset("Item").await.unwrap().manifest().fragments.len();
        assert!(fragments <= 32, "{fragments} fragments after {i} commits");
    }
    let s = g.snapshot(&ReadRef::main()).await.unwrap();
    assert_eq!(s.count("Item").await.unwrap(), 80);
    let (_, t) = g.optimize("main", "op").await.unwrap();
    assert_eq!(
        t.iter()
            .find(|t| t.type_name == "Item")
            .unwrap()
            .fragments_after,
        1
    );
}
