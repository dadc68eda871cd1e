//! Phase timings of point reads through the engine, on the graph
//! `bench/join_bench.py` builds (100K nodes `P`, 1M edges `Knows`, after
//! `omnigraph_optimize`): a snapshot, a cached dataset handle, an index
//! lookup of one node's 10 edges by `src` (and of an absent value), and a
//! `take_range` of 10 rows. Averages over 300 calls, three rounds.
//!
//!     cargo run --release -p omnigraph-engine --example lookup_probe -- GRAPH_DIR

use std::time::Instant;

use omnigraph_engine::deps::lance::deps::datafusion::scalar::ScalarValue;
use omnigraph_engine::{Graph, ReadRef};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let uri = std::env::args().nth(1).unwrap();
    let g = Graph::open(&uri).await.unwrap();
    let n = 300u32;
    for round in 0..3 {
        let t = Instant::now();
        for _ in 0..n {
            let _ = g.snapshot(&ReadRef::main()).await.unwrap();
        }
        let snap_us = t.elapsed().as_micros() as f64 / n as f64;
        let snap = g.snapshot(&ReadRef::main()).await.unwrap();
        let t = Instant::now();
        for _ in 0..n {
            let _ = snap.dataset("Knows").await.unwrap();
        }
        let ds_us = t.elapsed().as_micros() as f64 / n as f64;
        let ds = snap.dataset("Knows").await.unwrap();
        let cols: Vec<String> = vec!["src".into(), "dst".into(), "w".into()];
        let t = Instant::now();
        for i in 0..n {
            let v = ScalarValue::Utf8(Some(format!("p{:07}", i * 37)));
            let b = omnigraph_engine::index_lookup(&ds, "src", &[v], &cols)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(b.num_rows(), 10);
        }
        let lookup_us = t.elapsed().as_micros() as f64 / n as f64;
        let t = Instant::now();
        for i in 0..n {
            let v = ScalarValue::Utf8(Some(format!("x{:07}", i * 37)));
            let b = omnigraph_engine::index_lookup(&ds, "src", &[v], &cols)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(b.num_rows(), 0);
        }
        let miss_us = t.elapsed().as_micros() as f64 / n as f64;
        let t = Instant::now();
        for i in 0..n {
            let _ =
                omnigraph_engine::take_range(&ds, &cols, (i as u64 * 1000)..(i as u64 * 1000 + 10))
                    .await
                    .unwrap();
        }
        let take_us = t.elapsed().as_micros() as f64 / n as f64;
        let one: Vec<String> = vec!["dst".into()];
        let t = Instant::now();
        for i in 0..n {
            let _ =
                omnigraph_engine::take_range(&ds, &one, (i as u64 * 1000)..(i as u64 * 1000 + 10))
                    .await
                    .unwrap();
        }
        let take1_us = t.elapsed().as_micros() as f64 / n as f64;
        println!(
            "round {round}: snapshot {snap_us:.0} us, dataset {ds_us:.1} us, index_lookup hit {lookup_us:.0} us, miss {miss_us:.0} us, take_range 10x3 {take_us:.0} us, 10x1 {take1_us:.0} us"
        );
    }
}
