//! Row-level differences between two states of the graph, and the sides
//! that merge compares.
//!
//! A [`Side`] is a branch head or commit, plus (for a frontend's open
//! transaction) the changes staged on it. The ids compared are those the
//! change records ([`crate::changes`]) name between the two states' best
//! common ancestor and each state, so the cost follows the changes, not
//! the tables; types whose history has no records are compared whole and
//! reported in `full_compare`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::changes::Changed;
use crate::error::Result;
use crate::graph::{Graph, ReadRef, Snapshot};
use crate::manifest::Manifest;
use crate::schema::Property;
use crate::txn::WriteTxn;
use crate::value::Record;

/// One state of the graph to compare or merge.
pub struct Side<'a> {
    /// How messages name it (a branch name or a commit id).
    pub name: String,
    pub snapshot: Snapshot,
    /// Changes a frontend's open transaction staged on top of `snapshot`.
    pub staged: Option<&'a WriteTxn>,
}

impl<'a> Side<'a> {
    pub fn new(name: impl Into<String>, snapshot: Snapshot, staged: Option<&'a WriteTxn>) -> Self {
        Side {
            name: name.into(),
            snapshot,
            staged,
        }
    }

    /// Whether staged changes (or merges) lie on top of the snapshot.
    pub(crate) fn pending(&self) -> bool {
        self.staged.is_some_and(|t| !t.is_empty())
    }

    /// The commit this side's state is, or will be once its transaction commits.
    pub(crate) fn head_commit(&self) -> String {
        match self.staged {
            Some(t) if !t.is_empty() => t.commit_id().to_string(),
            _ => self.snapshot.commit().id.clone(),
        }
    }

    /// Per type, the ids that may differ from `base` (committed and staged).
    pub(crate) async fn changed_since(
        &self,
        graph: &Graph,
        base: Option<&Manifest>,
    ) -> Result<BTreeMap<String, Changed>> {
        let mut out = match base {
            Some(b) => graph.changed_between(b, &self.snapshot.manifest).await?,
            None => graph
                .catalog()
                .type_names()
                .into_iter()
                .map(|t| (t.to_string(), Changed::All))
                .collect(),
        };
        if let Some(txn) = self.staged {
            for type_name in graph.catalog().type_names() {
                if txn.replaces(type_name) {
                    out.insert(type_name.to_string(), Changed::All);
                    continue;
                }
                let ids = txn.staged_ids(type_name).await?;
                if !ids.is_empty() {
                    out.entry(type_name.to_string())
                        .or_insert_with(Changed::none)
                        .add_ids(ids);
                }
            }
        }
        Ok(out)
    }

    /// This side's rows with the given ids (absent ids do not exist here).
    pub(crate) async fn rows(
        &self,
        type_name: &str,
        ids: &[&str],
    ) -> Result<HashMap<String, Record>> {
        let mut rows = self.snapshot.rows_by_id(type_name, ids).await?;
        if let Some(txn) = self.staged {
            for (id, own) in txn.own_rows(type_name, ids, &self.snapshot).await? {
                match own {
                    Some(r) => {
                        rows.insert(id, r);
                    }
                    None => {
                        rows.remove(&id);
                    }
                }
            }
        }
        Ok(rows)
    }

    /// Which of `ids` exist on this side (reads only the id column of
    /// committed rows).
    pub(crate) async fn existing(&self, type_name: &str, ids: &[&str]) -> Result<HashSet<String>> {
        let mut found = self.snapshot.existing_ids(type_name, ids).await?;
        if let Some(txn) = self.staged {
            for (id, own) in txn.own_rows(type_name, ids, &self.snapshot).await? {
                if own.is_some() {
                    found.insert(id);
                } else {
                    found.remove(&id);
                }
            }
        }
        Ok(found)
    }

    /// Every id of a type on this side.
    pub(crate) async fn all_ids(&self, type_name: &str) -> Result<BTreeSet<String>> {
        let mut ids = self.snapshot.ids(type_name).await?;
        if let Some(txn) = self.staged {
            if txn.replaces(type_name) {
                ids.clear();
            }
            let staged = txn.staged_ids(type_name).await?;
            let refs: Vec<&str> = staged.iter().map(String::as_str).collect();
            for (id, own) in txn.own_rows(type_name, &refs, &self.snapshot).await? {
                if own.is_some() {
                    ids.insert(id);
                } else {
                    ids.remove(&id);
                }
            }
        }
        Ok(ids)
    }
}

/// Whether two versions of a row hold the same values (missing
/// properties and NULLs are alike).
pub(crate) fn same_row(a: Option<&Record>, b: Option<&Record>, props: &[Property]) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.id == b.id && a.changed_columns(b, props).is_empty(),
        _ => false,
    }
}

