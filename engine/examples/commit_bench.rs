//! A graph commit of N new nodes against a direct Lance append of the same
//! rows, on tables of the same size (#14's "graph commit vs direct Lance
//! append", goal: at most 1.5x for 1, 1,000 and 100,000 rows).
//!
//! The graph side is what a frontend pays: `begin`, `insert_rows` of the
//! N rows given as Arrow arrays (as the FDW's INSERT and COPY hand them
//! over; a batch of 1,024 rows or more is staged as one Arrow batch), and
//! `commit` (validation, the Lance writes with their fsyncs, the small
//! fragments merged, the `id` index kept, the manifest published). The
//! Lance side appends the batch the graph writes for the same rows
//! (`value::records_to_batch`), built before the clock starts, with
//! Lance's defaults (no fsync); a second Lance peer appends it through the
//! store the graph writes with (`durable_write_params`: every file synced
//! before it is named), which shows what durability alone costs. Rounds
//! rotate which of the three goes first; the medians and the median
//! per-round ratios (against each peer) are printed.
//!
//!     cargo run --release -p omnigraph-engine --example commit_bench -- [ROUNDS]
//!
//! `COMMIT_BENCH_ROWS=1,1000` runs only those sizes; `COMMIT_BENCH_STAGES=1`
//! prints the staging, prepare (resolve, validate, write the tables) and
//! publish times of every round.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use omnigraph_engine::deps::arrow_array::{
    ArrayRef, Float64Array, Int64Array, RecordBatchIterator, StringArray,
};
use omnigraph_engine::deps::lance::Dataset;
use omnigraph_engine::deps::lance::dataset::{InsertBuilder, WriteMode, WriteParams};
use omnigraph_engine::value::{Record, records_to_batch};
use omnigraph_engine::{Graph, LoadMode, NewRows, Value, durable_write_params};

const SCHEMA: &str = "node Item {\n    code: I64 @key\n    name: String\n    score: F64\n}\n";
/// Rows both tables hold before the measured commits.
const BASE: i64 = 100_000;

