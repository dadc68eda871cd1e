//! The backend's tokio runtimes, and waits that answer query cancel.
//!
//! Two runtimes, created lazily in the backend (after fork):
//! - a current-thread runtime that [`block_on`] drives on the backend's own
//!   thread: a wait and every task it spawns run there, so a short read
//!   (a snapshot, an index lookup, a few rows) costs no thread hand-offs;
//! - a runtime with two worker threads for [`Feed`] tasks, which read a
//!   scan's next batches while the backend converts the current one, and
//!   for [`spawn`]ed ones, such as a bulk INSERT's chunk staged while the
//!   backend reads the next rows.
//!
//! Every thread either starts (workers, blocking-I/O threads) blocks every
//! signal, so SIGINT, SIGALRM and SIGUSR1 are always delivered to the
//! backend's own thread. Futures passed to [`block_on`] may not call
//! Postgres; the caller converts results to Datums after the wait.
//!
//! A task one runtime spawned runs only while that runtime is driven: the
//! backend's tasks while it waits in [`block_on`] (as a [`Feed`] wait
//! does), the workers' tasks always. So one runtime's task may wait for the
//! other's, with no deadlock.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use pgrx::pg_sys;

use crate::pg::raise;

static WORKERS: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
static BACKEND: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

fn block_signals() {
    // SAFETY: sigfillset/pthread_sigmask only touch the sigset on our stack
    // and this (freshly started, Rust-only) worker thread's signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

fn built(which: &str, built: std::io::Result<tokio::runtime::Runtime>) -> tokio::runtime::Runtime {
    match built {
        Ok(rt) => rt,
        Err(e) => raise(
            pgrx::PgSqlErrorCode::ERRCODE_INSUFFICIENT_RESOURCES,
            format!("omnigraph: cannot start the {which} runtime: {e}"),
            None,
            None,
        ),
    }
}

/// Start the worker runtime if it is not running yet (raising if it
/// cannot start), so a later [`spawn`] cannot fail.
pub fn start_workers() {
    workers();
}

/// The runtime of read-ahead and background staging tasks.
fn workers() -> &'static tokio::runtime::Runtime {
    WORKERS.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(4)
            .thread_name("omnigraph-io")
            .on_thread_start(block_signals)
            .enable_all()
            .build();
        built("I/O", rt)
    })
}

/// The runtime [`block_on`] drives on the backend thread.
fn backend() -> &'static tokio::runtime::Runtime {
    BACKEND.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(4)
            .thread_name("omnigraph-blocking")
            .on_thread_start(block_signals)
            .enable_all()
            .build();
        built("backend", rt)
    })
}

/// Whether Postgres was asked to cancel the statement or end the backend.
pub fn cancel_requested() -> bool {
    // SAFETY: plain reads of sig_atomic_t flags that signal handlers set.
    unsafe { pg_sys::QueryCancelPending != 0 || pg_sys::ProcDiePending != 0 }
}

/// Run a future to completion on the backend thread. Every 50 ms the wait
/// checks for a cancel request (statement_timeout, pg_cancel_backend,
/// termination); on one it drops the future and lets Postgres raise the
/// cancel error.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let out = backend().block_on(async {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return Some(out),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    if cancel_requested() {
                        return None;
                    }
                }
            }
        }
    });
    match out {
        Some(v) => v,
        None => {
            // Raises the query-canceled (or terminate) error.
            pgrx::check_for_interrupts!();
            raise(
                pgrx::PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
                "canceling statement due to user request",
                None,
                None,
            )
        }
    }
}

/// Run a future to completion without answering cancel: for steps that
/// must not stop half-way (publishing a commit, undoing to a savepoint).
/// They are bounded by their own timeouts (the branch lock timeout).
pub fn block_on_uninterruptible<F: Future>(fut: F) -> F::Output {
    backend().block_on(fut)
}

/// Run `fut` on a worker thread, while the backend goes on; its result
/// is waited for through the handle (with [`block_on_uninterruptible`]).
/// The future may not call Postgres.
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    workers().spawn(fut)
}

/// Items produced ahead on the runtime by a task, while the backend
/// thread consumes earlier ones: a foreign scan's next batches are decoded
/// while Postgres turns the current one into tuples. Dropping the feed
/// stops the task.
pub struct Feed<T> {
    rx: tokio::sync::mpsc::Receiver<T>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Send + 'static> Feed<T> {
    /// Run `produce` on the runtime; it sends items into a channel that
    /// holds at most `depth` of them, and ends when it returns or when the
    /// feed is dropped.
    pub fn start<F, Fut>(depth: usize, produce: F) -> Feed<T>
    where
        F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::channel(depth.max(1));
        let task = workers().spawn(produce(tx));
        Feed { rx, task }
    }

    /// The next item (waiting for it, answering cancel), or `None` once
    /// the producer is done.
    pub fn next(&mut self) -> Option<T> {
        block_on(self.rx.recv())
    }
}

impl<T> Drop for Feed<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Run a future and report an engine error with `context`.
pub fn run<T>(context: &str, fut: impl Future<Output = omnigraph_engine::Result<T>>) -> T {
    crate::error::OrReport::or_report(block_on(fut), context)
}
