//! SQL functions. Each takes the foreign server's name first, checks that
//! the caller may use the server, and reports engine errors with SQLSTATEs.
//!
//! Privileges (docs/user/security.md): USAGE on the server reads the graph
//! (log, branch list, schema); functions that change the graph also need
//! ownership of the server (membership in the owning role counts, as for
//! `ALTER SERVER`) and a read-write transaction.

use omnigraph_engine::{Graph, LoadMode, MergeStatus, OnConflict, ReadRef, Side, merge_message};
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
/// returns the commit the branch starts at. Part of the transaction: the
/// transaction can read and write the branch at once, others see it once
/// the transaction commits, and a rollback leaves no branch.
#[pg_extern(volatile, parallel_unsafe)]
fn omnigraph_branch_create(server: &str, name: &str, from_ref: default!(&str, "'main'")) -> String {
    let (s, g) = open_to_change(server, "omnigraph_branch_create");
    let ctx = format!("server {server}: creating branch '{name}'");
    if matches!(
        crate::txn::branch_state(&s.uri, name),
        Some(crate::txn::BranchState::Created(_))
    ) {
        crate::error::report(
            omnigraph_engine::Error::BranchExists {
                name: name.to_string(),
            },
            &ctx,
        );
    }
    let from = graphs::snapshot_for(server, &s.uri, &ReadRef::parse(from_ref), &ctx);
    let pending = run(&ctx, g.branch_create_pending(name, &from));
    let head = pending.snapshot().commit().id.clone();
    crate::txn::branch_created(server, &s.uri, pending);
    head
}

/// Delete a branch (not `main`). Its commits stay readable by id until
/// cleanup. Part of the transaction: the branch's write lock is held until
/// it ends; COMMIT deletes the branch, a rollback keeps it.
#[pg_extern(volatile, parallel_unsafe)]
fn omnigraph_branch_delete(server: &str, name: &str) {
    let (s, g) = open_to_change(server, "omnigraph_branch_delete");
    let ctx = format!("server {server}: deleting branch '{name}'");
    if crate::txn::uncreate(&s.uri, name) {
        return; // created in this transaction: it never existed
    }
    if matches!(
        crate::txn::branch_state(&s.uri, name),
        Some(crate::txn::BranchState::Deleted)
    ) {
        crate::error::report(
            omnigraph_engine::Error::BranchNotFound {
                name: name.to_string(),
            },
            &ctx,
        );
    }
    let deletion = run(&ctx, g.branch_delete_pending(name));
    crate::txn::branch_deleted(server, &s.uri, deletion);
}

/// Merge branch `source` into `target` (three-way, cell by cell). Conflicts
/// never raise: with `on_conflict => 'fail'` the result says `conflicts`
/// and nothing is merged; `ours`/`theirs` resolve them by side. The merge
/// is staged into the transaction like a write: its reads of `target` see
/// it, and COMMIT publishes it (with the transaction's other writes to
/// `target`) as one commit whose second parent is the source.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn omnigraph_branch_merge(
    server: &str,
    source: &str,
    target: default!(&str, "'main'"),
    on_conflict: default!(&str, "'fail'"),
    message: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(status, String),
        name!(commit_id, Option<String>),
        name!(inserted, i64),
        name!(updated, i64),
        name!(deleted, i64),
        name!(conflicts, i64),
    ),
