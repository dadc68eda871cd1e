//! The only module that calls Lance: create, open, fork, write and restore
//! the per-type datasets. Everything above it deals in [`TableEntry`] pins.
//!
//! A table on a graph branch is pinned to `(lance_branch, version)`. `None`
//! is Lance's main branch. A graph branch forks a table lazily, on its first
//! write, into a Lance branch named after the graph branch's id (zero-copy:
//! Lance shallow-clones the manifest and points at the parent's files).

use std::sync::Arc;

use arrow_array::{RecordBatch, RecordBatchIterator};
use arrow_schema::SchemaRef;
use futures::TryStreamExt;
use lance::Dataset;
use lance::dataset::builder::DatasetBuilder;
use lance::dataset::{WriteMode, WriteParams};
use lance::session::Session;
use lance_io::object_store::{ObjectStore, ObjectStoreRegistry};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where one table's published state lives: a dataset path relative to the
/// graph root, a Lance branch, and a version on that branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lance_branch: Option<String>,
    pub version: u64,
}

/// Lance datasets and the graph's object store, shared by every handle on one graph.
pub(crate) struct Storage {
    pub root_uri: String,
    pub store: Arc<ObjectStore>,
    pub base: Path,
    session: Arc<Session>,
}

/// Caches per open graph. Lance's defaults (6 GiB of index cache per session)
/// are sized for a server process, not for one Postgres backend among many.
const INDEX_CACHE_BYTES: usize = 128 << 20;

/// I/O a scan may queue ahead of its consumer. Lance's default is 2 GiB,
/// which a slow consumer (a cursor, a commit appending what it reads) would
/// fill with the whole table.
pub const SCAN_IO_BUFFER_BYTES: u64 = 64 << 20;

/// A scanner of `ds` with bounded read-ahead; every scan starts here.
pub fn scanner(ds: &Dataset) -> lance::dataset::scanner::Scanner {
    let mut scan = ds.scan();
    scan.io_buffer_size(SCAN_IO_BUFFER_BYTES);
    scan
}
const METADATA_CACHE_BYTES: usize = 64 << 20;

impl Storage {
    pub async fn new(root_uri: &str) -> Result<Storage> {
        let root_uri = root_uri.trim_end_matches('/').to_string();
        let registry = Arc::new(ObjectStoreRegistry::default());
        let (store, base) =
            ObjectStore::from_uri_and_params(registry.clone(), &root_uri, &Default::default())
                .await?;
        let session = Arc::new(Session::new(
            INDEX_CACHE_BYTES,
            METADATA_CACHE_BYTES,
            registry,
        ));
        Ok(Storage {
            root_uri,
            store,
            base,
            session,
        })
    }

    pub fn table_uri(&self, path: &str) -> String {
        format!("{}/{}", self.root_uri, path)
    }

    /// The local directory of the graph, when it lives on a local file system.
    pub fn local_dir(&self) -> Option<std::path::PathBuf> {
        if !self.store.is_local() {
            return None;
        }
        let p = self
            .root_uri
            .strip_prefix("file://")
            .unwrap_or(&self.root_uri);
        Some(std::path::PathBuf::from(p))
    }

    fn params(&self, mode: WriteMode) -> WriteParams {
        WriteParams {
            mode,
            session: Some(self.session.clone()),
            ..Default::default()
        }
    }

    /// Create an empty table; returns its first version.
    pub async fn create_table(&self, path: &str, schema: SchemaRef) -> Result<u64> {
        let reader =
            RecordBatchIterator::new(Vec::<std::result::Result<RecordBatch, _>>::new(), schema);
        let ds = Dataset::write(
            reader,
            self.table_uri(path).as_str(),
            Some(self.params(WriteMode::Create)),
        )
        .await?;
        Ok(ds.version_id())
    }

