//! SQL functions. Each takes the foreign server's name first, checks that
//! the caller may use the server, and reports engine errors with SQLSTATEs.

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

fn open(server: &str) -> (Server, Graph) {
    let s = usable_server(server);
    let g = graphs::graph(&s.name, &s.uri);
    (s, g)
}

/// Resolve `from_ref`: a branch name, or else a commit id.
fn resolve_ref(g: &Graph, server: &str, from_ref: &str) -> ReadRef {
    let branch = ReadRef::Branch(from_ref.to_string());
    match run(&format!("server {server}"), async {
        Ok(g.snapshot(&branch).await.is_ok())
    }) {
        true => branch,
        false if omnigraph_sql::options::is_commit_id(from_ref) => {
            ReadRef::Commit(from_ref.to_string())
        }
        false => raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("server {server}: '{from_ref}' is neither a branch nor a commit id"),
            None,
            Some(
                "Name a branch from omnigraph_branch_list() or a commit id from omnigraph_log()."
                    .into(),
            ),
        ),
    }
}

/// Create an empty graph at the server's `uri` from `.pg` schema text.
/// Returns the id of the graph's first commit.
#[pg_extern(volatile, parallel_unsafe)]
fn omnigraph_create_graph(server: &str, schema: &str) -> String {
    let s = usable_server(server);
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

/// Load NDJSON into a branch as one commit; returns the commit id.
#[pg_extern(volatile, parallel_unsafe)]
fn omnigraph_load(
    server: &str,
    branch: &str,
    ndjson: &str,
    mode: default!(&str, "'append'"),
) -> String {
    let mode: LoadMode = mode
        .parse::<LoadMode>()
        .or_report(&format!("server {server}"));
    let (_, g) = open(server);
    let actor = pg::current_role();
    let summary = run(
        &format!("server {server}, branch '{branch}': load"),
        g.load(branch, ndjson, mode, &actor, ""),
    );
    summary.commit.id
}

/// Create a branch from a branch head (default `main`) or a commit id;
/// returns the commit the branch starts at.
#[pg_extern(volatile, parallel_unsafe)]
fn omnigraph_branch_create(server: &str, name: &str, from_ref: default!(&str, "'main'")) -> String {
    let (_, g) = open(server);
    let from = resolve_ref(&g, server, from_ref);
    run(
        &format!("server {server}: creating branch '{name}'"),
        g.branch_create(name, &from),
    )
    .head_commit
}

/// Delete a branch (not `main`). Its commits stay readable by id until cleanup.
#[pg_extern(volatile, parallel_unsafe)]
fn omnigraph_branch_delete(server: &str, name: &str) {
    let (_, g) = open(server);
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
    let (_, g) = open(server);
    let restored = run(
        &format!("server {server}: recovering branch '{branch}'"),
        g.recover(branch),
    );
    SetOfIterator::new(restored)
}
