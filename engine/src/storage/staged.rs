//! A table write staged at one version and committed on a later one: the
//! files of a commit written before its branch lock is taken.
//!
//! A commit that deletes rows by id and appends rows writes two kinds of
//! files: its new rows' data file, and a deletion file for each fragment
//! that loses a row. Both have fresh names, and nothing refers to them until
//! a Lance version does, so they can be written while other commits of the
//! branch publish. [`Storage::stage_delete_and_append`] writes them against
//! the version the commit resolved against; [`Storage::commit_staged`], under
//! the branch lock, commits them on the table's latest version:
//!
//! - a deletion file replaces its fragment's previous one, so it is kept
//!   only where that fragment is unchanged since it was staged; where
//!   another commit (or a compaction) changed it, the deletions are redone
//!   against the latest version;
//! - a cleanup takes the branch lock and removes files no version refers
//!   to, which staged files are until committed: a file found missing is
//!   written again.
//!
//! Files left unused (a redo, a commit given up) are removed at once, best
//! effort; anything left is what a cleanup removes.

use std::sync::Arc;

use arrow_array::RecordBatch;
use lance::Dataset;
use lance::dataset::WriteMode;
use lance::dataset::transaction::{Operation, Transaction, UpdateMode};
use lance_table::format::Fragment;
use object_store::path::Path;

use super::{Storage, delete_rows, reads};
use crate::error::{Error, Result};

/// The files of deleting some ids and appending some rows, written at
/// `read_version` of a table and not committed yet.
pub(crate) struct StagedWrite {
    /// The table at the version the files were written against.
    ds: Dataset,
    read_version: u64,
    ids: Vec<String>,
    batches: Vec<RecordBatch>,
    /// The fragments the deletions change, as they were at `read_version`.
    touched: Vec<Fragment>,
    /// Those fragments with their new deletion files.
    updated: Vec<Fragment>,
    /// Fragments left without a live row.
    removed: Vec<u64>,
    /// The addresses of the deleted rows, when an index lookup found them
    /// (not a filtered delete): valid in every version whose fragment holds
    /// the same data files.
    rows: Option<Vec<u64>>,
    /// The new rows' fragments (ids are assigned when committed).
    new: Vec<Fragment>,
}

impl StagedWrite {
    /// The table at `version` of the Lance branch the write was staged on:
    /// the dataset it was staged with when the table is unchanged, else a
    /// checkout through it (its store and session, no new open).
    pub(crate) async fn table_at(&self, version: u64) -> Result<Dataset> {
        if self.read_version == version {
            return Ok(self.ds.clone());
        }
        Ok(self.ds.checkout_version(version).await?)
    }
}

/// The deletions of a write: fragments with new deletion files, and
/// fragments left without a live row.
type Deletions = (Vec<Fragment>, Vec<u64>);

impl Storage {
    /// Write, at `ds`'s version, the files that delete the rows whose `id`
    /// is in `ids` and append `batches`; commit nothing.
    pub(crate) async fn stage_delete_and_append(
        &self,
        ds: &Dataset,
        ids: &[&str],
        batches: Vec<RecordBatch>,
    ) -> Result<StagedWrite> {
        let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
        // The deletion files and the new rows' data file are written at
        // once: each is synced before its write returns, and neither needs
        // the other, so a commit waits for one sync, not two in a row.
        let (deleted, appended) =
            futures::join!(self.deletions(ds, ids), self.new_fragments(ds, &batches));
        let ((updated, removed, rows), new) = match (deleted, appended) {
            (Ok(d), Ok(a)) => (d, a),
            (d, a) => {
                if let Ok((updated, _, _)) = &d {
                    discard_deletions(ds, updated).await;
                }
                if let Ok(new) = &a {
                    discard_data(ds, new).await;
                }
                return Err(d.err().or(a.err()).unwrap_or_else(|| {
                    Error::Internal("a staged write failed without an error".into())
                }));
            }
        };
        let touched = ds
            .manifest()
            .fragments
            .iter()
            .filter(|f| updated.iter().any(|u| u.id == f.id) || removed.contains(&f.id))
            .cloned()
            .collect();
        Ok(StagedWrite {
            ds: ds.clone(),
            read_version: ds.manifest().version,
            ids: ids.iter().map(|id| id.to_string()).collect(),
            batches,
            touched,
            updated,
            removed,
            rows,
            new,
        })
    }

