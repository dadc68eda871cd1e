//! Graph write transactions of the current Postgres transaction.
//!
//! The first write to a graph branch opens an engine [`WriteTxn`]; every
//! later write of the Postgres transaction to that branch stages into it.
//!
//! Commit is two-phase, so Postgres and the graph agree on the outcome:
//! - `XACT_EVENT_PRE_COMMIT`: each open transaction is prepared (validated,
//!   written to its tables, its branch lock taken; in a fixed order of
//!   graph and branch, so two transactions never wait on each other's
//!   locks). An error here aborts the Postgres transaction.
//! - `XACT_EVENT_COMMIT` (Postgres has committed): each prepared commit is
//!   published, one put-if-absent each. This step cannot raise an ERROR; a
//!   failure (an I/O error, a crash of the backend in this window) loses
//!   the graph commit and is reported as a WARNING. docs/user/writes.md
//!   states the window.
//! - `XACT_EVENT_ABORT` (including a failure after pre-commit, such as a
//!   serialization failure at COMMIT): prepared commits are abandoned and
//!   open transactions dropped; nothing was published, spill files go.
//!
//! Branch operations follow the transaction too: a branch created in it is
//! readable and writable by the transaction but has no ref until COMMIT
//! (after the transaction's commits are published); a branch deleted in it
//! keeps its write lock until COMMIT deletes the ref; ROLLBACK, or the
//! abort of the subtransaction that did them, undoes both. A merge is
//! staged like any write on its target.
//!
//! `PREPARE TRANSACTION` is refused.
//!
//! Staging in the background: a bulk INSERT or COPY whose rows wait in a
//! buffer hands each full chunk to a worker thread ([`insert_in_background`])
//! and goes on reading rows, so the chunk's checks, its Arrow batch and
//! its spill write overlap the executor producing the next one. The open
//! transaction belongs to that task until it is *settled*: every entry
//! point here waits for it first, and raises its error (EndForeignModify
//! settles unconditionally, so the statement fails with its chunk). A
//! subtransaction's start and commit, and `uncreate`, settle without
//! raising. The error is kept, and raised by every point that may raise,
//! until an abort undoes the chunk: a PL/pgSQL exception block inside the
//! statement may catch it, and the statement must still fail.
//!
//! Savepoints: at the start of every subtransaction each open graph
//! transaction takes an engine savepoint; `ROLLBACK TO SAVEPOINT` (and a
//! failed PL/pgSQL exception block) rolls back to it, releasing keeps the
//! changes. A graph transaction opened inside a subtransaction is dropped
//! whole when that subtransaction aborts.

use std::cell::RefCell;

use omnigraph_engine::{
    BranchDeletion, NewBranch, PreparedCommit, Savepoint, Snapshot, StagedView, WriteTxn,
};
use pgrx::pg_sys::{self, SubTransactionId};
use pgrx::{PgSqlErrorCode, pg_guard};

use crate::error::{Rendered, report};
use crate::pg::raise;
use crate::runtime::{block_on, block_on_uninterruptible};

struct Open {
    server: String,
    uri: String,
    txn: WriteTxn,
    /// The subtransaction that opened it: aborting that one drops it.
    created_sub: SubTransactionId,
    savepoints: Vec<(SubTransactionId, Savepoint)>,
    /// Set when a rollback to a savepoint failed: the staged state is no
    /// longer exactly what the transaction did, so it may not commit.
    poisoned: Option<String>,
}

impl Open {
    /// Refuse a poisoned transaction; otherwise give it the session's
    /// staging budget and spill limit for the write about to run.
    fn ready(&mut self) -> omnigraph_engine::Result<()> {
        if let Some(why) = &self.poisoned {
            return Err(omnigraph_engine::Error::InvalidArgument(why.clone()));
        }
        self.txn.set_staging_memory(crate::staging_memory());
        self.txn.set_spill_limit(crate::temp_file_limit());
        Ok(())
    }
}

/// A branch operation of this transaction, applied when it commits.
enum BranchOp {
    /// Created: invisible to others until COMMIT creates its ref.
    Create(NewBranch),
    /// Deleted: its write lock is held; COMMIT deletes its ref.
    Delete(BranchDeletion),
    /// Its staged writes were merged into another branch (as a commit
    /// that does not exist yet); it takes no more writes in this transaction.
    Merged,
}

