//! The graph handle: create and open graphs, read snapshots, manage
//! branches, read the commit log, and start write transactions.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use lance::Dataset;

use crate::error::{Error, Result};
use crate::manifest::{
    self, BranchRef, CommitInfo, FORMAT_VERSION, GraphMeta, MAIN, Manifest, Meta, now_us,
};
use crate::schema::{Catalog, TypeKind, parse_schema};
use crate::storage::{Storage, TableEntry};
use crate::txn::WriteTxn;
use crate::value::{
    Record, batch_to_records, kind_of, quote_ident, sql_literal, table_schema, unknown_type,
};

/// What to read: the head of a branch, or the state a commit published.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReadRef {
    Branch(String),
    Commit(String),
}

impl ReadRef {
    pub fn main() -> ReadRef {
        ReadRef::Branch(MAIN.to_string())
    }

    /// A ref as users write one: a commit id (a ULID) or a branch name.
    pub fn parse(r: &str) -> ReadRef {
        if crate::manifest::is_commit_id(r) {
            ReadRef::Commit(r.to_string())
        } else {
            ReadRef::Branch(r.to_string())
        }
    }
}

impl std::fmt::Display for ReadRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadRef::Branch(b) => write!(f, "branch '{b}'"),
            ReadRef::Commit(c) => write!(f, "commit '{c}'"),
        }
    }
}

/// Tunables of a graph handle.
#[derive(Debug, Clone)]
pub struct GraphOptions {
    /// How long a commit waits for its branch's write lock.
    pub lock_timeout: Duration,
    /// Where large transactions spill staged inserts (a local directory);
    /// the system temp directory when `None`.
    pub spill_dir: Option<std::path::PathBuf>,
}

impl Default for GraphOptions {
    fn default() -> Self {
        GraphOptions {
            lock_timeout: Duration::from_secs(60),
            spill_dir: None,
        }
    }
}

/// A branch as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchInfo {
    pub name: String,
    pub head_commit: String,
    pub created_at_us: i64,
}

pub(crate) struct Inner {
    pub storage: Storage,
    pub catalog: Catalog,
    pub schema_source: String,
    pub options: GraphOptions,
    /// `options.lock_timeout` in milliseconds, changeable on a shared
    /// handle ([`Graph::set_lock_timeout`]).
    lock_timeout_ms: std::sync::atomic::AtomicU64,
    /// Commits read so far, by id (commits never change).
    pub commits: std::sync::Mutex<HashMap<String, CommitInfo>>,
    /// When the graph this handle opened was created (`graph.json`): a
    /// graph created again at the same location has another.
    created_at_us: i64,
}

/// An open graph. Cheap to clone; every clone shares one Lance session.
#[derive(Clone)]
pub struct Graph {
    pub(crate) inner: Arc<Inner>,
}

/// The lock file creators of a graph take turns on (`_graph/locks/`); branch
/// ids are ULIDs or `main`, so the name cannot collide with a branch lock.
const CREATE_LOCK: &str = "_create";
const CREATE_LOCK_TIMEOUT: Duration = Duration::from_secs(600);

/// Parse a schema off the async executor's thread, so a frontend waiting on
/// the future can still answer a cancel request during a long parse.
async fn parse_schema_yielding(src: &str) -> Result<Catalog> {
    let owned = src.to_string();
    match tokio::task::spawn_blocking(move || parse_schema(&owned)).await {
        Ok(parsed) => Ok(parsed?),
        Err(e) => Err(Error::Internal(format!("schema parser task failed: {e}"))),
    }
}

pub(crate) fn table_path(kind: TypeKind, name: &str) -> String {
    match kind {
        TypeKind::Node => format!("nodes/{name}"),
        TypeKind::Edge => format!("edges/{name}"),
    }
}

