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

mod adopt;
mod durable;
mod local_reads;
mod lru;
mod parsed;
mod reads;
mod staged;

pub(crate) use parsed::Parsed;
pub use reads::{LOOKUP_ROWS, SCAN_IO_BUFFER_BYTES, index_lookup, scanner, take_range};
pub(crate) use staged::StagedWrite;

/// Where one table's published state lives: a dataset path relative to the
/// graph root, a Lance branch, and a version on that branch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TableEntry {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lance_branch: Option<String>,
    pub version: u64,
}

/// Lance datasets and the graph's object store, shared by every handle on one graph.
///
/// Durability: on a local file system every write (Lance data, deletion and
/// transaction files, Lance manifests, branch trees, and our `_graph/`
/// objects) goes through [`DURABLE_LOCAL`], so it is fsynced before
/// it is renamed or linked into place and its directory is fsynced after;
/// each write is durable when its call returns, which orders data before
/// the Lance manifest naming it, and that before the graph manifest pinning
/// it. Lance's version hints are the exception: written unsynced, as
/// their loss is harmless ([`durable`]). Datasets opened to be read (`read_session`) read through
/// [`local_reads::LocalReads`]: on the caller's thread when it runs a
/// current-thread runtime.
pub(crate) struct Storage {
    pub root_uri: String,
    pub store: Arc<ObjectStore>,
    pub base: Path,
    /// Writes, and datasets opened to be written.
    session: Arc<Session>,
    /// Datasets opened only to be read.
    read_session: Arc<Session>,
    /// Published table versions opened to be read, by pin (see
    /// [`Storage::open_published`]).
    published: std::sync::Mutex<std::collections::HashMap<TableEntry, Dataset>>,
    /// Local graphs: maps object paths to files, so [`Storage::get`] and
    /// [`Storage::exists`] of the graph's small metadata objects read them
    /// directly (a few microseconds) instead of through the store's
    /// blocking-thread hop (about 50 µs each, and a snapshot makes five).
    local_files: Option<object_store::local::LocalFileSystem>,
    /// Metadata objects read parsed ([`Storage::get_parsed`]).
    parsed: parsed::ParsedCache,
    /// The head seq last read of each branch (by id): where the next
    /// search for the head starts.
    heads: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

/// Column data a Lance file writer buffers before it writes pages, for
/// all columns of the file together. Lance's default is 8 MiB per column,
/// held until a page fills or the file (up to a million rows) closes: a
/// commit appending a million spilled rows of a 14-column table held about
/// 110 MiB of it. Divided evenly across columns, this still makes pages
/// of a megabyte or more for tables of up to 16 columns.
pub const WRITER_BUFFER_BYTES: u64 = 16 << 20;

/// Lance's write parameters with the writer's buffer bounded
/// ([`WRITER_BUFFER_BYTES`]); every table and spill write starts here.
pub(crate) fn write_params(mode: WriteMode) -> WriteParams {
    WriteParams {
        mode,
        file_writer_options: Some(lance_file::writer::FileWriterOptions {
            data_cache_bytes: Some(WRITER_BUFFER_BYTES),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Published table versions kept open per graph handle.
const PUBLISHED_DATASETS: usize = 256;

/// The store of datasets written (and opened to be written): Lance's local
/// store in its "object store" mode (every write through `inner`, none
/// through Lance's own unsynced local writer), with an `inner` that fsyncs
/// ([`durable::DurableLocal`]): object_store's `LocalFileSystem::with_fsync`
/// syncs a staged file before renaming or linking it, then its directory,
/// and every directory it creates. Lance's version hints alone are written
/// unsynced (a hint lost in a crash costs a longer probe).
const DURABLE_LOCAL: local_reads::LocalProvider = local_reads::LocalProvider {
    inner: durable::durable_local,
};

/// fsync a directory, so a name removed from it stays removed after a crash.
fn sync_dir(dir: &std::path::Path) -> Result<()> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// The kinds of index the graph builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    BTree,
    Bitmap,
    /// A vector index (IVF partitions, exact vectors).
    IvfFlat,
}

impl IndexKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IndexKind::BTree => "btree",
            IndexKind::Bitmap => "bitmap",
            IndexKind::IvfFlat => "ivf_flat",
        }
    }

    fn from_lance(index_type: &str) -> Option<IndexKind> {
        match index_type.to_ascii_lowercase().as_str() {
            "btree" => Some(IndexKind::BTree),
            "bitmap" => Some(IndexKind::Bitmap),
            "ivf_flat" | "ivfflat" => Some(IndexKind::IvfFlat),
            _ => None,
        }
    }

    /// Whether a scan filter of this shape is answered from the index
    /// (Lance's query parsers: BITMAP has no prefix search, vector indexes
    /// answer only nearest-neighbour queries).
    pub fn answers(self, filter: FilterShape) -> bool {
        match self {
            IndexKind::BTree => true,
            IndexKind::Bitmap => filter != FilterShape::Prefix,
            IndexKind::IvfFlat => false,
        }
    }
}

/// The shapes of scan filter an index may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterShape {
    Equal,
    In,
    Range,
    IsNull,
    Prefix,
}

/// One Lance branch of a table: a graph branch's fork of its parent's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanceFork {
    /// The Lance branch name (the graph branch's id).
    pub name: String,
    /// The Lance branch it forked from (`None`: Lance's main).
    pub parent: Option<String>,
    /// The parent's version it forked at.
    pub parent_version: u64,
}

/// One index of one table version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableIndex {
    pub name: String,
    pub column: String,
    pub kind: IndexKind,
    /// Rows in fragments the index does not cover (written since it was
    /// built or refreshed); scans read those without the index.
    pub uncovered_rows: u64,
}

