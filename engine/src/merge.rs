//! Three-way merge of one branch (the source, "theirs") into another (the
//! target, "ours"), with conflicts as data.
//!
//! 1. The base is the best common ancestor of the two heads
//!    ([`Graph::merge_base_of`]).
//! 2. Per type, the ids to look at are those changed on either side since
//!    the base ([`crate::changes`]); only their rows are read, three times.
//! 3. Per id: a row changed on one side only takes that side's version;
//!    both sides changing it alike is no conflict; otherwise properties are
//!    merged cell by cell, and what cannot be merged is a conflict
//!    (`update_update` per property, `delete_update`, `update_delete`,
//!    `insert_insert`). `ours`/`theirs` resolve these by taking a side.
//! 4. The combination is checked as a whole: edges left pointing at a node
//!    the merge deletes, or added towards one (`orphan_edge`; resolved by
//!    the chosen side's node), `@unique` (`unique`) and `@card`
//!    (`cardinality`), which no side can resolve.
//! 5. The result is staged into a write transaction on the target as
//!    ordinary row changes plus a second parent ([`WriteTxn::stage_merge`]),
//!    so it commits (and conflicts with concurrent commits) like any write.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::changes::Changed;
use crate::commit::tuple_filter;
use crate::diff::{Side, ids_to_compare, same_row};
use crate::error::{Error, Result};
use crate::graph::{Graph, ID_CHUNK, ReadRef, Snapshot, in_filter};
use crate::manifest::CommitInfo;
use crate::schema::Property;
use crate::txn::WriteTxn;
use crate::value::{Record, Value};

/// How a merge treats conflicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Publish nothing if there is any conflict.
    Fail,
    /// Keep the target's side of each conflicting cell or row.
    Ours,
    /// Take the source's side.
    Theirs,
}

impl std::str::FromStr for OnConflict {
    type Err = Error;
    fn from_str(s: &str) -> Result<OnConflict> {
        match s {
            "fail" => Ok(OnConflict::Fail),
            "ours" => Ok(OnConflict::Ours),
            "theirs" => Ok(OnConflict::Theirs),
            other => Err(Error::InvalidArgument(format!(
                "unknown on_conflict '{other}': use 'fail', 'ours' or 'theirs'"
            ))),
        }
    }
}

/// What a merge did (or would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeStatus {
    /// The target already contains the source.
    UpToDate,
    /// The target had not changed since the base: it takes the source's changes.
    FastForward,
    /// Both had changed: a merge commit.
    Merged,
    /// Conflicts that were not resolved: nothing is published.
    Conflicts,
}

impl MergeStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            MergeStatus::UpToDate => "up_to_date",
            MergeStatus::FastForward => "fast_forward",
            MergeStatus::Merged => "merged",
            MergeStatus::Conflicts => "conflicts",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    /// One property set to different values on each side.
    UpdateUpdate,
    /// Deleted on the target, changed on the source.
    DeleteUpdate,
    /// Changed on the target, deleted on the source.
    UpdateDelete,
    /// The same id inserted on both sides with different values.
    InsertInsert,
    /// An edge whose endpoint the merged graph does not have.
    OrphanEdge,
    /// `@key`/`@unique` broken by the combination.
    Unique,
    /// `@card` broken by the combination.
    Cardinality,
}

impl ConflictKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ConflictKind::UpdateUpdate => "update_update",
            ConflictKind::DeleteUpdate => "delete_update",
            ConflictKind::UpdateDelete => "update_delete",
            ConflictKind::InsertInsert => "insert_insert",
            ConflictKind::OrphanEdge => "orphan_edge",
            ConflictKind::Unique => "unique",
            ConflictKind::Cardinality => "cardinality",
        }
    }

    /// Whether taking one side's version resolves it.
    fn resolvable(&self) -> bool {
        !matches!(self, ConflictKind::Unique | ConflictKind::Cardinality)
    }
}

/// One conflict, as `omnigraph_merge_conflicts` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeConflict {
    pub type_name: String,
    /// The row's id (for `cardinality`, the source node's id).
    pub id: String,
    pub kind: ConflictKind,
    /// The property (or `src`/`dst`) in conflict; `None` for whole rows.
    pub property: Option<String>,
    /// The value (a cell for `update_update`, else the row) at the base,
    /// on the target and on the source; `None` where it does not exist.
    pub base: Option<serde_json::Value>,
    pub ours: Option<serde_json::Value>,
    pub theirs: Option<serde_json::Value>,
    pub detail: String,
}

