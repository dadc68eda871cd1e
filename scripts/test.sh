#!/usr/bin/env bash
# Runs every test: the engine and SQL crates' unit, property and
# integration tests (with failpoints), then the extension against a
# throwaway PostgreSQL 15 cluster: pg_regress golden files and the pytest
# suite (several connections, cached plans, cancel, memory, durability,
# the differential test, client drivers), then clippy. Safe to rerun.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_packages
ensure_cargo_pgrx

log "Rust tests (engine with failpoints, SQL translation)"
# One invocation for the whole workspace, so dependency features match the
# extension build below and nothing is compiled twice.
(cd "$ROOT" && cargo test --workspace --features omnigraph-engine/failpoints)

install_extension

TMP="$(mktemp -d /tmp/omnigraph-test.XXXXXX)"
PORT="${OMNIGRAPH_TEST_PORT:-54329}"
cleanup() { stop_cluster "$TMP"; as_root rm -rf "$TMP"; }
trap cleanup EXIT
log "Starting a throwaway PostgreSQL $PG_MAJOR cluster in $TMP"
start_cluster "$TMP" "$PORT"
as_root mkdir -p "$TMP/graphs" "$TMP/fixtures"
as_root cp -r "$ROOT"/examples/social/* "$ROOT"/engine/tests/fixtures/* "$TMP/fixtures/"
as_root chown -R postgres:postgres "$TMP/graphs" "$TMP/fixtures"
export PGHOST="$TMP" PGPORT="$PORT" PGUSER=postgres
export OMNIGRAPH_TEST_GRAPHS="$TMP/graphs" OMNIGRAPH_TEST_FIXTURES="$TMP/fixtures"
# The omnigraph command the Rust tests above built (tests/test_shell.py).
export OMNIGRAPH_BIN="$CARGO_TARGET_DIR/debug/omnigraph"

log "pg_regress"
REGRESS_DIR="$ROOT/omnigraph_fdw/tests/pg_regress"
OUT="$TMP/regress"
mkdir -p "$OUT"
TESTS="setup $(cd "$REGRESS_DIR/sql" && ls *.sql | sed "s/\.sql$//" | grep -vx setup | sort | tr "\n" " ")"
if ! "/usr/lib/postgresql/$PG_MAJOR/lib/pgxs/src/test/regress/pg_regress" \
    --host="$TMP" --port="$PORT" --user=postgres \
    --inputdir="$REGRESS_DIR" --outputdir="$OUT" \
    --load-extension=omnigraph_fdw --dbname=omnigraph_regress $TESTS; then
  cat "$OUT/regression.diffs" >&2 || true
  exit 1
fi

# No backend may have crashed, even where a test's output looked right.
if grep -E "terminated by signal|PANIC:" "$TMP/server.log" >&2; then
  echo "pg_regress: a backend crashed (server log above)" >&2
  exit 1
fi

log "pytest (connections, cached plans, cancel, memory, durability, clients)"
/usr/bin/python3 -m pytest -q -p no:cacheprovider "$ROOT/tests"

log "clippy (every target, warnings are errors)"
(cd "$ROOT" && cargo clippy --workspace --all-targets --features omnigraph-engine/failpoints -- -D warnings)