impl Graph {
    /// Create an empty graph at `uri` from `.pg` schema text.
    pub async fn create(uri: &str, schema_source: &str, actor: &str) -> Result<Graph> {
        let catalog = parse_schema_yielding(schema_source).await?;
        let storage = Storage::new(uri).await?;
        let meta = Meta { storage: &storage };
        // Creators of one graph take turns (a second waits, then finds the
        // graph complete); a lease would do this on object stores.
        let _creating = match storage.local_dir() {
            Some(_) => Some(
                crate::lock::acquire(
                    &storage,
                    CREATE_LOCK,
                    "(graph creation)",
                    CREATE_LOCK_TIMEOUT,
                    &crate::lock::not_cancelled,
                )
                .await?,
            ),
            None => None,
        };
        // A published main manifest means the graph exists even if its
        // graph.json is missing: never clean its tables up as leftovers.
        if meta.read_graph_meta().await?.is_some() || meta.read_manifest(MAIN, 0).await?.is_some() {
            return Err(Error::GraphExists {
                uri: storage.root_uri.clone(),
            });
        }
        // Tables first, the main manifest next, graph.json last: a graph is
        // complete exactly when graph.json exists.
        let mut tables = BTreeMap::new();
        for name in catalog.type_names() {
            let kind = catalog
                .kind_of(name)
                .ok_or_else(|| Error::Internal(format!("type {name} vanished")))?;
            let path = table_path(kind, name);
            let version = match storage
                .create_table(&path, table_schema(&catalog, name)?)
                .await
            {
                Ok(v) => v,
                Err(Error::Storage(msg)) if msg.contains("already exists") => {
                    // Left behind by a create that did not finish.
                    storage
                        .store
                        .remove_dir_all(storage.base.clone().join("nodes").join(name))
                        .await
                        .ok();
                    storage
                        .store
                        .remove_dir_all(storage.base.clone().join("edges").join(name))
                        .await
                        .ok();
                    storage
                        .create_table(&path, table_schema(&catalog, name)?)
                        .await?
                }
                Err(e) => return Err(e),
            };
            tables.insert(
                name.to_string(),
                TableEntry {
                    path,
                    lance_branch: None,
                    version,
                },
            );
        }
        meta.write_schema(schema_source).await?;
        let commit = CommitInfo {
            id: ulid::Ulid::new().to_string(),
            parents: vec![],
            branch: MAIN.to_string(),
            actor: actor.to_string(),
            message: "create graph".to_string(),
            committed_at_us: now_us(),
        };
        let m = Manifest {
            format_version: FORMAT_VERSION,
            branch_id: MAIN.to_string(),
            seq: 0,
            commit,
            tables,
        };
        meta.write_commit_pointer(&m.commit.id, MAIN, 0).await?;
        if !meta.publish(&m).await? {
            return Err(Error::GraphExists {
                uri: uri.to_string(),
            });
        }
        let main = BranchRef {
            name: MAIN.into(),
            id: MAIN.into(),
            created_at_us: m.commit.committed_at_us,
            from_commit: None,
        };
        meta.create_ref(&main).await?;
        if !meta
            .write_graph_meta(&GraphMeta {
                format_version: FORMAT_VERSION,
                created_at_us: now_us(),
            })
            .await?
        {
            return Err(Error::GraphExists {
                uri: uri.to_string(),
            });
        }
        Graph::open(uri).await
    }

    /// Open an existing graph.
    pub async fn open(uri: &str) -> Result<Graph> {
        Self::open_with(uri, GraphOptions::default()).await
    }

    pub async fn open_with(uri: &str, options: GraphOptions) -> Result<Graph> {
        let storage = Storage::new(uri).await?;
        let meta = Meta { storage: &storage };
        let gm = meta
            .read_graph_meta()
            .await?
            .ok_or_else(|| Error::GraphNotFound {
                uri: uri.to_string(),
            })?;
        if gm.format_version != FORMAT_VERSION {
            return Err(Error::Unsupported(format!(
                "the graph at '{uri}' has storage format {} but this build reads format {FORMAT_VERSION}",
                gm.format_version
            )));
        }
        let schema_source = meta
            .read_schema()
            .await?
            .ok_or_else(|| Error::GraphNotFound {
                uri: uri.to_string(),
            })?;
        let catalog = parse_schema(&schema_source)?;
        Ok(Graph {
            inner: Arc::new(Inner {
                storage,
                catalog,
                schema_source,
                lock_timeout_ms: std::sync::atomic::AtomicU64::new(
                    u64::try_from(options.lock_timeout.as_millis()).unwrap_or(u64::MAX),
                ),
                options,
                commits: Default::default(),
                created_at_us: gm.created_at_us,
            }),
        })
    }