> {
    let ctx = format!("server {server}: merging branch '{source}' into '{target}'");
    let policy: OnConflict = on_conflict.parse().or_report(&ctx);
    if source == target {
        crate::error::report(
            omnigraph_engine::Error::InvalidArgument(format!(
                "cannot merge branch '{source}' into itself"
            )),
            &ctx,
        );
    }
    let s = operable_server(server, "omnigraph_branch_merge");
    let theirs_snap =
        graphs::snapshot_for(server, &s.uri, &ReadRef::Branch(source.to_string()), &ctx);
    // Read first: the target's write transaction starts from this snapshot.
    let ours_snap =
        graphs::snapshot_for(server, &s.uri, &ReadRef::Branch(target.to_string()), &ctx);
    let result = crate::txn::merge_into(server, &s.uri, source, target, async |t, staged| {
        let g = t.base().graph().clone();
        let theirs = Side::new(source, theirs_snap, staged);
        let ours = Side::new(target, ours_snap, None);
        let ours = Side {
            staged: Some(&*t),
            ..ours
        };
        let plan = g.plan_merge(&theirs, &ours, policy).await?;
        let merged_staged = plan.stages() && theirs.staged.is_some_and(|x| !x.is_empty());
        if plan.stages() {
            t.stage_merge(&plan).await?;
            match message {
                Some(m) => t.set_message(m),
                None if t.message().is_empty() => t.set_message(merge_message(source, target)),
                None => {}
            }
        }
        let id = t.commit_id().to_string();
        Ok((plan.result(Some(id)), merged_staged))
    });
    if !result.full_compare.is_empty() {
        pgrx::notice!(
            "{ctx}: compared {} whole, because part of their history was written before change records existed",
            result.full_compare.join(", ")
        );
    }
    if result.status == MergeStatus::Conflicts {
        pgrx::notice!(
            "{ctx}: {} conflict(s), nothing merged; SELECT * FROM omnigraph_merge_conflicts('{server}', '{source}', '{target}') lists them, on_conflict => 'ours' or 'theirs' resolves them by side",
            result.conflicts
        );
    }
    TableIterator::once((
        result.status.as_str().to_string(),
        result.commit_id,
        i64::try_from(result.inserted).unwrap_or(i64::MAX),
        i64::try_from(result.updated).unwrap_or(i64::MAX),
        i64::try_from(result.deleted).unwrap_or(i64::MAX),
        i64::try_from(result.conflicts).unwrap_or(i64::MAX),
    ))
}

/// The conflicts merging `source` into `target` would meet, as the
/// transaction sees both branches. Publishes nothing.
#[pg_extern(stable, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn omnigraph_merge_conflicts(
    server: &str,
    source: &str,
    target: default!(&str, "'main'"),
) -> TableIterator<
    'static,
    (
        name!(type_name, String),
        name!(id, String),
        name!(kind, String),
        name!(property, Option<String>),
        name!(base, Option<pgrx::JsonB>),
        name!(ours, Option<pgrx::JsonB>),
        name!(theirs, Option<pgrx::JsonB>),
        name!(detail, String),
    ),
