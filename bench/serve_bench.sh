#!/usr/bin/env bash
# `omnigraph serve` against the extension through psycopg2 on one graph
# (bench/serve_bench.py): release builds of both, a throwaway cluster.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
ensure_packages
ensure_cargo_pgrx
install_extension --release
(cd "$ROOT" && cargo build --release --workspace --bins)
DIR="${OMNIGRAPH_BENCH_DIR:-/tmp/omnigraph-serve-bench}"
PORT="${OMNIGRAPH_BENCH_PORT:-54335}"
start_cluster "$DIR" "$PORT"
trap 'stop_cluster "$DIR"' EXIT
as_root mkdir -p "$DIR/graphs"
export PGHOST="$DIR" PGPORT="$PORT" PGUSER=postgres
/usr/bin/python3 "$ROOT/bench/serve_bench.py" --omnigraph "$CARGO_TARGET_DIR/release/omnigraph" \
  --dir "$DIR/graphs" "$@"
