//! Write transactions: staging changes, savepoints, and the transaction's
//! own view of its changes. Publishing them is in [`crate::commit`].
//!
//! A transaction stages inserts, updates and deletes across tables.
//! Staging coerces values to their declared types and checks what needs no
//! branch state (unknown properties, missing required values and keys, the
//! same key inserted twice); everything that depends on the branch is
//! checked at commit.
//!
//! Staged rows live in memory, except that past a threshold the plain
//! inserts of a table spill to local Lance files ([`crate::spill`]), and
//! that bulk inserts ([`WriteTxn::insert_rows`]) go there at once as
//! Arrow batches. While a savepoint is open every change records how to
//! undo it (a batch by its sequence number), so
//! [`WriteTxn::rollback_to`] discards exactly the changes made after it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;

use arrow_array::{Array, ArrayRef, RecordBatch};
use lance::Dataset;

use crate::error::{Error, Result, ViolationKind};
use crate::graph::{Graph, ID_CHUNK, Snapshot, in_filter};
use crate::schema::{Catalog, TypeKind};
use crate::spill::{IdHashSet, Spill, id_hash};
use crate::value::{
    self, PropColumn, Record, Value, coerce, key_id, records_to_batch, unknown_type,
};

/// A staged change to one row, already merged with earlier changes to the
/// same id in this transaction.
#[derive(Debug, Clone)]
pub(crate) enum Pending {
    /// A new row; the id must not exist on the branch.
    Insert(Record),
    /// Insert, or replace the whole row if the id exists (load `merge`).
    Upsert(Record),
    /// Change only the given properties of an existing row.
    Update(BTreeMap<String, Value>),
    /// Remove the row; `must_exist` is false when the row may be one this
    /// transaction upserted and that never existed.
    Delete { must_exist: bool },
}

/// One staged row: the change, the NDJSON line it came from (for error
/// messages), and the sequence number of the operation that last changed it.
#[derive(Debug, Clone)]
pub(crate) struct Staged {
    pub change: Pending,
    pub line: Option<usize>,
    pub seq: u64,
}

#[derive(Default)]
pub(crate) struct TableChanges {
    pub rows: BTreeMap<String, Staged>,
    /// Replace the table's whole content with the staged rows.
    pub overwrite: bool,
    /// Plain inserts moved out of memory.
    pub spill: Option<Spill>,
    /// Estimated memory held by `rows`; kept current by `put` and `take`.
    bytes: usize,
}

impl TableChanges {
    /// Stage `s` for `id`, returning what was staged before.
    fn put(&mut self, id: String, s: Staged) -> Option<Staged> {
        let entry = Staged::entry_bytes(&id);
        self.bytes += entry + s.change_bytes();
        let old = self.rows.insert(id, s);
        if let Some(o) = &old {
            self.bytes = self.bytes.saturating_sub(entry + o.change_bytes());
        }
        old
    }

    /// The table's spill, created in a new directory under `dir` first.
    fn spill(
        &mut self,
        dir: &std::path::Path,
        type_name: &str,
        kind: TypeKind,
    ) -> Result<&mut Spill> {
        if self.spill.is_none() {
            self.spill = Some(Spill::create(dir, type_name, kind)?);
        }
        self.spill
            .as_mut()
            .ok_or_else(|| Error::Internal("a spill vanished as it was made".into()))
    }

    fn take(&mut self, id: &str) -> Option<Staged> {
        let old = self.rows.remove(id);
        if let Some(o) = &old {
            self.bytes = self
                .bytes
                .saturating_sub(Staged::entry_bytes(id) + o.change_bytes());
        }
        old
    }
}

impl Staged {
    /// Estimated memory of an entry of [`TableChanges::rows`] besides its change.
    fn entry_bytes(id: &str) -> usize {
        value::approx_map_entry_bytes::<String, Staged>() + value::approx_string_bytes(id)
    }

    /// Estimated memory the change holds.
    fn change_bytes(&self) -> usize {
        match &self.change {
            Pending::Insert(r) | Pending::Upsert(r) => r.approx_bytes(),
            Pending::Update(props) => value::approx_props_bytes(props),
            Pending::Delete { .. } => 0,
        }
    }
}

/// How to undo one staged change.
enum Undo {
    Row {
        type_name: String,
        id: String,
        previous: Option<Staged>,
    },
    Overwrite {
        type_name: String,
        previous: bool,
    },
    MergeParent,
}

/// A point to roll back to; see [`WriteTxn::savepoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Savepoint {
    undo_len: usize,
    seq: u64,
}

/// How much memory (estimated) a transaction's staged rows may hold before
/// the plain inserts spill to disk, unless [`WriteTxn::set_staging_memory`]
/// says otherwise.
pub const DEFAULT_STAGING_MEMORY: usize = 64 << 20;

/// Rows to insert given column by column, as a bulk writer (INSERT ...
/// SELECT, COPY) holds them; see [`WriteTxn::insert_rows`].
#[derive(Debug, Default, Clone)]
pub struct NewRows {
    /// Each row's explicit id (`None`: from the `@key`, else a new ULID).
    pub ids: Vec<Option<String>>,
    /// Each row's `(src, dst)`, for an edge type; empty for a node type.
    pub endpoints: Vec<(String, String)>,
    /// Property values by name, one per row.
    pub props: Vec<(String, Vec<Value>)>,
    /// Property columns by name as Arrow arrays, one value per row. An
    /// array of the property's stored type ([`value::data_type`]) is
    /// checked and staged as it is, with no value built per row; one of
    /// another type is converted to values first.
    pub arrays: Vec<(String, ArrayRef)>,
    /// Each row's input line (an NDJSON load's), which errors name; empty
    /// for none.
    pub lines: Vec<usize>,
}

impl NewRows {
    /// The number of rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The rows where `mask` is false, and those where it is true, each in
    /// their order.
    fn split(self, mask: &[bool]) -> (NewRows, NewRows) {
        if !mask.contains(&true) {
            return (self, NewRows::default());
        }
        let this = self.into_values();
        fn parts<T>(values: Vec<T>, mask: &[bool]) -> (Vec<T>, Vec<T>) {
            let (mut no, mut yes) = (Vec::new(), Vec::new());
            for (v, m) in values.into_iter().zip(mask) {
                match m {
                    false => no.push(v),
                    true => yes.push(v),
                }
            }
            (no, yes)
        }
        let (ids_no, ids_yes) = parts(this.ids, mask);
        let (ends_no, ends_yes) = parts(this.endpoints, mask);
        let (lines_no, lines_yes) = parts(this.lines, mask);
        let (mut props_no, mut props_yes) = (Vec::new(), Vec::new());
        for (name, values) in this.props {
            let (no, yes) = parts(values, mask);
            props_no.push((name.clone(), no));
            props_yes.push((name, yes));
        }
        (
            NewRows {
                ids: ids_no,
                endpoints: ends_no,
                props: props_no,
                arrays: Vec::new(),
                lines: lines_no,
            },
            NewRows {
                ids: ids_yes,
                endpoints: ends_yes,
                props: props_yes,
                arrays: Vec::new(),
                lines: lines_yes,
            },
        )
    }