    /// Commit a staged write on `ds`, the table's latest version (under the
    /// branch lock): deletions are redone where a fragment they change
    /// changed since they were staged, and files found missing are written
    /// again.
    pub(crate) async fn commit_staged(&self, ds: Dataset, staged: StagedWrite) -> Result<Dataset> {
        let StagedWrite {
            ds: _,
            read_version,
            ids,
            batches,
            touched,
            updated,
            removed,
            rows,
            new,
        } = staged;
        let now = |f: &Fragment| ds.manifest().fragments.iter().find(|g| g.id == f.id);
        let unchanged =
            ds.manifest().version == read_version || touched.iter().all(|f| now(f) == Some(f));
        // Where only deletion files changed, the rows are where they were.
        let moved = |f: &Fragment| {
            !now(f).is_some_and(|g| g.files == f.files && g.physical_rows == f.physical_rows)
        };
        let deletions = if unchanged && deletion_files_exist(&ds, &updated).await? {
            (updated, removed)
        } else {
            discard_deletions(&ds, &updated).await;
            match rows {
                Some(rows) if !touched.iter().any(moved) => delete_rows(&ds, &rows).await?,
                _ => {
                    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                    let (updated, removed, _) = self.deletions(&ds, &ids).await?;
                    (updated, removed)
                }
            }
        };
        let new = if data_files_exist(&ds, &new).await? {
            new
        } else {
            discard_data(&ds, &new).await;
            self.new_fragments(&ds, &batches).await?
        };
        self.commit_update(Arc::new(ds), deletions, new).await
    }

    /// Commit a staged write on the version it was staged at.
    pub(super) async fn commit_staged_now(
        &self,
        ds: Dataset,
        staged: StagedWrite,
    ) -> Result<Dataset> {
        let deletions = (staged.updated, staged.removed);
        self.commit_update(Arc::new(ds), deletions, staged.new)
            .await
    }

    /// Remove the files of a staged write that will not be committed.
    pub(crate) async fn discard_staged(&self, staged: StagedWrite) {
        discard_deletions(&staged.ds, &staged.updated).await;
        discard_data(&staged.ds, &staged.new).await;
    }

    /// Write the deletion files that delete the rows whose `id` is in `ids`
    /// at `ds`'s version (through the `id` index when there is one, which
    /// gives the rows' addresses too).
    async fn deletions(
        &self,
        ds: &Dataset,
        ids: &[&str],
    ) -> Result<(Vec<Fragment>, Vec<u64>, Option<Vec<u64>>)> {
        use lance::deps::datafusion::common::Column;
        use lance::deps::datafusion::logical_expr::{Expr, lit};
        use lance::deps::datafusion::scalar::ScalarValue;

        if ids.is_empty() {
            return Ok((Vec::new(), Vec::new(), None));
        }
        let values: Vec<ScalarValue> = ids
            .iter()
            .map(|id| ScalarValue::Utf8(Some(id.to_string())))
            .collect();
        match reads::row_addresses(ds, "id", &values).await? {
            Some(rows) => {
                let (updated, removed) = delete_rows(ds, &rows).await?;
                Ok((updated, removed, Some(rows)))
            }
            None => {
                let filter = Expr::Column(Column::new_unqualified("id"))
                    .in_list(values.into_iter().map(lit).collect(), false);
                let deleted =
                    lance::dataset::DeleteBuilder::from_expr(Arc::new(ds.clone()), filter)
                        .execute_uncommitted()
                        .await?;
                let Operation::Delete {
                    updated_fragments,
                    deleted_fragment_ids,
                    ..
                } = deleted.transaction.operation
                else {
                    return Err(Error::Internal(
                        "a Lance delete staged something other than a delete".into(),
                    ));
                };
                Ok((updated_fragments, deleted_fragment_ids, None))
            }
        }
    }