struct PendingOp {
    server: String,
    uri: String,
    branch: String,
    op: BranchOp,
    /// The subtransaction that did it: aborting that one undoes it.
    created_sub: SubTransactionId,
}

/// A chunk of rows being staged on a worker thread: the open transaction
/// (taken out of `OPEN` at `index`) is the task's until it is settled.
struct Staging {
    index: usize,
    ctx: String,
    /// The subtransaction the chunk was staged in.
    sub: SubTransactionId,
    task: tokio::task::JoinHandle<(Open, omnigraph_engine::Result<()>)>,
}

/// The error of a chunk staged in the background. It is raised by every
/// entry point that may raise (a PL/pgSQL exception block inside the
/// statement may catch it once; the statement must still fail) until an
/// abort undoes the chunk.
struct Failed {
    /// The subtransaction the chunk was staged in.
    sub: SubTransactionId,
    error: Rendered,
}

thread_local! {
    static OPEN: RefCell<Vec<Open>> = const { RefCell::new(Vec::new()) };
    static STAGING: RefCell<Option<Staging>> = const { RefCell::new(None) };
    static FAILED: RefCell<Option<Failed>> = const { RefCell::new(None) };
    /// Set when a background staging task was lost with the open
    /// transaction it held: what that transaction staged is gone, so the
    /// Postgres transaction may not commit.
    static LOST: RefCell<Option<String>> = const { RefCell::new(None) };
    /// Branch operations, in the order they were made.
    static BRANCH_OPS: RefCell<Vec<PendingOp>> = const { RefCell::new(Vec::new()) };
    /// Commits prepared at pre-commit, published at commit, with their context.
    static PREPARED: RefCell<Vec<(String, PreparedCommit)>> = const { RefCell::new(Vec::new()) };
}

fn current_sub() -> SubTransactionId {
    // SAFETY: reads backend-global transaction state.
    unsafe { pg_sys::GetCurrentSubTransactionId() }
}

fn context(server: &str, branch: &str) -> String {
    format!("server {server}, branch '{branch}'")
}

/// What this transaction did to a branch of the graph at `uri`, as its
/// own reads must see it.
pub enum BranchState {
    /// Created in this transaction: read it from this snapshot.
    Created(Box<Snapshot>),
    /// Deleted in this transaction.
    Deleted,
}

pub fn branch_state(uri: &str, branch: &str) -> Option<BranchState> {
    created_or_deleted(uri, branch, |op| match op {
        BranchOp::Create(nb) => BranchState::Created(Box::new(nb.snapshot().clone())),
        _ => BranchState::Deleted,
    })
}

/// `f` of the latest creation or deletion of `branch` in this transaction.
fn created_or_deleted<R>(uri: &str, branch: &str, f: impl FnOnce(&BranchOp) -> R) -> Option<R> {
    BRANCH_OPS.with(|ops| {
        ops.borrow()
            .iter()
            .rev()
            .filter(|p| p.uri == uri && p.branch == branch)
            .map(|p| &p.op)
            .find(|op| !matches!(op, BranchOp::Merged))
            .map(f)
    })
}

/// Branches of the graph at `uri` this transaction created (name, head
/// commit) and deleted, for listings.
pub fn branch_changes(uri: &str) -> (Vec<(String, String)>, Vec<String>) {
    BRANCH_OPS.with(|ops| {
        let mut created = Vec::new();
        let mut deleted = Vec::new();
        for p in ops.borrow().iter().filter(|p| p.uri == uri) {
            match &p.op {
                BranchOp::Create(nb) => {
                    created.push((p.branch.clone(), nb.snapshot().commit().id.clone()))
                }
                BranchOp::Delete(_) => deleted.push(p.branch.clone()),
                BranchOp::Merged => {}
            }
        }
        (created, deleted)
    })
}

fn deleted_error(branch: &str) -> omnigraph_engine::Error {
    omnigraph_engine::Error::BranchNotFound {
        name: branch.to_string(),
    }
}

/// Record a branch created by this transaction.
pub fn branch_created(server: &str, uri: &str, nb: NewBranch) {
    push_op(server, uri, nb.name().to_string(), BranchOp::Create(nb));
}

