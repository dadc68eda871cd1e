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
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(BranchLock { _file: file }),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(e.into()),
        }
        if cancelled() {
            return Err(Error::Cancelled);
        }
        if start.elapsed() >= timeout {
            return Err(Error::LockTimeout {
                branch: branch.to_string(),
                waited_ms: start.elapsed().as_millis() as u64,
            });
        }
        // A fixed, short interval: the next commit starts within a
        // millisecond of the holder's release (a backoff growing to 25 ms
        // left the branch idle between commits under contention). Polling
        // keeps the wait cancellable, and a wait given up holds nothing:
        // dropping the future abandons it.
        tokio::time::sleep(WAIT_TICK).await;
    }
}

/// How often a lock wait tries the lock, and checks for a cancel and its
/// timeout: a `try_lock` is one cheap system call, so eight waiters
/// polling each millisecond cost nothing a commit would notice.
const WAIT_TICK: Duration = Duration::from_millis(1);
