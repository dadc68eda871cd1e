# Shared steps of scripts/setup.sh and scripts/test.sh. Every step checks
# before it acts, so the scripts are safe to rerun.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/omnigraph/target}"
PGRX_VERSION=0.18.1
PG_MAJOR=15
PG_BIN="/usr/lib/postgresql/$PG_MAJOR/bin"
PG_CONFIG="$PG_BIN/pg_config"
APT_PACKAGES=(build-essential pkg-config protobuf-compiler clang libclang-dev
              "postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" "postgresql-client-$PG_MAJOR"
              python3-psycopg2 python3-pytest strace
              python3-psycopg python3-sqlalchemy python3-alembic
              libpostgresql-jdbc-java default-jdk-headless)
# cargo-pgrx's own copy of this linker flag would change every crate's
# fingerprint; .cargo/config.toml gives it to all builds instead.
export CARGO_PGRX_DISABLE_GC_SECTIONS_WORKAROUND=1

log() { printf '\n==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Run a shell command as the postgres user from "/", so a working directory
# postgres may not enter (a root-owned clone) causes no warnings.
as_postgres() {
  (cd / && as_root su postgres -c "$1")
}

ensure_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "Installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# The raw-Lance peer of bench/read_bench.py: pylance, the Lance the engine
# is built on, in a Python environment of its own.
LANCE_PY_VERSION=14.0.2
ensure_lance_peer() {
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/omnigraph/bench-venv"
  if ! dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q "install ok installed"; then
    log "Installing python3-venv"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  if ! "$venv/bin/python" -c "import lance, sys; sys.exit(lance.__version__ != '$LANCE_PY_VERSION')" 2>/dev/null; then
    log "Installing pylance $LANCE_PY_VERSION for the raw-Lance peer"
    # Without it (no network, say) the read benchmark skips the peer.
    "$venv/bin/pip" install -q "pylance==$LANCE_PY_VERSION" ||
      log "pylance could not be installed: the read benchmark runs without its raw-Lance peer"
  fi
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust 1.95 (rustup) first" >&2; exit 1; }
}

ensure_cargo_pgrx() {
  ensure_rust
  if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
    log "Installing cargo-pgrx $PGRX_VERSION"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
  fi
  if ! grep -q "pg$PG_MAJOR" "$HOME/.pgrx/config.toml" 2>/dev/null; then
    log "Pointing cargo-pgrx at PostgreSQL $PG_MAJOR"
    cargo pgrx init "--pg$PG_MAJOR=$PG_CONFIG" >/dev/null
  fi
}

# Build the extension and install it into the system PostgreSQL.
install_extension() {
  log "Building and installing the omnigraph_fdw extension"
  (cd "$ROOT/omnigraph_fdw" && cargo pgrx install --pg-config "$PG_CONFIG" "$@")
}

# The `omnigraph` command (a debug build, with the dependencies the
# extension build compiled), installed as /usr/local/bin/omnigraph.
install_cli() {
  log "Building and installing the omnigraph command"
  (cd "$ROOT" && cargo build --workspace --bins)
  as_root install -m 0755 "$CARGO_TARGET_DIR/debug/omnigraph" /usr/local/bin/omnigraph
}

# start_cluster DIR PORT: a PostgreSQL cluster owned by the postgres user,
# listening on a Unix socket in DIR (and on localhost:PORT).
start_cluster() {
  local dir="$1" port="$2"
  as_root mkdir -p "$dir"
  as_root chown postgres:postgres "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_postgres "$PG_BIN/initdb -D '$dir/data' -A trust -U postgres --locale=C -E UTF8 >'$dir/initdb.log'"
  fi
  if ! as_postgres "$PG_BIN/pg_ctl -D '$dir/data' status" >/dev/null 2>&1; then
    as_postgres "$PG_BIN/pg_ctl -D '$dir/data' -w -l '$dir/server.log' \
      -o \"-p $port -k '$dir' -c listen_addresses=localhost\" start" >/dev/null
  fi
}

stop_cluster() {
  local dir="$1"
  as_postgres "$PG_BIN/pg_ctl -D '$dir/data' -m fast stop" >/dev/null 2>&1 || true
}