/// Record a branch deleted by this transaction.
pub fn branch_deleted(server: &str, uri: &str, deletion: BranchDeletion) {
    push_op(
        server,
        uri,
        deletion.name().to_string(),
        BranchOp::Delete(deletion),
    );
}

fn push_op(server: &str, uri: &str, branch: String, op: BranchOp) {
    BRANCH_OPS.with(|ops| {
        ops.borrow_mut().push(PendingOp {
            server: server.to_string(),
            uri: uri.to_string(),
            branch,
            op,
            created_sub: current_sub(),
        })
    });
}

/// Undo the creation of a branch this transaction created (deleting it
/// again); `false` if it did not create it. Its writes go with it.
pub fn uncreate(uri: &str, branch: &str) -> bool {
    let found = BRANCH_OPS.with(|ops| {
        let mut ops = ops.borrow_mut();
        let at = ops.iter().position(|p| {
            p.uri == uri && p.branch == branch && matches!(p.op, BranchOp::Create(_))
        });
        at.map(|i| ops.remove(i))
    });
    if found.is_none() {
        return false;
    }
    settle();
    OPEN.with(|o| {
        o.borrow_mut()
            .retain(|e| !(e.uri == uri && e.txn.branch() == branch))
    });
    true
}

/// Wait for the chunk staged in the background, if any, and put its
/// transaction back in `OPEN`; never raises. A failure is kept in `FAILED`
/// (the first one wins) for [`settle_or_report`].
///
/// The wait is uninterruptible: it is bounded by one chunk, and giving it
/// up would detach the task with the open transaction in it.
fn settle() {
    let Some(staging) = STAGING.with(|s| s.borrow_mut().take()) else {
        return;
    };
    let error = match block_on_uninterruptible(staging.task) {
        Ok((open, result)) => {
            OPEN.with(|o| {
                let mut o = o.borrow_mut();
                let i = staging.index.min(o.len());
                o.insert(i, open);
            });
            result.err()
        }
        Err(join) => {
            let why = format!("staging rows on a worker thread failed: {join}");
            LOST.with(|l| {
                l.borrow_mut().get_or_insert(why.clone());
            });
            Some(omnigraph_engine::Error::Internal(why))
        }
    };
    if let Some(error) = error {
        FAILED.with(|f| {
            f.borrow_mut().get_or_insert(Failed {
                sub: staging.sub,
                error: Rendered::new(&error, &staging.ctx),
            });
        });
    }
}

/// [`settle`], then raise a failure of background staging (it stays, see
/// [`Failed`]), and refuse a transaction whose staged state was lost.
pub fn settle_or_report() {
    settle();
    if let Some(error) = FAILED.with(|f| f.borrow().as_ref().map(|f| f.error.clone())) {
        error.raise();
    }
    if let Some(why) = LOST.with(|l| l.borrow().clone()) {
        raise(
            PgSqlErrorCode::ERRCODE_IN_FAILED_SQL_TRANSACTION,
            format!("the transaction cannot write to the graph or commit: {why}"),
            None,
            Some("Roll back the whole transaction and run it again.".into()),
        );
    }
}

/// Settle, and forget what the abort of subtransaction `sub` (or of the
/// whole transaction, `None`) undoes: a failure of a chunk staged inside
/// it. Never raises.
fn settle_for_abort(sub: Option<SubTransactionId>) {
    settle();
    FAILED.with(|f| {
        let mut f = f.borrow_mut();
        if f.as_ref().is_some_and(|x| sub.is_none_or(|s| x.sub >= s)) {
            *f = None;
        }
    });
    if sub.is_none() {
        LOST.with(|l| *l.borrow_mut() = None);
    }
}

