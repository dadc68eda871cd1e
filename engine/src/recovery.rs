//! Recovery you can see: the state of every table of every branch, as
//! `omnigraph_recovery_status` shows it. (Rolling back is
//! [`Graph::recover`] and, for the tables a commit writes, the commit
//! itself.)

use std::time::Duration;

use crate::error::{Error, Result};
use crate::graph::Graph;

/// Whether a table's lineage on a branch holds only what is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryState {
    /// The latest version holds the published data.
    Clean,
    /// Versions after the published one hold other data, and no writer
    /// holds the branch: an interrupted commit; the next commit of the
    /// branch, or `recover`, rolls them back.
    Interrupted,
    /// Versions after the published one, written by a commit in progress
    /// (the branch's write lock is held): not to be rolled back.
    InProgress,
}

impl RecoveryState {
    pub fn as_str(&self) -> &'static str {
        match self {
            RecoveryState::Clean => "clean",
            RecoveryState::Interrupted => "interrupted",
            RecoveryState::InProgress => "in_progress",
        }
    }
}

/// One table of one branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRecovery {
    pub branch: String,
    pub type_name: String,
    /// The version the branch's head manifest pins.
    pub pinned_version: u64,
    /// The latest version of the table's lineage on the branch (the pin,
    /// for a table the branch has not written yet and reads from its parent).
    pub latest_version: u64,
    pub state: RecoveryState,
}

impl Graph {
    /// The recovery state of every table of every branch, by branch name
    /// and type. Reads only; takes no lock a writer waits for longer than
    /// one try.
    pub async fn recovery_status(&self) -> Result<Vec<TableRecovery>> {
        let mut out = Vec::new();
        for r in self.meta().list_refs().await? {
            let head = self.meta().head(&r.id).await?;
            let mut dirty = Vec::new();
            for (type_name, t) in &head.tables {
                let (latest, unpublished) = self.unpublished(type_name, t, &r.id).await?;
                if unpublished {
                    dirty.push(out.len());
                }
                out.push(TableRecovery {
                    branch: r.name.clone(),
                    type_name: type_name.clone(),
                    pinned_version: t.version,
                    latest_version: latest,
                    state: RecoveryState::Clean,
                });
            }
            if dirty.is_empty() {
                continue;
            }
            // A writer holding the branch is about to publish (or roll
            // back) what it wrote; only a free branch was interrupted.
            let busy = match crate::lock::acquire(
                self.storage(),
                &r.id,
                &r.name,
                Duration::ZERO,
                &crate::lock::not_cancelled,
            )
            .await
            {
                Ok(_lock) => false,
                Err(Error::LockTimeout { .. }) => true,
                Err(e) => return Err(e),
            };
            for i in dirty {
                out[i].state = if busy {
                    RecoveryState::InProgress
                } else {
                    RecoveryState::Interrupted
                };
            }
        }
        Ok(out)
    }
}