> {
    let (s, _) = open(server);
    let ctx = format!("server {server}: conflicts of merging branch '{source}' into '{target}'");
    let theirs_snap =
        graphs::snapshot_for(server, &s.uri, &ReadRef::Branch(source.to_string()), &ctx);
    let ours_snap =
        graphs::snapshot_for(server, &s.uri, &ReadRef::Branch(target.to_string()), &ctx);
    let conflicts = crate::txn::with_staged(server, &s.uri, &[source, target], async |staged| {
        let g = theirs_snap.graph().clone();
        let theirs = Side::new(source, theirs_snap, staged[0]);
        let ours = Side::new(target, ours_snap, staged[1]);
        Ok(g.plan_merge(&theirs, &ours, OnConflict::Fail)
            .await?
            .conflicts)
    });
    let rows: Vec<_> = conflicts
        .into_iter()
        .map(|c| {
            (
                c.type_name,
                c.id,
                c.kind.as_str().to_string(),
                c.property,
                c.base.map(pgrx::JsonB),
                c.ours.map(pgrx::JsonB),
                c.theirs.map(pgrx::JsonB),
                c.detail,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// The rows that differ between two refs (branch names or commit ids),
/// nodes and edges in one feed: `change` is insert, update or delete.
#[pg_extern(stable, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn omnigraph_diff(
    server: &str,
    from_ref: &str,
    to_ref: &str,
) -> TableIterator<
    'static,
    (
        name!(type_name, String),
        name!(id, String),
        name!(change, String),
        name!(properties, Vec<String>),
        name!(before, Option<pgrx::JsonB>),
        name!(after, Option<pgrx::JsonB>),
    ),
> {
    let (s, _) = open(server);
    let (from, to) = (ReadRef::parse(from_ref), ReadRef::parse(to_ref));
    let ctx = format!("server {server}: diff of '{from_ref}' and '{to_ref}'");
    let from_snap = graphs::snapshot_for(server, &s.uri, &from, &ctx);
    let to_snap = graphs::snapshot_for(server, &s.uri, &to, &ctx);
    let branch = |r: &ReadRef| match r {
        ReadRef::Branch(b) => b.clone(),
        // A commit has no staged changes; no branch is named like one.
        ReadRef::Commit(c) => c.clone(),
    };
    let (fb, tb) = (branch(&from), branch(&to));
    let diff = crate::txn::with_staged(server, &s.uri, &[&fb, &tb], async |staged| {
        let g = from_snap.graph().clone();
        let a = Side::new(from_ref, from_snap, staged[0]);
        let b = Side::new(to_ref, to_snap, staged[1]);
        g.diff(&a, &b).await
    });
    if !diff.full_compare.is_empty() {
        pgrx::notice!(
            "server {server}: compared {} whole, because part of their history was written before change records existed",
            diff.full_compare.join(", ")
        );
    }
    let rows: Vec<_> = diff
        .changes
        .into_iter()
        .map(|c| {
            (
                c.type_name,
                c.id,
                c.change.as_str().to_string(),
                c.properties,
                c.before.map(pgrx::JsonB),
                c.after.map(pgrx::JsonB),
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// The best common ancestor of two refs (branch names or commit ids);
/// NULL when they share no history.
#[pg_extern(stable, parallel_safe)]
fn omnigraph_merge_base(server: &str, a: &str, b: &str) -> Option<String> {
    let (s, g) = open(server);
    let ctx = format!("server {server}: merge base of '{a}' and '{b}'");
    let x = graphs::snapshot_for(server, &s.uri, &ReadRef::parse(a), &ctx)
        .commit()
        .id
        .clone();
    let y = graphs::snapshot_for(server, &s.uri, &ReadRef::parse(b), &ctx)
        .commit()
        .id
        .clone();
    run(&ctx, async move {
        Ok(g.merge_base(&ReadRef::Commit(x), &ReadRef::Commit(y))
            .await?
            .map(|c| c.id))
    })
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
    let (s, g) = open(server);
    let branches = run(
        &format!("server {server}: listing branches"),
        g.branch_list(),
    );
    // As this transaction sees them: its own creations and deletions count.
    let (created, deleted) = crate::txn::branch_changes(&s.uri);
    let now = omnigraph_engine::now_us();
    let mut rows: Vec<_> = branches
        .into_iter()
        .filter(|b| !deleted.contains(&b.name))
        .map(|b| (b.name, b.head_commit, timestamptz(b.created_at_us)))
        .chain(
            created
                .into_iter()
                .map(|(name, head)| (name, head, timestamptz(now))),
        )
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
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
    let (s, g) = open(server);
    let ctx = format!("server {server}: log of branch '{branch}'");
    let head = graphs::snapshot_for(server, &s.uri, &ReadRef::Branch(branch.to_string()), &ctx);
    let log = run(&ctx, async move { g.log_from(&head, usize::MAX).await });
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

/// Whether each table of each branch holds only published data: `clean`,
/// `interrupted` (a commit died before publishing; the branch's next commit
/// or `omnigraph_recover` rolls it back) or `in_progress` (a commit is
/// publishing right now).
#[pg_extern(stable, parallel_safe)]
#[allow(clippy::type_complexity)]
fn omnigraph_recovery_status(
    server: &str,
) -> TableIterator<
    'static,
    (
        name!(branch, String),
        name!(type_name, String),
        name!(pinned_version, i64),
        name!(latest_version, i64),
        name!(state, String),
    ),
> {
    let (_, g) = open(server);
    let status = run(
        &format!("server {server}: recovery status"),
        g.recovery_status(),
    );
    let version = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let rows: Vec<_> = status
        .into_iter()
        .map(|t| {
            (
                t.branch,
                t.type_name,
                version(t.pinned_version),
                version(t.latest_version),
                t.state.as_str().to_string(),
            )
        })
        .collect();
    TableIterator::new(rows)
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
        g.recover(branch, &pg::current_role()),
    );
    SetOfIterator::new(restored)
}

/// Every rollback recovery has made (by `omnigraph_recover`, or by a
/// commit, optimize or cleanup that found an interrupted commit's versions
/// on a table it was about to write), oldest first.
#[pg_extern(stable, parallel_safe)]
#[allow(clippy::type_complexity)]
fn omnigraph_recovery_log(
    server: &str,
) -> TableIterator<
    'static,
    (
        name!(recovered_at, TimestampWithTimeZone),
        name!(actor, String),
        name!(branch, String),
        name!(type_name, String),
        name!(from_version, i64),
        name!(to_version, i64),
    ),
> {
    let (_, g) = open(server);
    let log = run(&format!("server {server}: recovery log"), g.recovery_log());
    let version = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let rows: Vec<_> = log
        .into_iter()
        .map(|r| {
            (
                timestamptz(r.recovered_at_us),
                r.actor,
                r.branch,
                r.type_name,
                version(r.from_version),
                version(r.to_version),
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Remove the table versions nothing needs any more: those only commits
/// older than `older_than` pin, except branch heads, the bases of unmerged
/// branches, fork points and tagged versions; and files failed or killed
/// writes left. Lists every version with what it does to it and why; with
/// `dry_run` it changes nothing. Reading a reclaimed commit gives 55000.
/// Takes effect at once: a ROLLBACK does not bring removed versions back.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn omnigraph_cleanup(
    server: &str,
    older_than: default!(pgrx::datum::Interval, "'7 days'"),
    dry_run: default!(bool, false),
) -> TableIterator<
    'static,
    (
        name!(type_name, Option<String>),
        name!(lance_branch, Option<String>),
        name!(version, Option<i64>),
        name!(action, String),
        name!(reason, String),
        name!(bytes, i64),
    ),
> {
    let ctx = format!("server {server}: cleanup");
    // A month counts 30 days, as in Postgres's interval comparisons.
    let micros = older_than.as_micros();
    let Some(older_than) = u64::try_from(micros)
        .ok()
        .map(std::time::Duration::from_micros)
    else {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{ctx}: older_than must not be negative"),
            None,
            Some("Pass an interval such as '7 days'; '0' keeps only what branches need.".into()),
        )
    };
    // A dry run only looks, like the status functions.
    let (_, g) = if dry_run {
        open(server)
    } else {
        open_to_change(server, "omnigraph_cleanup")
    };
    let rows = run(&ctx, g.cleanup(older_than, dry_run, &pg::current_role()));
    let big = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    TableIterator::new(rows.into_iter().map(move |r| {
        (
            r.type_name,
            r.lance_branch,
            r.version.map(big),
            r.action.as_str().to_string(),
            r.reason,
            big(r.bytes),
        )
    }))
}

/// Compact a branch's tables and build or refresh the indexes its schema
/// asks for, as one commit with the message `optimize` (no data change).
/// Reports each table with a NOTICE as it is done. Takes effect at once,
/// like VACUUM: a ROLLBACK does not undo it (there is no data to undo).
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn omnigraph_optimize(
    server: &str,
    branch: default!(&str, "'main'"),
) -> TableIterator<
    'static,
    (
        name!(type_name, String),
        name!(fragments_before, i32),
        name!(fragments_after, i32),
        name!(rows, i64),
        name!(indexes, Vec<String>),
    ),
> {
    let (_, g) = open_to_change(server, "omnigraph_optimize");
    let ctx = format!("server {server}: optimizing branch '{branch}'");
    let mut o = run(&ctx, g.optimize_begin(branch, &pg::current_role()));
    let mut rows = Vec::new();
    for type_name in o.type_names() {
        match crate::runtime::block_on(o.optimize_table(&type_name)) {
            Ok(t) => {
                pgrx::notice!(
                    "{ctx}: {type_name}: {} -> {} fragments, {} rows, indexes: {}",
                    t.fragments_before,
                    t.fragments_after,
                    t.rows,
                    if t.indexes.is_empty() {
                        "none".to_string()
                    } else {
                        t.indexes.join(", ")
                    }
                );
                rows.push(t);
            }
            Err(e) => {
                crate::runtime::block_on_uninterruptible(o.abandon());
                crate::error::report(e, &ctx);
            }
        }
    }
    let commit = run(&ctx, o.finish());
    if let Some(c) = &commit {
        pgrx::notice!("{ctx}: published as commit {}", c.id);
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    TableIterator::new(rows.into_iter().map(move |t| {
        (
            t.type_name,
            count(t.fragments_before),
            count(t.fragments_after),
            i64::try_from(t.rows).unwrap_or(i64::MAX),
            t.indexes,
        )
    }))
}