/// Stage `rows` into `type_name` on a worker thread, while the backend
/// goes on: the bulk path of INSERT and COPY. The transaction is the
/// task's until the next entry point here settles it (at the latest the
/// statement's EndForeignModify), which reports the task's error.
pub fn insert_in_background(
    server: &str,
    uri: &str,
    branch: &str,
    type_name: String,
    rel_name: String,
    rows: omnigraph_engine::NewRows,
) {
    let index = ensure_open(server, uri, branch);
    let ctx = context(server, branch);
    // Started first: once the transaction is out of `OPEN`, nothing may
    // raise before the task holds it.
    crate::runtime::start_workers();
    let Some(mut open) = OPEN.with(|o| {
        let mut o = o.borrow_mut();
        (index < o.len()).then(|| o.remove(index))
    }) else {
        report(
            omnigraph_engine::Error::Internal("write transaction vanished".into()),
            &ctx,
        );
    };
    if let Err(e) = open.ready() {
        OPEN.with(|o| o.borrow_mut().insert(index, open));
        report(e, &ctx);
    }
    let task = crate::runtime::spawn(async move {
        let result = open
            .txn
            .insert_rows(&type_name, rows)
            .await
            .map(drop)
            .map_err(|e| crate::modify::in_table(e, &rel_name));
        (open, result)
    });
    STAGING.with(|s| {
        *s.borrow_mut() = Some(Staging {
            index,
            ctx,
            sub: current_sub(),
            task,
        })
    });
}

/// The index in `OPEN` of the write transaction of `branch`, opened first
/// if need be.
fn ensure_open(server: &str, uri: &str, branch: &str) -> usize {
    settle_or_report();
    let ctx = context(server, branch);
    let merged = BRANCH_OPS.with(|ops| {
        ops.borrow()
            .iter()
            .any(|p| p.uri == uri && p.branch == branch && matches!(p.op, BranchOp::Merged))
    });
    if merged {
        raise(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("{ctx}: the branch's changes in this transaction were merged into another branch; it takes no more writes in this transaction"),
            Some("The merge commit names the branch's commit of this transaction as its parent, so that commit cannot change after the merge.".into()),
            Some("Write to the branch before merging it, or in a new transaction.".into()),
        );
    }
    let found = OPEN.with(|o| {
        o.borrow()
            .iter()
            .position(|e| e.uri == uri && e.txn.branch() == branch)
    });
    if let Some(i) = found {
        return i;
    }
    let graph = crate::graphs::graph(server, uri);
    let actor = crate::pg::current_role();
    let created = created_or_deleted(uri, branch, |op| match op {
        BranchOp::Create(nb) => Ok(nb.begin(&actor)),
        _ => Err(deleted_error(branch)),
    });
    let begun = match created {
        Some(begun) => begun,
        // Conflict checks start from the first snapshot of the branch
        // this transaction read, so what it read cannot be stale.
        None => match crate::graphs::first_read(uri, branch) {
            Some(base) => graph.begin_at(base, &actor),
            None => block_on(graph.begin(branch, &actor)),
        },
    };
    let txn = match begun {
        Ok(t) => t,
        Err(e) => report(e, &ctx),
    };
    OPEN.with(|o| {
        let mut o = o.borrow_mut();
        o.push(Open {
            server: server.to_string(),
            uri: uri.to_string(),
            txn,
            created_sub: current_sub(),
            savepoints: Vec::new(),
            poisoned: None,
        });
        o.len() - 1
    })
}

/// Run `f` on the open write transaction of `branch` of the graph at
/// `uri`, opening one first. Engine errors are reported after the
/// transaction is put back, so a failed statement leaves it usable by a
/// savepoint rollback.
pub fn with<T>(
    server: &str,
    uri: &str,
    branch: &str,
    f: impl AsyncFnOnce(&mut WriteTxn) -> omnigraph_engine::Result<T>,
) -> T {
    let ctx = context(server, branch);
    let index = ensure_open(server, uri, branch);
    // Taken out while `f` runs (it waits on I/O); the guard puts it back
    // even when an ERROR (a cancel) unwinds through here.
    let mut guard = PutBack::take(index);
    let result = match guard.open() {
        Some(open) => match open.ready() {
            Err(e) => Err(e),
            Ok(()) => block_on(f(&mut open.txn)),
        },
        None => Err(omnigraph_engine::Error::Internal(
            "write transaction vanished".into(),
        )),
    };
    drop(guard);
    match result {
        Ok(v) => v,
        Err(e) => report(e, &ctx),
    }
}

/// Run `f` with this transaction's staged changes (if any) on each of
/// `branches` of the graph at `uri`, for reads that must see them.
pub fn with_staged<T>(
    server: &str,
    uri: &str,
    branches: &[&str],
    f: impl AsyncFnOnce(Vec<Option<&WriteTxn>>) -> omnigraph_engine::Result<T>,
) -> T {
    let all = TakeAll::new();
    let staged: Vec<Option<&WriteTxn>> = branches
        .iter()
        .map(|b| {
            all.open
                .iter()
                .find(|e| e.uri == uri && e.txn.branch() == *b)
                .map(|e| &e.txn)
        })
        .collect();
    let result = block_on(f(staged));
    drop(all);
    match result {
        Ok(v) => v,
        Err(e) => report(e, &format!("server {server}")),
    }
}