/// A computed merge: its outcome, conflicts and the row changes it makes
/// on the target.
#[derive(Debug, Clone)]
pub struct MergePlan {
    pub status: MergeStatus,
    pub base: Option<CommitInfo>,
    /// The source's head: the merge commit's second parent.
    pub source_commit: String,
    /// The target's head the plan was computed against.
    pub target_commit: String,
    pub conflicts: Vec<MergeConflict>,
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
    /// Types compared whole (history without change records).
    pub full_compare: Vec<String>,
    /// How many rows (ids) were compared three ways.
    pub compared: u64,
    /// Per type: id -> the row the target gets, or `None` to delete it.
    changes: BTreeMap<String, BTreeMap<String, Option<Record>>>,
}

/// What `omnigraph_branch_merge` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeResult {
    pub status: MergeStatus,
    /// The merge commit; the target's head for `up_to_date`; `None` for conflicts.
    pub commit_id: Option<String>,
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
    pub conflicts: u64,
    pub full_compare: Vec<String>,
}

impl MergePlan {
    /// The report of this plan once committed as `commit_id`.
    pub fn result(&self, commit_id: Option<String>) -> MergeResult {
        let commit_id = match self.status {
            MergeStatus::UpToDate => Some(self.target_commit.clone()),
            MergeStatus::Conflicts => None,
            _ => commit_id,
        };
        MergeResult {
            status: self.status,
            commit_id,
            inserted: self.inserted,
            updated: self.updated,
            deleted: self.deleted,
            conflicts: self.conflicts.len() as u64,
            full_compare: self.full_compare.clone(),
        }
    }

    /// Whether staging this plan changes the target.
    pub fn stages(&self) -> bool {
        matches!(self.status, MergeStatus::FastForward | MergeStatus::Merged)
    }
}

/// The three versions of one row and what the merge makes of it.
struct ThreeWay {
    /// The result if conflicts go to the target's side.
    ours: Option<Record>,
    /// The result if conflicts go to the source's side.
    theirs: Option<Record>,
    conflicts: Vec<(ConflictKind, Option<String>)>,
}

fn set_column(r: &mut Record, column: &str, v: Value) {
    match (column, &mut r.endpoints, v) {
        ("src", Some(e), Value::String(s)) => e.0 = s,
        ("dst", Some(e), Value::String(s)) => e.1 = s,
        (_, _, v) => {
            r.props.insert(column.to_string(), v);
        }
    }
}

/// Merge one row: `b` at the base, `o` on the target, `t` on the source.
fn three_way(
    b: Option<&Record>,
    o: Option<&Record>,
    t: Option<&Record>,
    props: &[Property],
) -> ThreeWay {
    let take = |r: Option<&Record>| ThreeWay {
        ours: r.cloned(),
        theirs: r.cloned(),
        conflicts: vec![],
    };
    if same_row(o, t, props) || same_row(t, b, props) {
        return take(o);
    }
    if same_row(o, b, props) {
        return take(t);
    }
    let row_conflict = |kind| ThreeWay {
        ours: o.cloned(),
        theirs: t.cloned(),
        conflicts: vec![(kind, None)],
    };
    match (b, o, t) {
        (Some(b), Some(o), Some(t)) => {
            let mut ours = o.clone();
            let mut theirs = o.clone();
            let mut conflicts = Vec::new();
            let mut columns: Vec<String> = Vec::new();
            if o.endpoints.is_some() {
                columns.extend(["src".to_string(), "dst".to_string()]);
            }
            columns.extend(props.iter().map(|p| p.name.clone()));
            for c in columns {
                let (bv, ov, tv) = (b.column(&c), o.column(&c), t.column(&c));
                if ov == tv || tv == bv {
                    continue;
                }
                if ov == bv {
                    set_column(&mut ours, &c, tv.clone());
                    set_column(&mut theirs, &c, tv);
                } else {
                    set_column(&mut theirs, &c, tv);
                    conflicts.push((ConflictKind::UpdateUpdate, Some(c)));
                }
            }
            ThreeWay {
                ours: Some(ours),
                theirs: Some(theirs),
                conflicts,
            }
        }
        (Some(_), None, Some(_)) => row_conflict(ConflictKind::DeleteUpdate),
        (Some(_), Some(_), None) => row_conflict(ConflictKind::UpdateDelete),
        (None, Some(_), Some(_)) => row_conflict(ConflictKind::InsertInsert),
        // Every other combination has two equal sides, handled above.
        _ => take(o),
    }
}

