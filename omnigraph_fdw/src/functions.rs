//! SQL functions. Each takes the foreign server's name first, checks that
//! the caller may use the server, and reports engine errors with SQLSTATEs.
//!
//! Privileges (docs/user/security.md): USAGE on the server reads the graph
//! (log, branch list, schema); functions that change the graph also need
//! ownership of the server (membership in the owning role counts, as for
//! `ALTER SERVER`) and a read-write transaction.

use omnigraph_engine::{Graph, LoadMode, ReadRef};
use pgrx::prelude::*;
use pgrx::{PgSqlErrorCode, pg_sys};

use crate::error::OrReport;
use crate::graphs;
use crate::pg::{self, Server, raise};
use crate::runtime::run;

/// Microseconds since 1970 as `timestamptz` (Postgres counts from 2000).
pub(crate) const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

fn timestamptz(unix_us: i64) -> TimestampWithTimeZone {
    TimestampWithTimeZone::try_from(unix_us - PG_EPOCH_OFFSET_US).unwrap_or_else(|_| {
        raise(
            PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
            "timestamp out of range",
            None,
            None,
        )
    })
}

/// The server, after checking the current role has USAGE on it.
fn usable_server(name: &str) -> Server {
    let server = pg::server_by_name(name);
    // SAFETY: server.oid is a valid server; GetUserId is valid in a transaction.
    let ok = unsafe {
        pg_sys::pg_foreign_server_aclcheck(
            server.oid,
            pg_sys::GetUserId(),
            pg_sys::ACL_USAGE as pg_sys::AclMode,
        )
    };
    if ok != pg_sys::AclResult::ACLCHECK_OK {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("permission denied for foreign server {name}"),
            None,
            Some(format!(
                "GRANT USAGE ON FOREIGN SERVER {name} TO {};",
                pg::current_role()
            )),
        );
    }
    server
}

/// The server, after checking the current role may change the graph behind
/// it: a read-write transaction, USAGE, and ownership of the server.
fn operable_server(name: &str, function: &str) -> Server {
    // The checks of PreventCommandIfReadOnly / PreventCommandDuringRecovery,
    // made here so the error is raised the way every other one is.
    // SAFETY: plain reads of transaction state; RecoveryInProgress never raises.
    let (read_only, recovery) = unsafe { (pg_sys::XactReadOnly, pg_sys::RecoveryInProgress()) };
    if read_only || recovery {
        raise(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            if recovery {
                format!("cannot execute {function}() during recovery")
            } else {
                format!("cannot execute {function}() in a read-only transaction")
            },
            None,
            None,
        );
    }
    let server = usable_server(name);
    // SAFETY: server.oid is a valid server; GetUserId is valid in a
    // transaction. True for superusers and members of the owning role.
    let owns = unsafe { pg_sys::pg_foreign_server_ownercheck(server.oid, pg_sys::GetUserId()) };
    if !owns {
        let owner = pg::role_name(server.owner);
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!(
                "permission denied for foreign server {name}: {function}() changes the graph, which needs ownership of the server"
            ),
            Some(format!("Server {name} is owned by role {owner}.")),
            Some(format!(
                "Grant membership in the owning role: GRANT {owner} TO {};",
                pg::current_role()
            )),
        );
    }
    server
}

fn open(server: &str) -> (Server, Graph) {
    let s = usable_server(server);
    let g = graphs::graph(&s.name, &s.uri);
    (s, g)
}

/// [`open`] for a function that changes the graph.
fn open_to_change(server: &str, function: &str) -> (Server, Graph) {
    let s = operable_server(server, function);
    let g = graphs::graph(&s.name, &s.uri);
    (s, g)
}

/// Resolve `from_ref`: a commit id, or else a branch name. Branch names can
/// never have the form of a commit id, so the two cannot be confused.
fn resolve_ref(from_ref: &str) -> ReadRef {
    if omnigraph_engine::is_commit_id(from_ref) {
        ReadRef::Commit(from_ref.to_string())
    } else {
        ReadRef::Branch(from_ref.to_string())
    }
}