/// The ids of one type to compare across `sides` (each with what changed
/// on it since `base`); `None` when no side changed the type. The flag is
/// set when the type had to be compared whole.
pub(crate) async fn ids_to_compare(
    type_name: &str,
    base: Option<&Snapshot>,
    sides: &[(&Side<'_>, &BTreeMap<String, Changed>)],
) -> Result<Option<(Vec<String>, bool)>> {
    let changes: Vec<&Changed> = sides
        .iter()
        .filter_map(|(_, c)| c.get(type_name))
        .filter(|c| !c.is_empty())
        .collect();
    if changes.is_empty() {
        return Ok(None);
    }
    if changes.iter().any(|c| matches!(c, Changed::All)) {
        let mut ids = match base {
            Some(b) => b.ids(type_name).await?,
            None => BTreeSet::new(),
        };
        for (side, _) in sides {
            ids.extend(side.all_ids(type_name).await?);
        }
        return Ok(Some((ids.into_iter().collect(), true)));
    }
    let mut ids = BTreeSet::new();
    for c in changes {
        if let Changed::Ids(set) = c {
            ids.extend(set.iter().cloned());
        }
    }
    Ok(Some((ids.into_iter().collect(), false)))
}

/// How a row differs between two states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
}

impl ChangeKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ChangeKind::Insert => "insert",
            ChangeKind::Update => "update",
            ChangeKind::Delete => "delete",
        }
    }
}

/// One row that differs.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub type_name: String,
    pub id: String,
    pub change: ChangeKind,
    /// The columns that differ: `src`/`dst` and property names (for an
    /// insert or delete, those with a value).
    pub properties: Vec<String>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// Every row that differs between two states, nodes first, by type in
/// schema order, then by id.
#[derive(Debug, Clone, Default)]
pub struct Diff {
    pub changes: Vec<RowChange>,
    /// Types compared whole, because part of their history carries no
    /// change record (commits made before records existed).
    pub full_compare: Vec<String>,
}

impl Graph {
    /// The differences from `from` to `to`.
    pub async fn diff(&self, from: &Side<'_>, to: &Side<'_>) -> Result<Diff> {
        let base = self
            .merge_base_of(&from.snapshot.commit().id, &to.snapshot.commit().id)
            .await?;
        let base = match base {
            Some(c) => Some(self.snapshot(&ReadRef::Commit(c.id)).await?),
            None => None,
        };
        let base_manifest = base.as_ref().map(|b| &b.manifest);
        let changed_from = from.changed_since(self, base_manifest).await?;
        let changed_to = to.changed_since(self, base_manifest).await?;
        let mut out = Diff::default();
        for type_name in self.catalog().type_names() {
            let Some((ids, whole)) = ids_to_compare(
                type_name,
                base.as_ref(),
                &[(from, &changed_from), (to, &changed_to)],
            )
            .await?
            else {
                continue;
            };
            if whole {
                out.full_compare.push(type_name.to_string());
            }
            let props = self.catalog().properties(type_name).unwrap_or_default();
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let before = from.rows(type_name, &refs).await?;
            let after = to.rows(type_name, &refs).await?;
            for id in &ids {
                if let Some(c) = row_change(type_name, id, before.get(id), after.get(id), props) {
                    out.changes.push(c);
                }
            }
        }
        Ok(out)
    }

    /// The differences between two refs' committed states.
    pub async fn diff_refs(&self, from: &ReadRef, to: &ReadRef) -> Result<Diff> {
        let a = Side::new(from.to_string(), self.snapshot(from).await?, None);
        let b = Side::new(to.to_string(), self.snapshot(to).await?, None);
        self.diff(&a, &b).await
    }
}

/// How `id` changed from `before` to `after`, if it did.
fn row_change(
    type_name: &str,
    id: &str,
    before: Option<&Record>,
    after: Option<&Record>,
    props: &[Property],
) -> Option<RowChange> {
    let with_values = |r: &Record| -> Vec<String> {
        let mut cols: Vec<String> = Vec::new();
        if r.endpoints.is_some() {
            cols.extend(["src".to_string(), "dst".to_string()]);
        }
        cols.extend(
            props
                .iter()
                .filter(|p| !r.prop(&p.name).is_null())
                .map(|p| p.name.clone()),
        );
        cols
    };
    let (change, properties) = match (before, after) {
        (None, None) => return None,
        (None, Some(a)) => (ChangeKind::Insert, with_values(a)),
        (Some(b), None) => (ChangeKind::Delete, with_values(b)),
        (Some(b), Some(a)) => {
            let cols = b.changed_columns(a, props);
            if cols.is_empty() {
                return None;
            }
            (ChangeKind::Update, cols)
        }
    };
    Some(RowChange {
        type_name: type_name.to_string(),
        id: id.to_string(),
        change,
        properties,
        before: before.map(|r| r.to_json(props)),
        after: after.map(|r| r.to_json(props)),
    })
}