/// The merged graph as the target plus the merge's changes.
struct Merged<'p, 's> {
    ours: &'p Side<'s>,
    changes: &'p BTreeMap<String, BTreeMap<String, Option<Record>>>,
}

impl Merged<'_, '_> {
    /// Which of `ids` exist in the merged graph.
    async fn existing(&self, type_name: &str, ids: &[&str]) -> Result<BTreeSet<String>> {
        let changed = self.changes.get(type_name);
        let mut out = BTreeSet::new();
        let mut ask = Vec::new();
        for id in ids {
            match changed.and_then(|c| c.get(*id)) {
                Some(Some(_)) => {
                    out.insert(id.to_string());
                }
                Some(None) => {}
                None => ask.push(*id),
            }
        }
        out.extend(self.ours.rows(type_name, &ask).await?.into_keys());
        Ok(out)
    }

    /// Rows of `type_name` in the merged graph matching a Lance filter on
    /// the target's committed rows, with `keep` applied to staged and merged
    /// rows (which the filter cannot see).
    async fn rows_where(
        &self,
        type_name: &str,
        filter: &str,
        keep: impl Fn(&Record) -> bool,
    ) -> Result<BTreeMap<String, Record>> {
        let mut out: BTreeMap<String, Record> = self
            .ours
            .snapshot
            .read_where(type_name, Some(filter))
            .await?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        // The target's transaction's own versions replace, remove (or, for
        // a replaced table, stand for) the committed rows.
        if let Some(txn) = self.ours.staged {
            if txn.replaces(type_name) {
                out.clear();
            }
            let staged = txn.staged_ids(type_name).await?;
            let refs: Vec<&str> = staged.iter().map(String::as_str).collect();
            for (id, own) in txn.own_rows(type_name, &refs, &self.ours.snapshot).await? {
                match own {
                    Some(r) => {
                        out.insert(id, r);
                    }
                    None => {
                        out.remove(&id);
                    }
                }
            }
        }
        if let Some(changed) = self.changes.get(type_name) {
            for (id, r) in changed {
                match r {
                    Some(r) => {
                        out.insert(id.clone(), r.clone());
                    }
                    None => {
                        out.remove(id);
                    }
                }
            }
        }
        out.retain(|_, r| keep(r));
        Ok(out)
    }
}