fn props(code: i64) -> BTreeMap<String, Value> {
    BTreeMap::from([
        ("code".to_string(), Value::Int(code)),
        ("name".to_string(), Value::String(format!("item {code}"))),
        ("score".to_string(), Value::Float(code as f64 / 7.0)),
    ])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

// As the FDW commits: on the backend thread's own runtime (local reads
// there run inline; on a multi-threaded runtime each is a hop to the
// blocking pool).
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    println!(
        "{:>7} {:>10} {:>10} {:>7} {:>12} {:>7}  per-round ratios (unsynced)",
        "rows", "graph ms", "lance ms", "ratio", "synced ms", "ratio"
    );
    // COMMIT_BENCH_ROWS=1,1000 runs only those sizes.
    let sizes: Vec<i64> = match std::env::var("COMMIT_BENCH_ROWS") {
        Ok(list) => list
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect(),
        Err(_) => vec![1, 1_000, 100_000],
    };
    for n in sizes {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let uri = dir.path().join("g").to_string_lossy().into_owned();
        let g = Graph::create(&uri, SCHEMA, "bench")
            .await
            .expect("the graph");
        let base: String = (0..BASE)
            .map(|i| format!("{{\"type\": \"Item\", \"data\": {{\"code\": {i}, \"name\": \"item {i}\", \"score\": {}}}}}\n", i as f64 / 7.0))
            .collect();
        g.load("main", &base, LoadMode::Append, "bench", "")
            .await
            .expect("the base rows");
        // The peer: a Lance dataset of the same schema holding the same rows.
        let schema = omnigraph_engine::value::table_schema(g.catalog(), "Item").expect("schema");
        let peer_uri = dir.path().join("peer.lance").to_string_lossy().into_owned();
        let snap = g
            .snapshot(&omnigraph_engine::ReadRef::main())
            .await
            .expect("snapshot");
        let rows = snap.read_all("Item").await.expect("the base rows");
        let refs: Vec<&Record> = rows.iter().collect();
        let batch = records_to_batch(g.catalog(), "Item", &refs).expect("a batch");
        let mut peer = Dataset::write(
            RecordBatchIterator::new(vec![Ok(batch.clone())], schema.clone()),
            &peer_uri,
            Some(WriteParams {
                mode: WriteMode::Create,
                ..Default::default()
            }),
        )
        .await
        .expect("the peer");
        // One session for the synced peer's writes, as the graph keeps one.
        let durable = durable_write_params(WriteMode::Append);
        let synced_uri = dir
            .path()
            .join("peer_synced.lance")
            .to_string_lossy()
            .into_owned();
        let mut synced = Dataset::write(
            RecordBatchIterator::new(vec![Ok(batch)], schema.clone()),
            &synced_uri,
            Some(WriteParams {
                mode: WriteMode::Create,
                ..durable.clone()
            }),
        )
        .await
        .expect("the synced peer");

        let (mut graph_ms, mut lance_ms, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let (mut synced_ms, mut synced_ratios) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let start = BASE + 2 * n * round as i64;
            // The graph's rows and the peer's (other keys, the same sizes).
            let peer_records: Vec<Record> = (start + n..start + 2 * n)
                .map(|code| Record {
                    id: code.to_string(),
                    endpoints: None,
                    props: props(code),
                })
                .collect();
            let refs: Vec<&Record> = peer_records.iter().collect();
            let peer_batch = records_to_batch(g.catalog(), "Item", &refs).expect("a batch");
            // The graph's rows as a bulk writer hands them over (the FDW's
            // INSERT and COPY): Arrow arrays of the properties' types, built
            // before the clock starts as the peer's batch is.
            let codes = start..start + n;
            let arrays: Vec<(String, ArrayRef)> = vec![
                (
                    "code".into(),
                    Arc::new(Int64Array::from_iter_values(codes.clone())),
                ),
                (
                    "name".into(),
                    Arc::new(StringArray::from_iter_values(
                        codes.clone().map(|c| format!("item {c}")),
                    )),
                ),
                (
                    "score".into(),
                    Arc::new(Float64Array::from_iter_values(
                        codes.map(|c| c as f64 / 7.0),
                    )),
                ),
            ];
            let new_rows = NewRows {
                ids: vec![None; n as usize],
                endpoints: Vec::new(),
                props: Vec::new(),
                arrays,
                lines: Vec::new(),
            };
            let graph = async {
                let t = Instant::now();
                let mut txn = g.begin("main", "bench").await.expect("begin");
                txn.insert_rows("Item", new_rows).await.expect("insert");
                let staged = t.elapsed().as_secs_f64() * 1e3;
                let prepared = txn.prepare().await.expect("prepare").expect("a commit");
                let prepared_at = t.elapsed().as_secs_f64() * 1e3;
                prepared.publish().await.expect("publish");
                let total = t.elapsed().as_secs_f64() * 1e3;
                if std::env::var_os("COMMIT_BENCH_STAGES").is_some() {
                    eprintln!(
                        "{n} rows: staged in {staged:.2} ms, prepared in {:.2} ms, published in {:.2} ms",
                        prepared_at - staged,
                        total - prepared_at
                    );
                }
                total
            };
            let lance = |ds: Dataset, params: WriteParams, batch| async move {
                let t = Instant::now();
                let ds = InsertBuilder::new(Arc::new(ds))
                    .with_params(&params)
                    .execute(vec![batch])
                    .await
                    .expect("append");
                (ds, t.elapsed().as_secs_f64() * 1e3)
            };
            let unsynced = WriteParams {
                mode: WriteMode::Append,
                ..Default::default()
            };
            let (g_ms, l_ms, s_ms) = match round % 3 {
                0 => {
                    let g_ms = graph.await;
                    let (ds, l_ms) = lance(peer, unsynced, peer_batch.clone()).await;
                    let (ds2, s_ms) = lance(synced, durable.clone(), peer_batch).await;
                    (peer, synced) = (ds, ds2);
                    (g_ms, l_ms, s_ms)
                }
                1 => {
                    let (ds, l_ms) = lance(peer, unsynced, peer_batch.clone()).await;
                    let (ds2, s_ms) = lance(synced, durable.clone(), peer_batch).await;
                    (peer, synced) = (ds, ds2);
                    (graph.await, l_ms, s_ms)
                }
                _ => {
                    let (ds2, s_ms) = lance(synced, durable.clone(), peer_batch.clone()).await;
                    let g_ms = graph.await;
                    let (ds, l_ms) = lance(peer, unsynced, peer_batch).await;
                    (peer, synced) = (ds, ds2);
                    (g_ms, l_ms, s_ms)
                }
            };
            graph_ms.push(g_ms);
            lance_ms.push(l_ms);
            ratios.push(g_ms / l_ms);
            synced_ms.push(s_ms);
            synced_ratios.push(g_ms / s_ms);
        }
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.1}")).collect();
        println!(
            "{n:>7} {:>10.2} {:>10.2} {:>7.2} {:>12.2} {:>7.2}  {}",
            median(graph_ms),
            median(lance_ms),
            median(ratios.clone()),
            median(synced_ms),
            median(synced_ratios),
            shown.join(" ")
        );
    }
}
