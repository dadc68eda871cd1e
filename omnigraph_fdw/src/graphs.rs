//! Open graphs and read snapshots of this backend.
//!
//! Consistency: every foreign table of one graph branch read by one
//! statement (READ COMMITTED) or one transaction (REPEATABLE READ,
//! SERIALIZABLE) reads the same commit. The first scan of a branch pins its
//! head in a cache keyed by (graph, branch); under READ COMMITTED the pin is
//! dropped when a new statement starts, and every pin is dropped at the end
//! of the transaction.
//!
//! The first snapshot of each branch a transaction reads is also kept until
//! the transaction ends: a write transaction on that branch starts its
//! conflict checks from it, so a value read by an earlier statement (or by
//! the scan of the UPDATE itself) and written back cannot overwrite a
//! concurrent commit unnoticed.

use std::cell::RefCell;
use std::collections::HashMap;

use omnigraph_engine::{Graph, ReadRef, Snapshot};
use pgrx::pg_sys;

use crate::runtime::run;

thread_local! {
    static GRAPHS: RefCell<HashMap<String, Graph>> = RefCell::new(HashMap::new());
    static SNAPSHOTS: RefCell<HashMap<(String, ReadRef), (i64, Snapshot)>> = RefCell::new(HashMap::new());
    /// (graph uri, branch) -> the first snapshot of the branch this transaction read.
    static FIRST_READ: RefCell<HashMap<(String, String), Snapshot>> = RefCell::new(HashMap::new());
}

/// Graph text is UTF-8 and is handed to Postgres as is: a database in
/// another encoding would read it as mojibake and could not write non-ASCII
/// text. Refuse such a database when a graph is first used.
pub fn check_database_encoding(server: &str) {
    // SAFETY: plain reads of the backend's database encoding.
    let (encoding, name) = unsafe {
        (
            pg_sys::GetDatabaseEncoding(),
            crate::pg::cstr(pg_sys::GetDatabaseEncodingName()),
        )
    };
    if encoding != pg_sys::pg_enc::PG_UTF8 as i32 {
        crate::pg::raise(
            pgrx::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!(
                "server {server}: omnigraph graphs need a database with encoding UTF8; this one is {name}"
            ),
            None,
            Some("Create the database with ENCODING 'UTF8' TEMPLATE template0.".into()),
        );
    }
}

/// The open graph of a server (opened once per backend).
pub fn graph(server: &str, uri: &str) -> Graph {
    check_database_encoding(server);
    if let Some(g) = GRAPHS.with(|m| m.borrow().get(uri).cloned()) {
        // Settings apply when read: a SET since the graph was opened counts.
        g.set_lock_timeout(crate::lock_timeout());
        return g;
    }
    let options = omnigraph_engine::GraphOptions {
        lock_timeout: crate::lock_timeout(),
        spill_dir: Some(spill_dir()),
    };
    let g = run(&format!("server {server}"), Graph::open_with(uri, options));
    GRAPHS.with(|m| m.borrow_mut().insert(uri.to_string(), g.clone()));
    g
}

/// Where large transactions spill staged rows: the server's own temporary
/// file directory (`base/pgsql_tmp` under the data directory), which
/// Postgres empties at start, so files of a crashed backend do not linger.
fn spill_dir() -> std::path::PathBuf {
    // SAFETY: DataDir is the backend's data directory, set before any query runs.
    let data = unsafe { crate::pg::cstr(pg_sys::DataDir) };
    let dir = std::path::Path::new(&data).join("base").join("pgsql_tmp");
    // Postgres creates it lazily too; an error surfaces when a spill is created.
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Forget a graph handle (after the graph was created or its files replaced).
pub fn forget(uri: &str) {
    GRAPHS.with(|m| m.borrow_mut().remove(uri));
    crate::tabledef::forget_all();
    SNAPSHOTS.with(|m| m.borrow_mut().retain(|(u, _), _| u != uri));
    FIRST_READ.with(|m| m.borrow_mut().retain(|(u, _), _| u != uri));
}

/// The statement whose snapshot a pin belongs to: the statement start time
/// under READ COMMITTED, the whole transaction otherwise.
fn epoch() -> i64 {
    // SAFETY: plain reads of backend-global transaction state.
    unsafe {
        if pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 {
            0
        } else {
            pg_sys::GetCurrentStatementStartTimestamp()
        }
    }
}

/// The snapshot this statement or transaction reads for `at`.
pub fn snapshot(server: &str, uri: &str, at: &ReadRef) -> Snapshot {
    snapshot_for(server, uri, at, &format!("server {server}"))
}

/// [`snapshot`], reporting errors in `context` (which names the operation).
pub fn snapshot_for(server: &str, uri: &str, at: &ReadRef, context: &str) -> Snapshot {
    if let ReadRef::Branch(b) = at {
        match crate::txn::branch_state(uri, b) {
            Some(crate::txn::BranchState::Created(s)) => return *s,
            Some(crate::txn::BranchState::Deleted) => crate::error::report(
                omnigraph_engine::Error::BranchNotFound { name: b.clone() },
                &format!("{context} (branch '{b}' was deleted by this transaction)"),
            ),
            None => {}
        }
    }
    let key = (uri.to_string(), at.clone());
    let now = epoch();
    if let Some((e, s)) = SNAPSHOTS.with(|m| m.borrow().get(&key).cloned())
        && (e == now || matches!(at, ReadRef::Commit(_)))
    {
        return s;
    }
    let snap = match crate::runtime::block_on(graph(server, uri).snapshot(at)) {
        // The graph was deleted and created again at its location: this
        // backend's handle (schema, kept tables) is the old graph's.
        Err(omnigraph_engine::Error::GraphReplaced { .. }) => {
            forget(uri);
            run(context, graph(server, uri).snapshot(at))
        }
        other => crate::error::OrReport::or_report(other, context),
    };
    if let ReadRef::Branch(b) = at {
        FIRST_READ.with(|m| {
            m.borrow_mut()
                .entry((uri.to_string(), b.clone()))
                .or_insert_with(|| snap.clone());
        });
    }
    SNAPSHOTS.with(|m| m.borrow_mut().insert(key, (now, snap.clone())));
    snap
}

/// The first snapshot of `branch` this transaction read, if it read one.
pub fn first_read(uri: &str, branch: &str) -> Option<Snapshot> {
    FIRST_READ.with(|m| {
        m.borrow()
            .get(&(uri.to_string(), branch.to_string()))
            .cloned()
    })
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_xact_event(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    if matches!(
        event,
        pg_sys::XactEvent::XACT_EVENT_COMMIT
            | pg_sys::XactEvent::XACT_EVENT_ABORT
            | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT
            | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
            | pg_sys::XactEvent::XACT_EVENT_PREPARE
    ) {
        // Never raise here: dropping cached snapshots cannot fail.
        SNAPSHOTS.with(|m| m.borrow_mut().clear());
        FIRST_READ.with(|m| m.borrow_mut().clear());
    }
}

/// Called once from `_PG_init`.
pub fn register_xact_callback() {
    // SAFETY: registers a static function with no argument; Postgres keeps
    // the registration for the life of the backend.
    unsafe { pg_sys::RegisterXactCallback(Some(on_xact_event), std::ptr::null_mut()) };
}