    /// How long commits and branch operations started from now on wait for
    /// a branch's write lock (every clone of this handle shares it).
    pub fn set_lock_timeout(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.inner
            .lock_timeout_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn lock_timeout(&self) -> Duration {
        Duration::from_millis(
            self.inner
                .lock_timeout_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Take a branch's write lock for an operation whose caller can drop
    /// the wait (the future) to cancel it.
    pub(crate) async fn lock_branch(
        &self,
        branch_id: &str,
        name: &str,
    ) -> Result<crate::lock::BranchLock> {
        crate::lock::acquire(
            self.storage(),
            branch_id,
            name,
            self.lock_timeout(),
            &crate::lock::not_cancelled,
        )
        .await
    }

    /// Where write transactions spill large inserts.
    pub(crate) fn spill_dir(&self) -> std::path::PathBuf {
        self.inner
            .options
            .spill_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
    }

    pub fn uri(&self) -> &str {
        &self.inner.storage.root_uri
    }

    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// The schema source the graph was created with.
    pub fn schema_source(&self) -> &str {
        &self.inner.schema_source
    }

    pub(crate) fn meta(&self) -> Meta<'_> {
        Meta {
            storage: &self.inner.storage,
        }
    }

    pub(crate) fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    pub(crate) async fn branch_ref(&self, name: &str) -> Result<BranchRef> {
        self.meta()
            .read_ref(name)
            .await?
            .ok_or_else(|| Error::BranchNotFound {
                name: name.to_string(),
            })
    }

    /// A consistent view of the whole graph at a branch head or a commit.
    ///
    /// [`Error::GraphReplaced`] when the graph was deleted and another
    /// created at its location since this handle opened it (its schema and
    /// kept tables would be the old graph's): open the graph again.
    pub async fn snapshot(&self, at: &ReadRef) -> Result<Snapshot> {
        self.check_not_replaced().await?;
        match at {
            ReadRef::Branch(name) => {
                let r = self.branch_ref(name).await?;
                let manifest = self.meta().head(&r.id).await?;
                Ok(Snapshot {
                    graph: self.clone(),
                    branch: Some(name.clone()),
                    manifest,
                })
            }
            ReadRef::Commit(id) => {
                let manifest = self.meta().manifest_of_commit(id).await?;
                Ok(Snapshot {
                    graph: self.clone(),
                    branch: None,
                    manifest,
                })
            }
        }
    }

    /// A snapshot of a manifest just read (a branch head), without looking
    /// its commit up again.
    pub(crate) async fn snapshot_of(&self, manifest: Manifest) -> Result<Snapshot> {
        self.check_not_replaced().await?;
        Ok(Snapshot {
            graph: self.clone(),
            branch: None,
            manifest,
        })
    }

    /// `GraphReplaced` when the graph at this handle's location is not the
    /// one it opened (deleted and created again).
    async fn check_not_replaced(&self) -> Result<()> {
        match self.meta().read_graph_meta().await? {
            Some(gm) if gm.created_at_us != self.inner.created_at_us => Err(Error::GraphReplaced {
                uri: self.uri().to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Create a branch from a branch head or a commit. Copies no table data:
    /// the new branch's manifest pins the same table versions.
    pub async fn branch_create(&self, name: &str, from: &ReadRef) -> Result<BranchInfo> {
        let source = self.snapshot(from).await?;
        self.branch_create_pending(name, &source)
            .await?
            .publish()
            .await
    }

    /// The first half of creating a branch from `from`: the name is checked
    /// and held (no other creator can take it), the branch's first manifest
    /// is written under a fresh id, but no ref names it yet, so nobody sees
    /// the branch until [`NewBranch::publish`]. Dropping it creates nothing.
    pub async fn branch_create_pending(&self, name: &str, from: &Snapshot) -> Result<NewBranch> {
        manifest::check_branch_name(name)?;
        let name_lock = crate::lock::acquire(
            self.storage(),
            &name_lock_key(name),
            name,
            self.lock_timeout(),
            &crate::lock::not_cancelled,
        )
        .await?;
        if name == MAIN || self.meta().read_ref(name).await?.is_some() {
            return Err(Error::BranchExists {
                name: name.to_string(),
            });
        }
        let id = ulid::Ulid::new().to_string();
        let m = Manifest {
            format_version: FORMAT_VERSION,
            branch_id: id.clone(),
            seq: 0,
            commit: from.manifest.commit.clone(),
            tables: from.manifest.tables.clone(),
        };
        if !self.meta().publish(&m).await? {
            return Err(Error::Internal(format!(
                "fresh branch id {id} already has a manifest"
            )));
        }
        Ok(NewBranch {
            snapshot: Snapshot {
                graph: self.clone(),
                branch: Some(name.to_string()),
                manifest: m,
            },
            _name_lock: name_lock,
        })
    }

    /// Delete a branch. Its commits stay readable by id until cleanup.
    pub async fn branch_delete(&self, name: &str) -> Result<()> {
        self.branch_delete_pending(name).await?.publish().await
    }

    /// The first half of deleting a branch: waits for and holds the
    /// branch's write lock (no commit can publish on it meanwhile); the ref
    /// goes in [`BranchDeletion::publish`]. Dropping it deletes nothing.
    pub async fn branch_delete_pending(&self, name: &str) -> Result<BranchDeletion> {
        if name == MAIN {
            return Err(Error::CannotDeleteMain);
        }
        let r = self.branch_ref(name).await?;
        let lock = self.lock_branch(&r.id, name).await?;
        // Deleted (or re-created) while we waited.
        if self.branch_ref(name).await?.id != r.id {
            return Err(Error::BranchNotFound {
                name: name.to_string(),
            });
        }
        Ok(BranchDeletion {
            graph: self.clone(),
            name: name.to_string(),
            _lock: lock,
        })
    }

    pub async fn branch_list(&self) -> Result<Vec<BranchInfo>> {
        let mut out = Vec::new();
        for r in self.meta().list_refs().await? {
            let head = self.meta().head(&r.id).await?;
            out.push(BranchInfo {
                name: r.name,
                head_commit: head.commit.id,
                created_at_us: r.created_at_us,
            });
        }
        Ok(out)
    }

    /// Commits reachable from a branch head, newest first.
    pub async fn log(&self, branch: &str, limit: usize) -> Result<Vec<CommitInfo>> {
        let head = self.snapshot(&ReadRef::Branch(branch.to_string())).await?;
        self.log_from(&head, limit).await
    }

    /// Commits reachable from a snapshot's commit, newest first.
    pub async fn log_from(&self, at: &Snapshot, limit: usize) -> Result<Vec<CommitInfo>> {
        let head = at.manifest.commit.clone();
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut queue = BinaryHeap::new();
        seen.insert(head.id.clone());
        queue.push(LogEntry(head));
        while let Some(LogEntry(c)) = queue.pop() {
            if out.len() >= limit {
                break;
            }
            for p in &c.parents {
                if seen.insert(p.clone()) {
                    // A parent made unreachable by cleanup ends that line of history.
                    match self.commit_info(p).await {
                        Ok(c) => queue.push(LogEntry(c)),
                        Err(Error::CommitNotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            out.push(c);
        }
        Ok(out)
    }

    /// Start a write transaction on a branch.
    pub async fn begin(&self, branch: &str, actor: &str) -> Result<WriteTxn> {
        let base = self.snapshot(&ReadRef::Branch(branch.to_string())).await?;
        Ok(WriteTxn::begin(self.clone(), branch, actor, base))
    }

    /// Begin a write transaction whose conflict checks start from `base`,
    /// an earlier snapshot of `branch` that the caller already read: a row
    /// this transaction changes that any commit changed after `base` fails
    /// the commit with [`Error::Conflict`], so values read from `base` and
    /// written back are never lost updates.
    pub fn begin_at(&self, base: Snapshot, actor: &str) -> Result<WriteTxn> {
        let Some(branch) = base.branch.clone() else {
            return Err(Error::InvalidArgument(
                "a write transaction starts from a branch snapshot, not a commit".into(),
            ));
        };
        Ok(WriteTxn::begin(self.clone(), &branch, actor, base))
    }
}

/// The lock creators of a branch name take: `ref~<name>` ('/' as '~'),
/// which no branch id (a ULID or `main`) can be.
fn name_lock_key(name: &str) -> String {
    format!("ref~{}", name.replace('/', "~"))
}

/// A branch created but not yet visible; see [`Graph::branch_create_pending`].
#[must_use = "a pending branch is created only when published"]
pub struct NewBranch {
    snapshot: Snapshot,
    _name_lock: crate::lock::BranchLock,
}

impl NewBranch {
    pub fn name(&self) -> &str {
        self.snapshot.branch().unwrap_or_default()
    }

    /// What the branch holds: its source's state, read as the new branch.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// A write transaction on the branch, committed before it is published
    /// (the commit is invisible until the ref exists).
    pub fn begin(&self, actor: &str) -> WriteTxn {
        let mut txn = WriteTxn::begin(
            self.snapshot.graph.clone(),
            self.name(),
            actor,
            self.snapshot.clone(),
        );
        txn.new_branch = true;
        txn
    }

    /// Make the branch visible: create its ref.
    pub async fn publish(self) -> Result<BranchInfo> {
        let g = &self.snapshot.graph;
        crate::failpoints::hit(crate::failpoints::names::BRANCH_CREATE_BEFORE_REF)?;
        let r = BranchRef {
            name: self.name().to_string(),
            id: self.snapshot.manifest.branch_id.clone(),
            created_at_us: now_us(),
            from_commit: Some(self.snapshot.manifest.commit.id.clone()),
        };
        if !g.meta().create_ref(&r).await? {
            return Err(Error::BranchExists { name: r.name });
        }
        let head = g.meta().head(&r.id).await?;
        Ok(BranchInfo {
            name: r.name,
            head_commit: head.commit.id,
            created_at_us: r.created_at_us,
        })
    }
}

/// A branch deletion holding the branch's lock; see [`Graph::branch_delete_pending`].
#[must_use = "a pending deletion deletes only when published"]
pub struct BranchDeletion {
    graph: Graph,
    name: String,
    _lock: crate::lock::BranchLock,
}

impl BranchDeletion {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Delete the ref. Manifests and table versions stay for reads by
    /// commit id until cleanup.
    pub async fn publish(self) -> Result<()> {
        self.graph.meta().delete_ref(&self.name).await
    }
}

/// Whether a table pin lives in the branch's own Lance lineage (as opposed
/// to a parent's, which the branch forks on first write).
pub(crate) fn owns(t: &TableEntry, branch_id: &str) -> bool {
    match &t.lance_branch {
        None => branch_id == MAIN,
        Some(b) => b == branch_id,
    }
}

/// Orders commits for the log: newest first, ties by id.
struct LogEntry(CommitInfo);

impl PartialEq for LogEntry {
    fn eq(&self, o: &Self) -> bool {
        self.0.id == o.0.id
    }
}
impl Eq for LogEntry {}
impl PartialOrd for LogEntry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for LogEntry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.0.committed_at_us, &self.0.id).cmp(&(o.0.committed_at_us, &o.0.id))
    }
}

/// An immutable view of every table of the graph at one commit.
#[derive(Clone)]
pub struct Snapshot {
    graph: Graph,
    branch: Option<String>,
    pub(crate) manifest: Manifest,
}

/// How many ids go into one `id IN (...)` filter.
pub(crate) const ID_CHUNK: usize = 4096;

impl Snapshot {
    /// The branch read, or `None` for a snapshot pinned to a commit.
    pub fn branch(&self) -> Option<&str> {
        self.branch.as_deref()
    }

    /// The commit whose state this is.
    pub fn commit(&self) -> &CommitInfo {
        &self.manifest.commit
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The pinned table of a type.
    pub fn table(&self, type_name: &str) -> Result<&TableEntry> {
        self.manifest
            .tables
            .get(type_name)
            .ok_or_else(|| unknown_type(self.graph.catalog(), type_name))
    }

    /// The Lance dataset of a type at this snapshot's version.
    pub async fn dataset(&self, type_name: &str) -> Result<Dataset> {
        self.graph
            .storage()
            .open_published(type_name, self.table(type_name)?)
            .await
    }

    /// Read `columns` of a type's rows matching `filter`; a version
    /// reclaimed under the read is reported as such.
    /// Lance's plan for a read of `columns` of `type_name` through `filter`.
    #[cfg(test)]
    pub(crate) async fn explain(
        &self,
        type_name: &str,
        columns: &[&str],
        filter: &str,
    ) -> Result<String> {
        let ds = self.dataset(type_name).await?;
        self.graph.storage().explain(&ds, columns, filter).await
    }

    async fn scan(
        &self,
        type_name: &str,
        columns: &[&str],
        filter: Option<&str>,
    ) -> Result<Vec<arrow_array::RecordBatch>> {
        let ds = self.dataset(type_name).await?;
        match self.graph.storage().scan(&ds, columns, filter).await {
            Ok(b) => Ok(b),
            Err(e) => Err(self.read_error(type_name, e).await),
        }
    }

    /// An error met while reading a type's table at this snapshot, as a
    /// reader should see it: [`Error::VersionReclaimed`] when cleanup
    /// removed the version under the read, else `e` unchanged.
    pub async fn read_error(&self, type_name: &str, e: Error) -> Error {
        match self.table(type_name) {
            Ok(t) if !self.graph.storage().version_exists(t).await => Error::VersionReclaimed {
                type_name: type_name.to_string(),
                version: t.version,
            },
            _ => e,
        }
    }

    /// The indexes of a type's table at this snapshot.
    pub async fn indexes(&self, type_name: &str) -> Result<Vec<crate::storage::TableIndex>> {
        let ds = self.dataset(type_name).await?;
        self.graph.storage().indexes(&ds).await
    }

    pub async fn count(&self, type_name: &str) -> Result<u64> {
        let ds = self.dataset(type_name).await?;
        self.graph.storage().count(&ds, None).await
    }

    /// Every row of a type, ordered by id.
    pub async fn read_all(&self, type_name: &str) -> Result<Vec<Record>> {
        self.read_where(type_name, None).await
    }

    /// Rows of a type matching a Lance SQL filter, ordered by id.
    pub async fn read_where(&self, type_name: &str, filter: Option<&str>) -> Result<Vec<Record>> {
        let columns = self.columns(type_name)?;
        let cols: Vec<&str> = columns.iter().map(String::as_str).collect();
        let mut out = Vec::new();
        let kind = kind_of(self.graph.catalog(), type_name)?;
        for b in self.scan(type_name, &cols, filter).await? {
            out.extend(batch_to_records(&b, kind)?);
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    fn columns(&self, type_name: &str) -> Result<Vec<String>> {
        let schema = table_schema(self.graph.catalog(), type_name)?;
        Ok(schema.fields().iter().map(|f| f.name().clone()).collect())
    }

    /// Every id of a type (reads only the `id` column).
    pub(crate) async fn ids(&self, type_name: &str) -> Result<BTreeSet<String>> {
        Ok(self
            .ids_where(type_name, |_| true)
            .await?
            .into_iter()
            .collect())
    }

    /// The ids of a type that `wanted` accepts, found by reading the `id`
    /// column of the whole table once, batch by batch: for a check of so
    /// many ids that looking each up costs more (see [`Self::scan_ids_for`]).
    pub(crate) async fn ids_where(
        &self,
        type_name: &str,
        mut wanted: impl FnMut(&str) -> bool,
    ) -> Result<Vec<String>> {
        use arrow_array::cast::AsArray;
        let ds = self.dataset(type_name).await?;
        let read = async {
            let mut stream = self.graph.storage().scan_stream(&ds, &["id"], None).await?;
            let mut out = Vec::new();
            while let Some(batch) = stream.try_next().await? {
                let ids = batch
                    .column(0)
                    .as_string_opt::<i32>()
                    .ok_or_else(|| Error::Internal(format!("{type_name}.id is not text")))?;
                out.extend(
                    ids.iter()
                        .flatten()
                        .filter(|id| wanted(id))
                        .map(str::to_string),
                );
            }
            Ok::<_, Error>(out)
        };
        match read.await {
            Ok(out) => Ok(out),
            Err(e) => Err(self.read_error(type_name, e).await),
        }
    }

    /// Whether checking `ids` many ids against a type's table reads its
    /// `id` column whole ([`Self::ids_where`]) rather than looking them up
    /// by chunks: when they are at least a [`SCAN_IDS_RATIO`]th of its rows.
    /// A lookup of [`ID_CHUNK`] ids searches the index once per id and reads
    /// the fragments the index does not cover once per chunk; a read of the
    /// column costs about as much as looking up a sixteenth of it.
    pub(crate) async fn scan_ids_for(&self, type_name: &str, ids: u64) -> Result<bool> {
        if ids < ID_CHUNK as u64 {
            return Ok(false);
        }
        let rows = match self.count(type_name).await {
            Ok(rows) => rows,
            Err(e) => return Err(self.read_error(type_name, e).await),
        };
        Ok(ids.saturating_mul(SCAN_IDS_RATIO) >= rows)
    }

    /// Which of the given ids exist (reads only the `id` column).
    pub async fn existing_ids(&self, type_name: &str, ids: &[&str]) -> Result<HashSet<String>> {
        if self.scan_ids_for(type_name, ids.len() as u64).await? {
            let wanted: HashSet<&str> = ids.iter().copied().collect();
            let found = self.ids_where(type_name, |id| wanted.contains(id)).await?;
            return Ok(found.into_iter().collect());
        }
        let mut out = HashSet::new();
        for chunk in ids.chunks(ID_CHUNK) {
            for b in self.by_ids(type_name, &["id"], chunk).await? {
                out.extend(
                    batch_to_records(&b, TypeKind::Node)?
                        .into_iter()
                        .map(|r| r.id),
                );
            }
        }
        Ok(out)
    }

    /// Rows with the given ids (missing ids are absent from the map).
    pub async fn rows_by_id(
        &self,
        type_name: &str,
        ids: &[&str],
    ) -> Result<HashMap<String, Record>> {
        let columns = self.columns(type_name)?;
        let cols: Vec<&str> = columns.iter().map(String::as_str).collect();
        let mut out = HashMap::new();
        let kind = kind_of(self.graph.catalog(), type_name)?;
        for chunk in ids.chunks(ID_CHUNK) {
            for b in self.by_ids(type_name, &cols, chunk).await? {
                for r in batch_to_records(&b, kind)? {
                    out.insert(r.id.clone(), r);
                }
            }
        }
        Ok(out)
    }

    /// `columns` of the rows of a type with one of `ids` (at most
    /// [`ID_CHUNK`]): looked up in the `id` index when it covers the table
    /// version ([`crate::storage::index_lookup`]), else scanned with an IN
    /// filter.
    async fn by_ids(
        &self,
        type_name: &str,
        columns: &[&str],
        ids: &[&str],
    ) -> Result<Vec<arrow_array::RecordBatch>> {
        use lance::deps::datafusion::scalar::ScalarValue;
        let ds = self.dataset(type_name).await?;
        let values: Vec<ScalarValue> = ids
            .iter()
            .map(|id| ScalarValue::Utf8(Some((*id).to_string())))
            .collect();
        let named: Vec<String> = columns.iter().map(|c| (*c).to_string()).collect();
        match crate::storage::index_lookup(&ds, "id", &values, &named).await {
            Ok(Some(batch)) => Ok(vec![batch]),
            Ok(None) => {
                let filter = in_filter("id", ids.iter().copied());
                self.scan(type_name, columns, Some(&filter)).await
            }
            Err(e) => Err(self.read_error(type_name, e).await),
        }
    }
}

/// A check of at least one id per this many rows of a table reads the
/// table's `id` column whole instead of looking the ids up.
pub(crate) const SCAN_IDS_RATIO: u64 = 16;

/// `column IN ('a', 'b')` for a Lance filter.
pub(crate) fn in_filter<'a>(column: &str, values: impl Iterator<Item = &'a str>) -> String {
    let list: Vec<String> = values.map(sql_literal).collect();
    format!("{} IN ({})", quote_ident(column), list.join(", "))
}
