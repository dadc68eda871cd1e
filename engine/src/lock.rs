//! The per-branch write lock that serialises the publish step of commits
//! across processes (many Postgres backends, a CLI).
//!
//! A commit takes it before it resolves and validates against the branch
//! head and holds it until the next manifest is published. While it is held, the Lance
//! versions of the branch's tables are committed in the same order as the
//! manifests that publish them, so any Lance version beyond the published
//! one can only be left over from an interrupted commit and is rolled back.
//!
//! On a local file system the lock is an advisory `flock` on
//! `_graph/locks/<branch id>.lock`, released by the kernel when a process
//! dies. Object stores need a lease object instead (docs/dev/architecture.md).

use std::fs::{File, OpenOptions, TryLockError};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::storage::Storage;

/// Held while a commit publishes; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct BranchLock {
    _file: File,
}

/// Never cancelled: for waits whose caller can drop the future instead.
pub(crate) fn not_cancelled() -> bool {
    false
}

/// Wait up to `timeout` for the lock; `cancelled` is asked between tries
/// (a frontend that must not drop the wait, such as a commit, answers a
/// cancel request through it with [`Error::Cancelled`]).
pub(crate) async fn acquire(
    storage: &Storage,
    branch_id: &str,
    branch: &str,
    timeout: Duration,
    cancelled: &(dyn Fn() -> bool + Send + Sync),
) -> Result<BranchLock> {
    let Some(dir) = storage.local_dir() else {
        return Err(Error::Unsupported(format!(
            "writing to a graph on an object store ({}) needs the lease-based write lock, which is not implemented yet; \
             reads work, and writes work on a local file system",
            storage.root_uri
        )));
    };
    let lock_dir = dir.join("_graph").join("locks");
    std::fs::create_dir_all(&lock_dir)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_dir.join(format!("{branch_id}.lock")))?;
    match file.try_lock() {
        Ok(()) => return Ok(BranchLock { _file: file }),
        Err(TryLockError::WouldBlock) => {}
        Err(TryLockError::Error(e)) => return Err(e.into()),
    }
    let start = Instant::now();
    let timed_out = || Error::LockTimeout {
        branch: branch.to_string(),
        waited_ms: start.elapsed().as_millis() as u64,
    };
    if timeout.is_zero() {
        return Err(timed_out());
    }
    // Wait in the kernel on a blocking thread, which flock wakes as the
    // holder releases: the next commit starts at once, where polling with
    // a backoff left the branch idle for up to the backoff after every
    // commit under contention. This task stays cancellable: it checks
    // `cancelled` and the timeout every tick, and dropping the future
    // abandons the wait. An abandoned waiter still takes the lock when it
    // comes free, and drops it at once (its result, the file, is dropped
    // with the task).
    let mut waiter = tokio::task::spawn_blocking(move || {
        loop {
            match file.lock() {
                Ok(()) => return Ok(file),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    });
    let mut tick = tokio::time::interval(WAIT_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            waited = &mut waiter => {
                let file = waited.map_err(|e| Error::Internal(format!("the branch lock wait failed: {e}")))??;
                return Ok(BranchLock { _file: file });
            }
            _ = tick.tick() => {
                if cancelled() {
                    return Err(Error::Cancelled);
                }
                if start.elapsed() >= timeout {
                    return Err(timed_out());
                }
            }
        }
    }
}

/// How often a lock wait checks for a cancel and its timeout.
const WAIT_TICK: Duration = Duration::from_millis(10);
