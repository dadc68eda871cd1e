//! Recovery: rolling back what interrupted commits left on a branch's
//! tables ([`Graph::recover`], and every commit for the tables it writes),
//! the state of every table of every branch (`omnigraph_recovery_status`),
//! and the audit log of every rollback (`omnigraph_recovery_log`).
//!
//! Every rollback runs under the branch write lock and writes one audit
//! record, `_graph/recovery/<ulid>.json`, after the restore: two recoveries
//! of one branch serialise on the lock, and the second finds nothing to
//! roll back, so one interruption gives one record. A prepared commit holds
//! the lock until it publishes or abandons, so recovery never rolls back
//! what a live writer is about to publish.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::graph::{Graph, owns};
use crate::manifest::now_us;
use crate::storage::TableEntry;

/// One rollback of one table: what `omnigraph_recovery_log` lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryRecord {
    pub recovered_at_us: i64,
    /// Who ran the operation that rolled back (a commit's actor, or the
    /// caller of `recover`, `optimize`, `cleanup`).
    pub actor: String,
    pub branch: String,
    pub type_name: String,
    /// The latest Lance version before the rollback (written by the
    /// interrupted commit).
    pub from_version: u64,
    /// The version the rollback made, holding the published data again.
    pub to_version: u64,
}

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
    /// Roll back what interrupted commits left on a branch's tables (Lance
    /// versions beyond the published ones). Commits do this themselves for
    /// the tables they write; this does it for every table. Returns the types
    /// whose tables were rolled back.
    /// Each rollback is recorded in the recovery log, as by `actor`.
    pub async fn recover(&self, branch: &str, actor: &str) -> Result<Vec<String>> {
        let r = self.branch_ref(branch).await?;
        let _lock = self.lock_branch(&r.id, branch).await?;
        let head = self.meta().repair_head(&r.id).await?;
        let mut restored = Vec::new();
        for (name, t) in &head.tables {
            if self.recover_table(name, t, &r.id, branch, actor).await?.1 {
                restored.push(name.clone());
            }
        }
        Ok(restored)
    }

    /// Under the branch lock, before writing `t`: roll back what an
    /// interrupted commit left after the pin, recording it in the recovery
    /// log. Returns the version to write on and whether it rolled back.
    pub(crate) async fn recover_table(
        &self,
        type_name: &str,
        t: &TableEntry,
        branch_id: &str,
        branch: &str,
        actor: &str,
    ) -> Result<(u64, bool)> {
        self.recover_table_at(type_name, t, None, branch_id, branch, actor)
            .await
    }

    /// [`Self::recover_table`], given the table already open at `t`'s
    /// version (`at_pin`) when the caller has it.
    pub(crate) async fn recover_table_at(
        &self,
        type_name: &str,
        t: &TableEntry,
        at_pin: Option<&lance::Dataset>,
        branch_id: &str,
        branch: &str,
        actor: &str,
    ) -> Result<(u64, bool)> {
        let (latest, dirty) = self.unpublished_at(type_name, t, at_pin, branch_id).await?;
        if !dirty {
            return Ok((latest, false));
        }
        let to_version = self.storage().restore(type_name, t).await?;
        let record = RecoveryRecord {
            recovered_at_us: now_us(),
            actor: actor.to_string(),
            branch: branch.to_string(),
            type_name: type_name.to_string(),
            from_version: latest,
            to_version,
        };
        let path = self
            .storage()
            .meta_path(&format!("recovery/{}.json", ulid::Ulid::new()));
        self.storage()
            .put(&path, &serde_json::to_vec(&record)?)
            .await?;
        Ok((to_version, true))
    }

    /// Every rollback ever recorded, oldest first.
    pub async fn recovery_log(&self) -> Result<Vec<RecoveryRecord>> {
        let mut paths = self
            .storage()
            .list_objects(&self.storage().meta_path("recovery"))
            .await?;
        // ULID names sort by time.
        paths.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
        let mut out = Vec::with_capacity(paths.len());
        for p in paths {
            if let Some(bytes) = self.storage().get(&p).await? {
                out.push(serde_json::from_slice(&bytes)?);
            }
        }
        Ok(out)
    }

    /// Under the branch lock: make the latest Lance version of `t`'s branch
    /// hold exactly `t`'s data, restoring it if an interrupted commit left
    /// other versions after it. Returns the version to write on and whether
    /// a restore was needed. Tables still pinned to a parent branch's
    /// lineage are not ours to touch.
    pub(crate) async fn roll_back_unpublished(
        &self,
        type_name: &str,
        t: &TableEntry,
        branch_id: &str,
    ) -> Result<(u64, bool)> {
        match self.unpublished(type_name, t, branch_id).await? {
            (latest, false) => Ok((latest, false)),
            (_, true) => Ok((self.storage().restore(type_name, t).await?, true)),
        }
    }

    /// The latest Lance version of `t`'s lineage on the branch, and whether
    /// it holds data other than the pin's (versions an unpublished commit
    /// wrote). An earlier recovery's restore holds the pin's data again.
    pub(crate) async fn unpublished(
        &self,
        type_name: &str,
        t: &TableEntry,
        branch_id: &str,
    ) -> Result<(u64, bool)> {
        self.unpublished_at(type_name, t, None, branch_id).await
    }

    /// [`Self::unpublished`], reading through `at_pin`, the table open at
    /// `t`'s version, when given.
    async fn unpublished_at(
        &self,
        type_name: &str,
        t: &TableEntry,
        at_pin: Option<&lance::Dataset>,
        branch_id: &str,
    ) -> Result<(u64, bool)> {
        if !owns(t, branch_id) {
            return Ok((t.version, false));
        }
        let pinned = match at_pin {
            Some(ds) => ds.clone(),
            None => self.storage().open(type_name, t).await?,
        };
        let latest_version = self.storage().latest_version(&pinned).await?;
        if latest_version == t.version {
            return Ok((t.version, false));
        }
        let latest = self
            .storage()
            .open(
                type_name,
                &TableEntry {
                    version: latest_version,
                    ..t.clone()
                },
            )
            .await?;
        let same = latest.manifest().fragments == pinned.manifest().fragments
            && latest.schema() == pinned.schema();
        Ok((latest_version, !same))
    }

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