/// Run `f` on the write transaction of `target` (opened if need be) with
/// the staged changes of `source`, for a merge. When `f` reports that it
/// merged the source's staged changes, the source takes no more writes.
pub fn merge_into<T>(
    server: &str,
    uri: &str,
    source: &str,
    target: &str,
    f: impl AsyncFnOnce(&mut WriteTxn, Option<&WriteTxn>) -> omnigraph_engine::Result<(T, bool)>,
) -> T {
    let ctx = context(server, target);
    let index = ensure_open(server, uri, target);
    let mut all = TakeAll::new();
    all.writing = Some(index);
    let (before, rest) = all.open.split_at_mut(index);
    let Some((target_open, after)) = rest.split_first_mut() else {
        drop(all);
        report(
            omnigraph_engine::Error::Internal("write transaction vanished".into()),
            &ctx,
        );
    };
    let source_txn = before
        .iter()
        .chain(after.iter())
        .find(|e| e.uri == uri && e.txn.branch() == source)
        .map(|e| &e.txn);
    let result = match &target_open.poisoned {
        Some(why) => Err(omnigraph_engine::Error::InvalidArgument(why.clone())),
        None => block_on(f(&mut target_open.txn, source_txn)),
    };
    drop(all);
    match result {
        Ok((v, merged_staged)) => {
            if merged_staged {
                push_op(server, uri, source.to_string(), BranchOp::Merged);
            }
            v
        }
        Err(e) => report(e, &ctx),
    }
}

/// Every open transaction taken out of the list while a read or merge
/// spanning several of them runs; put back on drop. If an ERROR unwinds
/// through the operation, the one it was changing (`writing`) is poisoned;
/// the ones it only read are not.
struct TakeAll {
    open: Vec<Open>,
    writing: Option<usize>,
}

impl TakeAll {
    fn new() -> TakeAll {
        settle_or_report();
        TakeAll {
            open: OPEN.with(|o| std::mem::take(&mut *o.borrow_mut())),
            writing: None,
        }
    }
}

impl Drop for TakeAll {
    fn drop(&mut self) {
        let mut open = std::mem::take(&mut self.open);
        if std::thread::panicking()
            && let Some(e) = self.writing.and_then(|i| open.get_mut(i))
        {
            e.poisoned
                .get_or_insert_with(|| "a merge into the graph was interrupted".into());
        }
        OPEN.with(|o| {
            let mut o = o.borrow_mut();
            open.append(&mut o);
            *o = open;
        });
    }
}

/// An open transaction taken out of the list, put back on drop. If the
/// drop happens while an ERROR unwinds, the operation was cut short and
/// the staged state may be partial: the transaction is poisoned.
struct PutBack {
    index: usize,
    open: Option<Open>,
}

impl PutBack {
    fn take(index: usize) -> PutBack {
        let open = OPEN.with(|o| {
            let mut o = o.borrow_mut();
            (index < o.len()).then(|| o.remove(index))
        });
        PutBack { index, open }
    }

    fn open(&mut self) -> Option<&mut Open> {
        self.open.as_mut()
    }
}

impl Drop for PutBack {
    fn drop(&mut self) {
        if let Some(mut open) = self.open.take() {
            if std::thread::panicking() && open.poisoned.is_none() {
                open.poisoned = Some("a write to the graph was interrupted".into());
            }
            OPEN.with(|o| {
                let mut o = o.borrow_mut();
                let i = self.index.min(o.len());
                o.insert(i, open);
            });
        }
    }
}

