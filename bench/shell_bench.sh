#!/usr/bin/env bash
# `omnigraph sql` against DuckDB (bench/shell_bench.py): builds the command
# in release mode and DuckDB into a virtualenv under the target directory.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
ensure_packages
(cd "$ROOT" && cargo build --release --workspace --bins)
VENV="$CARGO_TARGET_DIR/bench-venv"
if [ ! -x "$VENV/bin/python" ]; then
  as_root apt-get install -y -q python3-venv >/dev/null
  # System packages too: the benchmark shares read_bench's rows (psycopg2).
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
"$VENV/bin/python" -c "import duckdb" 2>/dev/null || "$VENV/bin/pip" install --quiet duckdb
"$VENV/bin/python" "$ROOT/bench/shell_bench.py" --omnigraph "$CARGO_TARGET_DIR/release/omnigraph" \
  --dir "${OMNIGRAPH_BENCH_DIR:-/tmp/omnigraph-shell-bench}" "$@"