    /// Open a table at its pinned version.
    pub async fn open(&self, type_name: &str, t: &TableEntry) -> Result<Dataset> {
        let builder =
            DatasetBuilder::from_uri(self.table_uri(&t.path)).with_session(self.session.clone());
        let builder = match &t.lance_branch {
            Some(b) => builder.with_branch(b, Some(t.version)),
            None => builder.with_version(t.version),
        };
        match builder.load().await {
            Ok(ds) => Ok(ds),
            Err(
                lance::Error::VersionNotFound { .. }
                | lance::Error::NotFound { .. }
                | lance::Error::DatasetNotFound { .. },
            ) => {
                // The version's manifest is gone. If the table still opens at
                // its latest version, cleanup reclaimed the one we want.
                let latest = DatasetBuilder::from_uri(self.table_uri(&t.path))
                    .with_session(self.session.clone());
                let latest = match &t.lance_branch {
                    Some(b) => latest.with_branch(b, None),
                    None => latest,
                };
                match latest.load().await {
                    Ok(_) => Err(Error::VersionReclaimed {
                        type_name: type_name.to_string(),
                        version: t.version,
                    }),
                    Err(e) => Err(Error::Storage(format!(
                        "the table of {type_name} at '{}' cannot be opened: {e}",
                        t.path
                    ))),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Latest version on the table's Lance branch, published or not.
    pub async fn latest_version(&self, ds: &Dataset) -> Result<u64> {
        Ok(ds.latest_version_id().await?)
    }

    /// Fork a table into `lance_branch` at the pinned version, replacing any
    /// fork of that name left behind by an interrupted commit (it was never
    /// published, so nothing refers to it).
    pub async fn fork(
        &self,
        type_name: &str,
        from: &TableEntry,
        lance_branch: &str,
    ) -> Result<TableEntry> {
        let mut root = self.open(type_name, from).await?;
        let exists = root.list_branches().await?.contains_key(lance_branch)
            || self
                .store
                .exists(
                    &self
                        .base
                        .clone()
                        .join(from.path.as_str())
                        .join("tree")
                        .join(lance_branch),
                )
                .await
                .unwrap_or(false);
        if exists {
            root.force_delete_branch(lance_branch).await?;
        }
        let source = (from.lance_branch.as_deref(), Some(from.version));
        let forked = root.create_branch(lance_branch, source, None).await?;
        Ok(TableEntry {
            path: from.path.clone(),
            lance_branch: Some(lance_branch.to_string()),
            version: forked.version_id(),
        })
    }

    /// Make `t` the latest version of its Lance branch again, discarding any
    /// unpublished versions after it. Only called under the branch write lock.
    pub async fn restore(&self, type_name: &str, t: &TableEntry) -> Result<u64> {
        let mut ds = self.open(type_name, t).await?;
        ds.restore().await?;
        Ok(ds.version_id())
    }

    /// Delete rows matching `filter`; returns the new dataset (or the input if nothing matched).
    pub async fn delete(&self, mut ds: Dataset, filter: &str) -> Result<Dataset> {
        ds.delete(filter).await?;
        Ok(ds)
    }

    /// Append a stream of batches as one new version, without collecting it.
    pub async fn append_stream(
        &self,
        ds: Dataset,
        stream: lance::deps::datafusion::execution::SendableRecordBatchStream,
    ) -> Result<Dataset> {
        let ds = lance::dataset::InsertBuilder::new(Arc::new(ds))
            .with_params(&self.params(WriteMode::Append))
            .execute_stream(stream)
            .await?;
        Ok(ds)
    }

    pub async fn append(&self, ds: Dataset, batches: Vec<RecordBatch>) -> Result<Dataset> {
        if batches.iter().all(|b| b.num_rows() == 0) {
            return Ok(ds);
        }
        let ds = lance::dataset::InsertBuilder::new(Arc::new(ds))
            .with_params(&self.params(WriteMode::Append))
            .execute(batches)
            .await?;
        Ok(ds)
    }

    /// Read `columns` of the rows matching `filter` (all rows when `None`).
    pub async fn scan(
        &self,
        ds: &Dataset,
        columns: &[&str],
        filter: Option<&str>,
    ) -> Result<Vec<RecordBatch>> {
        let mut scan = scanner(ds);
        scan.project(columns)?;
        if let Some(f) = filter {
            scan.filter(f)?;
        }
        Ok(scan.try_into_stream().await?.try_collect().await?)
    }

    pub async fn count(&self, ds: &Dataset, filter: Option<&str>) -> Result<u64> {
        Ok(ds.count_rows(filter.map(str::to_string)).await? as u64)
    }

    // --- small JSON objects of the graph's own metadata (manifests, refs) ---

    pub fn meta_path(&self, rel: &str) -> Path {
        rel.split('/')
            .fold(self.base.clone().join("_graph"), |p, part| p.join(part))
    }

    /// Create an object only if absent; `false` when it already exists.
    pub async fn put_if_absent(&self, path: &Path, bytes: Vec<u8>) -> Result<bool> {
        match self.store.put_if_absent(path, bytes.into()).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn put(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.store.put(path, bytes).await?;
        Ok(())
    }

    /// Read an object; `None` when it does not exist.
    pub async fn get(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        match self.store.inner.get(path).await {
            Ok(r) => Ok(Some(r.bytes().await?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn exists(&self, path: &Path) -> Result<bool> {
        Ok(self.store.exists(path).await?)
    }

    pub async fn delete_object(&self, path: &Path) -> Result<()> {
        match self.store.inner.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The objects directly under a metadata directory.
    pub async fn list_objects(&self, dir: &Path) -> Result<Vec<Path>> {
        let listing = self.store.list_with_delimiter(Some(dir)).await?;
        Ok(listing.objects.into_iter().map(|o| o.location).collect())
    }
}