impl Graph {
    /// Compute the merge of `theirs` (the source) into `ours` (the target).
    /// Reads only; nothing is written.
    pub async fn plan_merge(
        &self,
        theirs: &Side<'_>,
        ours: &Side<'_>,
        on_conflict: OnConflict,
    ) -> Result<MergePlan> {
        let base = self
            .merge_base_of(&theirs.snapshot.commit().id, &ours.snapshot.commit().id)
            .await?;
        let mut plan = MergePlan {
            status: MergeStatus::Merged,
            base: base.clone(),
            source_commit: theirs.head_commit(),
            target_commit: ours.head_commit(),
            conflicts: Vec::new(),
            inserted: 0,
            updated: 0,
            deleted: 0,
            full_compare: Vec::new(),
            compared: 0,
            changes: BTreeMap::new(),
        };
        let base_id = base.as_ref().map(|c| c.id.as_str());
        if base_id == Some(theirs.snapshot.commit().id.as_str()) && !theirs.pending() {
            plan.status = MergeStatus::UpToDate;
            return Ok(plan);
        }
        let fast_forward = base_id == Some(ours.snapshot.commit().id.as_str()) && !ours.pending();
        let base = match base {
            Some(c) => Some(self.snapshot(&ReadRef::Commit(c.id)).await?),
            None => None,
        };
        let base_manifest = base.as_ref().map(|b| &b.manifest);
        let changed_theirs = theirs.changed_since(self, base_manifest).await?;
        let changed_ours = ours.changed_since(self, base_manifest).await?;
        // Whether the target has each row the merge changes, as read while merging.
        let mut on_target: HashMap<(String, String), bool> = HashMap::new();
        for type_name in self.catalog().type_names() {
            if changed_theirs.get(type_name).is_none_or(|c| c.is_empty()) {
                continue; // nothing to bring over
            }
            // Only ids the source changed matter; all ids only when the
            // source's history does not say which.
            let (ids, whole) = match changed_theirs.get(type_name) {
                Some(Changed::Ids(set)) => (set.iter().cloned().collect::<Vec<_>>(), false),
                _ => {
                    let Some(found) = ids_to_compare(
                        type_name,
                        base.as_ref(),
                        &[(theirs, &changed_theirs), (ours, &changed_ours)],
                    )
                    .await?
                    else {
                        continue;
                    };
                    found
                }
            };
            if whole {
                plan.full_compare.push(type_name.to_string());
            }
            let props = self.catalog().properties(type_name).unwrap_or_default();
            // An id the source did not change keeps the target's version: nothing
            // to read. An id only the source changed still has the base's
            // version on the target: the target need not be read.
            let changed_by = |c: Option<&Changed>, id: &str| match c {
                Some(Changed::All) => true,
                Some(Changed::Ids(set)) => set.contains(id),
                None => false,
            };
            let (t_changed, o_changed) =
                (changed_theirs.get(type_name), changed_ours.get(type_name));
            let ids: Vec<&String> = ids.iter().filter(|id| changed_by(t_changed, id)).collect();
            plan.compared += ids.len() as u64;
            let mut changes = BTreeMap::new();
            for chunk in ids.chunks(ID_CHUNK) {
                let refs: Vec<&str> = chunk.iter().map(|s| s.as_str()).collect();
                let both: Vec<&str> = refs
                    .iter()
                    .copied()
                    .filter(|id| changed_by(o_changed, id))
                    .collect();
                let b = match &base {
                    Some(s) => s.rows_by_id(type_name, &refs).await?,
                    None => HashMap::new(),
                };
                let o = ours.rows(type_name, &both).await?;
                let t = theirs.rows(type_name, &refs).await?;
                for id in chunk.iter().copied() {
                    let oi = if changed_by(o_changed, id) {
                        o.get(id)
                    } else {
                        b.get(id)
                    };
                    let (bi, ti) = (b.get(id), t.get(id));
                    let merged = three_way(bi, oi, ti, props);
                    let result = if merged.conflicts.is_empty() || on_conflict == OnConflict::Ours {
                        merged.ours.clone()
                    } else {
                        merged.theirs.clone()
                    };
                    for (kind, property) in &merged.conflicts {
                        let cell = |r: Option<&Record>| match property {
                            Some(p) => r.map(|r| r.column(p).to_json()),
                            None => r.map(|r| r.to_json(props)),
                        };
                        let detail = conflict_detail(
                            *kind,
                            type_name,
                            id,
                            property.as_deref(),
                            ours,
                            theirs,
                        );
                        plan.conflicts.push(MergeConflict {
                            type_name: type_name.to_string(),
                            id: id.clone(),
                            kind: *kind,
                            property: property.clone(),
                            base: cell(bi),
                            ours: cell(oi),
                            theirs: cell(ti),
                            detail,
                        });
                    }
                    if !same_row(result.as_ref(), oi, props) {
                        changes.insert(id.clone(), result);
                        on_target.insert((type_name.to_string(), id.clone()), oi.is_some());
                    }
                }
            }
            if !changes.is_empty() {
                plan.changes.insert(type_name.to_string(), changes);
            }
        }
        self.resolve_orphans(&mut plan, base.as_ref(), theirs, ours, on_conflict)
            .await?;
        self.check_merged_unique(&mut plan, ours).await?;
        self.check_merged_cardinality(&mut plan, ours).await?;
        let unresolved = plan
            .conflicts
            .iter()
            .any(|c| on_conflict == OnConflict::Fail || !c.kind.resolvable());
        if unresolved {
            plan.status = MergeStatus::Conflicts;
            plan.changes.clear();
            return Ok(plan);
        }
        if fast_forward {
            plan.status = MergeStatus::FastForward;
        }
        // Counted against the target's rows (those orphan resolution added
        // were not read yet).
        for (type_name, changes) in &plan.changes {
            let unread: Vec<&str> = changes
                .keys()
                .filter(|id| !on_target.contains_key(&(type_name.clone(), id.to_string())))
                .map(String::as_str)
                .collect();
            let found = ours.existing(type_name, &unread).await?;
            for (id, r) in changes {
                let had = on_target
                    .get(&(type_name.clone(), id.clone()))
                    .copied()
                    .unwrap_or_else(|| found.contains(id));
                match (had, r.is_some()) {
                    (false, true) => plan.inserted += 1,
                    (true, true) => plan.updated += 1,
                    (true, false) => plan.deleted += 1,
                    (false, false) => {}
                }
            }
        }
        Ok(plan)
    }

