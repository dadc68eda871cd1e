//! The scan every frontend shares (`omnigraph_sql::scan`): a transaction's
//! committed, replaced, deleted, staged and spilled rows read as one table,
//! with filters, orders and limits, checked against a model of the rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use omnigraph_engine::deps::arrow_array::Array;
use omnigraph_engine::deps::arrow_array::cast::AsArray;
use omnigraph_engine::deps::arrow_array::types::Int32Type;
use omnigraph_engine::{Graph, GraphOptions, LoadMode, ReadRef, Snapshot, StagedView, Value};
use omnigraph_sql::filter::{self, CmpOp, Column, ColumnType, Expr, Scalar};
use omnigraph_sql::scan::{Scan, ScanExplain, ScanSpec, SortKey};

const SCHEMA: &str = "node Item {\n    slug: String @key\n    n: I32?\n}\n";
/// More committed rows than one Lance batch holds, so merges cross
/// batches, and enough for the shell to read them in ranges.
const COMMITTED: usize = 40_000;
const INSERTED: usize = 3_000;

type Row = (String, Option<i32>);

fn committed_n(i: usize) -> Option<i32> {
    (!i.is_multiple_of(37)).then_some((i % 100) as i32)
}

/// A graph of COMMITTED items, and a transaction that updates every 10th
/// (+3), deletes every 10th (+4) and inserts INSERTED new items, most of
/// them spilled; with the rows it should read.
async fn setup(dir: &std::path::Path) -> (Graph, omnigraph_engine::WriteTxn, Vec<Row>) {
    let uri = dir.join("g").to_string_lossy().into_owned();
    let g = Graph::create(&uri, SCHEMA, "t").await.unwrap();
    let mut data = String::new();
    for i in 0..COMMITTED {
        let n = committed_n(i).map_or("null".to_string(), |n| n.to_string());
        data.push_str(&format!(
            "{{\"type\": \"Item\", \"data\": {{\"slug\": \"c{i:05}\", \"n\": {n}}}}}\n"
        ));
    }
    g.load("main", &data, LoadMode::Append, "t", "")
        .await
        .unwrap();
    let spill = dir.join("spill");
    std::fs::create_dir_all(&spill).unwrap();
    let g = Graph::open_with(
        &uri,
        GraphOptions {
            spill_dir: Some(spill),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut txn = g.begin("main", "t").await.unwrap();
    txn.set_staging_memory(20_000);
    let mut model: BTreeMap<String, Option<i32>> = (0..COMMITTED)
        .map(|i| (format!("c{i:05}"), committed_n(i)))
        .collect();
    for i in (3..COMMITTED).step_by(10) {
        let id = format!("c{i:05}");
        let n = 1000 + (i % 7) as i32;
        let props = BTreeMap::from([("n".to_string(), Value::Int(n.into()))]);
        txn.update("Item", &id, props).await.unwrap();
        model.insert(id, Some(n));
    }
    for i in (4..COMMITTED).step_by(10) {
        let id = format!("c{i:05}");
        txn.delete("Item", &id).await.unwrap();
        model.remove(&id);
    }
    for i in 0..INSERTED {
        let id = format!("i{i:05}");
        let n = (!i.is_multiple_of(11)).then_some((i % 50) as i32);
        let props = BTreeMap::from([
            ("slug".to_string(), Value::String(id.clone())),
            (
                "n".to_string(),
                n.map_or(Value::Null, |n| Value::Int(n.into())),
            ),
        ]);
        txn.insert_node("Item", props).await.unwrap();
        model.insert(id, n);
    }
    assert!(txn.spilled_rows() > 0, "the inserts spill");
    (g, txn, model.into_iter().collect())
}

async fn view(txn: &omnigraph_engine::WriteTxn) -> (Snapshot, Arc<StagedView>) {
    let snap = txn.base().clone();
    let view = txn.view("Item", &snap).await.unwrap().unwrap();
    assert!(view.spill.is_some() && view.rows.is_some() && !view.hidden.is_empty());
    (snap, Arc::new(view))
}

fn spec(order: Vec<SortKey>, filter: Option<Expr>, limit: Option<u64>) -> ScanSpec {
    ScanSpec {
        type_name: "Item".into(),
        columns: vec!["id".into(), "n".into()],
        filter,
        params: Vec::new(),
        order,
        limit,
        offset: None,
    }
}

fn key(column: &str, ascending: bool, nulls_first: bool) -> SortKey {
    SortKey {
        column: column.into(),
        ascending,
        nulls_first,
    }
}

/// Every row a scan yields, and the number of batches.
async fn read(
    snap: &Snapshot,
    view: Option<Arc<StagedView>>,
    spec: &ScanSpec,
) -> (Vec<Row>, usize) {
    let mut scan = Scan::open(snap, view, spec).await.unwrap();
    let (mut rows, mut batches) = (Vec::new(), 0);
    while let Some(b) = scan.next_batch().await.unwrap() {
        assert!(b.num_rows() > 0, "no empty batches");
        assert_eq!(b.num_columns(), spec.columns.len());
        batches += 1;
        if spec.columns.is_empty() {
            rows.extend((0..b.num_rows()).map(|_| (String::new(), None)));
            continue;
        }
        let ids = b.column(0).as_string::<i32>();
        let ns = b.column(1).as_primitive::<Int32Type>();
        for r in 0..b.num_rows() {
            let n = (!ns.is_null(r)).then(|| ns.value(r));
            rows.push((ids.value(r).to_string(), n));
        }
    }
    (rows, batches)
}

fn cmp_n(a: Option<i32>, b: Option<i32>, ascending: bool, nulls_first: bool) -> std::cmp::Ordering {
    match (a, b) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) if nulls_first => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (Some(_), None) if nulls_first => std::cmp::Ordering::Greater,
        (Some(_), None) => std::cmp::Ordering::Less,
        (Some(x), Some(y)) if ascending => x.cmp(&y),
        (Some(x), Some(y)) => y.cmp(&x),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_reads_committed_staged_and_spilled_rows_as_one_table() {
    let dir = tempfile::tempdir().unwrap();
    let (_g, txn, model) = setup(dir.path()).await;
    let (snap, view) = view(&txn).await;

    // Unordered: the same rows (sources one after another).
    let (mut rows, _) = read(&snap, Some(view.clone()), &spec(vec![], None, None)).await;
    rows.sort();
    assert_eq!(rows, model);

    // Ordered by n (NULLS LAST) then id: one sequence, merged across
    // sources and across Lance batches.
    let order = vec![key("n", true, false), key("id", true, false)];
    let (rows, batches) = read(&snap, Some(view.clone()), &spec(order, None, None)).await;
    let mut want = model.clone();
    want.sort_by(|a, b| cmp_n(a.1, b.1, true, false).then(a.0.cmp(&b.0)));
    assert_eq!(rows, want);
    assert!(batches > 3, "{batches} batches");

    // Descending, NULLS FIRST, with a limit: the first rows of that order.
    let order = vec![key("n", false, true), key("id", false, false)];
    let (rows, _) = read(&snap, Some(view.clone()), &spec(order, None, Some(25))).await;
    let mut want = model.clone();
    want.sort_by(|a, b| cmp_n(a.1, b.1, false, true).then(b.0.cmp(&a.0)));
    assert_eq!(rows, want[..25]);

    // A filter applies to every source, the transaction's rows included.
    let n = Column {
        name: "n".into(),
        ty: ColumnType::Int,
    };
    let cmp = |op, v| Expr::Cmp {
        column: n.clone(),
        op,
        value: filter::Value::Const(Scalar::Int(v)),
        c_collation: false,
    };
    let f = filter::and_all(vec![cmp(CmpOp::GtEq, 40), cmp(CmpOp::Lt, 60)]);
    let (rows, _) = read(
        &snap,
        Some(view.clone()),
        &spec(vec![key("id", true, false)], f.clone(), None),
    )
    .await;
    let want: Vec<Row> = model
        .iter()
        .filter(|(_, n)| n.is_some_and(|n| (40..60).contains(&n)))
        .cloned()
        .collect();
    assert!(want.iter().any(|(id, _)| id.starts_with('i')));
    assert_eq!(rows, want);

    // A limit without an order still counts the rows left after hiding.
    let (rows, _) = read(&snap, Some(view.clone()), &spec(vec![], f, Some(700))).await;
    assert_eq!(rows.len(), 700.min(want.len()));
    assert!(rows.iter().all(|r| want.contains(r)));

    // LIMIT 0 reads nothing.
    let (rows, batches) = read(&snap, Some(view.clone()), &spec(vec![], None, Some(0))).await;
    assert_eq!((rows.len(), batches), (0, 0));

    // No columns (count(*)): the row count only.
    let mut count = spec(vec![], None, None);
    count.columns.clear();
    let (rows, _) = read(&snap, Some(view.clone()), &count).await;
    assert_eq!(rows.len(), model.len());

    // Ranges of the committed rows (a partitioned read): disjoint, and
    // together every row.
    let half = (COMMITTED / 2) as u64;
    let mut parts = Vec::new();
    for (offset, limit) in [(0, half), (half, COMMITTED as u64 - half)] {
        let mut s = spec(vec![], None, Some(limit));
        s.offset = Some(offset);
        parts.push(read(&snap, None, &s).await.0);
    }
    assert_eq!(parts[0].len() + parts[1].len(), COMMITTED);
    let mut all: Vec<Row> = parts.concat();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), COMMITTED);
    let mut ranged = spec(vec![], None, Some(10));
    ranged.offset = Some(0);
    assert!(
        Scan::open(&snap, Some(view.clone()), &ranged)
            .await
            .is_err(),
        "no ranges over own writes"
    );

    // Without the view: the committed rows, untouched by the transaction.
    let (rows, _) = read(&snap, None, &spec(vec![key("id", true, false)], None, None)).await;
    assert_eq!(rows.len(), COMMITTED);
    assert_eq!(rows[3], ("c00003".to_string(), committed_n(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overwritten_table_reads_only_the_transaction_s_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (g, _, _) = setup(dir.path()).await;
    let mut txn = g.begin("main", "t").await.unwrap();
    txn.overwrite("Item").unwrap();
    let props = BTreeMap::from([
        ("slug".to_string(), Value::String("only".into())),
        ("n".to_string(), Value::Int(7)),
    ]);
    txn.insert_node("Item", props).await.unwrap();
    let snap = txn.base().clone();
    let view = txn.view("Item", &snap).await.unwrap().map(Arc::new);
    let (rows, _) = read(
        &snap,
        view,
        &spec(vec![key("n", true, false)], None, Some(10)),
    )
    .await;
    assert_eq!(rows, [("only".to_string(), Some(7))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_snapshot_filter_and_columns() {
    let dir = tempfile::tempdir().unwrap();
    let (g, _, _) = setup(dir.path()).await;
    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    let f = Expr::IsNull {
        column: Column {
            name: "n".into(),
            ty: ColumnType::Int,
        },
        negated: false,
    };
    let mut s = spec(vec![key("n", false, true)], Some(f), None);
    s.columns = vec![];
    let lines = ScanExplain::new(&snap, &s).await.unwrap().lines();
    let get = |label: &str| {
        lines
            .iter()
            .find(|(l, _)| *l == label)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("Omnigraph Type").as_deref(), Some("Item"));
    assert_eq!(get("Omnigraph Branch").as_deref(), Some("main"));
    assert_eq!(get("Omnigraph Commit"), Some(snap.commit().id.clone()));
    assert_eq!(get("Pushed Filter").as_deref(), Some("n IS NULL"));
    assert_eq!(get("Columns Read").as_deref(), Some("(none)"));
    assert_eq!(get("Pushed Order").as_deref(), Some("n DESC NULLS FIRST"));
    assert_eq!(get("Omnigraph Index"), None, "no index built");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_reads_a_large_table_in_ranges_with_every_row_once() {
    use omnigraph_sql::query::{Outcome, QuerySession};
    let dir = tempfile::tempdir().unwrap();
    let (g, _, _) = setup(dir.path()).await;
    let mut s = QuerySession::new(g.clone(), ReadRef::main(), "t")
        .await
        .unwrap();
    let one = |out: Vec<Outcome>| -> String {
        let Some(Outcome::Rows { batches, .. }) = out.into_iter().last() else {
            panic!("no rows");
        };
        omnigraph_engine::deps::lance::deps::datafusion::arrow::util::pretty::pretty_format_batches(
            &batches,
        )
        .unwrap()
        .to_string()
    };
    // Committed deletes leave deletion vectors: ranges count visible rows.
    s.run("DELETE FROM item WHERE id IN ('c00000', 'c20000', 'c39999')")
        .await
        .unwrap();
    let plan = one(s.run("EXPLAIN SELECT id, n FROM item").await.unwrap());
    if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        assert!(plan.contains("partitions=2"), "{plan}");
    }
    let got = one(
        s.run("SELECT count(*) AS c, count(DISTINCT id) AS d, sum(n) AS s, min(id) AS lo, max(id) AS hi FROM (SELECT id, n FROM item) t")
            .await
            .unwrap(),
    );
    let deleted = [0, 20_000, 39_999];
    let sum: i64 = (0..COMMITTED)
        .filter(|i| !deleted.contains(i))
        .filter_map(committed_n)
        .map(i64::from)
        .sum();
    let left = COMMITTED - deleted.len();
    for want in [
        format!("| {left} | {left} | {sum} |"),
        "| c00001 | c39998 |".to_string(),
    ] {
        assert!(
            got.replace(' ', "").contains(&want.replace(' ', "")),
            "{want} in {got}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_ranges_are_read_by_offset_as_a_scan_would_read_them() {
    use omnigraph_sql::query::QuerySession;
    let dir = tempfile::tempdir().unwrap();
    let (g, _, _) = setup(dir.path()).await;
    // Committed deletes leave deletion vectors: offsets count live rows.
    let mut s = QuerySession::new(g.clone(), ReadRef::main(), "t")
        .await
        .unwrap();
    s.run("DELETE FROM item WHERE id IN ('c00000', 'c00007', 'c20000', 'c39999')")
        .await
        .unwrap();
    // Two more fragments, the second with a deleted row: ranges cross
    // fragments, with and without deletions.
    for range in [COMMITTED..COMMITTED + 100, COMMITTED + 100..COMMITTED + 150] {
        g.load("main", &items(range), LoadMode::Append, "t", "")
            .await
            .unwrap();
    }
    s.run("DELETE FROM item WHERE id IN ('c40120')")
        .await
        .unwrap();
    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    let ds = snap.dataset("Item").await.unwrap();
    let fragments = &ds.manifest().fragments;
    assert_eq!(fragments.len(), 3);
    let deleted: Vec<bool> = fragments
        .iter()
        .map(|f| f.deletion_file.is_some())
        .collect();
    assert_eq!(deleted, [true, false, true]);
    // The whole table through a Lance scan, in storage order.
    let (all, _) = read(&snap, None, &spec(vec![], None, None)).await;
    assert_eq!(all.len(), COMMITTED - 4 + 149);
    let live = all.len() as u64;
    let first = COMMITTED as u64 - 4;
    for (offset, limit) in [
        (None, 10),
        (Some(0), 1),
        (Some(5), 10),
        (Some(8190), 10),
        (Some(20_000), omnigraph_sql::scan::TAKE_ROWS),
        (Some(first - 3), 10),
        (Some(first - 3), 200),
        (Some(first), 100),
        (Some(first + 99), 30),
        (Some(first + 100), 49),
        (Some(live - 3), 10),
        (Some(live), 10),
        (Some(live + 100), 10),
    ] {
        let mut s = spec(vec![], None, Some(limit));
        s.offset = offset;
        let (rows, _) = read(&snap, None, &s).await;
        let start = offset.unwrap_or(0).min(live) as usize;
        let end = (offset.unwrap_or(0) + limit).min(live) as usize;
        assert_eq!(rows, all[start..end], "offset {offset:?}, limit {limit}");
    }
    // Past TAKE_ROWS the scan reads the same rows.
    let mut s = spec(vec![], None, Some(omnigraph_sql::scan::TAKE_ROWS + 1));
    s.offset = Some(7);
    let (rows, _) = read(&snap, None, &s).await;
    assert_eq!(rows, all[7..7 + rows.len()]);
    assert_eq!(rows.len() as u64, omnigraph_sql::scan::TAKE_ROWS + 1);
}

/// Every row of `Item` a snapshot reads through the scan (the open-dataset
/// cache) and its metadata count.
///
/// The rows read by offset (a short range without an order: through the
/// kept-open fragment readers) must be the same rows.
async fn slugs(snap: &Snapshot) -> (Vec<String>, u64) {
    let mut s = spec(vec![key("id", true, false)], None, None);
    s.columns = vec!["id".into(), "n".into()];
    let (rows, _) = read(snap, None, &s).await;
    let count = snap.count("Item").await.unwrap();
    let mut t = spec(vec![], None, Some(omnigraph_sql::scan::TAKE_ROWS));
    t.columns = s.columns.clone();
    assert!(Scan::open(snap, None, &t).await.unwrap().is_read());
    let (mut taken, _) = read(snap, None, &t).await;
    taken.sort();
    assert_eq!(taken, rows, "rows read by offset");
    (rows.into_iter().map(|(id, _)| id).collect(), count)
}

fn items(range: std::ops::Range<usize>) -> String {
    range
        .map(|i| format!("{{\"type\": \"Item\", \"data\": {{\"slug\": \"c{i:05}\", \"n\": 1}}}}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_tables_are_exactly_the_versions_snapshots_pin() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("g").to_string_lossy().into_owned();
    let g = Graph::create(&uri, SCHEMA, "t").await.unwrap();
    g.load("main", &items(0..10), LoadMode::Append, "t", "")
        .await
        .unwrap();
    // A second handle, as a second backend: its own cache.
    let other = Graph::open(&uri).await.unwrap();
    let first = g.snapshot(&ReadRef::main()).await.unwrap();
    let want = |r: std::ops::Range<usize>| {
        (
            r.clone().map(|i| format!("c{i:05}")).collect::<Vec<_>>(),
            r.len() as u64,
        )
    };
    assert_eq!(slugs(&first).await, want(0..10));
    assert_eq!(
        slugs(&other.snapshot(&ReadRef::main()).await.unwrap()).await,
        want(0..10)
    );

    // A commit through the other handle: new snapshots of both see it, the
    // old one (its table cached) still reads its own version.
    other
        .load("main", &items(10..15), LoadMode::Append, "t", "")
        .await
        .unwrap();
    assert_eq!(
        slugs(&g.snapshot(&ReadRef::main()).await.unwrap()).await,
        want(0..15)
    );
    assert_eq!(slugs(&first).await, want(0..10));

    // A branch, written, deleted and created again under the same name from
    // main: the new branch reads main's rows, not the deleted branch's.
    g.branch_create("b", &ReadRef::main()).await.unwrap();
    g.load("b", &items(15..18), LoadMode::Append, "t", "")
        .await
        .unwrap();
    let b = ReadRef::Branch("b".into());
    let old_b = g.snapshot(&b).await.unwrap();
    assert_eq!(slugs(&old_b).await, want(0..18));
    assert_eq!(slugs(&other.snapshot(&b).await.unwrap()).await, want(0..18));
    other.branch_delete("b").await.unwrap();
    other.branch_create("b", &ReadRef::main()).await.unwrap();
    assert_eq!(slugs(&g.snapshot(&b).await.unwrap()).await, want(0..15));
    g.load("b", &items(20..21), LoadMode::Append, "t", "")
        .await
        .unwrap();
    let mut now = want(0..15);
    now.0.push("c00020".into());
    now.1 += 1;
    assert_eq!(slugs(&other.snapshot(&b).await.unwrap()).await, now);
    assert_eq!(
        slugs(&g.snapshot(&ReadRef::main()).await.unwrap()).await,
        want(0..15)
    );
    // The snapshot taken before the delete still reads what it pinned.
    assert_eq!(slugs(&old_b).await, want(0..18));

    // A row deleted from a fragment both versions share: each version's
    // readers apply that version's deletions.
    let before = g.snapshot(&ReadRef::main()).await.unwrap();
    assert_eq!(slugs(&before).await, want(0..15));
    let mut txn = other.begin("main", "t").await.unwrap();
    txn.delete("Item", "c00003").await.unwrap();
    txn.commit().await.unwrap();
    let mut after = want(0..15);
    after.0.retain(|id| id != "c00003");
    after.1 -= 1;
    assert_eq!(
        slugs(&g.snapshot(&ReadRef::main()).await.unwrap()).await,
        after
    );
    assert_eq!(slugs(&before).await, want(0..15));
}

const INDEXED: &str = "node Item {\n    slug: String @key\n    n: I32? @index\n}\n";
const INDEXED_ROWS: usize = 12_000;

/// Which rows of the model a filter keeps.
type Keep = Box<dyn Fn(&str, Option<i32>) -> bool>;

fn indexed_n(i: usize) -> Option<i32> {
    (!i.is_multiple_of(13)).then_some((i % 500) as i32)
}

/// Every row a scan yields, sorted, and whether it was read whole at open
/// (an index lookup: no Lance scan left to run).
async fn read_sorted(
    snap: &Snapshot,
    view: Option<Arc<StagedView>>,
    spec: &ScanSpec,
) -> (Vec<Row>, bool) {
    let looked_up = Scan::open(snap, view.clone(), spec)
        .await
        .unwrap()
        .is_read();
    let (mut rows, _) = read(snap, view, spec).await;
    rows.sort();
    (rows, looked_up)
}

/// Each filter is answered by a lookup, with the model's rows (some).
async fn assert_looked_up(
    snap: &Snapshot,
    model: &BTreeMap<String, Option<i32>>,
    cases: Vec<(Expr, Keep)>,
    when: &str,
) {
    for (f, keep) in cases {
        let (rows, looked_up) = read_sorted(snap, None, &spec(vec![], Some(f.clone()), None)).await;
        assert!(looked_up, "{f:?} {when}");
        assert!(!rows.is_empty(), "{f:?} {when}");
        let want: Vec<Row> = model
            .iter()
            .filter(|(id, n)| keep(id, **n))
            .map(|(id, n)| (id.clone(), *n))
            .collect();
        assert_eq!(rows, want, "{f:?} {when}");
    }
}

/// Rows of `Item` outside the index on `column`.
async fn uncovered(snap: &Snapshot, column: &str) -> u64 {
    let indexes = snap.indexes("Item").await.unwrap();
    match indexes.iter().find(|i| i.column == column) {
        Some(i) => i.uncovered_rows,
        None => panic!("no index on {column}: {indexes:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equalities_on_indexed_columns_are_looked_up_as_a_scan_would_read_them() {
    use omnigraph_sql::query::QuerySession;
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("g").to_string_lossy().into_owned();
    let g = Graph::create(&uri, INDEXED, "t").await.unwrap();
    let data: String = (0..INDEXED_ROWS)
        .map(|i| {
            let n = indexed_n(i).map_or("null".to_string(), |n| n.to_string());
            format!("{{\"type\": \"Item\", \"data\": {{\"slug\": \"c{i:05}\", \"n\": {n}}}}}\n")
        })
        .collect();
    g.load("main", &data, LoadMode::Append, "t", "")
        .await
        .unwrap();
    // Before optimize only `id` is indexed (every commit keeps it): an
    // equality on the key `slug` is looked up there, as the id is the key.
    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    let slug = Column {
        name: "slug".into(),
        ty: ColumnType::Text,
    };
    for (f, want) in [
        (
            Expr::Cmp {
                column: slug.clone(),
                op: CmpOp::Eq,
                value: filter::Value::Const(Scalar::Text("c00042".into())),
                c_collation: false,
            },
            vec![("c00042".to_string(), indexed_n(42))],
        ),
        (
            Expr::InList {
                column: slug.clone(),
                values: ["c00001", "c11999", "nope"]
                    .map(|s| filter::Value::Const(Scalar::Text(s.into())))
                    .to_vec(),
                negated: false,
            },
            vec![
                ("c00001".to_string(), indexed_n(1)),
                ("c11999".to_string(), indexed_n(11999)),
            ],
        ),
    ] {
        let (rows, looked_up) =
            read_sorted(&snap, None, &spec(vec![], Some(f.clone()), None)).await;
        assert!(looked_up, "{f:?} is looked up in the id index");
        assert_eq!(rows, want, "{f:?}");
    }
    // No index on `n` yet: the table is small enough to read its column
    // whole, so an equality on it is still a lookup, with a scan's rows.
    let n42 = Expr::Cmp {
        column: Column {
            name: "n".into(),
            ty: ColumnType::Int,
        },
        op: CmpOp::Eq,
        value: filter::Value::Const(Scalar::Int(42)),
        c_collation: false,
    };
    let (rows, looked_up) = read_sorted(&snap, None, &spec(vec![], Some(n42.clone()), None)).await;
    assert!(looked_up, "a small table without an index is looked up");
    assert_eq!(
        rows.len(),
        (0..INDEXED_ROWS)
            .filter(|i| indexed_n(*i) == Some(42))
            .count()
    );
    let ordered = spec(vec![key("id", true, false)], Some(n42), None);
    let (scanned, looked_up) = read_sorted(&snap, None, &ordered).await;
    assert!(!looked_up);
    assert_eq!(scanned, rows);
    g.optimize("main", "t").await.unwrap();
    // Deletes committed after the indexes were built: the indexes still
    // name the deleted rows, which must not come back.
    let mut s = QuerySession::new(g.clone(), ReadRef::main(), "t")
        .await
        .unwrap();
    s.run("DELETE FROM item WHERE n = 42 AND slug < 'c05000'")
        .await
        .unwrap();
    s.run("DELETE FROM item WHERE id IN ('c00007', 'c00008')")
        .await
        .unwrap();
    let mut model: BTreeMap<String, Option<i32>> = (0..INDEXED_ROWS)
        .map(|i| (format!("c{i:05}"), indexed_n(i)))
        .filter(|(id, n)| !(*n == Some(42) && id.as_str() < "c05000"))
        .collect();
    model.remove("c00007");
    model.remove("c00008");
    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    let indexes = snap.indexes("Item").await.unwrap();
    assert!(
        ["id", "n"].iter().all(|c| indexes
            .iter()
            .any(|i| i.column == *c && i.uncovered_rows == 0)),
        "{indexes:?}"
    );

    let n = Column {
        name: "n".into(),
        ty: ColumnType::Int,
    };
    let id = Column {
        name: "id".into(),
        ty: ColumnType::Text,
    };
    let eq = |c: &Column, v: Scalar| Expr::Cmp {
        column: c.clone(),
        op: CmpOp::Eq,
        value: filter::Value::Const(v),
        c_collation: false,
    };
    let in_list = |c: &Column, vs: Vec<Scalar>| Expr::InList {
        column: c.clone(),
        values: vs.into_iter().map(filter::Value::Const).collect(),
        negated: false,
    };
    let want = |model: &BTreeMap<String, Option<i32>>, keep: &dyn Fn(&str, Option<i32>) -> bool| {
        model
            .iter()
            .filter(|(id, n)| keep(id, **n))
            .map(|(id, n)| (id.clone(), *n))
            .collect::<Vec<Row>>()
    };
    let cases: Vec<(Expr, Keep)> = vec![
        (eq(&n, Scalar::Int(42)), Box::new(|_, n| n == Some(42))),
        (eq(&n, Scalar::Int(499)), Box::new(|_, n| n == Some(499))),
        (eq(&n, Scalar::Int(100_000)), Box::new(|_, _| false)),
        (
            in_list(
                &n,
                vec![
                    Scalar::Int(1),
                    Scalar::Int(42),
                    Scalar::Int(7),
                    Scalar::Int(-3),
                ],
            ),
            Box::new(|_, n| matches!(n, Some(1 | 42 | 7))),
        ),
        (
            eq(&id, Scalar::Text("c00042".into())),
            Box::new(|id, _| id == "c00042"),
        ),
        (
            eq(&id, Scalar::Text("c00007".into())),
            Box::new(|_, _| false),
        ),
        (
            in_list(
                &id,
                ["c00001", "c00008", "c11999", "x"]
                    .map(|s| Scalar::Text(s.into()))
                    .to_vec(),
            ),
            Box::new(|id, _| id == "c00001" || id == "c11999"),
        ),
        // Rows stored next to each other, two of them deleted: read as
        // one range of the fragment, without the deleted ones.
        (
            in_list(
                &id,
                ["c00005", "c00006", "c00007", "c00008", "c00009"]
                    .map(|s| Scalar::Text(s.into()))
                    .to_vec(),
            ),
            Box::new(|id, _| ["c00005", "c00006", "c00009"].contains(&id)),
        ),
    ];
    for (f, keep) in &cases {
        let (rows, looked_up) =
            read_sorted(&snap, None, &spec(vec![], Some(f.clone()), None)).await;
        assert_eq!(rows, want(&model, keep.as_ref()), "{f:?}");
        assert!(looked_up, "{f:?} is answered by the index");
        // The same filter with an order is a Lance scan: the same rows.
        let ordered = spec(vec![key("id", true, false)], Some(f.clone()), None);
        let (scanned, looked_up) = read_sorted(&snap, None, &ordered).await;
        assert!(!looked_up);
        assert_eq!(scanned, rows, "{f:?}");
    }
    // A parameter, and a limit: fewer rows, all matching.
    let mut p = spec(
        vec![],
        Some(Expr::Cmp {
            column: n.clone(),
            op: CmpOp::Eq,
            value: filter::Value::Param(0),
            c_collation: false,
        }),
        Some(5),
    );
    p.params = vec![Scalar::Int(77)];
    let (rows, looked_up) = read_sorted(&snap, None, &p).await;
    assert!(looked_up);
    assert_eq!(rows.len(), 5);
    assert!(
        rows.iter()
            .all(|r| r.1 == Some(77) && model.contains_key(&r.0))
    );
    // A value of another type than the column's is compared by the scan.
    let (rows, looked_up) = read_sorted(
        &snap,
        None,
        &spec(vec![], Some(eq(&n, Scalar::Float(42.5))), None),
    )
    .await;
    assert!(!looked_up);
    assert!(rows.is_empty());

    // The transaction's own writes: rows it changed or deleted are hidden
    // from the lookup, its staged rows are read too.
    let mut txn = g.begin("main", "t").await.unwrap();
    for i in [5042usize, 6042] {
        let props = BTreeMap::from([("n".to_string(), Value::Int(1.into()))]);
        txn.update("Item", &format!("c{i:05}"), props)
            .await
            .unwrap();
        model.insert(format!("c{i:05}"), Some(1));
    }
    txn.delete("Item", "c07042").await.unwrap();
    model.remove("c07042");
    let props = BTreeMap::from([
        ("slug".to_string(), Value::String("new".into())),
        ("n".to_string(), Value::Int(42.into())),
    ]);
    txn.insert_node("Item", props).await.unwrap();
    model.insert("new".into(), Some(42));
    let view = Arc::new(txn.view("Item", &snap).await.unwrap().unwrap());
    for (f, keep) in &cases {
        let (rows, _) = read_sorted(
            &snap,
            Some(view.clone()),
            &spec(vec![], Some(f.clone()), None),
        )
        .await;
        assert_eq!(rows, want(&model, keep.as_ref()), "{f:?} with own writes");
    }
    txn.commit().await.unwrap();

    // The commit wrote a fragment the indexes do not cover (holding the
    // updated rows and the new one) and deleted rows the indexes name:
    // still looked up, the new fragment's column read whole and matched,
    // with the same answers as the model and as a Lance scan.
    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    assert_eq!(uncovered(&snap, "n").await, 3);
    for (f, keep) in &cases {
        let (rows, looked_up) =
            read_sorted(&snap, None, &spec(vec![], Some(f.clone()), None)).await;
        assert!(looked_up, "{f:?}: the index and the new fragment answer");
        assert_eq!(rows, want(&model, keep.as_ref()), "{f:?} after a commit");
        let ordered = spec(vec![key("id", true, false)], Some(f.clone()), None);
        let (scanned, _) = read_sorted(&snap, None, &ordered).await;
        assert_eq!(scanned, rows, "{f:?} after a commit");
    }
    // Matches in the new fragment only, and in both parts.
    let n1 = eq(&n, Scalar::Int(1));
    let new_or_moved = in_list(
        &id,
        vec![Scalar::Text("new".into()), Scalar::Text("c05042".into())],
    );
    assert_looked_up(
        &snap,
        &model,
        vec![
            (n1.clone(), Box::new(|_: &str, n| n == Some(1)) as Keep),
            (
                new_or_moved.clone(),
                Box::new(|id: &str, _| id == "new" || id == "c05042"),
            ),
            (
                in_list(
                    &id,
                    vec![Scalar::Text("new".into()), Scalar::Text("c00002".into())],
                ),
                Box::new(|id: &str, _| id == "new" || id == "c00002"),
            ),
        ],
        "after a commit",
    )
    .await;

    // A row of the uncovered fragment deleted: its deletion vector keeps it
    // out of the column read.
    let mut txn = g.begin("main", "t").await.unwrap();
    txn.delete("Item", "c05042").await.unwrap();
    txn.commit().await.unwrap();
    model.remove("c05042");
    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    assert_looked_up(
        &snap,
        &model,
        vec![
            (n1, Box::new(|_: &str, n| n == Some(1)) as Keep),
            (new_or_moved, Box::new(|id: &str, _| id == "new")),
        ],
        "after a delete",
    )
    .await;

    // More new rows than are worth reading whole: the `n` index's new
    // fragments are scanned with the filter (the `id` index took them in).
    let mut txn = g.begin("main", "t").await.unwrap();
    for i in 0..17_000usize {
        let slug = format!("m{i:05}");
        let n = (i % 700) as i32;
        let props = BTreeMap::from([
            ("slug".to_string(), Value::String(slug.clone())),
            ("n".to_string(), Value::Int(n.into())),
        ]);
        txn.insert_node("Item", props).await.unwrap();
        model.insert(slug, Some(n));
    }
    txn.commit().await.unwrap();
    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    assert!(uncovered(&snap, "n").await > 17_000);
    for (f, keep) in [
        (
            eq(&n, Scalar::Int(42)),
            Box::new(|_: &str, n| n == Some(42)) as Keep,
        ),
        (
            eq(&n, Scalar::Int(650)),
            Box::new(|_: &str, n| n == Some(650)),
        ),
        (
            in_list(&n, vec![Scalar::Int(1), Scalar::Int(699)]),
            Box::new(|_: &str, n| matches!(n, Some(1 | 699))),
        ),
    ] {
        let (rows, looked_up) =
            read_sorted(&snap, None, &spec(vec![], Some(f.clone()), None)).await;
        assert!(looked_up, "{f:?}");
        assert!(rows.iter().any(|r| r.0.starts_with('m')), "{f:?}");
        assert_eq!(
            rows,
            want(&model, keep.as_ref()),
            "{f:?} after a large commit"
        );
    }
}