/// The name of the graph's index on `column`.
pub fn index_name(column: &str) -> String {
    if column == "id" {
        ID_INDEX.to_string()
    } else {
        format!("{column}_idx")
    }
}

/// Rows a table needs before optimize trains a vector index on it.
pub const VECTOR_INDEX_MIN_ROWS: u64 = 256;

/// IVF partitions for a vector index over `rows` rows: about the square
/// root, so a partition holds as many rows as there are partitions.
fn ivf_partitions(rows: u64) -> usize {
    ((rows as f64).sqrt() as usize).clamp(1, 1024)
}

/// The last component of a `/`-separated path.
pub(crate) fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The fragments of `ds` none of an index's segments covers.
fn uncovered_fragments<'a>(
    ds: &'a Dataset,
    segments: &'a [lance_table::format::IndexMetadata],
) -> impl Iterator<Item = &'a lance_table::format::Fragment> {
    let covered = |id: u64| {
        u32::try_from(id).is_ok_and(|id| {
            segments
                .iter()
                .any(|s| s.fragment_bitmap.as_ref().is_some_and(|b| b.contains(id)))
        })
    };
    ds.manifest()
        .fragments
        .iter()
        .filter(move |f| !covered(f.id))
}

/// Rows of `ds` in fragments none of an index's segments covers.
fn uncovered_rows(ds: &Dataset, segments: &[lance_table::format::IndexMetadata]) -> u64 {
    uncovered_fragments(ds, segments)
        .map(|f| f.physical_rows.unwrap_or(0) as u64)
        .sum()
}

/// Small fragments a table may gather before a commit merges them.
pub const AUTO_COMPACT_FRAGMENTS: usize = 32;

/// Fragments under this many rows are small; commits merge them into
/// fragments of up to this size (optimize, into Lance's 1M-row default).
pub const AUTO_COMPACT_ROWS: usize = 65_536;

/// The BTree index on `id` every table gets once it is large enough.
pub const ID_INDEX: &str = "id_idx";

/// Rows a table needs before it gets an `id` index, and uncovered rows
/// before new fragments are folded into it.
pub const ID_INDEX_MIN_ROWS: u64 = 10_000;

/// Caches per open graph. Lance's defaults (6 GiB of index cache per session)
/// are sized for a server process, not for one Postgres backend among many.
const INDEX_CACHE_BYTES: usize = 128 << 20;

const METADATA_CACHE_BYTES: usize = 64 << 20;

/// The one spelling of a graph's location. Local graphs (a path, or a
/// `file://` URI, percent-escapes decoded) become an absolute path with `.`
/// and `..` resolved and symbolic links followed as far as the path exists,
/// so every spelling of one directory names one graph, one set of locks and
/// one cache entry. Object-store URIs (`s3://...`) are kept as written,
/// without a trailing `/`.
pub fn canonical_uri(uri: &str) -> Result<String> {
    let bad = |why: &str| Error::InvalidArgument(format!("graph uri '{uri}' {why}"));
    let path = match uri.split_once("://") {
        Some(("file", rest)) => {
            let rest = rest.strip_prefix("localhost").unwrap_or(rest);
            if !rest.starts_with('/') {
                return Err(bad(
                    "names a host; a file:// URI must name a local absolute path",
                ));
            }
            percent_decode(rest).ok_or_else(|| bad("has a malformed %-escape"))?
        }
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            return Ok(uri.trim_end_matches('/').to_string());
        }
        _ => uri.to_string(),
    };
    if !path.starts_with('/') {
        return Err(bad("is not an absolute path"));
    }
    if path.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    // Follow symbolic links through the longest prefix that exists.
    let mut resolved = std::path::PathBuf::from("/");
    let mut rest = parts.as_slice();
    for n in (0..=parts.len()).rev() {
        let prefix: std::path::PathBuf = std::iter::once("/")
            .chain(parts[..n].iter().copied())
            .collect();
        if let Ok(real) = std::fs::canonicalize(&prefix) {
            resolved = real;
            rest = &parts[n..];
            break;
        }
    }
    for seg in rest {
        resolved.push(seg);
    }
    resolved
        .into_os_string()
        .into_string()
        .map_err(|_| bad("is not valid UTF-8 once resolved"))
}

