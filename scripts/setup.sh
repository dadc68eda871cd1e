#!/usr/bin/env bash
# The main job: a local PostgreSQL 15 with omnigraph_fdw installed, a demo
# graph (examples/social) attached as foreign tables, a few queries, and
# the omnigraph command (/usr/local/bin) reading the same graph.
# Safe to rerun: every step checks before it acts.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DEMO_DIR="${OMNIGRAPH_DEMO_DIR:-/var/lib/omnigraph-demo}"
PORT="${OMNIGRAPH_DEMO_PORT:-5433}"
GRAPH_DIR="$DEMO_DIR/graphs/social"

ensure_packages
ensure_cargo_pgrx
install_extension
install_cli
log "Starting PostgreSQL $PG_MAJOR on port $PORT (data in $DEMO_DIR/pg)"
start_cluster "$DEMO_DIR/pg" "$PORT"
# The server process (user postgres) owns the graph files.
as_root mkdir -p "$DEMO_DIR/graphs"
as_root cp "$ROOT/examples/social/schema.pg" "$ROOT/examples/social/data.ndjson" "$DEMO_DIR/"
as_root chown -R postgres:postgres "$DEMO_DIR/graphs" "$DEMO_DIR/schema.pg" "$DEMO_DIR/data.ndjson"

demo_psql() { as_postgres "psql -X -q -v ON_ERROR_STOP=1 -h '$DEMO_DIR/pg' -p $PORT -d postgres $*"; }

log "Attaching the demo graph at $GRAPH_DIR"
demo_psql <<SQL
CREATE EXTENSION IF NOT EXISTS omnigraph_fdw;
DROP SERVER IF EXISTS social CASCADE;
CREATE SERVER social FOREIGN DATA WRAPPER omnigraph OPTIONS (uri '$GRAPH_DIR');
SQL
if ! as_root test -f "$GRAPH_DIR/_graph/graph.json"; then
  demo_psql <<SQL
SELECT omnigraph_create_graph('social', pg_read_file('$DEMO_DIR/schema.pg')) AS first_commit;
SELECT omnigraph_load('social', 'main', pg_read_file('$DEMO_DIR/data.ndjson')) AS rows_loaded;
SQL
fi
demo_psql <<'SQL'
DROP SCHEMA IF EXISTS social CASCADE;
CREATE SCHEMA social;
IMPORT FOREIGN SCHEMA "main" FROM SERVER social INTO social;
SQL

log "A few queries"
demo_psql -P pager=off -e <<'SQL'
SELECT id, name, age, status, tags FROM social.person ORDER BY id;
SELECT p.name AS person, c.name AS company, w.role
  FROM social.works_at w
  JOIN social.person p ON p.id = w.src
  JOIN social.company c ON c.id = w.dst
 ORDER BY 1;
SELECT a.name, count(*) AS knows
  FROM social.knows k JOIN social.person a ON a.id = k.src
 GROUP BY 1 ORDER BY 2 DESC, 1;
EXPLAIN (COSTS OFF) SELECT name FROM social.person WHERE age > 26 AND status = 'active';
SELECT name, head_commit FROM omnigraph_branch_list('social');
SELECT actor, message FROM omnigraph_log('social');
SQL

log "The same graph from the omnigraph command"
as_postgres "omnigraph branch list '$GRAPH_DIR'"
as_postgres "omnigraph log '$GRAPH_DIR' --limit 3"
as_postgres "omnigraph sql '$GRAPH_DIR' -c 'SELECT p.name, c.name AS company FROM works_at w JOIN person p ON p.id = w.src JOIN company c ON c.id = w.dst ORDER BY 1'"

echo
echo "Done. Connect with:"
echo "  su postgres -c \"psql -h $DEMO_DIR/pg -p $PORT -d postgres\""
echo "The demo graph is the server \"social\"; its types are tables in the schema \"social\"."
echo "Without PostgreSQL: omnigraph --help (e.g. omnigraph log $GRAPH_DIR)."
echo "Stop the server with:"
echo "  su postgres -c \"$PG_BIN/pg_ctl -D $DEMO_DIR/pg/data stop\""
