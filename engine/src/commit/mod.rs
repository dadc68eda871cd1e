//! Publishing a write transaction: the one publication door of the graph.
//!
//! `commit`:
//!
//! 1. takes the branch write lock and reads the branch head;
//! 2. resolves the staged operations against the head, and fails with a
//!    retryable [`Error::Conflict`] if a row this transaction updates or
//!    deletes, or a key it inserts, changed since the transaction began;
//! 3. validates the result (required properties, `@range`, `@check`,
//!    `@key`/`@unique`, edge endpoints) and cascades node deletes to edges;
//! 4. writes every touched table to Lance (rolling back versions left by an
//!    interrupted commit first);
//! 5. publishes the next manifest of the branch: the atomic step.
//!
//! Most of 2-4 is done before the lock is taken and checked under it
//! against what was published meanwhile ([`early`]).
//!
//! Steps 1-4 are [`WriteTxn::prepare`], step 5 [`PreparedCommit::publish`]:
//! a frontend may publish only after its own transaction has committed.
//! A failure before 5 restores the tables it wrote; a crash before 5 leaves
//! Lance versions that no manifest refers to, which readers never see and
//! the next commit rolls back.
//!
//! Spilled inserts ([`crate::spill`]) are never loaded whole: they are
//! checked and appended chunk by chunk.

mod early;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use arrow_array::RecordBatch;
use futures::TryStreamExt;

use crate::changes::{ChangeRecord, TableChange};
use crate::error::{Error, Result, ViolationKind};
use crate::failpoints::{self, names};
use crate::graph::{ID_CHUNK, Snapshot, in_filter, owns};
use crate::manifest::{CommitInfo, FORMAT_VERSION, Manifest, now_us};
use crate::schema::{PropType, RangeBound, ScalarType};
use crate::spill::{LINE, Spill, id_hash, spilled_lines};
use crate::storage::{StagedWrite, TableEntry};
use crate::txn::{Pending, WriteTxn};
use crate::value::{
    self, Record, Value, batch_to_records, quote_ident, records_to_batch, sql_literal,
    table_schema, unknown_type,
};

/// Row counts of one table in one commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableStats {
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
}

/// What a commit did.
#[derive(Debug, Clone)]
pub struct CommitSummary {
    pub commit: CommitInfo,
    pub tables: BTreeMap<String, TableStats>,
    /// Edges deleted because a node they touch was deleted.
    pub cascaded_edges: u64,
}

/// A commit validated and written to its tables, holding its branch's
/// write lock, whose manifest is not published yet: the first half of a
/// two-phase commit, for frontends whose own transaction decides last (the
/// FDW publishes only once Postgres has committed).
///
/// Readers do not see it. [`publish`](Self::publish) makes it visible with
/// one put-if-absent; [`abandon`](Self::abandon), or dropping it, publishes
/// nothing (the Lance versions it wrote are rolled back by `abandon`, or by
/// the next commit or `recover` of the branch).
#[must_use = "a prepared commit publishes nothing unless published"]
pub struct PreparedCommit {
    graph: crate::graph::Graph,
    branch: String,
    manifest: Manifest,
    summary: CommitSummary,
    written: Vec<(String, TableEntry)>,
    _lock: crate::lock::BranchLock,
}

impl PreparedCommit {
    /// The id the commit will have once published.
    pub fn commit_id(&self) -> &str {
        &self.manifest.commit.id
    }

    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// Publish the manifest: the atomic step that makes the commit visible.
    pub async fn publish(self) -> Result<CommitSummary> {
        let published = match failpoints::hit(names::COMMIT_BEFORE_PUBLISH) {
            Err(e) => Err(e),
            Ok(()) => match self.graph.meta().publish(&self.manifest).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(Error::Conflict {
                    branch: self.branch.clone(),
                    message: "another writer published first without holding the branch lock"
                        .into(),
                }),
                Err(e) => Err(e),
            },
        };
        match published {
            Ok(()) => Ok(self.summary),
            Err(e) => {
                self.roll_back().await;
                Err(e)
            }
        }
    }

    /// Publish nothing, and restore the tables this commit wrote.
    pub async fn abandon(self) {
        self.roll_back().await;
    }

    /// Undo what this commit wrote; if that fails too, the next commit or
    /// `recover` rolls it back, and readers never see it meanwhile.
    async fn roll_back(&self) {
        for (type_name, entry) in &self.written {
            let _ = self
                .graph
                .roll_back_unpublished(type_name, entry, &self.manifest.branch_id)
                .await;
        }
    }
}

impl WriteTxn {
    /// Validate and publish as one commit. `Ok(None)` when nothing was staged.
    pub async fn commit(self) -> Result<Option<CommitSummary>> {
        match self.prepare().await? {
            Some(prepared) => prepared.publish().await.map(Some),
            None => Ok(None),
        }
    }