    /// Edges of the merged graph whose endpoint it does not have: edges the
    /// merge writes, and edges of the target touching nodes the merge
    /// deletes. Resolved by the chosen side's version of the node: if that
    /// side has it, the node stays (or comes back); otherwise the edge goes.
    async fn resolve_orphans(
        &self,
        plan: &mut MergePlan,
        base: Option<&Snapshot>,
        theirs: &Side<'_>,
        ours: &Side<'_>,
        on_conflict: OnConflict,
    ) -> Result<()> {
        // (edge type, edge row, end, node type, node id)
        let mut orphans: Vec<(String, Record, &'static str, String, String)> = Vec::new();
        let merged = Merged {
            ours,
            changes: &plan.changes,
        };
        for edge in &self.catalog().edges {
            // Edges the merge writes must point at nodes the merged graph has.
            let written: Vec<&Record> = plan
                .changes
                .get(&edge.name)
                .map(|c| c.values().flatten().collect())
                .unwrap_or_default();
            for (end, node_type) in [("src", &edge.from), ("dst", &edge.to)] {
                let wanted: BTreeSet<&str> = written
                    .iter()
                    .filter_map(|r| r.endpoints.as_ref())
                    .map(|e| {
                        if end == "src" {
                            e.0.as_str()
                        } else {
                            e.1.as_str()
                        }
                    })
                    .collect();
                let wanted: Vec<&str> = wanted.into_iter().collect();
                let found = merged.existing(node_type, &wanted).await?;
                for r in &written {
                    let node = r.column(end);
                    if let Value::String(n) = node
                        && !found.contains(&n)
                    {
                        orphans.push((edge.name.clone(), (*r).clone(), end, node_type.clone(), n));
                    }
                }
            }
            // Edges of the target touching nodes the merge deletes.
            for (end, node_type) in [("src", &edge.from), ("dst", &edge.to)] {
                let deleted: Vec<&str> = plan
                    .changes
                    .get(node_type)
                    .map(|c| {
                        c.iter()
                            .filter(|(_, r)| r.is_none())
                            .map(|(id, _)| id.as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                let gone: BTreeSet<&str> = deleted.iter().copied().collect();
                for chunk in deleted.chunks(ID_CHUNK) {
                    let filter = in_filter(end, chunk.iter().copied());
                    let hits = merged
                        .rows_where(&edge.name, &filter, |r| {
                            matches!(r.column(end), Value::String(n) if gone.contains(n.as_str()))
                        })
                        .await?;
                    for r in hits.into_values() {
                        if let Value::String(n) = r.column(end)
                            && !orphans
                                .iter()
                                .any(|o| o.0 == edge.name && o.1.id == r.id && o.2 == end)
                        {
                            orphans.push((edge.name.clone(), r, end, node_type.clone(), n));
                        }
                    }
                }
            }
        }
        for (edge, row, end, node_type, node) in orphans {
            let props = self.catalog().properties(&edge).unwrap_or_default();
            let base_edge = match base {
                Some(b) => b
                    .rows_by_id(&edge, &[row.id.as_str()])
                    .await?
                    .remove(&row.id),
                None => None,
            };
            let o_edge = ours.rows(&edge, &[row.id.as_str()]).await?.remove(&row.id);
            let t_edge = theirs
                .rows(&edge, &[row.id.as_str()])
                .await?
                .remove(&row.id);
            plan.conflicts.push(MergeConflict {
                type_name: edge.clone(),
                id: row.id.clone(),
                kind: ConflictKind::OrphanEdge,
                property: Some(end.to_string()),
                base: base_edge.as_ref().map(|r| r.to_json(props)),
                ours: o_edge.as_ref().map(|r| r.to_json(props)),
                theirs: t_edge.as_ref().map(|r| r.to_json(props)),
                detail: format!(
                    "{edge} '{}' points at {node_type} '{node}' ({end}), which the merged graph would not have: one side deleted it, the other added or kept the edge",
                    row.id
                ),
            });
            let chosen = match on_conflict {
                OnConflict::Fail => continue,
                OnConflict::Ours => ours,
                OnConflict::Theirs => theirs,
            };
            let node_row = chosen
                .rows(&node_type, &[node.as_str()])
                .await?
                .remove(&node);
            match node_row {
                Some(n) => {
                    // The chosen side has the node: it stays.
                    let has = ours.rows(&node_type, &[node.as_str()]).await?.remove(&node);
                    let node_props = self.catalog().properties(&node_type).unwrap_or_default();
                    let changes = plan.changes.entry(node_type.clone()).or_default();
                    if same_row(has.as_ref(), Some(&n), node_props) {
                        changes.remove(&node);
                    } else {
                        changes.insert(node.clone(), Some(n));
                    }
                }
                None => {
                    // The chosen side deleted the node: the edge goes.
                    let changes = plan.changes.entry(edge.clone()).or_default();
                    if o_edge.is_some() {
                        changes.insert(row.id.clone(), None);
                    } else {
                        changes.remove(&row.id);
                    }
                }
            }
        }
        plan.changes.retain(|_, c| !c.is_empty());
        Ok(())
    }

    /// `@key`/`@unique` tuples the merged rows would share with another row.
    async fn check_merged_unique(&self, plan: &mut MergePlan, ours: &Side<'_>) -> Result<()> {
        let mut found = Vec::new();
        let merged = Merged {
            ours,
            changes: &plan.changes,
        };
        for (type_name, changes) in &plan.changes {
            let tuples: Vec<&Vec<String>> = match self.catalog().node(type_name) {
                Some(n) => n.unique.iter().collect(),
                None => self
                    .catalog()
                    .edge(type_name)
                    .map(|e| e.unique.iter().collect())
                    .unwrap_or_default(),
            };
            let props = self.catalog().properties(type_name).unwrap_or_default();
            let written: Vec<&Record> = changes.values().flatten().collect();
            for cols in tuples {
                let mut reported: BTreeSet<String> = BTreeSet::new();
                for chunk in written.chunks(256) {
                    let mut probes = Vec::new();
                    for r in chunk {
                        let vals: Vec<Value> = cols.iter().map(|c| r.column(c)).collect();
                        if vals.iter().any(Value::is_null) {
                            continue; // NULLs never collide
                        }
                        probes.push((tuple_filter(props, cols, &vals)?, vals, *r));
                    }
                    if probes.is_empty() {
                        continue;
                    }
                    let filter = probes
                        .iter()
                        .map(|p| p.0.as_str())
                        .collect::<Vec<_>>()
                        .join(" OR ");
                    let holders = merged.rows_where(type_name, &filter, |_| true).await?;
                    // Merged rows written in this plan are among the holders too.
                    let mut all: Vec<&Record> = holders.values().collect();
                    all.extend(written.iter().copied());
                    for (_, vals, r) in &probes {
                        let other = all.iter().find(|x| {
                            x.id != r.id && cols.iter().zip(vals).all(|(c, v)| x.column(c) == *v)
                        });
                        if let Some(other) = other {
                            if !reported.insert(r.id.clone()) {
                                continue;
                            }
                            let shown: Vec<String> = vals.iter().map(Value::display).collect();
                            found.push(MergeConflict {
                                type_name: type_name.clone(),
                                id: r.id.clone(),
                                kind: ConflictKind::Unique,
                                property: Some(cols.join(", ")),
                                base: None,
                                ours: Some(other.to_json(props)),
                                theirs: Some(r.to_json(props)),
                                detail: format!(
                                    "{type_name}({}) = ({}) would be held by both '{}' and '{}'",
                                    cols.join(", "),
                                    shown.join(", "),
                                    other.id,
                                    r.id
                                ),
                            });
                            reported.insert(other.id.clone());
                        }
                    }
                }
            }
        }
        plan.conflicts.extend(found);
        Ok(())
    }

    /// `@card` of the sources whose out-degree the merge changes.
    async fn check_merged_cardinality(&self, plan: &mut MergePlan, ours: &Side<'_>) -> Result<()> {
        let mut found = Vec::new();
        let merged = Merged {
            ours,
            changes: &plan.changes,
        };
        for edge in &self.catalog().edges {
            let (Some((min, max)), Some(changes)) = (edge.card, plan.changes.get(&edge.name))
            else {
                continue;
            };
            let ids: Vec<&str> = changes.keys().map(String::as_str).collect();
            let before = ours.rows(&edge.name, &ids).await?;
            let mut sources: BTreeSet<String> = before
                .values()
                .chain(changes.values().flatten())
                .filter_map(|r| r.endpoints.as_ref().map(|e| e.0.clone()))
                .collect();
            let refs: Vec<&str> = sources.iter().map(String::as_str).collect();
            let alive = merged.existing(&edge.from, &refs).await?;
            sources.retain(|s| alive.contains(s));
            let list: Vec<&str> = sources.iter().map(String::as_str).collect();
            for chunk in list.chunks(ID_CHUNK) {
                let set: BTreeSet<&str> = chunk.iter().copied().collect();
                let rows = merged
                    .rows_where(
                        &edge.name,
                        &in_filter("src", chunk.iter().copied()),
                        |r| matches!(r.column("src"), Value::String(s) if set.contains(s.as_str())),
                    )
                    .await?;
                let mut degree: BTreeMap<&str, u64> = chunk.iter().map(|s| (*s, 0)).collect();
                for r in rows.values() {
                    if let Some((s, _)) = &r.endpoints
                        && let Some(d) = degree.get_mut(s.as_str())
                    {
                        *d += 1;
                    }
                }
                for (src, n) in degree {
                    if let Err(Error::Validation(v)) =
                        crate::commit::check_degree(&edge.name, &edge.from, src, n, min, max)
                    {
                        found.push(MergeConflict {
                            type_name: edge.name.clone(),
                            id: src.to_string(),
                            kind: ConflictKind::Cardinality,
                            property: Some("src".into()),
                            base: None,
                            ours: None,
                            theirs: None,
                            detail: v.message,
                        });
                    }
                }
            }
        }
        plan.conflicts.extend(found);
        Ok(())
    }

    /// Merge branch `source` into branch `target` as one commit (outside
    /// any frontend transaction).
    pub async fn merge(
        &self,
        source: &str,
        target: &str,
        on_conflict: OnConflict,
        message: Option<&str>,
        actor: &str,
    ) -> Result<MergeResult> {
        if source == target {
            return Err(Error::InvalidArgument(format!(
                "cannot merge branch '{source}' into itself"
            )));
        }
        let mut txn = self.begin(target, actor).await?;
        let theirs = Side::new(
            source,
            self.snapshot(&ReadRef::Branch(source.into())).await?,
            None,
        );
        let ours = Side::new(target, txn.base().clone(), None);
        let plan = self.plan_merge(&theirs, &ours, on_conflict).await?;
        if !plan.stages() {
            return Ok(plan.result(None));
        }
        txn.set_message(message.map_or_else(|| merge_message(source, target), str::to_string));
        txn.stage_merge(&plan).await?;
        let summary = txn.commit().await?;
        Ok(plan.result(summary.map(|s| s.commit.id)))
    }

    /// The conflicts merging `source` into `target` would meet.
    pub async fn merge_conflicts(&self, source: &str, target: &str) -> Result<Vec<MergeConflict>> {
        let theirs = Side::new(
            source,
            self.snapshot(&ReadRef::Branch(source.into())).await?,
            None,
        );
        let ours = Side::new(
            target,
            self.snapshot(&ReadRef::Branch(target.into())).await?,
            None,
        );
        Ok(self
            .plan_merge(&theirs, &ours, OnConflict::Fail)
            .await?
            .conflicts)
    }
}

/// The default message of a merge commit.
pub fn merge_message(source: &str, target: &str) -> String {
    format!("merge '{source}' into '{target}'")
}

fn conflict_detail(
    kind: ConflictKind,
    type_name: &str,
    id: &str,
    property: Option<&str>,
    ours: &Side<'_>,
    theirs: &Side<'_>,
) -> String {
    let (o, t) = (&ours.name, &theirs.name);
    match kind {
        ConflictKind::UpdateUpdate => format!(
            "{type_name} '{id}': {} was set to different values on '{o}' and '{t}'",
            property.unwrap_or("a property")
        ),
        ConflictKind::DeleteUpdate => {
            format!("{type_name} '{id}' was deleted on '{o}' and changed on '{t}'")
        }
        ConflictKind::UpdateDelete => {
            format!("{type_name} '{id}' was changed on '{o}' and deleted on '{t}'")
        }
        ConflictKind::InsertInsert => {
            format!("{type_name} '{id}' was inserted on both '{o}' and '{t}' with different values")
        }
        _ => format!("{type_name} '{id}'"),
    }
}

impl WriteTxn {
    /// Stage a computed merge: its row changes, and its source as a second
    /// parent of this transaction's commit. Plans that change nothing
    /// (`up_to_date`, `conflicts`) stage nothing.
    pub async fn stage_merge(&mut self, plan: &MergePlan) -> Result<()> {
        if !plan.stages() {
            return Ok(());
        }
        for (type_name, changes) in &plan.changes {
            for (id, row) in changes {
                match row {
                    Some(r) => self.stage_replace(type_name, r.clone()).await?,
                    None => self.stage_remove(type_name, id).await?,
                }
            }
        }
        self.add_merge_parent(&plan.source_commit);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{PropType, ScalarType};

    fn prop(name: &str) -> Property {
        Property {
            name: name.into(),
            ty: PropType::Scalar(ScalarType::I64),
            nullable: true,
            annotations: vec![],
        }
    }

    fn row(a: i64, b: i64) -> Record {
        Record {
            id: "x".into(),
            endpoints: None,
            props: [
                ("a".to_string(), Value::Int(a)),
                ("b".to_string(), Value::Int(b)),
            ]
            .into(),
        }
    }

    #[test]
    fn cells_changed_on_one_side_each_both_win() {
        let props = [prop("a"), prop("b")];
        let m = three_way(Some(&row(1, 1)), Some(&row(2, 1)), Some(&row(1, 3)), &props);
        assert!(m.conflicts.is_empty());
        assert_eq!(m.ours, Some(row(2, 3)));
        assert_eq!(m.theirs, Some(row(2, 3)));
    }

    #[test]
    fn the_same_cell_set_differently_conflicts_per_property() {
        let props = [prop("a"), prop("b")];
        let m = three_way(Some(&row(1, 1)), Some(&row(2, 5)), Some(&row(3, 1)), &props);
        assert_eq!(
            m.conflicts,
            vec![(ConflictKind::UpdateUpdate, Some("a".into()))]
        );
        assert_eq!(m.ours, Some(row(2, 5)));
        assert_eq!(m.theirs, Some(row(3, 5)));
        // Both setting the same value is no conflict.
        let same = three_way(Some(&row(1, 1)), Some(&row(4, 1)), Some(&row(4, 1)), &props);
        assert!(same.conflicts.is_empty());
    }

    #[test]
    fn row_level_kinds() {
        let props = [prop("a"), prop("b")];
        let k = |b: Option<Record>, o: Option<Record>, t: Option<Record>| {
            three_way(b.as_ref(), o.as_ref(), t.as_ref(), &props).conflicts
        };
        let one = |k| vec![(k, None)];
        assert_eq!(
            k(Some(row(1, 1)), None, Some(row(2, 1))),
            one(ConflictKind::DeleteUpdate)
        );
        assert_eq!(
            k(Some(row(1, 1)), Some(row(2, 1)), None),
            one(ConflictKind::UpdateDelete)
        );
        assert_eq!(
            k(None, Some(row(1, 1)), Some(row(2, 1))),
            one(ConflictKind::InsertInsert)
        );
        // Deleted on both sides, or deleted on one and untouched on the other.
        assert!(k(Some(row(1, 1)), None, None).is_empty());
        assert!(k(Some(row(1, 1)), Some(row(1, 1)), None).is_empty());
        // A NULL and a missing property are the same value.
        let mut sparse = row(1, 1);
        sparse.props.insert("c".into(), Value::Null);
        assert!(k(Some(row(1, 1)), Some(sparse), Some(row(1, 1))).is_empty());
    }
}