    /// Write `batches` as new fragments of `ds`, uncommitted.
    async fn new_fragments(&self, ds: &Dataset, batches: &[RecordBatch]) -> Result<Vec<Fragment>> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let appended = lance::dataset::InsertBuilder::new(Arc::new(ds.clone()))
            .with_params(&self.params(WriteMode::Append))
            .execute_uncommitted(batches.to_vec())
            .await?;
        match appended.operation {
            Operation::Append { fragments } => Ok(fragments),
            _ => Err(Error::Internal(
                "a Lance append staged something other than an append".into(),
            )),
        }
    }

    /// Commit deletions and new fragments on `ds` as one Lance version.
    async fn commit_update(
        &self,
        ds: Arc<Dataset>,
        (updated_fragments, deleted_fragment_ids): Deletions,
        new_fragments: Vec<Fragment>,
    ) -> Result<Dataset> {
        if updated_fragments.is_empty()
            && deleted_fragment_ids.is_empty()
            && new_fragments.is_empty()
        {
            return Ok(Arc::unwrap_or_clone(ds));
        }
        let update = Operation::Update {
            removed_fragment_ids: deleted_fragment_ids,
            updated_fragments,
            new_fragments,
            // Rows are moved (deleted, and appended in a new fragment), as
            // Lance's own row-rewriting update does: no column is rewritten
            // in place, so no index loses a fragment.
            fields_modified: Vec::new(),
            compacted_sstables: Vec::new(),
            fields_for_preserving_frag_bitmap: Vec::new(),
            update_mode: Some(UpdateMode::RewriteRows),
            inserted_rows_filter: None,
            updated_fragment_offsets: None,
        };
        let transaction = Transaction::new(ds.manifest().version, update, None);
        Ok(lance::dataset::CommitBuilder::new(ds)
            .execute(transaction)
            .await?)
    }
}

fn deletion_paths(ds: &Dataset, fragments: &[Fragment]) -> Vec<Path> {
    let base = ds.branch_location().path;
    fragments
        .iter()
        .filter_map(|f| {
            let file = f.deletion_file.as_ref()?;
            Some(lance_table::io::deletion::deletion_file_path(
                &base, f.id, file,
            ))
        })
        .collect()
}

fn data_paths(ds: &Dataset, fragments: &[Fragment]) -> Vec<Path> {
    let dir = ds.data_dir();
    fragments
        .iter()
        .flat_map(|f| &f.files)
        .map(|file| dir.clone().join(file.path.as_str()))
        .collect()
}

async fn all_exist(ds: &Dataset, paths: Vec<Path>) -> Result<bool> {
    let store = ds.object_store(None).await?;
    for p in paths {
        if !store.exists(&p).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn deletion_files_exist(ds: &Dataset, fragments: &[Fragment]) -> Result<bool> {
    all_exist(ds, deletion_paths(ds, fragments)).await
}

async fn data_files_exist(ds: &Dataset, fragments: &[Fragment]) -> Result<bool> {
    all_exist(ds, data_paths(ds, fragments)).await
}

async fn remove_all(ds: &Dataset, paths: Vec<Path>) {
    let Ok(store) = ds.object_store(None).await else {
        return;
    };
    for p in paths {
        let _ = store.delete(&p).await;
    }
}

async fn discard_deletions(ds: &Dataset, fragments: &[Fragment]) {
    remove_all(ds, deletion_paths(ds, fragments)).await
}

async fn discard_data(ds: &Dataset, fragments: &[Fragment]) {
    remove_all(ds, data_paths(ds, fragments)).await
}