    /// The same rows with every column as values.
    fn into_values(mut self) -> NewRows {
        for (name, array) in std::mem::take(&mut self.arrays) {
            self.props.push((name, value::array_values(array.as_ref())));
        }
        self
    }

    /// The rows of a batch of a `kind` table's columns (any subset). A NULL
    /// or empty `id` (or a batch without one) leaves the id to the key or a
    /// new ULID; an edge's missing or NULL endpoint is an empty one (the
    /// caller refuses it). `src` and `dst` are properties of a node type.
    pub fn from_batch(batch: &RecordBatch, kind: TypeKind) -> NewRows {
        let n = batch.num_rows();
        let schema = batch.schema();
        let text = |c: Option<usize>, row: usize| match c
            .map(|c| value::scalar_at(batch.column(c).as_ref(), row))
        {
            Some(Value::String(s)) => s,
            _ => String::new(),
        };
        let column = |name: &str| schema.index_of(name).ok();
        let id = column("id");
        let ids = (0..n)
            .map(|row| Some(text(id, row)).filter(|id| !id.is_empty()))
            .collect();
        let endpoints = match kind {
            TypeKind::Edge => {
                let (src, dst) = (column("src"), column("dst"));
                (0..n).map(|row| (text(src, row), text(dst, row))).collect()
            }
            TypeKind::Node => Vec::new(),
        };
        // The properties stay Arrow arrays: staged as they are when of the
        // stored types.
        let system = value::system_columns(kind);
        let arrays = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .filter(|(f, _)| !system.contains(&f.name().as_str()))
            .map(|(f, column)| (f.name().clone(), column.clone()))
            .collect();
        NewRows {
            ids,
            endpoints,
            props: Vec::new(),
            arrays,
            lines: Vec::new(),
        }
    }
}

/// Fewest rows [`WriteTxn::insert_rows`] stages as one columnar batch (a
/// fragment of the spill); fewer are staged row by row.
pub const COLUMNAR_MIN_ROWS: usize = 1024;

/// Rows a bulk writer hands to [`WriteTxn::insert_rows`] at once: a spill
/// fragment of this size joins the table at COMMIT as it is (smaller ones
/// are merged by the commit, past a few dozen of them).
pub const INSERT_CHUNK_ROWS: usize = crate::storage::AUTO_COMPACT_ROWS;

/// What a transaction changed in one table, for reading its own writes:
/// read the committed rows without `hidden` (or none if `hide_all`), then
/// add `rows` and the spilled rows.
pub struct StagedView {
    /// The table is overwritten: no committed row is visible.
    pub hide_all: bool,
    /// Committed rows this transaction replaced or deleted.
    pub hidden: HashSet<String>,
    /// The transaction's current version of each row it inserted or
    /// changed and holds in memory, in the table's schema.
    pub rows: Option<RecordBatch>,
    /// Spilled inserted rows: the table's columns plus `_omnigraph_seq`.
    pub spill: Option<Dataset>,
}

/// A write transaction on one branch.
pub struct WriteTxn {
    pub(crate) graph: Graph,
    pub(crate) branch: String,
    pub(crate) actor: String,
    pub(crate) message: String,
    pub(crate) base: Snapshot,
    pub(crate) tables: BTreeMap<String, TableChanges>,
    /// The id the commit will have (known from the start, so a frontend
    /// can name it before it is published).
    pub(crate) commit_id: String,
    /// Second parents of the commit: the source heads merged into it.
    pub(crate) merge_parents: Vec<String>,
    /// The branch is created together with this commit and has no ref yet.
    pub(crate) new_branch: bool,
    undo: Vec<Undo>,
    open_savepoints: usize,
    seq: u64,
    staging_memory: usize,
    /// Staged bytes left in memory by the last spill (updates and deletes,
    /// which never spill); the next spill comes a budget later.
    unspillable: usize,
    spill_dir: PathBuf,
    /// How long the commit waits for the branch's write lock.
    pub(crate) lock_timeout: std::time::Duration,
    /// Most bytes the transaction's spill files may take on disk.
    spill_limit: Option<u64>,
    /// Asked while the commit waits for the lock; `true` gives up with
    /// [`Error::Cancelled`] before anything was written.
    pub(crate) cancelled: Option<CancelCheck>,
}

/// A question a frontend answers: has the user asked to stop?
pub type CancelCheck = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

/// A new row lacks a value for the required property `p`.
fn missing_required(type_name: &str, p: &crate::schema::Property, id: &str) -> Error {
    Error::violation(
        ViolationKind::MissingRequired,
        type_name,
        &p.name,
        "NULL",
        format!(
            "{type_name}.{} is required ({}) but '{id}' has no value",
            p.name,
            p.ty.describe()
        ),
    )
}

/// A value was given for a property the type does not declare.
fn unknown_property(
    type_name: &str,
    name: &str,
    v: &Value,
    declared: &[crate::schema::Property],
) -> Error {
    let known: Vec<&str> = declared.iter().map(|p| p.name.as_str()).collect();
    Error::violation(
        ViolationKind::UnknownProperty,
        type_name,
        name,
        v.display(),
        format!(
            "{type_name} has no property '{name}' (properties: {})",
            known.join(", ")
        ),
    )
}

/// Longest commit message accepted; it is copied into every manifest.
pub const MAX_MESSAGE_BYTES: usize = 64 << 10;

impl WriteTxn {
    pub(crate) fn begin(graph: Graph, branch: &str, actor: &str, base: Snapshot) -> WriteTxn {
        let spill_dir = graph.spill_dir();
        WriteTxn {
            branch: branch.to_string(),
            actor: actor.to_string(),
            message: String::new(),
            base,
            tables: BTreeMap::new(),
            commit_id: ulid::Ulid::new().to_string(),
            merge_parents: Vec::new(),
            new_branch: false,
            undo: Vec::new(),
            open_savepoints: 0,
            seq: 0,
            staging_memory: DEFAULT_STAGING_MEMORY,
            unspillable: 0,
            lock_timeout: graph.lock_timeout(),
            cancelled: None,
            spill_limit: None,
            spill_dir,
            graph,
        }
    }