/// The current transaction's changes to `type_name` on `branch`, as seen
/// by a read of `at`; `None` when it wrote nothing there.
pub fn view(uri: &str, branch: &str, type_name: &str, at: &Snapshot) -> Option<StagedView> {
    settle_or_report();
    let (index, server) = OPEN.with(|o| {
        o.borrow()
            .iter()
            .position(|e| e.uri == uri && e.txn.branch() == branch && e.txn.touches(type_name))
            .map(|i| (i, o.borrow()[i].server.clone()))
    })?;
    let mut guard = PutBack::take(index);
    let result = match guard.open() {
        Some(open) => block_on(open.txn.view(type_name, at)),
        None => Ok(None),
    };
    drop(guard);
    match result {
        Ok(v) => v,
        Err(e) => report(e, &context(&server, branch)),
    }
}

/// Staged memory past which a transaction's end trims the heap.
const TRIM_AFTER_BYTES: usize = 8 << 20;

/// Whether any of these transactions held enough to be worth a heap trim.
fn large(open: &[Open]) -> bool {
    open.iter()
        .any(|e| e.txn.spilled_rows() > 0 || e.txn.staged_bytes() > TRIM_AFTER_BYTES)
}

/// Hand memory freed by a large transaction back to the kernel. Staging,
/// spilling and Lance's writers allocate on several threads, each with its
/// own glibc arena; without a trim the backend keeps that peak for life,
/// and the commit's writers cannot reuse what staging freed.
fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free pages of the allocator's own
    // arenas to the kernel; it is thread-safe and touches no live memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Prepare every open transaction; called at pre-commit.
fn prepare_all() {
    settle_or_report();
    let mut open = OPEN.with(|o| std::mem::take(&mut *o.borrow_mut()));
    // Writes to a branch this transaction deletes go with it.
    open.retain(|e| {
        !matches!(
            branch_state(&e.uri, e.txn.branch()),
            Some(BranchState::Deleted)
        )
    });
    // One order for everyone: a transaction holding the lock of one branch
    // never waits for a branch whose holder waits for it.
    open.sort_by(|a, b| (&a.uri, a.txn.branch()).cmp(&(&b.uri, b.txn.branch())));
    let trim = large(&open);
    if trim {
        trim_heap();
    }
    let message = crate::commit_message();
    for mut e in open {
        let ctx = context(&e.server, e.txn.branch());
        if let Some(why) = e.poisoned.take() {
            raise(
                PgSqlErrorCode::ERRCODE_IN_FAILED_SQL_TRANSACTION,
                format!("{ctx}: the transaction cannot commit: {why}"),
                None,
                Some("Roll back the whole transaction and run it again.".into()),
            );
        }
        // The setting wins; otherwise the transaction's own message (a
        // load names itself), read now, when it applies.
        if !message.is_empty() {
            e.txn.set_message(message.clone());
        }
        e.txn.set_lock_timeout(crate::lock_timeout());
        // The lock wait answers cancel and terminate; after it, the commit
        // is validated and written as a whole.
        e.txn
            .set_cancel_check(std::sync::Arc::new(crate::runtime::cancel_requested));
        match block_on_uninterruptible(e.txn.prepare()) {
            Ok(Some(prepared)) => PREPARED.with(|p| p.borrow_mut().push((ctx, prepared))),
            Ok(None) => {}
            Err(err) => report(err, &ctx),
        }
    }
    if trim {
        trim_heap();
    }
}

/// Publish the prepared commits; called once Postgres has committed, so
/// it never raises.
fn publish_all() {
    let prepared = PREPARED.with(|p| std::mem::take(&mut *p.borrow_mut()));
    for (ctx, p) in prepared {
        let id = p.commit_id().to_string();
        match block_on_uninterruptible(p.publish()) {
            Ok(summary) if summary.cascaded_edges > 0 => {
                pgrx::notice!(
                    "{ctx}: commit {id} also deleted {} edge(s) that concurrent commits had attached to deleted nodes",
                    summary.cascaded_edges
                );
            }
            Ok(_) => {}
            Err(err) => pgrx::warning!(
                "{ctx}: the Postgres transaction committed, but publishing graph commit {id} failed: {err}; the graph is unchanged by this transaction"
            ),
        }
    }
    // Branches appear once their first commits are published, and go last.
    let ops = BRANCH_OPS.with(|o| std::mem::take(&mut *o.borrow_mut()));
    for p in ops {
        let ctx = context(&p.server, &p.branch);
        let done = match p.op {
            BranchOp::Create(nb) => block_on_uninterruptible(nb.publish()).map(|_| ()),
            BranchOp::Delete(d) => block_on_uninterruptible(d.publish()),
            BranchOp::Merged => Ok(()),
        };
        if let Err(err) = done {
            pgrx::warning!(
                "{ctx}: the Postgres transaction committed, but the branch operation failed: {err}"
            );
        }
    }
}

