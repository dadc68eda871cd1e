//! omnigraph_fdw: a graph's node and edge types as PostgreSQL foreign tables.
//!
//! Module map (callbacks are named after the FdwRoutine field they fill):
//! - `handler`: the handler and validator functions, `FdwRoutine` in groups.
//! - `plan`: GetForeignRelSize / GetForeignPaths / GetForeignPlan, and the
//!   documented `fdw_private` layout ([`plan::ScanPlan`]).
//! - `join`: parameterized paths: a join on an indexed column probes the
//!   table with the outer row's value.
//! - `upper`: GetForeignUpperPaths: aggregates and GROUP BY computed next
//!   to the data (`omnigraph_sql::scan::aggregate`).
//! - `quals`: Postgres expression trees to the owned filter model of
//!   `omnigraph_sql::filter` (pushdown rules live there, unit-tested).
//! - `scan`: Begin/Iterate/ReScan/End and EXPLAIN around the scan shared
//!   with the standalone frontend (`omnigraph_sql::scan`, which reads the
//!   transaction's own writes too).
//! - `modify`: INSERT/UPDATE/DELETE/COPY callbacks (staging rows).
//! - `direct`: UPDATE/DELETE run inside the scan when no row is needed
//!   (PlanDirectModify and its executor callbacks).
//! - `txn`: the graph write transactions of the Postgres transaction:
//!   commit at pre-commit, savepoints, abort.
//! - `datum`: Arrow values to Datums.
//! - `import`: IMPORT FOREIGN SCHEMA.
//! - `analyze`: ANALYZE (row samples for column statistics).
//! - `functions`: the SQL functions (`omnigraph_create_graph`, ...).
//! - `graphs`: open graphs and the per-statement / per-transaction snapshot cache.
//! - `runtime`: the backend's tokio runtime and cancellable waits.
//! - `error`: engine errors to SQLSTATEs.
//! - `pg`: small wrappers over `pg_sys` calls used in several places.
//!
//! `unsafe` lives in the callback entry points and `pg`; each block says why
//! it is sound.

#![deny(unsafe_op_in_unsafe_fn)]

use std::ffi::CString;

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;

mod analyze;
mod columns;
mod datum;
mod direct;
mod error;
mod functions;
mod graphs;
mod handler;
mod import;
mod join;
mod modify;
mod pg;
mod plan;
mod quals;
mod runtime;
mod scan;
mod tabledef;
mod txn;
mod upper;

pgrx::pg_module_magic!();

/// `omnigraph.branch`: the branch of foreign tables that name none.
pub(crate) static BRANCH: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"main"));

/// `omnigraph.lock_timeout`: milliseconds a commit waits for a branch's write lock.
pub(crate) static LOCK_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(60_000);

/// `omnigraph.commit_message`: the message of the graph commits a transaction makes.
pub(crate) static COMMIT_MESSAGE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);

/// `omnigraph.staging_memory`: kilobytes of staged rows a write transaction
/// keeps in memory before its inserts spill to temporary files.
pub(crate) static STAGING_MEMORY_KB: GucSetting<i32> = GucSetting::<i32>::new(65_536);

/// `omnigraph.staging_memory` in bytes.
pub(crate) fn staging_memory() -> usize {
    usize::try_from(STAGING_MEMORY_KB.get()).unwrap_or(1).max(1) * 1024
}

/// Postgres's `temp_file_limit` in bytes (`None` when unlimited): spill
/// files count against it like the server's own temporary files.
pub(crate) fn temp_file_limit() -> Option<u64> {
    // SAFETY: a plain read of the GUC's backing variable (kilobytes, -1 = none).
    let kb = unsafe { pgrx::pg_sys::temp_file_limit };
    u64::try_from(kb).ok().map(|kb| kb * 1024)
}

/// `omnigraph.lock_timeout` as a duration, read when a commit starts waiting.
pub(crate) fn lock_timeout() -> std::time::Duration {
    std::time::Duration::from_millis(LOCK_TIMEOUT_MS.get().max(1) as u64)
}