/// Create an empty graph at the server's `uri` from `.pg` schema text.
/// Returns the id of the graph's first commit.
///
/// Creating files cannot be rolled back with a transaction, so this runs
/// only as a statement of its own (not in a transaction block, function
/// with an exception block, or DO block inside one).
#[pg_extern(volatile, parallel_unsafe)]
fn omnigraph_create_graph(server: &str, schema: &str) -> String {
    let s = operable_server(server, "omnigraph_create_graph");
    // What PreventInTransactionBlock checks (an implicit block of a
    // multi-statement query string counts as a transaction block).
    // SAFETY: plain reads of transaction state.
    let (block, sub) = unsafe { (pg_sys::IsTransactionBlock(), pg_sys::IsSubTransaction()) };
    if block || sub {
        raise(
            PgSqlErrorCode::ERRCODE_ACTIVE_SQL_TRANSACTION,
            format!(
                "omnigraph_create_graph() cannot run inside a {}",
                if block {
                    "transaction block"
                } else {
                    "subtransaction"
                }
            ),
            Some("Creating a graph writes files that a rollback could not remove.".into()),
            Some("Run it as a statement of its own, outside BEGIN ... COMMIT.".into()),
        );
    }
    graphs::check_database_encoding(server);
    let actor = pg::current_role();
    let g = run(
        &format!("server {server}"),
        Graph::create(&s.uri, schema, &actor),
    );
    graphs::forget(&s.uri);
    run(&format!("server {server}"), async move {
        Ok(g.snapshot(&ReadRef::main()).await?.commit().id.clone())
    })
}

/// Load NDJSON into a branch; returns the number of rows staged. The rows
/// are part of the current transaction, like rows written with INSERT:
/// later statements of the transaction see them, COMMIT publishes them (in
/// the transaction's one graph commit of that branch), ROLLBACK discards them.
#[pg_extern(volatile, parallel_unsafe)]
fn omnigraph_load(
    server: &str,
    branch: &str,
    ndjson: &str,
    mode: default!(&str, "'append'"),
) -> i64 {
    let mode: LoadMode = mode
        .parse::<LoadMode>()
        .or_report(&format!("server {server}"));
    let s = operable_server(server, "omnigraph_load");
    let rows = crate::txn::with(&s.name, &s.uri, branch, async |t| {
        if t.message().is_empty() {
            t.set_message(omnigraph_engine::load_message(mode));
        }
        t.load_ndjson(ndjson, mode).await
    });
    i64::try_from(rows).unwrap_or(i64::MAX)
}

/// Create a branch from a branch head (default `main`) or a commit id;
/// returns the commit the branch starts at.
#[pg_extern(volatile, parallel_unsafe)]
fn omnigraph_branch_create(server: &str, name: &str, from_ref: default!(&str, "'main'")) -> String {
    let (_, g) = open_to_change(server, "omnigraph_branch_create");
    let from = resolve_ref(from_ref);
    run(
        &format!("server {server}: creating branch '{name}'"),
        g.branch_create(name, &from),
    )
    .head_commit
}

/// Delete a branch (not `main`). Its commits stay readable by id until cleanup.
#[pg_extern(volatile, parallel_unsafe)]
fn omnigraph_branch_delete(server: &str, name: &str) {
    let (_, g) = open_to_change(server, "omnigraph_branch_delete");
    run(
        &format!("server {server}: deleting branch '{name}'"),
        g.branch_delete(name),
    );
}

#[pg_extern(stable, parallel_safe)]
fn omnigraph_branch_list(
    server: &str,
) -> TableIterator<
    'static,
    (
        name!(name, String),
        name!(head_commit, String),
        name!(created_at, TimestampWithTimeZone),
    ),
> {
    let (_, g) = open(server);
    let branches = run(
        &format!("server {server}: listing branches"),
        g.branch_list(),
    );
    let rows: Vec<_> = branches
        .into_iter()
        .map(|b| (b.name, b.head_commit, timestamptz(b.created_at_us)))
        .collect();
    TableIterator::new(rows)
}

/// The commits reachable from a branch head, newest first.
#[pg_extern(stable, parallel_safe)]
#[allow(clippy::type_complexity)]
fn omnigraph_log(
    server: &str,
    branch: default!(&str, "'main'"),
) -> TableIterator<
    'static,
    (
        name!(commit_id, String),
        name!(parents, Vec<String>),
        name!(branch, String),
        name!(actor, String),
        name!(message, String),
        name!(committed_at, TimestampWithTimeZone),
    ),
> {
    let (_, g) = open(server);
    let log = run(
        &format!("server {server}: log of branch '{branch}'"),
        g.log(branch, usize::MAX),
    );
    let rows: Vec<_> = log
        .into_iter()
        .map(|c| {
            (
                c.id,
                c.parents,
                c.branch,
                c.actor,
                c.message,
                timestamptz(c.committed_at_us),
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// The graph's schema source.
#[pg_extern(stable, parallel_safe)]
fn omnigraph_schema(server: &str) -> String {
    let (_, g) = open(server);
    g.schema_source().to_string()
}

/// Roll back what interrupted commits left behind on a branch; returns the
/// node and edge types whose tables were rolled back.
#[pg_extern(volatile, parallel_unsafe)]
fn omnigraph_recover(
    server: &str,
    branch: default!(&str, "'main'"),
) -> SetOfIterator<'static, String> {
    let (_, g) = open_to_change(server, "omnigraph_recover");
    let restored = run(
        &format!("server {server}: recovering branch '{branch}'"),
        g.recover(branch),
    );
    SetOfIterator::new(restored)
}