/// Drop everything this transaction staged or prepared; never raises.
fn abandon_all() {
    settle_for_abort(None);
    let open = OPEN.with(|o| std::mem::take(&mut *o.borrow_mut()));
    let prepared = PREPARED.with(|p| std::mem::take(&mut *p.borrow_mut()));
    // Pending branches and deletions release their locks; nothing was published.
    drop(BRANCH_OPS.with(|o| std::mem::take(&mut *o.borrow_mut())));
    let trim = large(&open) || !prepared.is_empty();
    drop(open);
    for (_, p) in prepared {
        block_on_uninterruptible(p.abandon());
    }
    if trim {
        trim_heap();
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact_event(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_PRE_COMMIT => prepare_all(),
        pg_sys::XactEvent::XACT_EVENT_COMMIT => publish_all(),
        pg_sys::XactEvent::XACT_EVENT_PARALLEL_PRE_COMMIT => {}
        pg_sys::XactEvent::XACT_EVENT_PRE_PREPARE
            if STAGING.with(|s| s.borrow().is_some())
                || OPEN.with(|o| !o.borrow().is_empty())
                || BRANCH_OPS.with(|o| !o.borrow().is_empty()) =>
        {
            raise(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "cannot PREPARE a transaction that has written to an omnigraph graph",
                Some("Graph commits cannot take part in two-phase commit.".into()),
                Some("COMMIT or ROLLBACK the transaction instead.".into()),
            );
        }
        pg_sys::XactEvent::XACT_EVENT_ABORT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT => {
            // Never raise here: dropping frees memory and removes spill
            // files; abandoning restores tables a prepared commit wrote.
            abandon_all();
        }
        _ => {}
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_subxact_event(
    event: pg_sys::SubXactEvent::Type,
    my_subid: SubTransactionId,
    parent_subid: SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    match event {
        pg_sys::SubXactEvent::SUBXACT_EVENT_START_SUB => {
            // The savepoint follows the chunk in flight.
            settle();
            OPEN.with(|o| {
                for e in o.borrow_mut().iter_mut() {
                    let sp = e.txn.savepoint();
                    e.savepoints.push((my_subid, sp));
                }
            })
        }
        pg_sys::SubXactEvent::SUBXACT_EVENT_COMMIT_SUB => {
            settle();
            BRANCH_OPS.with(|ops| {
                for p in ops.borrow_mut().iter_mut() {
                    if p.created_sub == my_subid {
                        p.created_sub = parent_subid;
                    }
                }
            });
            OPEN.with(|o| {
                for e in o.borrow_mut().iter_mut() {
                    if e.created_sub == my_subid {
                        e.created_sub = parent_subid;
                    }
                    if let Some(pos) = e.savepoints.iter().position(|(s, _)| *s == my_subid) {
                        let (_, sp) = e.savepoints.remove(pos);
                        e.txn.release(sp);
                    }
                }
            })
        }
        pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB => {
            // Never raise here: failures poison the transaction instead.
            settle_for_abort(Some(my_subid));
            BRANCH_OPS.with(|ops| ops.borrow_mut().retain(|p| p.created_sub < my_subid));
            let mut open = OPEN.with(|o| std::mem::take(&mut *o.borrow_mut()));
            open.retain(|e| e.created_sub < my_subid);
            for e in open.iter_mut() {
                let Some(pos) = e.savepoints.iter().position(|(s, _)| *s == my_subid) else {
                    continue;
                };
                let (_, sp) = e.savepoints.remove(pos);
                e.savepoints.truncate(pos);
                if let Err(err) = block_on_uninterruptible(e.txn.rollback_to(sp)) {
                    e.poisoned = Some(format!("rolling back to a savepoint failed: {err}"));
                }
            }
            OPEN.with(|o| *o.borrow_mut() = open);
        }
        _ => {}
    }
}

/// Called once from `_PG_init`.
pub fn register_callbacks() {
    // SAFETY: registers static functions with no argument; Postgres keeps
    // the registrations for the life of the backend.
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact_event), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact_event), std::ptr::null_mut());
    }
}
