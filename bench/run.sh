#!/usr/bin/env bash
# Builds the extension in release mode, starts a throwaway cluster and runs
# the read and write benchmarks. Numbers are whole-query times; read them as ratios.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
ensure_packages
ensure_cargo_pgrx
ensure_lance_peer
install_extension --release
DIR="${OMNIGRAPH_BENCH_DIR:-/tmp/omnigraph-bench}"
PORT="${OMNIGRAPH_BENCH_PORT:-54331}"
start_cluster "$DIR" "$PORT"
as_root mkdir -p "$DIR/graphs" && as_root chown postgres:postgres "$DIR/graphs"
export PGHOST="$DIR" PGPORT="$PORT" PGUSER=postgres
/usr/bin/python3 "$ROOT/bench/read_bench.py" --graph-dir "$DIR/graphs/read" "$@"
/usr/bin/python3 "$ROOT/bench/join_bench.py" --graph-dir "$DIR/graphs/join"
/usr/bin/python3 "$ROOT/bench/tps_bench.py" --graph-dir "$DIR/graphs/tps"
/usr/bin/python3 "$ROOT/bench/lookup_bench.py" --graph-dir "$DIR/graphs/lookup"
/usr/bin/python3 "$ROOT/bench/write_bench.py" --graph-dir "$DIR/graphs/wbench"
/usr/bin/python3 "$ROOT/bench/merge_bench.py" --graph-dir "$DIR/graphs/mbench"
/usr/bin/python3 "$ROOT/bench/ops_bench.py" --graph-dir "$DIR/graphs/obench"