    /// The commit message (checked against [`MAX_MESSAGE_BYTES`] at commit).
    pub fn set_message(&mut self, message: impl Into<String>) {
        self.message = message.into();
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// How long the commit waits for the branch's write lock (the graph's
    /// `lock_timeout` unless set).
    pub fn set_lock_timeout(&mut self, timeout: std::time::Duration) {
        self.lock_timeout = timeout;
    }

    /// Let the commit's wait for the branch lock be cancelled: `check` is
    /// asked between tries. Once the lock is held the commit runs to its end.
    pub fn set_cancel_check(&mut self, check: CancelCheck) {
        self.cancelled = Some(check);
    }

    /// Estimated bytes of staged rows kept in memory before plain inserts
    /// spill (at least 1; 1 spills every insert).
    pub fn set_staging_memory(&mut self, bytes: usize) {
        self.staging_memory = bytes.max(1);
    }

    /// Most bytes the spill files may take on disk (`None`: no limit); a
    /// spill past it fails with [`Error::ResourceLimit`].
    pub fn set_spill_limit(&mut self, bytes: Option<u64>) {
        self.spill_limit = bytes;
    }

    /// Rows moved out of memory to spill files.
    pub fn spilled_rows(&self) -> u64 {
        self.tables
            .values()
            .filter_map(|t| t.spill.as_ref())
            .map(Spill::len)
            .sum()
    }

    /// Estimated memory held by the staged rows of all tables.
    pub fn staged_bytes(&self) -> usize {
        self.tables.values().map(|t| t.bytes).sum()
    }

    /// The branch this transaction writes.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The snapshot the transaction started from.
    pub fn base(&self) -> &Snapshot {
        &self.base
    }

    /// The id this transaction's commit will have once published.
    pub fn commit_id(&self) -> &str {
        &self.commit_id
    }

    /// Commits merged into this transaction, which become second parents.
    pub fn merge_parents(&self) -> &[String] {
        &self.merge_parents
    }

    /// Record a merged source head as a parent of the commit.
    pub(crate) fn add_merge_parent(&mut self, commit_id: &str) {
        if self.merge_parents.iter().any(|p| p == commit_id) {
            return;
        }
        self.merge_parents.push(commit_id.to_string());
        if self.open_savepoints > 0 {
            self.undo.push(Undo::MergeParent);
        }
    }

    /// Whether the transaction has staged nothing and merged nothing.
    pub fn is_empty(&self) -> bool {
        self.merge_parents.is_empty() && self.has_no_rows()
    }

    /// Whether no row change is staged (a merge may still be).
    pub fn has_no_rows(&self) -> bool {
        self.tables.values().all(|t| {
            t.rows.is_empty() && !t.overwrite && t.spill.as_ref().is_none_or(|s| s.len() == 0)
        })
    }

    /// Whether this transaction changed `type_name`.
    pub fn touches(&self, type_name: &str) -> bool {
        self.tables.get(type_name).is_some_and(|t| {
            !t.rows.is_empty() || t.overwrite || t.spill.as_ref().is_some_and(|s| s.len() > 0)
        })
    }

    pub(crate) fn catalog(&self) -> &Catalog {
        self.graph.catalog()
    }

    pub(crate) fn kind(&self, type_name: &str) -> Result<TypeKind> {
        value::kind_of(self.catalog(), type_name)
    }

    /// Coerce staged properties to their declared types; unknown names are errors.
    fn coerce_props(
        &self,
        type_name: &str,
        mut props: BTreeMap<String, Value>,
    ) -> Result<BTreeMap<String, Value>> {
        let declared = self.catalog().properties(type_name).unwrap_or_default();
        // Coerced in place: the map keeps its names, only values change.
        for (name, v) in props.iter_mut() {
            let Some(p) = declared.iter().find(|p| p.name == *name) else {
                return Err(unknown_property(type_name, name, v, declared));
            };
            *v = coerce(type_name, p, std::mem::replace(v, Value::Null))?;
        }
        Ok(props)
    }

    /// A whole new row must give every required property a value.
    pub(crate) fn check_required(&self, type_name: &str, r: &Record) -> Result<()> {
        for p in self.catalog().properties(type_name).unwrap_or_default() {
            if !p.nullable && r.prop(&p.name).is_null() {
                return Err(missing_required(type_name, p, &r.id));
            }
        }
        Ok(())
    }

    /// An update may not clear a required property.
    fn check_not_cleared(
        &self,
        type_name: &str,
        id: &str,
        props: &BTreeMap<String, Value>,
    ) -> Result<()> {
        for p in self.catalog().properties(type_name).unwrap_or_default() {
            if !p.nullable && props.get(&p.name).is_some_and(Value::is_null) {
                return Err(Error::violation(
                    ViolationKind::MissingRequired,
                    type_name,
                    &p.name,
                    "NULL",
                    format!(
                        "{type_name}.{} is required ({}) and cannot be set to NULL on '{id}'",
                        p.name,
                        p.ty.describe()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The id a node row gets: its `@key` text, else `explicit`, else a new ULID.
    fn node_id<'v>(
        &self,
        type_name: &str,
        prop: impl Fn(&str) -> Option<&'v Value>,
        explicit: Option<String>,
    ) -> Result<String> {
        let node = self
            .catalog()
            .node(type_name)
            .ok_or_else(|| unknown_type(self.catalog(), type_name))?;
        let Some(key) = &node.key else {
            return Ok(explicit.unwrap_or_else(|| ulid::Ulid::new().to_string()));
        };
        let mut parts = Vec::with_capacity(key.len());
        for k in key {
            match prop(k) {
                Some(v) if !v.is_null() => parts.push(v.clone()),
                _ => {
                    return Err(Error::violation(
                        ViolationKind::MissingRequired,
                        type_name,
                        k,
                        "NULL",
                        format!("{type_name}.{k} is the @key and needs a value"),
                    ));
                }
            }
        }
        let id = key_id(&parts)?;
        if let Some(e) = explicit
            && e != id
        {
            return Err(Error::violation(
                ViolationKind::KeyUpdate,
                type_name,
                "id",
                e.clone(),
                format!("explicit id '{e}' does not match the @key value '{id}' of {type_name}"),
            ));
        }
        Ok(id)
    }

    /// Merge `change` into what is staged for `id`, recording how to undo
    /// it; then spill if the staged rows outgrew the budget.
    async fn stage(
        &mut self,
        type_name: &str,
        id: String,
        change: Pending,
        line: Option<usize>,
    ) -> Result<()> {
        self.stage_one(type_name, id, change, line).await?;
        self.maybe_spill().await
    }

    /// [`Self::stage`] without the spill check, for a run of rows that
    /// checks once at its end (rows taken back from the spill are not
    /// spilled again before they are changed).
    async fn stage_one(
        &mut self,
        type_name: &str,
        id: String,
        change: Pending,
        line: Option<usize>,
    ) -> Result<()> {
        // A row that went to the spill comes back to memory to be changed.
        self.unspill(type_name, &[&id], line).await?;
        self.seq += 1;
        let seq = self.seq;
        let recording = self.open_savepoints > 0;
        let table = self.tables.entry(type_name.to_string()).or_default();
        let old = table.rows.get(&id).cloned();
        let merged = match (old.as_ref().map(|s| &s.change), change) {
            (None, c) => Some(c),
            (Some(Pending::Delete { .. }), Pending::Insert(r) | Pending::Upsert(r)) => {
                Some(Pending::Upsert(r))
            }
            (Some(Pending::Delete { .. }), Pending::Update(_)) => {
                return Err(Error::violation(
                    ViolationKind::NotFound,
                    type_name,
                    "id",
                    id.clone(),
                    format!("{type_name} '{id}' was deleted earlier in this transaction"),
                ));
            }
            (Some(_), Pending::Insert(_)) => {
                return Err(Error::violation(
                    ViolationKind::DuplicateKey,
                    type_name,
                    "id",
                    id.clone(),
                    format!("duplicate key: {type_name} '{id}' is inserted twice"),
                ));
            }
            (Some(Pending::Insert(_)), Pending::Upsert(r)) => Some(Pending::Insert(r)),
            (Some(_), Pending::Upsert(r)) => Some(Pending::Upsert(r)),
            (Some(Pending::Insert(r)), Pending::Update(p)) => {
                let mut r = r.clone();
                r.props.extend(p);
                Some(Pending::Insert(r))
            }
            (Some(Pending::Upsert(r)), Pending::Update(p)) => {
                let mut r = r.clone();
                r.props.extend(p);
                Some(Pending::Upsert(r))
            }
            (Some(Pending::Update(old)), Pending::Update(p)) => {
                let mut old = old.clone();
                old.extend(p);
                Some(Pending::Update(old))
            }
            (Some(Pending::Insert(_)), Pending::Delete { .. }) => None,
            (Some(Pending::Upsert(_)), Pending::Delete { .. }) => {
                Some(Pending::Delete { must_exist: false })
            }
            (Some(Pending::Update(_)), Pending::Delete { .. }) => {
                Some(Pending::Delete { must_exist: true })
            }
            (Some(d @ Pending::Delete { .. }), Pending::Delete { .. }) => Some(d.clone()),
        };
        let line = line.or(old.as_ref().and_then(|s| s.line));
        match merged {
            Some(change) => {
                table.put(id.clone(), Staged { change, line, seq });
            }
            None => {
                table.take(&id);
            }
        }
        if recording {
            self.undo.push(Undo::Row {
                type_name: type_name.to_string(),
                id,
                previous: old,
            });
        }
        Ok(())
    }

    /// Move the plain inserts of every table to its spill once the staged
    /// rows hold more memory than the budget.
    async fn maybe_spill(&mut self) -> Result<()> {
        if self.staged_bytes() < self.unspillable + self.staging_memory {
            return Ok(());
        }
        for (type_name, table) in self.tables.iter_mut() {
            let kind = value::kind_of(self.graph.catalog(), type_name)?;
            let ids: Vec<String> = table
                .rows
                .iter()
                .filter(|(_, s)| matches!(s.change, Pending::Insert(_)))
                .map(|(id, _)| id.clone())
                .collect();
            if ids.is_empty() {
                continue;
            }
            let moved: Vec<Staged> = ids.iter().filter_map(|id| table.take(id)).collect();
            let spill = table.spill(&self.spill_dir, type_name, kind)?;
            let rows: Vec<(&Record, u64, Option<usize>)> = moved
                .iter()
                .filter_map(|s| match &s.change {
                    Pending::Insert(r) => Some((r, s.seq, s.line)),
                    _ => None,
                })
                .collect();
            spill.write(self.graph.catalog(), &rows).await?;
        }
        // Updates and deletes stay in memory; look again after another
        // budget's worth of staging.
        self.unspillable = self.staged_bytes();
        self.check_spill_limit()
    }

    /// Fail once the spill files take more disk than the limit.
    fn check_spill_limit(&self) -> Result<()> {
        if let Some(limit) = self.spill_limit {
            let used: u64 = self
                .tables
                .values()
                .filter_map(|t| t.spill.as_ref())
                .map(Spill::disk_bytes)
                .sum();
            if used > limit {
                return Err(Error::ResourceLimit(format!(
                    "the transaction's spill files take {} kB, more than the limit of {} kB (temp_file_limit)",
                    used / 1024,
                    limit / 1024
                )));
            }
        }
        Ok(())
    }

    /// Stage a new node; returns its id. Fails at commit if the id exists.
    pub async fn insert_node(
        &mut self,
        type_name: &str,
        props: BTreeMap<String, Value>,
    ) -> Result<String> {
        self.add_node(type_name, props, None, false, None).await
    }

    /// Stage a node insert or whole-row replacement by id (upsert).
    pub async fn upsert_node(
        &mut self,
        type_name: &str,
        props: BTreeMap<String, Value>,
    ) -> Result<String> {
        self.add_node(type_name, props, None, true, None).await
    }

    /// The general form: an explicit id (must equal the key for keyed types),
    /// upsert or strict insert, and the NDJSON line for error messages.
    pub async fn add_node(
        &mut self,
        type_name: &str,
        props: BTreeMap<String, Value>,
        explicit_id: Option<String>,
        upsert: bool,
        line: Option<usize>,
    ) -> Result<String> {
        if self.kind(type_name)? != TypeKind::Node {
            return Err(Error::InvalidArgument(format!(
                "{type_name} is an edge type; insert it as an edge"
            )));
        }
        let run = || -> Result<Record> {
            let props = self.coerce_props(type_name, props)?;
            let id = self.node_id(type_name, |k| props.get(k), explicit_id)?;
            let record = Record {
                id,
                endpoints: None,
                props,
            };
            self.check_required(type_name, &record)?;
            Ok(record)
        };
        let record = run().map_err(|e| e.at_line(line))?;
        self.stage_row(type_name, record, upsert, line).await
    }

    /// Stage a whole row as a strict insert or an upsert; returns its id.
    async fn stage_row(
        &mut self,
        type_name: &str,
        record: Record,
        upsert: bool,
        line: Option<usize>,
    ) -> Result<String> {
        let id = record.id.clone();
        let change = if upsert {
            Pending::Upsert(record)
        } else {
            Pending::Insert(record)
        };
        self.stage(type_name, id.clone(), change, line)
            .await
            .map_err(|e| e.at_line(line))?;
        Ok(id)
    }

    /// Stage a new edge from node id `src` to node id `dst`; returns its id.
    pub async fn insert_edge(
        &mut self,
        type_name: &str,
        src: &str,
        dst: &str,
        props: BTreeMap<String, Value>,
    ) -> Result<String> {
        self.add_edge(type_name, src, dst, props, None, false, None)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn add_edge(
        &mut self,
        type_name: &str,
        src: &str,
        dst: &str,
        props: BTreeMap<String, Value>,
        explicit_id: Option<String>,
        upsert: bool,
        line: Option<usize>,
    ) -> Result<String> {
        if self.kind(type_name)? != TypeKind::Edge {
            return Err(Error::InvalidArgument(format!(
                "{type_name} is a node type; insert it as a node"
            )));
        }
        let run = || -> Result<Record> {
            let props = self.coerce_props(type_name, props)?;
            let id = explicit_id.unwrap_or_else(|| ulid::Ulid::new().to_string());
            let record = Record {
                id,
                endpoints: Some((src.to_string(), dst.to_string())),
                props,
            };
            self.check_required(type_name, &record)?;
            Ok(record)
        };
        let record = run().map_err(|e| e.at_line(line))?;
        self.stage_row(type_name, record, upsert, line).await
    }

    /// Stage strict inserts of many rows of one type, given column by
    /// column (an id that exists on the branch fails at commit).
    ///
    /// With at least [`COLUMNAR_MIN_ROWS`] rows, the values are checked a
    /// column at a time and the rows go as one Arrow batch straight to the
    /// table's spill: no per-row object is built. Rows whose ids this
    /// transaction staged already (or that repeat an id of the chunk) are
    /// then staged row by row, which merges them or reports the duplicate;
    /// so is the whole chunk when fewer rows would be left for the batch.
    /// Returns the rows' ids in order.
    pub async fn insert_rows(&mut self, type_name: &str, rows: NewRows) -> Result<Vec<String>> {
        let kind = self.kind(type_name)?;
        let n = rows.len();
        let ragged = (kind == TypeKind::Edge && rows.endpoints.len() != n)
            || rows.props.iter().any(|(_, values)| values.len() != n)
            || rows.arrays.iter().any(|(_, array)| array.len() != n);
        if ragged {
            return Err(Error::InvalidArgument(format!(
                "insert_rows into {type_name}: every column needs one value per row"
            )));
        }
        if n < COLUMNAR_MIN_ROWS {
            return self
                .insert_row_by_row(type_name, kind, rows.into_values())
                .await;
        }
        let (rows, ids) = self.checked_columns(type_name, kind, rows)?;
        // Each id is hashed once: for the checks here and the spill's set.
        let hashes: Vec<u128> = ids.iter().map(|id| id_hash(id)).collect();
        let mut seen = IdHashSet::default();
        seen.reserve(n);
        let staged = self.tables.get(type_name);
        let in_memory = staged.is_some_and(|t| !t.rows.is_empty());
        let spill = staged.and_then(|t| t.spill.as_ref());
        let mut staged_before: Vec<bool> = Vec::with_capacity(n);
        for (id, h) in ids.iter().zip(&hashes) {
            staged_before.push(
                !seen.insert(*h)
                    || (in_memory && staged.is_some_and(|t| t.rows.contains_key(id)))
                    || match spill {
                        Some(s) => s.contains_hash(*h)?,
                        None => false,
                    },
            );
        }
        let again = staged_before.iter().filter(|s| **s).count();
        if n - again < COLUMNAR_MIN_ROWS {
            let rows = NewRows {
                ids: ids.iter().cloned().map(Some).collect(),
                ..rows.into_values()
            };
            self.insert_row_by_row(type_name, kind, rows).await?;
            return Ok(ids);
        }
        // Rows whose ids were staged before (or repeat one of the chunk)
        // are merged with them, or refused, row by row once the rest is
        // staged.
        let (fresh, mut again) = rows.split(&staged_before);
        // The row path gets the ids worked out here (an edge's new ULID
        // among them), not the explicit ones.
        again.ids.clear();
        let (mut fresh_ids, mut fresh_hashes) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for ((id, h), staged) in ids.iter().zip(hashes).zip(&staged_before) {
            match staged {
                false => {
                    fresh_ids.push(id.as_str());
                    fresh_hashes.push(h);
                }
                true => again.ids.push(Some(id.clone())),
            }
        }
        self.stage_batch(type_name, kind, fresh, &fresh_ids, &fresh_hashes)
            .await?;
        if !again.is_empty() {
            self.insert_row_by_row(type_name, kind, again).await?;
        }
        Ok(ids)
    }

    /// Write checked rows, with their ids (new to the transaction) and
    /// the ids' hashes, as one batch to the table's spill.
    async fn stage_batch(
        &mut self,
        type_name: &str,
        kind: TypeKind,
        mut rows: NewRows,
        ids: &[&str],
        hashes: &[u128],
    ) -> Result<()> {
        let lines = std::mem::take(&mut rows.lines);
        let n = ids.len();
        let ends: Vec<(&str, &str)> = rows
            .endpoints
            .iter()
            .map(|(s, d)| (s.as_str(), d.as_str()))
            .collect();
        let null = Value::Null;
        let columns: Vec<PropColumn> = self
            .catalog()
            .properties(type_name)
            .unwrap_or_default()
            .iter()
            .map(|p| {
                if let Some((_, array)) = rows.arrays.iter().find(|(name, _)| *name == p.name) {
                    return PropColumn::Array(array.clone());
                }
                match rows.props.iter().find(|(name, _)| *name == p.name) {
                    Some((_, values)) => PropColumn::Values(values.iter().collect()),
                    None => PropColumn::Values(vec![&null; n]),
                }
            })
            .collect();
        let batch = value::columns_to_batch(self.catalog(), type_name, ids, &ends, columns)?;
        // The values are in the batch now: free them before the spill
        // write's encoders take their buffers.
        drop(ends);
        drop(rows);
        self.seq += 1;
        let seq = self.seq;
        let table = self.tables.entry(type_name.to_string()).or_default();
        let spill = table.spill(&self.spill_dir, type_name, kind)?;
        spill.write_batch(batch, seq, hashes, &lines).await?;
        // No undo record per row: a rollback truncates the spill by the
        // batch's sequence number, and drops rows a later change brought
        // back to memory by the same number (`rollback_to`).
        self.check_spill_limit()
    }

    /// Coerce the columns to their declared types and work out each row's
    /// id; the checks [`Self::add_node`] and [`Self::add_edge`] make, a
    /// column at a time.
    fn checked_columns(
        &self,
        type_name: &str,
        kind: TypeKind,
        rows: NewRows,
    ) -> Result<(NewRows, Vec<String>)> {
        let NewRows {
            ids: explicit,
            endpoints,
            mut props,
            arrays: given,
            lines,
        } = rows;
        let declared = self.catalog().properties(type_name).unwrap_or_default();
        let mut arrays = Vec::with_capacity(given.len());
        for (name, array) in given {
            let Some(p) = declared.iter().find(|p| p.name == name) else {
                let first = match array.is_empty() {
                    true => Value::Null,
                    false => value::scalar_at(array.as_ref(), 0),
                };
                return Err(unknown_property(type_name, &name, &first, declared));
            };
            match value::coerce_array(type_name, p, array.clone())? {
                Some(checked) => arrays.push((name, checked)),
                None => props.push((name, value::array_values(array.as_ref()))),
            }
        }
        for (name, values) in props.iter_mut() {
            let Some(p) = declared.iter().find(|p| p.name == *name) else {
                let first = values.first().cloned().unwrap_or(Value::Null);
                return Err(unknown_property(type_name, name, &first, declared));
            };
            for v in values.iter_mut() {
                *v = coerce(type_name, p, std::mem::replace(v, Value::Null))?;
            }
        }
        let column = |name: &str| props.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let array = |name: &str| arrays.iter().find(|(n, _)| n == name).map(|(_, a)| a);
        // The key's columns, found once for the chunk (a key has one or
        // a few); given as arrays, their values are read out once.
        let key_names: Vec<&str> = self
            .catalog()
            .node(type_name)
            .and_then(|n| n.key.as_ref())
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        let key_read: Vec<Option<Vec<Value>>> = key_names
            .iter()
            .map(|k| array(k).map(|a| value::array_values(a.as_ref())))
            .collect();
        let key: Vec<(&str, Option<&Vec<Value>>)> = key_names
            .iter()
            .zip(&key_read)
            .map(|(k, read)| (*k, read.as_ref().or_else(|| column(k))))
            .collect();
        let ids = match kind {
            TypeKind::Node => explicit
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let part = |k: &str| {
                        key.iter()
                            .find(|(name, _)| *name == k)
                            .and_then(|(_, values)| values.map(|v| &v[i]))
                    };
                    self.node_id(type_name, part, e.clone())
                })
                .collect::<Result<Vec<String>>>()?,
            TypeKind::Edge => explicit
                .iter()
                .map(|e| e.clone().unwrap_or_else(|| ulid::Ulid::new().to_string()))
                .collect(),
        };
        for p in declared.iter().filter(|p| !p.nullable) {
            let first_null = match (column(&p.name), array(&p.name)) {
                (Some(values), _) => values.iter().position(Value::is_null),
                (None, Some(a)) if a.null_count() == 0 => None,
                (None, Some(a)) => (0..a.len()).position(|i| a.is_null(i)),
                (None, None) => Some(0),
            };
            if let Some(i) = first_null {
                return Err(missing_required(type_name, p, &ids[i]).at_line(lines.get(i).copied()));
            }
        }
        let rows = NewRows {
            ids: explicit,
            endpoints,
            props,
            arrays,
            lines,
        };
        Ok((rows, ids))
    }

    /// [`Self::insert_rows`] one row at a time.
    async fn insert_row_by_row(
        &mut self,
        type_name: &str,
        kind: TypeKind,
        rows: NewRows,
    ) -> Result<Vec<String>> {
        let NewRows {
            ids,
            endpoints,
            props,
            arrays: _,
            lines,
        } = rows.into_values();
        let mut columns: Vec<(String, std::vec::IntoIter<Value>)> = props
            .into_iter()
            .map(|(name, values)| (name, values.into_iter()))
            .collect();
        let mut ends = endpoints.into_iter();
        let mut out = Vec::with_capacity(ids.len());
        for (i, id) in ids.into_iter().enumerate() {
            let row: BTreeMap<String, Value> = columns
                .iter_mut()
                .map(|(name, values)| (name.clone(), values.next().unwrap_or(Value::Null)))
                .collect();
            let line = lines.get(i).copied();
            out.push(match kind {
                TypeKind::Node => self.add_node(type_name, row, id, false, line).await?,
                TypeKind::Edge => {
                    let (src, dst) = ends.next().unwrap_or_default();
                    self.add_edge(type_name, &src, &dst, row, id, false, line)
                        .await?
                }
            });
        }
        Ok(out)
    }

    /// Stage a partial update: only the given properties change.
    pub async fn update(
        &mut self,
        type_name: &str,
        id: &str,
        props: BTreeMap<String, Value>,
    ) -> Result<()> {
        let props = self.checked_update(type_name, id, props)?;
        self.stage(type_name, id.to_string(), Pending::Update(props), None)
            .await
    }

    /// The properties of an update of `id`, coerced and checked: no key,
    /// no required property cleared.
    fn checked_update(
        &self,
        type_name: &str,
        id: &str,
        props: BTreeMap<String, Value>,
    ) -> Result<BTreeMap<String, Value>> {
        self.kind(type_name)?;
        if let Some(node) = self.catalog().node(type_name)
            && let Some(k) = node.key.iter().flatten().find(|k| props.contains_key(*k))
        {
            return Err(Error::violation(
                ViolationKind::KeyUpdate,
                type_name,
                k,
                props.get(k).map(Value::display).unwrap_or_default(),
                format!(
                    "{type_name}.{k} is the @key and cannot be updated; delete the node and insert it again"
                ),
            ));
        }
        let props = self.coerce_props(type_name, props)?;
        self.check_not_cleared(type_name, id, &props)?;
        Ok(props)
    }

    /// Stage the same partial update of many rows (a direct UPDATE, whose
    /// assigned values are the same for every row): the values are
    /// checked and coerced once. Nothing is checked when `ids` is empty.
    pub async fn update_ids(
        &mut self,
        type_name: &str,
        ids: &[String],
        props: BTreeMap<String, Value>,
    ) -> Result<()> {
        let Some(first) = ids.first() else {
            return Ok(());
        };
        // Checked as the first row's update (its id names it in an error).
        let props = self.checked_update(type_name, first, props)?;
        let rows = ids
            .iter()
            .map(|id| (id.clone(), Pending::Update(props.clone())))
            .collect();
        self.stage_rows(type_name, rows).await
    }

    /// Stage a partial update of each row, in order (the row path of an
    /// UPDATE, buffered). Every row is checked before any is staged.
    pub async fn update_rows(
        &mut self,
        type_name: &str,
        rows: Vec<(String, BTreeMap<String, Value>)>,
    ) -> Result<()> {
        let rows = rows
            .into_iter()
            .map(|(id, props)| {
                let props = self.checked_update(type_name, &id, props)?;
                Ok((id, Pending::Update(props)))
            })
            .collect::<Result<Vec<_>>>()?;
        self.stage_rows(type_name, rows).await
    }

    /// Stage each row's change, in order, a chunk at a time: the chunk's
    /// spilled rows come back in one read of the spill, and the spill
    /// check runs once per chunk.
    async fn stage_rows(&mut self, type_name: &str, rows: Vec<(String, Pending)>) -> Result<()> {
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<(String, Pending)> = rows.by_ref().take(ID_CHUNK).collect();
            let wanted: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
            self.unspill(type_name, &wanted, None).await?;
            for (id, change) in chunk {
                self.stage_one(type_name, id, change, None).await?;
            }
            self.maybe_spill().await?;
        }
        Ok(())
    }

    /// Stage a whole row that replaces the current one, or is inserted if
    /// there is none (a merge's result row).
    pub(crate) async fn stage_replace(&mut self, type_name: &str, r: Record) -> Result<()> {
        let id = r.id.clone();
        self.stage(type_name, id, Pending::Upsert(r), None).await
    }

    /// Stage the removal of a row that may not exist by then (a merge's delete).
    pub(crate) async fn stage_remove(&mut self, type_name: &str, id: &str) -> Result<()> {
        self.stage(
            type_name,
            id.to_string(),
            Pending::Delete { must_exist: false },
            None,
        )
        .await
    }

    /// Stage a delete by id. Deleting a node also deletes its edges.
    pub async fn delete(&mut self, type_name: &str, id: &str) -> Result<()> {
        self.kind(type_name)?;
        self.stage(
            type_name,
            id.to_string(),
            Pending::Delete { must_exist: true },
            None,
        )
        .await
    }

    /// Stage the deletion of many rows by id (a direct DELETE).
    pub async fn delete_ids(&mut self, type_name: &str, ids: &[String]) -> Result<()> {
        self.kind(type_name)?;
        let rows = ids
            .iter()
            .map(|id| (id.clone(), Pending::Delete { must_exist: true }))
            .collect();
        self.stage_rows(type_name, rows).await
    }

    /// Stage the deletion of one row and return the row as this
    /// transaction saw it (for `DELETE ... RETURNING`): its own staged
    /// version, or the committed row at `at` with its staged update applied.
    pub async fn delete_returning(
        &mut self,
        type_name: &str,
        id: &str,
        at: &Snapshot,
    ) -> Result<Option<Record>> {
        self.kind(type_name)?;
        self.unspill(type_name, &[id], None).await?;
        let staged = self
            .tables
            .get(type_name)
            .and_then(|t| t.rows.get(id))
            .map(|s| s.change.clone());
        let committed = async || Ok::<_, Error>(at.rows_by_id(type_name, &[id]).await?.remove(id));
        let row = match staged {
            Some(Pending::Insert(r) | Pending::Upsert(r)) => Some(r),
            Some(Pending::Delete { .. }) => None,
            Some(Pending::Update(p)) => committed().await?.map(|mut r| {
                r.props.extend(p);
                r
            }),
            None => committed().await?,
        };
        self.delete(type_name, id).await?;
        Ok(row)
    }

    /// Bring spilled rows back into memory as staged inserts: a change to
    /// one is merged there. Ids that are not spilled are skipped.
    async fn unspill(&mut self, type_name: &str, ids: &[&str], line: Option<usize>) -> Result<()> {
        let unspilled = match self
            .tables
            .get_mut(type_name)
            .and_then(|t| t.spill.as_mut())
        {
            Some(spill) => spill.take(ids).await?,
            None => return Ok(()),
        };
        if unspilled.is_empty() {
            return Ok(());
        }
        let table = self.tables.entry(type_name.to_string()).or_default();
        for (r, seq, spilled_line) in unspilled {
            // It keeps the sequence number it was staged with: a rollback
            // to a savepoint taken before that drops it (`rollback_to`).
            table.put(
                r.id.clone(),
                Staged {
                    change: Pending::Insert(r),
                    line: line.or(spilled_line),
                    seq,
                },
            );
        }
        Ok(())
    }

    /// Stage the deletion of every edge that touches one of the given nodes
    /// of `node_type`: committed edges as read at `at`, and edges this
    /// transaction inserted. Returns how many edges it staged for deletion.
    /// (The commit cascades again against the head, for edges that
    /// concurrent commits attached meanwhile.)
    pub async fn delete_incident_edges(
        &mut self,
        node_type: &str,
        ids: &[String],
        at: &Snapshot,
    ) -> Result<u64> {
        let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut victims: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let edges: Vec<(String, Vec<&'static str>)> = self
            .catalog()
            .edges_touching(node_type)
            .map(|e| {
                let mut ends = Vec::new();
                if e.from == node_type {
                    ends.push("src");
                }
                if e.to == node_type {
                    ends.push("dst");
                }
                (e.name.clone(), ends)
            })
            .collect();
        for (edge, ends) in &edges {
            let found = victims.entry(edge.clone()).or_default();
            for chunk in ids.chunks(ID_CHUNK) {
                let filter = ends
                    .iter()
                    .map(|c| in_filter(c, chunk.iter().map(String::as_str)))
                    .collect::<Vec<_>>()
                    .join(" OR ");
                for r in at.read_where(edge, Some(&filter)).await? {
                    found.insert(r.id);
                }
                if let Some(spill) = self.tables.get(edge).and_then(|t| t.spill.as_ref()) {
                    found.extend(spill.ids_where(&filter).await?);
                }
            }
            if let Some(t) = self.tables.get(edge) {
                for (id, s) in &t.rows {
                    if let Pending::Insert(r) | Pending::Upsert(r) = &s.change
                        && let Some((src, dst)) = &r.endpoints
                        && ((ends.contains(&"src") && wanted.contains(src.as_str()))
                            || (ends.contains(&"dst") && wanted.contains(dst.as_str())))
                    {
                        found.insert(id.clone());
                    }
                }
            }
        }
        let mut count = 0;
        for (edge, ids) in victims {
            for id in ids {
                let already = self
                    .tables
                    .get(&edge)
                    .and_then(|t| t.rows.get(&id))
                    .is_some_and(|s| matches!(s.change, Pending::Delete { .. }));
                if already {
                    continue;
                }
                self.stage(&edge, id, Pending::Delete { must_exist: false }, None)
                    .await?;
                count += 1;
            }
        }
        Ok(count)
    }

    /// Replace the whole content of a table with the rows staged for it.
    pub fn overwrite(&mut self, type_name: &str) -> Result<()> {
        self.kind(type_name)?;
        let table = self.tables.entry(type_name.to_string()).or_default();
        if self.open_savepoints > 0 {
            self.undo.push(Undo::Overwrite {
                type_name: type_name.to_string(),
                previous: table.overwrite,
            });
        }
        table.overwrite = true;
        Ok(())
    }

    /// Start recording changes so they can be discarded with
    /// [`rollback_to`](Self::rollback_to). Every savepoint must end with
    /// `release` or `rollback_to`.
    pub fn savepoint(&mut self) -> Savepoint {
        self.open_savepoints += 1;
        Savepoint {
            undo_len: self.undo.len(),
            seq: self.seq + 1,
        }
    }

    /// Keep the changes made since `sp` (they become part of the enclosing
    /// savepoint, if any).
    pub fn release(&mut self, _sp: Savepoint) {
        self.open_savepoints = self.open_savepoints.saturating_sub(1);
        if self.open_savepoints == 0 {
            self.undo.clear();
        }
    }

    /// Discard exactly the changes made since `sp`, and end it.
    pub async fn rollback_to(&mut self, sp: Savepoint) -> Result<()> {
        while self.undo.len() > sp.undo_len {
            let Some(u) = self.undo.pop() else { break };
            match u {
                Undo::Row {
                    type_name,
                    id,
                    previous,
                } => {
                    let table = self.tables.entry(type_name).or_default();
                    match previous {
                        Some(s) => {
                            table.put(id, s);
                        }
                        None => {
                            table.take(&id);
                        }
                    }
                }
                Undo::Overwrite {
                    type_name,
                    previous,
                } => {
                    self.tables.entry(type_name).or_default().overwrite = previous;
                }
                Undo::MergeParent => {
                    self.merge_parents.pop();
                }
            }
        }
        for table in self.tables.values_mut() {
            if let Some(spill) = table.spill.as_mut() {
                spill.truncate_from(sp.seq).await?;
            }
            // Inserts staged after the savepoint without an undo record
            // (batches straight to the spill) that a later change brought
            // back to memory; every other row is as it was at `sp` now, so
            // no insert staged before it carries a later number.
            let later: Vec<String> = table
                .rows
                .iter()
                .filter(|(_, s)| matches!(s.change, Pending::Insert(_)) && s.seq >= sp.seq)
                .map(|(id, _)| id.clone())
                .collect();
            for id in later {
                table.take(&id);
            }
        }
        self.release(sp);
        Ok(())
    }

    /// Whether this transaction replaces the whole content of `type_name`.
    pub(crate) fn replaces(&self, type_name: &str) -> bool {
        self.tables.get(type_name).is_some_and(|t| t.overwrite)
    }

    /// The ids of `type_name` this transaction staged a change for (with
    /// [`replaces`](Self::replaces), every other committed row is gone too).
    pub(crate) async fn staged_ids(&self, type_name: &str) -> Result<Vec<String>> {
        let Some(table) = self.tables.get(type_name) else {
            return Ok(Vec::new());
        };
        let mut ids: Vec<String> = table.rows.keys().cloned().collect();
        if let Some(spill) = &table.spill {
            ids.extend(spill.ids_where("true").await?);
        }
        Ok(ids)
    }

    /// This transaction's version of those of `ids` it changed, as a read
    /// of `at` sees them: `Some(row)`, or `None` for a row it deleted (or
    /// hid by replacing the table). Ids it did not change are absent.
    pub(crate) async fn own_rows(
        &self,
        type_name: &str,
        ids: &[&str],
        at: &Snapshot,
    ) -> Result<std::collections::HashMap<String, Option<Record>>> {
        let mut out = std::collections::HashMap::new();
        let Some(table) = self.tables.get(type_name) else {
            return Ok(out);
        };
        let updated: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| {
                matches!(
                    table.rows.get(*id).map(|s| &s.change),
                    Some(Pending::Update(_))
                )
            })
            .collect();
        let committed = if updated.is_empty() {
            Default::default()
        } else {
            at.rows_by_id(type_name, &updated).await?
        };
        let mut spilled: Vec<&str> = Vec::new();
        for id in ids {
            match table.rows.get(*id).map(|s| &s.change) {
                Some(Pending::Insert(r) | Pending::Upsert(r)) => {
                    out.insert(id.to_string(), Some(r.clone()));
                }
                Some(Pending::Update(props)) => {
                    let row = committed.get(*id).map(|cur| {
                        let mut r = cur.clone();
                        r.props.extend(props.clone());
                        r
                    });
                    out.insert(id.to_string(), row);
                }
                Some(Pending::Delete { .. }) => {
                    out.insert(id.to_string(), None);
                }
                None if table.spill.as_ref().map(|s| s.contains(id)).transpose()? == Some(true) => {
                    spilled.push(id)
                }
                None if table.overwrite => {
                    out.insert(id.to_string(), None);
                }
                None => {}
            }
        }
        if let Some(spill) = &table.spill {
            for chunk in spilled.chunks(ID_CHUNK) {
                for r in spill
                    .rows_where(&in_filter("id", chunk.iter().copied()))
                    .await?
                {
                    out.insert(r.id.clone(), Some(r));
                }
            }
        }
        Ok(out)
    }

    /// This transaction's changes to `type_name` as seen by a read of `at`
    /// (the snapshot supplies the unchanged properties of updated rows).
    /// `None` when the transaction did not touch the table.
    pub async fn view(&self, type_name: &str, at: &Snapshot) -> Result<Option<StagedView>> {
        if !self.touches(type_name) {
            return Ok(None);
        }
        let Some(table) = self.tables.get(type_name) else {
            return Ok(None);
        };
        let updated: Vec<&str> = table
            .rows
            .iter()
            .filter(|(_, s)| matches!(s.change, Pending::Update(_)))
            .map(|(id, _)| id.as_str())
            .collect();
        let current = if updated.is_empty() {
            Default::default()
        } else {
            at.rows_by_id(type_name, &updated).await?
        };
        let mut rows: Vec<Record> = Vec::new();
        for (id, s) in &table.rows {
            match &s.change {
                Pending::Insert(r) | Pending::Upsert(r) => rows.push(r.clone()),
                Pending::Update(props) => {
                    // A row deleted by a concurrent commit stays invisible;
                    // the commit reports the conflict.
                    if let Some(cur) = current.get(id) {
                        let mut r = cur.clone();
                        r.props.extend(props.clone());
                        rows.push(r);
                    }
                }
                Pending::Delete { .. } => {}
            }
        }
        let batch = if rows.is_empty() {
            None
        } else {
            let refs: Vec<&Record> = rows.iter().collect();
            Some(records_to_batch(self.catalog(), type_name, &refs)?)
        };
        Ok(Some(StagedView {
            hide_all: table.overwrite,
            hidden: table.rows.keys().cloned().collect(),
            rows: batch,
            spill: table.spill.as_ref().and_then(|s| s.dataset().cloned()),
        }))
    }
}