/// The message for graph commits (empty when unset).
pub(crate) fn commit_message() -> String {
    COMMIT_MESSAGE
        .get()
        .and_then(|c| c.into_string().ok())
        .unwrap_or_default()
}

/// One glibc malloc arena for the backend's threads. Postgres is single
/// threaded; the threads are ours (staging in the background, read-ahead)
/// and Lance's. With an arena per thread, memory a bulk INSERT frees on one
/// thread stays mapped in that thread's arena while the others grow their
/// own: a 1M-row insert peaked at 350-380 MiB instead of 250. Set before any
/// thread starts; a preloaded library sets it in the postmaster, and the
/// backends it forks inherit it.
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a parameter of the allocator; it is called
    // here before this library starts any thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// The memory Lance's sorts (building an index, by a commit or
/// `omnigraph_optimize`) may take before they spill to temporary files:
/// `maintenance_work_mem` when the library loads, as for Postgres's own
/// index builds, but at least [`LANCE_SORT_MEMORY_MIN`] (a smaller pool
/// can fail a sort outright rather than spill more), unless
/// `LANCE_MEM_POOL_SIZE` is set in the server's environment. Lance's
/// default, 150 MiB, let a backend grow with the table an index covered.
/// Set before any thread starts: Lance reads the variable at each sort.
fn bound_lance_sorts() {
    if std::env::var_os(LANCE_MEM_POOL).is_some() {
        return;
    }
    // SAFETY: a plain read of the GUC's backing variable (kilobytes).
    let kb = unsafe { pgrx::pg_sys::maintenance_work_mem };
    let bytes = (u64::try_from(kb).unwrap_or(0) * 1024).max(LANCE_SORT_MEMORY_MIN);
    // SAFETY: the environment is changed before this library starts any
    // thread, and Postgres's own code does not read it concurrently (a
    // backend is single threaded).
    unsafe {
        std::env::set_var(LANCE_MEM_POOL, bytes.to_string());
    }
}

/// The variable Lance reads the size of its sorts' memory pool from.
const LANCE_MEM_POOL: &str = "LANCE_MEM_POOL_SIZE";

/// The smallest pool given to Lance's sorts: Postgres's default
/// `maintenance_work_mem`.
const LANCE_SORT_MEMORY_MIN: u64 = 64 << 20;

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    one_malloc_arena();
    bound_lance_sorts();
    GucRegistry::define_string_guc(
        c"omnigraph.branch",
        c"Graph branch read and written by foreign tables without a branch option.",
        c"Foreign tables created with IMPORT FOREIGN SCHEMA ... OPTIONS (session_branch 'true'), or by hand without a branch option, use this branch.",
        &BRANCH,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"omnigraph.lock_timeout",
        c"Milliseconds a graph commit waits for the branch write lock.",
        c"",
        &LOCK_TIMEOUT_MS,
        1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_string_guc(
        c"omnigraph.commit_message",
        c"Message of the graph commits that writes of a transaction make.",
        c"Use SET LOCAL in the transaction, or SET for the session.",
        &COMMIT_MESSAGE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"omnigraph.staging_memory",
        c"Memory a write transaction's staged rows may use before inserts spill to temporary files.",
        c"Like work_mem: past this, inserted rows move to files under the database's pgsql_tmp directory until COMMIT.",
        &STAGING_MEMORY_KB,
        64,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_KB,
    );
    graphs::register_xact_callback();
    tabledef::register_invalidation_callbacks();
    txn::register_callbacks();
}

/// The branch named by `omnigraph.branch`.
pub(crate) fn session_branch() -> String {
    BRANCH
        .get()
        .and_then(|c| c.into_string().ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "main".to_string())
}

pgrx::extension_sql!(
    r#"
CREATE FOREIGN DATA WRAPPER omnigraph
  HANDLER omnigraph_fdw_handler
  VALIDATOR omnigraph_fdw_validator;
COMMENT ON FOREIGN DATA WRAPPER omnigraph IS 'omnigraph: a versioned property graph stored in Lance';
"#,
    name = "create_wrapper",
    requires = [
        handler::omnigraph_fdw_handler,
        handler::omnigraph_fdw_validator
    ],
);