    /// Validate and write as one commit, without publishing it (see
    /// [`PreparedCommit`]). `Ok(None)` when nothing was staged.
    pub async fn prepare(self) -> Result<Option<PreparedCommit>> {
        if self.is_empty() {
            return Ok(None);
        }
        if self.message.len() > crate::txn::MAX_MESSAGE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "the commit message is {} bytes long; messages may be at most {} bytes",
                self.message.len(),
                crate::txn::MAX_MESSAGE_BYTES
            )));
        }
        // A branch created by this transaction's frontend has no ref yet
        // (it is created once this commit is published).
        let branch_id = if self.new_branch {
            self.base.manifest.branch_id.clone()
        } else {
            self.graph.branch_ref(&self.branch).await?.id
        };
        // Boxed as a `dyn Future`: its type, nested in every caller's
        // future, would otherwise be too deep for the compiler to check.
        let early: futures::future::BoxFuture<'_, _> = Box::pin(self.start_early(&branch_id));
        let early = early.await;
        let locked = async {
            let lock = crate::lock::acquire(
                self.graph.storage(),
                &branch_id,
                &self.branch,
                self.lock_timeout,
                self.cancelled
                    .as_deref()
                    .unwrap_or(&crate::lock::not_cancelled),
            )
            .await?;
            // The branch may have been deleted (or deleted and re-created)
            // since the transaction began or while we waited for the lock:
            // publish only into the branch the transaction read from.
            if !self.new_branch
                && self.graph.branch_ref(&self.branch).await?.id != self.base.manifest.branch_id
            {
                return Err(Error::BranchNotFound {
                    name: self.branch.clone(),
                });
            }
            let head = self.graph.meta().repair_head(&branch_id).await?;
            Ok((lock, head))
        };
        let (lock, head_manifest) = match locked.await {
            Ok(locked) => locked,
            Err(e) => {
                // A wait given up (timeout, cancel) or a branch gone: the
                // files written early are of no use.
                if let Some(early) = early {
                    early.abandon(&self).await;
                }
                return Err(e);
            }
        };
        let early = match early {
            Some(early) => match self.early_holds(&early, &head_manifest).await {
                Ok(true) => Some(early),
                held => {
                    early.discard(&self).await;
                    held?;
                    None
                }
            },
            None => None,
        };
        let (plan, staged, recorded) = match early {
            Some(early) => (early.plan, early.staged, early.recorded),
            None => {
                let head = self.graph.snapshot_of(head_manifest.clone()).await?;
                let plan = self.resolve(&head).await?;
                self.check_cardinality(&head, &plan).await?;
                (plan, BTreeMap::new(), false)
            }
        };
        let (manifest, summary, written) = self
            .apply(plan, staged, recorded, head_manifest, &branch_id)
            .await?;
        Ok(Some(PreparedCommit {
            graph: self.graph.clone(),
            branch: self.branch.clone(),
            manifest,
            summary,
            written,
            _lock: lock,
        }))
    }

    fn spill(&self, type_name: &str) -> Option<&Spill> {
        self.tables.get(type_name).and_then(|t| t.spill.as_ref())
    }

    /// Whether this commit inserts a row with `id` into `type_name`.
    fn inserts(&self, plan: &Plan<'_>, type_name: &str, id: &str) -> Result<bool> {
        if plan
            .tables
            .get(type_name)
            .is_some_and(|t| t.new_ids.contains(id))
        {
            return Ok(true);
        }
        match self.spill(type_name) {
            Some(s) => s.contains(id),
            None => Ok(false),
        }
    }

    /// The spilled rows of a table, batch by batch (`None` without a spill).
    async fn spilled(
        &self,
        type_name: &str,
    ) -> Result<Option<lance::dataset::scanner::DatasetRecordBatchStream>> {
        match self.spill(type_name) {
            Some(spill) => spill.stream(&table_columns(self, type_name)?, None).await,
            None => Ok(None),
        }
    }

    /// Spilled inserts must be new keys, unless the table is overwritten.
    /// Only ids are read: the spill's, looked up in the head by chunks; or,
    /// when the spill holds many ids for the table's size, the head's, read
    /// once and probed against the spill's ids.
    async fn resolve_spilled(&self, head: &Snapshot, type_name: &str) -> Result<()> {
        if self.tables.get(type_name).is_some_and(|t| t.overwrite) {
            return Ok(());
        }
        let Some(spill) = self.spill(type_name) else {
            return Ok(());
        };
        let taken = match head.scan_ids_for(type_name, spill.len()).await? {
            true => {
                let mut taken = None;
                // A failed read of the spill's id files counts as a hit:
                // the spill's rows, read next, decide.
                for id in head
                    .ids_where(type_name, |id| spill.contains(id).unwrap_or(true))
                    .await?
                {
                    // The spill knows its ids by hash: confirm.
                    let filter = format!("id = {}", sql_literal(&id));
                    if !spill.ids_where(&filter).await?.is_empty() {
                        taken = Some(id);
                        break;
                    }
                }
                taken
            }
            false => self.first_taken(head, type_name, spill).await?,
        };
        let Some(id) = taken else {
            return Ok(());
        };
        if self.base.existing_ids(type_name, &[&id]).await?.is_empty() {
            return Err(Error::Conflict {
                branch: self.branch.clone(),
                message: format!("{type_name} '{id}' was inserted by a concurrent commit"),
            });
        }
        Err(self
            .duplicate_key(type_name, &id)
            .at_line(spill.line_of(&id).await?))
    }

    /// A new row's id the branch already holds.
    fn duplicate_key(&self, type_name: &str, id: &str) -> Error {
        Error::violation(
            ViolationKind::DuplicateKey,
            type_name,
            "id",
            id,
            format!(
                "duplicate key: {type_name} '{id}' already exists on branch '{}'",
                self.branch
            ),
        )
    }

    /// The first spilled id the head already holds, looked up batch by batch.
    async fn first_taken(
        &self,
        head: &Snapshot,
        type_name: &str,
        spill: &Spill,
    ) -> Result<Option<String>> {
        let Some(mut stream) = spill.stream(&["id".to_string()], None).await? else {
            return Ok(None);
        };
        let kind = self.kind(type_name)?;
        while let Some(batch) = stream.try_next().await? {
            let rows = batch_to_records(&batch, kind)?;
            let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
            let taken = head.existing_ids(type_name, &ids).await?;
            if let Some(id) = ids.iter().find(|id| taken.contains(**id)) {
                return Ok(Some(id.to_string()));
            }
        }
        Ok(None)
    }

    /// Resolve the staged changes against the head: conflict checks,
    /// validation and cascades. Pure reads; nothing is written.
    async fn resolve(&self, head: &Snapshot) -> Result<Plan<'_>> {
        let moved = head.commit().id != self.base.commit().id;
        let mut plan = Plan::default();
        for (type_name, changes) in &self.tables {
            let ids: Vec<&str> = changes.rows.keys().map(String::as_str).collect();
            let moved_table = moved && head.table(type_name)? != self.base.table(type_name)?;
            // Whole rows are needed to apply partial updates and to see
            // concurrent changes; otherwise whether a row exists is enough,
            // which reads only the id column (through its index).
            let needs_rows = moved_table
                || changes
                    .rows
                    .values()
                    .any(|s| matches!(s.change, Pending::Update(_)));
            let (existing, present): (HashMap<String, Record>, HashSet<String>) = if needs_rows {
                let rows = head.rows_by_id(type_name, &ids).await?;
                let present = rows.keys().cloned().collect();
                (rows, present)
            } else {
                (HashMap::new(), head.existing_ids(type_name, &ids).await?)
            };
            // Rows whose head state differs from the state this transaction
            // started from were changed by a concurrent commit.
            let changed_since_base: HashSet<String> = if moved_table {
                let before = self.base.rows_by_id(type_name, &ids).await?;
                ids.iter()
                    .filter(|id| before.get(**id) != existing.get(**id))
                    .map(|id| id.to_string())
                    .collect()
            } else {
                HashSet::new()
            };
            let conflict = |id: &str| Error::Conflict {
                branch: self.branch.clone(),
                message: format!("{type_name} '{id}' was changed by a concurrent commit"),
            };
            let tp = plan.tables.entry(type_name.clone()).or_default();
            if changes.overwrite {
                tp.remove_all = true;
                tp.stats.deleted = head.count(type_name).await?;
            }
            if let Some(spill) = &changes.spill {
                tp.stats.inserted += spill.len();
            }
            for (id, staged) in &changes.rows {
                let (change, line) = (&staged.change, &staged.line);
                let exists = present.contains(id);
                let fail = |e: Error| e.at_line(*line);
                match change {
                    Pending::Insert(r) => {
                        if exists && !changes.overwrite {
                            if changed_since_base.contains(id) {
                                return Err(conflict(id));
                            }
                            return Err(fail(self.duplicate_key(type_name, id)));
                        }
                        tp.new_rows.push((Cow::Borrowed(r), *line));
                        tp.stats.inserted += 1;
                    }
                    Pending::Upsert(r) => {
                        if changed_since_base.contains(id) {
                            return Err(conflict(id));
                        }
                        if exists && !changes.overwrite {
                            tp.removed.insert(id.clone());
                            tp.stats.updated += 1;
                        } else {
                            tp.stats.inserted += 1;
                        }
                        tp.new_rows.push((Cow::Borrowed(r), *line));
                    }
                    Pending::Update(props) => {
                        if changed_since_base.contains(id) {
                            return Err(conflict(id));
                        }
                        let Some(cur) = existing.get(id) else {
                            return Err(fail(not_found(type_name, id, &self.branch)));
                        };
                        let mut r = cur.clone();
                        r.props.extend(props.clone());
                        tp.removed.insert(id.clone());
                        tp.new_rows.push((Cow::Owned(r), *line));
                        tp.stats.updated += 1;
                    }
                    Pending::Delete { must_exist } => {
                        if changed_since_base.contains(id) {
                            return Err(conflict(id));
                        }
                        match exists {
                            true => {
                                tp.removed.insert(id.clone());
                                tp.stats.deleted += 1;
                                if self.catalog().node(type_name).is_some() {
                                    plan.deleted_nodes
                                        .entry(type_name.clone())
                                        .or_default()
                                        .insert(id.clone());
                                }
                            }
                            false if *must_exist => {
                                return Err(fail(not_found(type_name, id, &self.branch)));
                            }
                            false => {}
                        }
                    }
                }
            }
        }
        for type_name in self.tables.keys() {
            self.resolve_spilled(head, type_name).await?;
        }
        for tp in plan.tables.values_mut() {
            tp.new_ids = tp.new_rows.iter().map(|(r, _)| r.id.clone()).collect();
        }
        self.cascade(head, &mut plan).await?;
        self.validate(head, &plan).await?;
        Ok(plan)
    }

    /// Deleting a node deletes the edges that touch it.
    async fn cascade(&self, head: &Snapshot, plan: &mut Plan<'_>) -> Result<()> {
        let deleted = plan.deleted_nodes.clone();
        for (node_type, ids) in &deleted {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            for edge in self.catalog().edges_touching(node_type) {
                let mut ends = Vec::new();
                if edge.from == *node_type {
                    ends.push("src");
                }
                if edge.to == *node_type {
                    ends.push("dst");
                }
                for chunk in ids.chunks(ID_CHUNK) {
                    let filter = ends
                        .iter()
                        .map(|c| in_filter(c, chunk.iter().copied()))
                        .collect::<Vec<_>>()
                        .join(" OR ");
                    for r in head.read_where(&edge.name, Some(&filter)).await? {
                        let tp = plan.tables.entry(edge.name.clone()).or_default();
                        if tp.remove_all || !tp.removed.insert(r.id.clone()) {
                            continue;
                        }
                        tp.stats.deleted += 1;
                        plan.cascaded_edges += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Check the rows this commit writes against the catalog and the head.
    async fn validate(&self, head: &Snapshot, plan: &Plan<'_>) -> Result<()> {
        let catalog = self.catalog();
        for (type_name, tp) in &plan.tables {
            let mut unique = UniqueSeen::default();
            let rows: Vec<(&Record, Option<usize>)> =
                tp.new_rows.iter().map(|(r, l)| (r.as_ref(), *l)).collect();
            let whole = true;
            self.check_rows(head, plan, type_name, tp, &rows, whole, &mut unique)
                .await?;
            // Spilled rows were checked for required values when staged;
            // only the columns the remaining checks read come back.
            let Some(columns) = self.spill_check_columns(type_name) else {
                continue;
            };
            let Some(spill) = self.spill(type_name) else {
                continue;
            };
            if let Some(mut stream) = spill.stream(&columns, None).await? {
                let kind = self.kind(type_name)?;
                while let Some(batch) = stream.try_next().await? {
                    let records = batch_to_records(&batch, kind)?;
                    let rows: Vec<(&Record, Option<usize>)> =
                        records.iter().zip(spilled_lines(&batch)).collect();
                    let whole = false;
                    self.check_rows(head, plan, type_name, tp, &rows, whole, &mut unique)
                        .await?;
                }
            }
        }
        // Overwriting a node table must not strand edges in tables this
        // commit leaves alone.
        for (type_name, tp) in &plan.tables {
            if !tp.remove_all || catalog.node(type_name).is_none() {
                continue;
            }
            for edge in catalog.edges_touching(type_name) {
                if plan.tables.get(&edge.name).is_some_and(|t| t.remove_all) {
                    continue;
                }
                let pending = plan.tables.get(&edge.name);
                for r in head.read_all(&edge.name).await? {
                    if pending.is_some_and(|t| t.removed.contains(&r.id)) {
                        continue;
                    }
                    let Some((src, dst)) = &r.endpoints else {
                        continue;
                    };
                    for (end, node_id, node_type) in
                        [("src", src, &edge.from), ("dst", dst, &edge.to)]
                    {
                        if node_type == type_name && !self.inserts(plan, type_name, node_id)? {
                            return Err(Error::violation(
                                ViolationKind::DanglingEdge,
                                &edge.name,
                                end,
                                node_id.clone(),
                                format!(
                                    "overwriting {type_name} would leave {} '{}' pointing at missing {type_name} '{node_id}'",
                                    edge.name, r.id
                                ),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Check one chunk of a table's new rows: required values (of
    /// `whole` rows, not of rows projected to the columns of
    /// [`Self::spill_check_columns`]), `@range`, `@check`, `@unique`
    /// (across chunks through `unique`) and endpoints.
    #[allow(clippy::too_many_arguments)]
    async fn check_rows(
        &self,
        head: &Snapshot,
        plan: &Plan<'_>,
        type_name: &str,
        tp: &TablePlan<'_>,
        rows: &[(&Record, Option<usize>)],
        whole: bool,
        unique: &mut UniqueSeen,
    ) -> Result<()> {
        let catalog = self.catalog();
        for (r, line) in rows {
            if whole {
                self.check_required(type_name, r)
                    .map_err(|e| e.at_line(*line))?;
            }
            self.check_row(type_name, r).map_err(|e| e.at_line(*line))?;
        }
        self.check_unique(head, type_name, tp, rows, unique).await?;
        if let Some(edge) = catalog.edge(type_name) {
            self.check_endpoints(head, plan, type_name, &edge.from, &edge.to, rows)
                .await?;
        }
        Ok(())
    }

    /// The columns the checks of spilled rows read (they were checked for
    /// required values when staged), or `None` when no check reads any.
    fn spill_check_columns(&self, type_name: &str) -> Option<Vec<String>> {
        let catalog = self.catalog();
        let mut columns: Vec<String> = vec!["id".to_string()];
        let mut add = |c: &str| {
            if !columns.iter().any(|have| have == c) {
                columns.push(c.to_string());
            }
        };
        if let Some(node) = catalog.node(type_name) {
            node.ranges.iter().for_each(|rc| add(&rc.property));
            node.checks.iter().for_each(|(prop, _)| add(prop));
            node.unique.iter().flatten().for_each(|c| add(c));
        }
        if let Some(edge) = catalog.edge(type_name) {
            add("src");
            add("dst");
            edge.unique.iter().flatten().for_each(|c| add(c));
        }
        // The rows' input lines come along, for the errors.
        (columns.len() > 1).then(|| {
            columns.push(LINE.to_string());
            columns
        })
    }

    /// The constraints one row is checked against on its own.
    fn check_row(&self, type_name: &str, r: &Record) -> Result<()> {
        let catalog = self.catalog();
        let Some(node) = catalog.node(type_name) else {
            return Ok(());
        };
        for rc in &node.ranges {
            let v = match r.prop(&rc.property) {
                Value::Int(i) => *i as f64,
                Value::UInt(u) => *u as f64,
                Value::Float(f) => *f,
                _ => continue,
            };
            // NaN sorts above every number, as in Postgres: it breaks an
            // upper bound and satisfies a lower one.
            let below = matches!(rc.lo, RangeBound::Inclusive(lo) if v < lo);
            let above = matches!(rc.hi, RangeBound::Inclusive(hi) if v > hi || v.is_nan());
            if below || above {
                return Err(Error::violation(
                    ViolationKind::ConstraintViolation,
                    type_name,
                    &rc.property,
                    r.prop(&rc.property).display(),
                    format!(
                        "{type_name}.{} = {} is outside its @range",
                        rc.property,
                        r.prop(&rc.property).display()
                    ),
                ));
            }
        }
        for (prop, pattern) in &node.checks {
            if let Value::String(s) = r.prop(prop) {
                let re = regex::Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| Error::Internal(format!("@check pattern: {e}")))?;
                if !re.is_match(s) {
                    return Err(Error::violation(
                        ViolationKind::ConstraintViolation,
                        type_name,
                        prop,
                        s.clone(),
                        format!("{type_name}.{prop} = '{s}' does not match @check(\"{pattern}\")"),
                    ));
                }
            }
        }
        Ok(())
    }

    async fn check_unique(
        &self,
        head: &Snapshot,
        type_name: &str,
        tp: &TablePlan<'_>,
        rows: &[(&Record, Option<usize>)],
        unique: &mut UniqueSeen,
    ) -> Result<()> {
        let catalog = self.catalog();
        let tuples: Vec<&Vec<String>> = match catalog.node(type_name) {
            Some(n) => n.unique.iter().collect(),
            None => catalog
                .edge(type_name)
                .map(|e| e.unique.iter().collect())
                .unwrap_or_default(),
        };
        let props = catalog.properties(type_name).unwrap_or_default();
        for (n, cols) in tuples.into_iter().enumerate() {
            let seen = unique.by_constraint.entry(n).or_default();
            let mut probes: Vec<(Vec<Value>, &Record, Option<usize>)> = Vec::new();
            for (r, line) in rows {
                let vals: Vec<Value> = cols.iter().map(|c| r.column(c)).collect();
                if vals.iter().any(Value::is_null) {
                    continue; // NULLs never collide
                }
                let key: Vec<String> = vals.iter().map(Value::display).collect();
                if let Some(other) = seen.insert(id_hash(&key.join("\u{1f}")), r.id.clone()) {
                    return Err(
                        unique_violation(type_name, cols, &key, &other, &r.id).at_line(*line)
                    );
                }
                probes.push((vals, r, *line));
            }
            for chunk in probes.chunks(256) {
                let filter = chunk
                    .iter()
                    .map(|(vals, _, _)| tuple_filter(props, cols, vals))
                    .collect::<Result<Vec<_>>>()?
                    .join(" OR ");
                for other in head.read_where(type_name, Some(&filter)).await? {
                    if tp.remove_all || tp.removed.contains(&other.id) {
                        continue;
                    }
                    let theirs: Vec<String> =
                        cols.iter().map(|c| other.column(c).display()).collect();
                    if let Some((_, mine, line)) = chunk.iter().find(|(v, r, _)| {
                        r.id != other.id
                            && v.iter().map(Value::display).collect::<Vec<_>>() == theirs
                    }) {
                        return Err(unique_violation(
                            type_name, cols, &theirs, &other.id, &mine.id,
                        )
                        .at_line(*line));
                    }
                }
            }
        }
        Ok(())
    }

    /// Every written edge's endpoints must exist on the branch after this commit.
    async fn check_endpoints(
        &self,
        head: &Snapshot,
        plan: &Plan<'_>,
        type_name: &str,
        from: &str,
        to: &str,
        rows: &[(&Record, Option<usize>)],
    ) -> Result<()> {
        for (end, node_type) in [("src", from), ("dst", to)] {
            let node_plan = plan.tables.get(node_type);
            let gone = |id: &str| node_plan.is_some_and(|t| t.remove_all || t.removed.contains(id));
            let endpoint = |r: &Record| -> Option<String> {
                r.endpoints.as_ref().map(|e| {
                    if end == "src" {
                        e.0.clone()
                    } else {
                        e.1.clone()
                    }
                })
            };
            let mut wanted = BTreeSet::new();
            for id in rows.iter().filter_map(|(r, _)| endpoint(r)) {
                if !self.inserts(plan, node_type, &id)? {
                    wanted.insert(id);
                }
            }
            let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
            let found = head.existing_ids(node_type, &wanted).await?;
            for (r, line) in rows {
                let Some(id) = endpoint(r) else { continue };
                if self.inserts(plan, node_type, &id)? || (found.contains(&id) && !gone(&id)) {
                    continue;
                }
                return Err(Error::violation(
                    ViolationKind::DanglingEdge,
                    type_name,
                    end,
                    id.clone(),
                    format!(
                        "{type_name} '{}': {end} {node_type} '{id}' does not exist on branch '{}'",
                        r.id, self.branch
                    ),
                )
                .at_line(*line));
            }
        }
        Ok(())
    }

    /// Write the plan to Lance and the commit pointer, and build the
    /// manifest that publishes them. Runs under the branch lock; on failure
    /// the tables it wrote are restored.
    async fn apply(
        &self,
        plan: Plan<'_>,
        mut staged: BTreeMap<String, StagedWrite>,
        recorded: bool,
        head: Manifest,
        branch_id: &str,
    ) -> Result<(Manifest, CommitSummary, Vec<(String, TableEntry)>)> {
        let storage = self.graph.storage();
        let mut tables = head.tables.clone();
        let mut written: Vec<(String, TableEntry)> = Vec::new();
        let mut parents = vec![head.commit.id.clone()];
        for p in &self.merge_parents {
            if !parents.contains(p) {
                parents.push(p.clone());
            }
        }
        let commit = CommitInfo {
            id: self.commit_id.clone(),
            parents,
            branch: self.branch.clone(),
            actor: self.actor.clone(),
            message: self.message.clone(),
            committed_at_us: now_us(),
        };
        let seq = head.seq + 1;
        // Every published commit has a change record and a pointer, written
        // while the tables are: they name this commit only, and a pointer
        // whose manifest does not carry the commit is ignored, so an attempt
        // that fails leaves nothing readers see. Each write is durable when
        // it returns, so all are before the manifest is published.
        // (The change record may be written already, before the lock.)
        let change = self.change_record(&plan);
        let records = async {
            match recorded {
                true => {
                    self.graph
                        .meta()
                        .write_commit_pointer(&commit.id, branch_id, seq)
                        .await
                }
                false => {
                    write_commit_records(&self.graph, &commit.id, branch_id, seq, &change).await
                }
            }
        };
        let tables_written = async {
            for (type_name, tp) in &plan.tables {
                let spilled = self.spill(type_name).is_some_and(|s| s.len() > 0);
                if tp.is_noop(spilled) {
                    continue;
                }
                let pinned = tables
                    .get(type_name)
                    .cloned()
                    .ok_or_else(|| unknown_type(self.catalog(), type_name))?;
                let staged = staged.remove(type_name);
                // A staged table is open already, at the pin it was staged on.
                let at_pin = match &staged {
                    Some(s) if owns(&pinned, branch_id) => Some(s.table_at(pinned.version).await?),
                    _ => None,
                };
                // First write on this branch: fork the table; otherwise drop
                // what an interrupted commit may have left after the pin.
                let mut entry = if owns(&pinned, branch_id) {
                    let (version, _) = self
                        .graph
                        .recover_table_at(
                            type_name,
                            &pinned,
                            at_pin.as_ref(),
                            branch_id,
                            &self.branch,
                            &self.actor,
                        )
                        .await?;
                    TableEntry {
                        version,
                        ..pinned.clone()
                    }
                } else {
                    storage.fork(type_name, &pinned, branch_id).await?
                };
                written.push((type_name.clone(), entry.clone()));
                let mut ds = match (at_pin, &staged) {
                    (Some(ds), _) if entry.version == pinned.version => ds,
                    (_, Some(s)) => s.table_at(entry.version).await?,
                    (_, None) => storage.open_for_write(type_name, &entry).await?,
                };
                if let Some(staged) = staged {
                    ds = storage.commit_staged(ds, staged).await?;
                } else if tp.remove_all {
                    ds = storage.delete(ds, "true").await?;
                    ds = storage.append(ds, self.batches(type_name, tp)?).await?;
                } else {
                    // One Lance version per table in the usual commit; past
                    // ID_CHUNK deleted ids one per chunk, the new rows
                    // written with the last.
                    let removed: Vec<&str> = tp.removed.iter().map(String::as_str).collect();
                    let mut chunks: Vec<&[&str]> = removed.chunks(ID_CHUNK).collect();
                    let last = chunks.pop().unwrap_or_default();
                    for chunk in chunks {
                        ds = storage.delete_ids_and_append(ds, chunk, Vec::new()).await?;
                    }
                    let batches = self.batches(type_name, tp)?;
                    ds = storage.delete_ids_and_append(ds, last, batches).await?;
                }
                if let Some(spill) = self.spill(type_name)
                    && let Some(spilled) = spill.dataset()
                {
                    // The spill's files become the table's; the rows of
                    // fragments that cannot are streamed into one more
                    // version.
                    let (adopted, rest) = storage.adopt_spill(ds, spilled).await?;
                    ds = adopted;
                    if !rest.is_empty() {
                        let columns = table_columns(self, type_name)?;
                        if let Some(stream) = spill.stream(&columns, Some(rest)).await? {
                            ds = storage.append_stream(ds, stream.into()).await?;
                        }
                    }
                }
                // Part of the commit: the pinned version has few small
                // fragments and carries the index.
                storage.compact_small_fragments(&mut ds).await?;
                storage.maintain_id_index(&mut ds).await?;
                entry.version = ds.version_id();
                tables.insert(type_name.clone(), entry);
                failpoints::hit(names::COMMIT_BETWEEN_TABLES)?;
            }
            Ok::<(), Error>(())
        };
        let (tables_written, recorded) = futures::join!(tables_written, records);
        if let Err(e) = tables_written.and(recorded) {
            // Undo what this attempt wrote; if that fails too, the next commit
            // or `recover` rolls it back, and readers never see it meanwhile.
            for (type_name, entry) in &written {
                let _ = self
                    .graph
                    .roll_back_unpublished(type_name, entry, branch_id)
                    .await;
            }
            // Files staged for tables this attempt did not reach.
            for s in staged.into_values() {
                storage.discard_staged(s).await;
            }
            return Err(e);
        }
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            branch_id: branch_id.to_string(),
            seq,
            commit,
            tables,
        };
        let summary = CommitSummary {
            commit: manifest.commit.clone(),
            tables: plan.tables.into_iter().map(|(k, v)| (k, v.stats)).collect(),
            cascaded_edges: plan.cascaded_edges,
        };
        Ok((manifest, summary, written))
    }
}

impl WriteTxn {
    /// A table plan's new rows as Arrow batches of the table's schema.
    fn batches(&self, type_name: &str, tp: &TablePlan<'_>) -> Result<Vec<RecordBatch>> {
        let records: Vec<&Record> = tp.new_rows.iter().map(|(r, _)| r.as_ref()).collect();
        self.batches_of(type_name, &records)
    }

    /// Rows as Arrow batches of the table's schema.
    fn batches_of(&self, type_name: &str, records: &[&Record]) -> Result<Vec<RecordBatch>> {
        records
            .chunks(8192)
            .map(|c| records_to_batch(self.catalog(), type_name, c))
            .collect()
    }
}

/// What every commit writes before the manifest that publishes it, at
/// once: its change record and its pointer (a pointer whose manifest does
/// not carry the commit is ignored, and a change record is read only for
/// a commit a manifest carries, so an unpublished attempt leaves nothing
/// readers see). Both are durable when this returns.
pub(crate) async fn write_commit_records(
    graph: &crate::graph::Graph,
    commit_id: &str,
    branch_id: &str,
    seq: u64,
    record: &ChangeRecord,
) -> Result<()> {
    let meta = graph.meta();
    let (recorded, pointed) = futures::join!(
        graph.write_change_record(commit_id, record),
        meta.write_commit_pointer(commit_id, branch_id, seq)
    );
    recorded.and(pointed)
}

impl WriteTxn {
    /// Which ids of which tables this plan changes.
    fn change_record(&self, plan: &Plan<'_>) -> ChangeRecord {
        let mut record = ChangeRecord::default();
        for (type_name, tp) in &plan.tables {
            let spilled = self.spill(type_name).is_some_and(|s| s.len() > 0);
            if tp.is_noop(spilled) {
                continue;
            }
            let change = if tp.remove_all || spilled {
                TableChange::All
            } else {
                TableChange::of(tp.removed.iter().chain(&tp.new_ids).cloned().collect())
            };
            record.tables.insert(type_name.clone(), change);
        }
        record
    }

    /// `@card(min..max)` of every edge type this commit writes: each source
    /// node whose out-degree the commit changes must end within the range
    /// (sources the commit deletes are exempt; a new node with no edges is
    /// not checked against a minimum, since no edge of it changed).
    async fn check_cardinality(&self, head: &Snapshot, plan: &Plan<'_>) -> Result<()> {
        for (type_name, tp) in &plan.tables {
            let Some(edge) = self.catalog().edge(type_name) else {
                continue;
            };
            let Some((min, max)) = edge.card else {
                continue;
            };
            if tp.remove_all || self.spill(type_name).is_some_and(|s| s.len() > 0) {
                // Whole-table writes: count every source.
                self.check_cardinality_whole(head, plan, type_name, tp, min, max)
                    .await?;
                continue;
            }
            let removed: Vec<&str> = tp.removed.iter().map(String::as_str).collect();
            let old = head.rows_by_id(type_name, &removed).await?;
            let mut sources: BTreeSet<String> = old
                .values()
                .filter_map(|r| r.endpoints.as_ref().map(|e| e.0.clone()))
                .collect();
            sources.extend(
                tp.new_rows
                    .iter()
                    .filter_map(|(r, _)| r.endpoints.as_ref().map(|e| e.0.clone())),
            );
            let deleted = plan.deleted_nodes.get(&edge.from);
            sources.retain(|s| deleted.is_none_or(|d| !d.contains(s)));
            if sources.is_empty() {
                continue;
            }
            let mut degree: HashMap<String, u64> = sources.iter().map(|s| (s.clone(), 0)).collect();
            let list: Vec<&str> = sources.iter().map(String::as_str).collect();
            for chunk in list.chunks(ID_CHUNK) {
                let filter = in_filter("src", chunk.iter().copied());
                let kept = head.read_where(type_name, Some(&filter)).await?;
                count_sources(
                    &mut degree,
                    kept.iter().filter(|r| !tp.removed.contains(&r.id)),
                    false,
                );
            }
            count_sources(
                &mut degree,
                tp.new_rows.iter().map(|(r, _)| r.as_ref()),
                false,
            );
            for (src, n) in degree {
                check_degree(type_name, &edge.from, &src, n, min, max)?;
            }
        }
        Ok(())
    }

    async fn check_cardinality_whole(
        &self,
        head: &Snapshot,
        plan: &Plan<'_>,
        type_name: &str,
        tp: &TablePlan<'_>,
        min: u64,
        max: Option<u64>,
    ) -> Result<()> {
        let mut degree: HashMap<String, u64> = HashMap::new();
        if !tp.remove_all {
            let kept = head.read_all(type_name).await?;
            count_sources(
                &mut degree,
                kept.iter().filter(|r| !tp.removed.contains(&r.id)),
                true,
            );
        }
        count_sources(
            &mut degree,
            tp.new_rows.iter().map(|(r, _)| r.as_ref()),
            true,
        );
        if let Some(mut stream) = self.spilled(type_name).await? {
            let kind = self.kind(type_name)?;
            while let Some(batch) = stream.try_next().await? {
                count_sources(&mut degree, batch_to_records(&batch, kind)?.iter(), true);
            }
        }
        let from = self
            .catalog()
            .edge(type_name)
            .map(|e| e.from.clone())
            .unwrap_or_default();
        let deleted = plan.deleted_nodes.get(&from);
        for (src, n) in degree {
            if deleted.is_none_or(|d| !d.contains(&src)) {
                check_degree(type_name, &from, &src, n, min, max)?;
            }
        }
        Ok(())
    }
}

/// Add each edge row to its source's out-degree; sources not yet in
/// `degree` are added only when `any_source` (else they are not counted).
fn count_sources<'r>(
    degree: &mut HashMap<String, u64>,
    rows: impl Iterator<Item = &'r Record>,
    any_source: bool,
) {
    for r in rows {
        let Some((src, _)) = &r.endpoints else {
            continue;
        };
        match degree.get_mut(src) {
            Some(d) => *d += 1,
            None if any_source => {
                degree.insert(src.clone(), 1);
            }
            None => {}
        }
    }
}

/// One source's out-degree against `@card(min..max)`.
pub(crate) fn check_degree(
    edge: &str,
    from: &str,
    src: &str,
    n: u64,
    min: u64,
    max: Option<u64>,
) -> Result<()> {
    if n >= min && max.is_none_or(|m| n <= m) {
        return Ok(());
    }
    let range = match max {
        Some(m) => format!("{min}..{m}"),
        None => format!("{min}.."),
    };
    Err(Error::violation(
        ViolationKind::Cardinality,
        edge,
        "src",
        src,
        format!("@card({range}) violation on {edge}: {from} '{src}' would have {n} {edge} edge(s)"),
    ))
}

#[derive(Debug, Default)]
struct TablePlan<'a> {
    /// Ids whose current rows are deleted (updated rows are deleted and re-added).
    removed: HashSet<String>,
    remove_all: bool,
    /// Borrowed from the staged rows where they are written unchanged.
    new_rows: Vec<(Cow<'a, Record>, Option<usize>)>,
    /// Ids of `new_rows`.
    new_ids: HashSet<String>,
    stats: TableStats,
}

impl TablePlan<'_> {
    /// Whether the plan leaves the table as it is (`spilled`: the
    /// transaction has spilled inserts for it).
    fn is_noop(&self, spilled: bool) -> bool {
        self.new_rows.is_empty() && self.removed.is_empty() && !self.remove_all && !spilled
    }
}

/// `@unique` values already seen in this commit, per constraint (hashed,
/// so spilled rows need not stay in memory).
#[derive(Default)]
struct UniqueSeen {
    by_constraint: HashMap<usize, HashMap<u128, String>>,
}

/// The column names of a table, in its schema's order.
fn table_columns(txn: &WriteTxn, type_name: &str) -> Result<Vec<String>> {
    Ok(table_schema(txn.catalog(), type_name)?
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect())
}

#[derive(Debug, Default)]
struct Plan<'a> {
    tables: BTreeMap<String, TablePlan<'a>>,
    deleted_nodes: BTreeMap<String, BTreeSet<String>>,
    cascaded_edges: u64,
}

fn not_found(type_name: &str, id: &str, branch: &str) -> Error {
    Error::violation(
        ViolationKind::NotFound,
        type_name,
        "id",
        id,
        format!("{type_name} '{id}' does not exist on branch '{branch}'"),
    )
}

fn unique_violation(type_name: &str, cols: &[String], key: &[String], a: &str, b: &str) -> Error {
    let value = key.join(", ");
    Error::violation(
        ViolationKind::UniqueViolation,
        type_name,
        &cols.join(", "),
        value.clone(),
        format!(
            "@unique violation on {type_name}({}): value ({value}) held by '{a}' and '{b}'",
            cols.join(", ")
        ),
    )
}

/// `(c1 = v1 AND c2 = v2 ...)`: a Lance filter matching one `@unique` tuple.
pub(crate) fn tuple_filter(
    props: &[crate::schema::Property],
    cols: &[String],
    vals: &[Value],
) -> Result<String> {
    let parts: Vec<String> = cols
        .iter()
        .zip(vals)
        .map(|(c, v)| {
            Ok(format!(
                "{} = {}",
                quote_ident(c),
                filter_literal(props, c, v)?
            ))
        })
        .collect::<Result<_>>()?;
    Ok(format!("({})", parts.join(" AND ")))
}

/// A literal for a Lance filter comparing `column` with `v`.
pub(crate) fn filter_literal(
    props: &[crate::schema::Property],
    column: &str,
    v: &Value,
) -> Result<String> {
    let ty = props.iter().find(|p| p.name == column).map(|p| &p.ty);
    Ok(match (ty, v) {
        (_, Value::String(s)) => sql_literal(s),
        (_, Value::Bool(b)) => b.to_string(),
        (_, Value::Int(i)) => i.to_string(),
        (_, Value::UInt(u)) => u.to_string(),
        // Non-finite values have no literal: cast their text (which Arrow
        // parses as NaN / inf / -inf).
        (Some(PropType::Scalar(ScalarType::F32)), Value::Float(f)) if !f.is_finite() => {
            format!("arrow_cast('{f}', 'Float32')")
        }
        (_, Value::Float(f)) if !f.is_finite() => format!("arrow_cast('{f}', 'Float64')"),
        (Some(PropType::Scalar(ScalarType::F32)), Value::Float(f)) => {
            format!("arrow_cast({f:?}, 'Float32')")
        }
        (_, Value::Float(f)) => format!("{f:?}"),
        (_, Value::Date(_)) => format!("date {}", sql_literal(&v.display())),
        (_, Value::DateTime(us)) => {
            format!("arrow_cast({us}, 'Timestamp(Microsecond, Some(\"UTC\"))')")
        }
        _ => {
            return Err(Error::Unsupported(format!(
                "@unique on a {} value",
                value::Value::display(v)
            )));
        }
    })
}