/// A missing file, or a missing directory on its path.
fn absent(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Deletion files [`delete_rows`] writes at once.
const DELETION_WRITES: usize = 8;

/// Stage the deletion of rows by address (ascending, as
/// [`reads::row_addresses`] gives them): a new deletion file for each
/// fragment that loses a live row, without planning a filtered scan to find
/// them. Returns the fragments with their new deletion files and the ids of
/// fragments left without a live row, for a Lance update to commit.
/// Addresses of rows already deleted, or of fragments not in `ds`'s
/// version, change nothing.
async fn delete_rows(
    ds: &Dataset,
    rows: &[u64],
) -> Result<(Vec<lance_table::format::Fragment>, Vec<u64>)> {
    use futures::StreamExt;
    // Each fragment's deletion file is its own synced write: written
    // several at a time.
    let extended = futures::stream::iter(reads::by_fragment(rows).into_iter().filter_map(
        |(id, offsets)| {
            let fragment = ds.get_fragment(id as usize)?;
            Some(async move {
                let deleted = fragment.get_deletion_vector().await?;
                let new: Vec<u32> = offsets
                    .into_iter()
                    .filter(|o| deleted.as_ref().is_none_or(|d| !d.contains(*o)))
                    .collect();
                if new.is_empty() {
                    return Ok::<_, Error>(None);
                }
                Ok(Some((id, fragment.extend_deletions(new).await?)))
            })
        },
    ))
    .buffered(DELETION_WRITES)
    .collect::<Vec<_>>()
    .await;
    let (mut updated, mut removed) = (Vec::new(), Vec::new());
    for e in extended {
        match e? {
            Some((_, Some(kept))) => updated.push(kept.metadata().clone()),
            Some((id, None)) => removed.push(id),
            None => {}
        }
    }
    Ok((updated, removed))
}

/// The stores the graph writes through: local files synced ([`DURABLE_LOCAL`]).
fn durable_registry() -> Arc<ObjectStoreRegistry> {
    let registry = Arc::new(ObjectStoreRegistry::default());
    registry.insert("file", Arc::new(DURABLE_LOCAL));
    registry.insert("file-object-store", Arc::new(DURABLE_LOCAL));
    registry
}

/// Lance write parameters that write local files as the graph does, each
/// synced before it is named: for benchmarks that compare a commit with a
/// Lance write of the same durability (`engine/examples/commit_bench.rs`).
pub fn durable_write_params(mode: WriteMode) -> WriteParams {
    WriteParams {
        session: Some(Arc::new(Session::new(
            INDEX_CACHE_BYTES,
            METADATA_CACHE_BYTES,
            durable_registry(),
        ))),
        ..write_params(mode)
    }
}

impl Storage {
    pub async fn new(root_uri: &str) -> Result<Storage> {
        let root_uri = canonical_uri(root_uri)?;
        let registry = durable_registry();
        let (store, base) =
            ObjectStore::from_uri_and_params(registry.clone(), &root_uri, &Default::default())
                .await?;
        let session = Arc::new(Session::new(
            INDEX_CACHE_BYTES,
            METADATA_CACHE_BYTES,
            registry,
        ));
        let read_registry = Arc::new(ObjectStoreRegistry::default());
        read_registry.insert("file", Arc::new(local_reads::LOCAL_READS));
        let read_session = Arc::new(Session::new(
            INDEX_CACHE_BYTES,
            METADATA_CACHE_BYTES,
            read_registry,
        ));
        Ok(Storage {
            store,
            base,
            session,
            read_session,
            published: Default::default(),
            local_files: root_uri
                .starts_with('/')
                .then(object_store::local::LocalFileSystem::new),
            parsed: parsed::ParsedCache::new(),
            heads: Default::default(),
            root_uri,
        })
    }

    /// A table's directory in the store (`path` is `/`-separated).
    fn table_dir(&self, path: &str) -> Path {
        path.split('/')
            .fold(self.base.clone(), |p, part| p.join(part))
    }

    pub fn table_uri(&self, path: &str) -> String {
        format!("{}/{}", self.root_uri, path)
    }

    /// The local directory of the graph, when it lives on a local file system.
    pub fn local_dir(&self) -> Option<std::path::PathBuf> {
        // canonical_uri made local graphs plain absolute paths, and only them.
        self.root_uri
            .starts_with('/')
            .then(|| std::path::PathBuf::from(&self.root_uri))
    }

    fn params(&self, mode: WriteMode) -> WriteParams {
        WriteParams {
            session: Some(self.session.clone()),
            ..write_params(mode)
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

    /// Open a table at its pinned version, to read it.
    pub async fn open(&self, type_name: &str, t: &TableEntry) -> Result<Dataset> {
        self.open_in(&self.read_session, type_name, t).await
    }

    /// Open a table version a published manifest pins, to read it, reusing
    /// an open handle: a published pin never changes content (a version is
    /// immutable, forks of unpublished commits that are replaced were never
    /// pinned, and branch ids are never reused), so a handle never goes
    /// stale; a version cleanup removed fails when read, and readers report
    /// it as reclaimed ([`Storage::version_exists`]).
    pub async fn open_published(&self, type_name: &str, t: &TableEntry) -> Result<Dataset> {
        let cached = self
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(t)
            .cloned();
        if let Some(ds) = cached {
            return Ok(ds);
        }
        let ds = self.open(type_name, t).await?;
        let mut cache = self.published.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= PUBLISHED_DATASETS {
            cache.clear();
        }
        cache.insert(t.clone(), ds.clone());
        Ok(ds)
    }

    /// Drop the open handles of published versions (after a cleanup).
    pub fn forget_published(&self) {
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Open a table at its pinned version, to write it (durably).
    pub async fn open_for_write(&self, type_name: &str, t: &TableEntry) -> Result<Dataset> {
        self.open_in(&self.session, type_name, t).await
    }

    async fn open_in(
        &self,
        session: &Arc<Session>,
        type_name: &str,
        t: &TableEntry,
    ) -> Result<Dataset> {
        let builder =
            DatasetBuilder::from_uri(self.table_uri(&t.path)).with_session(session.clone());
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
                let latest =
                    DatasetBuilder::from_uri(self.table_uri(&t.path)).with_session(session.clone());
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

    /// Whether the version `t` pins still exists, asked of the store (not
    /// of any cache): false once cleanup removed it.
    pub async fn version_exists(&self, t: &TableEntry) -> bool {
        let builder = DatasetBuilder::from_uri(self.table_uri(&t.path));
        let builder = match &t.lance_branch {
            Some(b) => builder.with_branch(b, Some(t.version)),
            None => builder.with_version(t.version),
        };
        builder.load().await.is_ok()
    }

    /// The latest version on `ds`'s Lance branch, published or not.
    ///
    /// Lance answers by listing the branch's manifests; on a local file
    /// system that reads the whole `_versions` directory, which grows by
    /// a few files with every commit (10,000 names take milliseconds), and
    /// every commit asks. Versions are written one after another, and Lance
    /// records the newest in a hint file after each commit, so when the
    /// next version does not exist and the hint is no newer, `ds` is the
    /// latest, asked with two small reads. Otherwise, or without a hint
    /// (a store that keeps none), Lance lists.
    pub async fn latest_version(&self, ds: &Dataset) -> Result<u64> {
        let version = ds.version_id();
        let hint_path = ds
            .branch_location()
            .path
            .join("_versions")
            .join(durable::VERSION_HINT);
        let hint = self
            .get(&hint_path)
            .await?
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("version")?.as_u64());
        if hint.is_some_and(|h| h <= version) && !ds.has_successor_version().await? {
            return Ok(version);
        }
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
        let mut root = self.open_for_write(type_name, from).await?;
        let exists = root.list_branches().await?.contains_key(lance_branch)
            || self
                .store
                .exists(&self.table_dir(&from.path).join("tree").join(lance_branch))
                .await
                .unwrap_or(false);
        if exists {
            root.force_delete_branch(lance_branch).await?;
            if let Some(dir) = self.local_dir() {
                // Deletes are not synced by the store: keep the removal.
                sync_dir(&dir.join(&from.path).join("tree"))?;
            }
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
        let mut ds = self.open_for_write(type_name, t).await?;
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

    /// Delete the rows whose `id` is one of `ids` and append `batches`, as
    /// one new version: a Lance update that commits the deletion files and
    /// the new fragment together (one manifest, one transaction file),
    /// where a delete then an append would commit twice. The new fragment
    /// is outside every index, as an append's is; the fragments that lost
    /// rows keep theirs. Returns the input when there is nothing to do.
    pub async fn delete_ids_and_append(
        &self,
        ds: Dataset,
        ids: &[&str],
        batches: Vec<RecordBatch>,
    ) -> Result<Dataset> {
        if ids.is_empty() {
            return self.append(ds, batches).await;
        }
        // Staged and committed on the same version: nothing to re-check.
        let staged = self.stage_delete_and_append(&ds, ids, batches).await?;
        self.commit_staged_now(ds, staged).await
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

    /// Merge small fragments and drop deleted rows (Lance compaction, with
    /// its default targets); indexes are remapped to the new fragments.
    /// Returns whether it wrote a new version.
    pub async fn compact(&self, ds: &mut Dataset) -> Result<bool> {
        let metrics = lance::dataset::optimize::compact_files(
            ds,
            lance::dataset::optimize::CompactionOptions::default(),
            None,
        )
        .await?;
        Ok(metrics.fragments_removed > 0 || metrics.fragments_added > 0)
    }

    /// Merge a table's small fragments once it has gathered
    /// [`AUTO_COMPACT_FRAGMENTS`] of them (each commit appends one, and
    /// every scan and commit pays per fragment): only fragments under
    /// [`AUTO_COMPACT_ROWS`] rows are rewritten, into fragments of up to
    /// that size, so the work a commit adds stays bounded however large the
    /// table. Returns whether it wrote a new version.
    pub async fn compact_small_fragments(&self, ds: &mut Dataset) -> Result<bool> {
        let small = ds
            .manifest()
            .fragments
            .iter()
            .filter(|f| f.physical_rows.unwrap_or(0) < AUTO_COMPACT_ROWS)
            .count();
        if small < AUTO_COMPACT_FRAGMENTS {
            return Ok(false);
        }
        let options = lance::dataset::optimize::CompactionOptions {
            target_rows_per_fragment: AUTO_COMPACT_ROWS,
            ..Default::default()
        };
        let metrics = lance::dataset::optimize::compact_files(ds, options, None).await?;
        Ok(metrics.fragments_removed > 0)
    }

    /// The graph's indexes of a table version (Lance's own system indexes
    /// left out), by column.
    pub async fn indexes(&self, ds: &Dataset) -> Result<Vec<TableIndex>> {
        use lance::index::DatasetIndexExt;
        let mut out = Vec::new();
        for d in ds.describe_indices(None).await? {
            let Some(kind) = IndexKind::from_lance(d.index_type()) else {
                continue;
            };
            let [field] = d.field_ids() else { continue };
            let Some(column) = i32::try_from(*field)
                .ok()
                .and_then(|f| ds.schema().field_by_id(f))
                .map(|f| f.name.clone())
            else {
                continue;
            };
            let uncovered = uncovered_rows(ds, d.segments());
            out.push(TableIndex {
                name: d.name().to_string(),
                column,
                kind,
                uncovered_rows: uncovered,
            });
        }
        out.sort_by(|a, b| a.column.cmp(&b.column));
        Ok(out)
    }

    /// Build (or rebuild, replacing one of the same name) the index of
    /// `kind` on `column`, named [`index_name`].
    pub async fn build_index(
        &self,
        ds: &mut Dataset,
        column: &str,
        kind: IndexKind,
        rows: u64,
    ) -> Result<()> {
        use lance::index::DatasetIndexExt;
        use lance_index::scalar::{BuiltinIndexType, ScalarIndexParams};
        let name = Some(index_name(column));
        match kind {
            IndexKind::BTree | IndexKind::Bitmap => {
                let (ty, builtin) = if kind == IndexKind::BTree {
                    (lance_index::IndexType::BTree, BuiltinIndexType::BTree)
                } else {
                    (lance_index::IndexType::Bitmap, BuiltinIndexType::Bitmap)
                };
                let params = ScalarIndexParams::for_builtin(builtin);
                ds.create_index(&[column], ty, name, &params, true).await?;
            }
            IndexKind::IvfFlat => {
                let params = lance::index::vector::VectorIndexParams::ivf_flat(
                    ivf_partitions(rows),
                    lance_linalg::distance::DistanceType::L2,
                );
                ds.create_index(
                    &[column],
                    lance_index::IndexType::IvfFlat,
                    name,
                    &params,
                    true,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Fold the fragments an index does not cover yet into it.
    pub async fn refresh_index(&self, ds: &mut Dataset, name: &str) -> Result<()> {
        use lance::index::DatasetIndexExt;
        let mut options = lance_index::optimize::OptimizeOptions::append();
        options.index_names = Some(vec![name.to_string()]);
        ds.optimize_indices(&options).await?;
        Ok(())
    }

    /// The table's Lance branches (forks), sorted by name, with the branch and
    /// version each was forked from.
    pub async fn lance_branches(&self, type_name: &str, path: &str) -> Result<Vec<LanceFork>> {
        let root = self.open_latest(type_name, path, None).await?;
        let mut out: Vec<_> = root
            .list_branches()
            .await?
            .into_iter()
            .map(|(name, b)| LanceFork {
                name,
                parent: b.parent_branch,
                parent_version: b.parent_version,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The latest version of a table's Lance branch (`None`: Lance's main).
    async fn open_latest(
        &self,
        type_name: &str,
        path: &str,
        lance_branch: Option<&str>,
    ) -> Result<Dataset> {
        let builder =
            DatasetBuilder::from_uri(self.table_uri(path)).with_session(self.session.clone());
        let builder = match lance_branch {
            Some(b) => builder.with_branch(b, None),
            None => builder,
        };
        builder.load().await.map_err(|e| {
            Error::Storage(format!(
                "the table of {type_name} at '{path}' cannot be opened: {e}"
            ))
        })
    }

    /// Every version of a table's Lance branch, oldest first, and the
    /// versions of it tags name (with the tag).
    pub async fn versions(
        &self,
        type_name: &str,
        path: &str,
        lance_branch: Option<&str>,
    ) -> Result<(Vec<u64>, Vec<(u64, String)>)> {
        let ds = self.open_latest(type_name, path, lance_branch).await?;
        let versions = ds
            .versions()
            .await?
            .into_iter()
            .map(|v| v.version)
            .collect();
        let tags = ds
            .tags()
            .list()
            .await?
            .into_iter()
            .filter(|(_, t)| t.branch.as_deref() == lance_branch)
            .map(|(name, t)| (t.version, name))
            .collect();
        Ok((versions, tags))
    }

    /// The names of the files a version refers to that identify it (data
    /// file names, deletion file stems, index ids): what cleanup's
    /// candidate paths are matched against to say which version a file
    /// belonged to.
    pub async fn version_file_keys(
        &self,
        type_name: &str,
        path: &str,
        lance_branch: Option<&str>,
        version: u64,
    ) -> Result<Vec<String>> {
        use lance::index::DatasetIndexExt;
        let ds = self.open_latest(type_name, path, lance_branch).await?;
        let ds = ds.checkout_version(version).await?;
        let mut keys = Vec::new();
        for f in ds.manifest().fragments.iter() {
            for file in &f.files {
                keys.push(file_name(&file.path).to_string());
            }
            if let Some(d) = &f.deletion_file {
                keys.push(format!("{}-{}-{}", f.id, d.read_version, d.id));
            }
        }
        for i in ds.load_indices().await?.iter() {
            keys.push(i.uuid.to_string());
        }
        keys.push(file_name(ds.manifest_location().path.as_ref()).to_string());
        if let Some(t) = &ds.manifest().transaction_file {
            keys.push(file_name(t).to_string());
        }
        Ok(keys)
    }

    /// Remove `versions` of a table's Lance branch, and the files only they
    /// refer to; with `orphans`, also files no version refers to (only safe
    /// while no writer writes this Lance branch). With `dry_run` nothing is
    /// removed. Returns the files removed (or that would be), each with its
    /// size.
    pub async fn remove_versions(
        &self,
        type_name: &str,
        path: &str,
        lance_branch: Option<&str>,
        versions: Vec<u64>,
        orphans: bool,
        dry_run: bool,
    ) -> Result<Vec<(String, u64)>> {
        use lance::dataset::cleanup::CleanupPolicy;
        if versions.is_empty() && !orphans {
            return Ok(Vec::new());
        }
        let ds = self.open_latest(type_name, path, lance_branch).await?;
        let policy = CleanupPolicy {
            // With no version to remove, only files no version refers to.
            before_version: versions.is_empty().then_some(0),
            versions: (!versions.is_empty()).then(|| versions.into_iter().collect()),
            delete_unverified: orphans,
            error_if_tagged_old_versions: false,
            ..Default::default()
        };
        let op = ds.cleanup(policy).with_max_candidate_files(usize::MAX);
        let explained = op.explain().await?;
        if !dry_run {
            op.execute().await?;
        }
        Ok(explained
            .candidate_files
            .into_iter()
            .map(|f| (f.path, f.size_bytes))
            .collect())
    }

    /// Bytes of the files under a table's Lance branch directory.
    pub async fn lance_branch_bytes(&self, path: &str, lance_branch: &str) -> Result<u64> {
        let dir = self.table_dir(path);
        let tree = dir.clone().join("tree").join(lance_branch);
        let metas: Vec<_> = self.store.inner.list(Some(&tree)).try_collect().await?;
        // And the branch's entry in the table's branch list.
        let contents = dir
            .join("_refs")
            .join("branches")
            .join(format!("{lance_branch}.json"));
        let entry = match self.store.inner.head(&contents).await {
            Ok(m) => m.size,
            Err(_) => 0,
        };
        Ok(metas.iter().map(|m| m.size).sum::<u64>() + entry)
    }

    /// Delete a table's Lance branch whose graph branch was deleted;
    /// `false` (and nothing deleted) while another fork still refers to it.
    pub async fn delete_lance_branch(
        &self,
        type_name: &str,
        path: &str,
        lance_branch: &str,
    ) -> Result<bool> {
        let mut root = self.open_latest(type_name, path, None).await?;
        match root.delete_branch(lance_branch).await {
            Ok(()) => {}
            Err(lance::Error::RefConflict { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        if let Some(dir) = self.local_dir() {
            sync_dir(&dir.join(path).join("tree"))?;
        }
        Ok(true)
    }

    /// Keep the BTree index on `id` (which merges, diffs, commits and point
    /// reads look rows up through) covering most of the table: built once
    /// the table holds [`ID_INDEX_MIN_ROWS`] rows, and new fragments folded
    /// in once the rows it does not cover reach that many and a tenth of
    /// the table. Rows it does not cover are still found (Lance scans them),
    /// only slower. Returns whether it wrote a new version.
    pub async fn maintain_id_index(&self, ds: &mut Dataset) -> Result<bool> {
        use lance::index::DatasetIndexExt;
        let fragments = &ds.manifest().fragments;
        let rows = |f: &lance_table::format::Fragment| f.physical_rows.unwrap_or(0) as u64;
        let total: u64 = fragments.iter().map(rows).sum();
        let indices = ds.load_indices().await?;
        let segments: Vec<_> = indices.iter().filter(|i| i.name == ID_INDEX).collect();
        if segments.is_empty() {
            if total < ID_INDEX_MIN_ROWS {
                return Ok(false);
            }
            ds.create_index(
                &["id"],
                lance_index::IndexType::BTree,
                Some(ID_INDEX.to_string()),
                &lance_index::scalar::ScalarIndexParams::default(),
                true,
            )
            .await?;
            return Ok(true);
        }
        let segments: Vec<_> = segments.into_iter().cloned().collect();
        if uncovered_rows(ds, &segments) < ID_INDEX_MIN_ROWS.max(total / 10) {
            return Ok(false);
        }
        self.refresh_index(ds, ID_INDEX).await?;
        Ok(true)
    }

    /// Lance's plan for reading `columns` of the rows matching `filter`.
    #[cfg(test)]
    pub async fn explain(&self, ds: &Dataset, columns: &[&str], filter: &str) -> Result<String> {
        let mut scan = scanner(ds);
        scan.project(columns)?;
        scan.filter(filter)?;
        Ok(scan.explain_plan(true).await?)
    }

    /// Read `columns` of the rows matching `filter` (all rows when `None`).
    pub async fn scan(
        &self,
        ds: &Dataset,
        columns: &[&str],
        filter: Option<&str>,
    ) -> Result<Vec<RecordBatch>> {
        Ok(self
            .scan_stream(ds, columns, filter)
            .await?
            .try_collect()
            .await?)
    }

    /// Read `columns` of the rows matching `filter` (all rows when `None`),
    /// batch by batch, without collecting.
    pub async fn scan_stream(
        &self,
        ds: &Dataset,
        columns: &[&str],
        filter: Option<&str>,
    ) -> Result<lance::dataset::scanner::DatasetRecordBatchStream> {
        let mut scan = scanner(ds);
        scan.project(columns)?;
        if let Some(f) = filter {
            scan.filter(f)?;
        }
        Ok(scan.try_into_stream().await?)
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

    /// Write an object whose loss in a crash is harmless (a hint that
    /// readers check against the objects it points at): replaced whole,
    /// like every object, but on a local graph not synced.
    pub async fn put_advisory(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let Some(file) = self.local_file(path) else {
            return self.put(path, bytes).await;
        };
        let staged = file.with_extension(format!("{}.tmp", ulid::Ulid::new()));
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let written = std::fs::write(&staged, bytes).and_then(|()| std::fs::rename(&staged, &file));
        if written.is_err() {
            let _ = std::fs::remove_file(&staged);
        }
        Ok(written?)
    }

    /// The file of an object of a local graph.
    fn local_file(&self, path: &Path) -> Option<std::path::PathBuf> {
        self.local_files.as_ref()?.path_to_filesystem(path).ok()
    }

    /// Read an object; `None` when it does not exist. Meant for the small
    /// metadata objects (refs, manifests, locks): on a local graph the read
    /// is a plain, short, blocking file read. Objects are written to a
    /// staging file and renamed into place, so a read sees all of one or
    /// nothing.
    pub async fn get(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        if let Some(file) = self.local_file(path) {
            return match std::fs::read(&file) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if absent(&e) => Ok(None),
                Err(e) => Err(e.into()),
            };
        }
        match self.store.inner.get(path).await {
            Ok(r) => Ok(Some(r.bytes().await?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn exists(&self, path: &Path) -> Result<bool> {
        if let Some(file) = self.local_file(path) {
            return match std::fs::metadata(&file) {
                Ok(m) => Ok(m.is_file()),
                Err(e) if absent(&e) => Ok(false),
                Err(e) => Err(e.into()),
            };
        }
        Ok(self.store.exists(path).await?)
    }

    /// Delete an object; on a local file system the removal is synced.
    pub async fn delete_object(&self, path: &Path) -> Result<()> {
        match self.store.inner.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(dir) = self.local_dir() {
            // Local object paths are relative to the file system root.
            let file = std::path::PathBuf::from(format!("/{path}"));
            if let (Some(parent), true) = (file.parent(), file.starts_with(&dir)) {
                sync_dir(parent)?;
            }
        }
        Ok(())
    }

    /// The directories directly under a metadata directory (their last
    /// path component).
    pub async fn list_dirs(&self, dir: &Path) -> Result<Vec<String>> {
        let listing = self.store.list_with_delimiter(Some(dir)).await?;
        Ok(listing
            .common_prefixes
            .into_iter()
            .map(|p| file_name(p.as_ref()).to_string())
            .collect())
    }

    /// The objects directly under a metadata directory.
    pub async fn list_objects(&self, dir: &Path) -> Result<Vec<Path>> {
        let listing = self.store.list_with_delimiter(Some(dir)).await?;
        Ok(listing.objects.into_iter().map(|o| o.location).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::canonical_uri;

    #[test]
    fn every_spelling_of_a_local_graph_is_one_uri() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        let base = real.to_str().unwrap();
        let want = format!("{base}/g h");
        for spelling in [
            format!("{base}/g h"),
            format!("{base}/g h/"),
            format!("{base}//./g h"),
            format!("{base}/x/../g h"),
            format!("file://{base}/g%20h"),
            format!("file://localhost{base}/g h"),
        ] {
            assert_eq!(canonical_uri(&spelling).unwrap(), want, "{spelling}");
        }
        std::os::unix::fs::symlink(&real, real.join("link")).unwrap();
        assert_eq!(canonical_uri(&format!("{base}/link/g h")).unwrap(), want);
        assert_eq!(canonical_uri("s3://bucket/g/").unwrap(), "s3://bucket/g");
        for bad in ["relative/g", "file://host/g", "file:///g%zz", ""] {
            assert!(canonical_uri(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod latest_version_tests {
    use std::sync::Arc;

    use arrow_array::{Int32Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};

    use super::{Storage, TableEntry};

    /// The latest version is found from the pin without a listing when
    /// nothing follows it, and by a listing when something does: the next
    /// version, or (past a gap in the versions) a newer hint; without a
    /// hint Lance lists.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_latest_version_is_found_past_gaps_and_without_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_string_lossy().into_owned();
        let storage = Storage::new(&root).await.unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
        let first = storage.create_table("t", schema.clone()).await.unwrap();
        let at = |version| TableEntry {
            path: "t".into(),
            lance_branch: None,
            version,
        };
        let mut ds = storage.open_for_write("T", &at(first)).await.unwrap();
        for i in 0..3 {
            let b = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int32Array::from(vec![i]))])
                .unwrap();
            ds = storage.append(ds, vec![b]).await.unwrap();
        }
        let last = ds.version_id();
        assert_eq!(last, first + 3);
        let latest = |v| {
            let storage = &storage;
            async move {
                let ds = storage.open("T", &at(v)).await.unwrap();
                storage.latest_version(&ds).await.unwrap()
            }
        };
        assert_eq!(latest(last).await, last);
        assert_eq!(latest(first).await, last, "the next version exists");
        let versions = dir.path().join("t").join("_versions");
        let manifest_of = |v: u64| {
            std::fs::read_dir(&versions)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| {
                    p.extension().is_some_and(|e| e == "manifest")
                        && p.file_stem()
                            .and_then(|s| s.to_str())
                            .and_then(|s| s.parse::<u64>().ok())
                            .is_some_and(|n| n == u64::MAX - v || n == v)
                })
                .unwrap()
        };
        // A gap after the pin (as cleanup leaves after rolling back an
        // unpublished commit): the hint is newer, so Lance lists.
        let pinned = storage.open("T", &at(first + 1)).await.unwrap();
        std::fs::remove_file(manifest_of(first + 2)).unwrap();
        assert_eq!(storage.latest_version(&pinned).await.unwrap(), last);
        // The hint is written unsynced (storage::durable): after a crash it
        // may be torn. Then Lance lists, past the gap too.
        let hint = versions.join("latest_version_hint.json");
        std::fs::write(&hint, b"{\"vers").unwrap();
        assert_eq!(storage.latest_version(&pinned).await.unwrap(), last);
        assert_eq!(latest(first).await, last);
        // No hint: Lance lists.
        std::fs::remove_file(&hint).unwrap();
        assert_eq!(storage.latest_version(&pinned).await.unwrap(), last);
    }
}

#[cfg(test)]
mod delete_ids_tests {
    use std::sync::Arc;

    use arrow_array::{Array, Int32Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    use super::{ID_INDEX_MIN_ROWS, Storage, TableEntry};

    fn batch(schema: &Arc<Schema>, ids: std::ops::Range<u32>) -> RecordBatch {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    ids.clone().map(|i| format!("n{i}")),
                )),
                Arc::new(Int32Array::from_iter_values(ids.map(|i| i as i32))),
            ],
        )
        .unwrap()
    }

    /// `id` (text) and `x` (int), the columns these tests' tables hold.
    fn id_x_schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("x", DataType::Int32, false),
        ]))
    }

    async fn live_ids(storage: &Storage, ds: &lance::Dataset) -> Vec<String> {
        let mut out: Vec<String> = storage
            .scan(ds, &["id"], None)
            .await
            .unwrap()
            .iter()
            .flat_map(|b| {
                let a = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
                (0..a.len())
                    .map(|i| a.value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort();
        out
    }

    /// Lance's transaction files are written unsynced
    /// ([`durable::advisory`]): a commit's transaction is read from the
    /// manifest that commits it, so it is there with its file gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commits_transaction_is_read_without_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_string_lossy().into_owned();
        let storage = Storage::new(&root).await.unwrap();
        let schema = id_x_schema();
        let first = storage.create_table("t", schema.clone()).await.unwrap();
        let mut entry = TableEntry {
            path: "t".to_string(),
            lance_branch: None,
            version: first,
        };
        let ds = storage.open_for_write("T", &entry).await.unwrap();
        let ds = storage
            .append(ds, vec![batch(&schema, 0..5)])
            .await
            .unwrap();
        let gone = "n2".to_string();
        let ds = storage
            .delete_ids_and_append(ds, &[gone.as_str()], vec![batch(&schema, 5..6)])
            .await
            .unwrap();
        let txn_dir = dir.path().join("t").join("_transactions");
        let mut removed = 0;
        for f in std::fs::read_dir(&txn_dir).unwrap().flatten() {
            std::fs::remove_file(f.path()).unwrap();
            removed += 1;
        }
        assert!(removed >= 2, "{removed} transaction files");
        // A new handle: nothing cached.
        entry.version = ds.version_id();
        let fresh = Storage::new(&root).await.unwrap();
        let ds = fresh.open("T", &entry).await.unwrap();
        let txn = ds.read_transaction().await.unwrap().expect("a transaction");
        assert!(
            matches!(
                txn.operation,
                lance::dataset::transaction::Operation::Update { .. }
            ),
            "{:?}",
            txn.operation
        );
        let before = ds.checkout_version(entry.version - 1).await.unwrap();
        let txn = before
            .read_transaction()
            .await
            .unwrap()
            .expect("a transaction");
        assert!(
            matches!(
                txn.operation,
                lance::dataset::transaction::Operation::Append { .. }
            ),
            "{:?}",
            txn.operation
        );
    }

    /// Ids found through the `id` index (an indexed fragment), by reading
    /// the small fragments written since, and through a filtered delete
    /// (a table too large to read whole without an index) are deleted
    /// alike: rows already gone, absent ids and repeats change nothing, a
    /// fragment that loses its last row is removed, and the new rows land
    /// in the same version.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ids_are_deleted_by_address_and_by_filter_alike() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_string_lossy().into_owned();
        let storage = Storage::new(&root).await.unwrap();
        let schema = id_x_schema();
        let n = ID_INDEX_MIN_ROWS as u32 * 2;
        for indexed in [true, false] {
            let path = format!("t{indexed}");
            let first = storage.create_table(&path, schema.clone()).await.unwrap();
            let entry = TableEntry {
                path: path.clone(),
                lance_branch: None,
                version: first,
            };
            let mut ds = storage.open_for_write("T", &entry).await.unwrap();
            ds = storage
                .append(ds, vec![batch(&schema, 0..n)])
                .await
                .unwrap();
            if indexed {
                assert!(storage.maintain_id_index(&mut ds).await.unwrap());
            }
            // Two small fragments the index does not cover.
            ds = storage
                .append(ds, vec![batch(&schema, n..n + 3)])
                .await
                .unwrap();
            ds = storage
                .append(ds, vec![batch(&schema, n + 3..n + 5)])
                .await
                .unwrap();
            let fragments = ds.manifest().fragments.len();
            assert_eq!(fragments, 3);
            let looked_up = super::reads::row_addresses(
                &ds,
                "id",
                &[lance::deps::datafusion::scalar::ScalarValue::Utf8(Some(
                    "n7".into(),
                ))],
            )
            .await
            .unwrap();
            assert_eq!(
                looked_up.is_some(),
                indexed,
                "found by address only with the index"
            );
            let gone = |i: u32| format!("n{i}");
            let (a, b, c, d) = (gone(7), gone(n - 1), gone(n + 1), gone(n + 3));
            let (e, absent) = (gone(n + 4), "nope".to_string());
            let ids = [
                a.as_str(),
                b.as_str(),
                c.as_str(),
                d.as_str(),
                e.as_str(),
                absent.as_str(),
                a.as_str(),
            ];
            ds = storage
                .delete_ids_and_append(ds, &ids, vec![batch(&schema, n + 10..n + 12)])
                .await
                .unwrap();
            let mut want: Vec<String> = (0..n + 3)
                .chain(n + 10..n + 12)
                .filter(|i| ![7, n - 1, n + 1].contains(i))
                .map(gone)
                .collect();
            want.sort();
            assert_eq!(live_ids(&storage, &ds).await, want, "indexed: {indexed}");
            // The last fragment lost both its rows: removed; the new rows
            // are one new fragment.
            assert_eq!(
                ds.manifest().fragments.len(),
                fragments,
                "indexed: {indexed}"
            );
            // Deleting what is already gone writes nothing.
            let version = ds.version_id();
            ds = storage
                .delete_ids_and_append(ds, &[a.as_str(), absent.as_str()], Vec::new())
                .await
                .unwrap();
            assert_eq!(ds.version_id(), version, "indexed: {indexed}");
            assert_eq!(live_ids(&storage, &ds).await, want, "indexed: {indexed}");
            // After a compaction (rows move to new fragments, the index is
            // remapped), addresses found are those of the rows now.
            assert!(storage.compact(&mut ds).await.unwrap());
            let (f, g) = (gone(8), gone(n + 10));
            ds = storage
                .delete_ids_and_append(ds, &[f.as_str(), g.as_str()], Vec::new())
                .await
                .unwrap();
            want.retain(|id| id != &f && id != &g);
            assert_eq!(live_ids(&storage, &ds).await, want, "indexed: {indexed}");
        }
    }
}
