//! Change records: which row ids each commit changed, per type, so diff
//! and merge read only the rows that changed since a common ancestor
//! instead of whole tables.
//!
//! Every commit writes `_graph/changes/<commit id>.json` before its commit
//! pointer. A record lists the ids whose rows the commit inserted, updated
//! or deleted in each type it wrote, or says `all` when it replaced a table
//! or changed more than [`MAX_RECORDED_IDS`] rows of it. The ids that
//! changed between an ancestor and a descendant are the union over the
//! commits between them. A commit without a readable record (made before
//! records existed) makes every table it could have changed count as `all`:
//! readers then compare those tables whole, which is slower, never wrong.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::graph::Graph;
use crate::manifest::Manifest;

/// More changed rows than this in one table of one commit are recorded as `all`.
pub(crate) const MAX_RECORDED_IDS: usize = 100_000;

/// What one commit changed in one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TableChange {
    Ids(BTreeSet<String>),
    All,
}

/// `_graph/changes/<commit id>.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ChangeRecord {
    pub tables: BTreeMap<String, TableChange>,
}

/// The ids of one table changed over a range of history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Changed {
    Ids(BTreeSet<String>),
    /// Unknown: compare the whole table.
    All,
}

impl Changed {
    pub fn none() -> Changed {
        Changed::Ids(BTreeSet::new())
    }

    pub fn add(&mut self, other: &TableChange) {
        match (&mut *self, other) {
            (Changed::All, _) => {}
            (Changed::Ids(_), TableChange::All) => *self = Changed::All,
            (Changed::Ids(mine), TableChange::Ids(ids)) => mine.extend(ids.iter().cloned()),
        }
    }

    pub fn add_ids(&mut self, ids: impl IntoIterator<Item = String>) {
        if let Changed::Ids(mine) = self {
            mine.extend(ids);
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Changed::Ids(ids) if ids.is_empty())
    }
}

impl TableChange {
    /// The record of a table whose changed ids are `ids`.
    pub fn of(ids: BTreeSet<String>) -> TableChange {
        if ids.len() > MAX_RECORDED_IDS {
            TableChange::All
        } else {
            TableChange::Ids(ids)
        }
    }
}

impl Graph {
    fn change_path(&self, commit_id: &str) -> object_store::path::Path {
        self.storage()
            .meta_path(&format!("changes/{commit_id}.json"))
    }

    pub(crate) async fn write_change_record(
        &self,
        commit_id: &str,
        record: &ChangeRecord,
    ) -> Result<()> {
        self.storage()
            .put(&self.change_path(commit_id), &serde_json::to_vec(record)?)
            .await
    }

    /// Remove the record of a commit that will not be published.
    pub(crate) async fn remove_change_record(&self, commit_id: &str) -> Result<()> {
        self.storage()
            .delete_object(&self.change_path(commit_id))
            .await
    }

    /// A commit's record; `None` when it has none or it cannot be read.
    pub(crate) async fn change_record(&self, commit_id: &str) -> Result<Option<ChangeRecord>> {
        let Some(bytes) = self.storage().get(&self.change_path(commit_id)).await? else {
            return Ok(None);
        };
        Ok(serde_json::from_slice(&bytes).ok())
    }

    /// Per type, the ids whose rows may differ between `base`, an ancestor,
    /// and `head`; types whose table pin is the same in both are left out
    /// (their data is identical).
    pub(crate) async fn changed_between(
        &self,
        base: &Manifest,
        head: &Manifest,
    ) -> Result<BTreeMap<String, Changed>> {
        let differing: Vec<&String> = head
            .tables
            .iter()
            .filter(|(name, pin)| base.tables.get(*name) != Some(*pin))
            .map(|(name, _)| name)
            .collect();
        let mut out: BTreeMap<String, Changed> = BTreeMap::new();
        if differing.is_empty() {
            return Ok(out);
        }
        let before = self.ancestors(&base.commit.id).await?;
        let between: Vec<String> = self
            .ancestors(&head.commit.id)
            .await?
            .into_keys()
            .filter(|id| !before.contains_key(id))
            .collect();
        let mut recorded: BTreeMap<&String, Changed> = BTreeMap::new();
        for id in &between {
            match self.change_record(id).await? {
                Some(record) => {
                    for name in &differing {
                        if let Some(change) = record.tables.get(*name) {
                            recorded
                                .entry(*name)
                                .or_insert_with(Changed::none)
                                .add(change);
                        }
                    }
                }
                None => {
                    for name in &differing {
                        recorded.insert(*name, Changed::All);
                    }
                    break;
                }
            }
        }
        for name in differing {
            // A pin that moved without any record saying how: compare whole.
            out.insert(name.clone(), recorded.remove(name).unwrap_or(Changed::All));
        }
        Ok(out)
    }
}
