//! The work of a commit done before its branch lock is taken.
//!
//! Commits of one branch publish one at a time, under the branch lock
//! ([`crate::lock`]). What a commit does under it bounds how many commits a
//! branch takes per second, so a commit does what it can first, while
//! others publish: it resolves and validates its changes against the head
//! it reads without the lock, and writes its new rows' data files and its
//! deletion files ([`crate::storage::StagedWrite`]) and its change record.
//!
//! Under the lock it reads the head again. If commits were published in
//! between, their change records say which rows they changed; the early
//! work stands when none of them changed a row it read ([`Reads`]), and
//! otherwise it is thrown away and the commit resolves again under the lock,
//! as if it had not started early. Either way the result is what resolving
//! under the lock gives: the rows a commit's checks read are the same at
//! both heads.
//!
//! Commits that write much or in bulk (spills, overwrites), merge commits,
//! the first write of a table on a branch (a fork) and commits into a branch
//! created in the same transaction do everything under the lock.

use std::collections::{BTreeMap, BTreeSet};

use crate::changes::TableChange;
use crate::error::{Error, Result};
use crate::graph::{ID_CHUNK, owns};
use crate::manifest::Manifest;
use crate::storage::{StagedWrite, TableEntry};
use crate::txn::{Pending, WriteTxn};
use crate::value::Record;

use super::Plan;

/// Published commits after the early head past which the early work is
/// redone rather than checked: each costs a manifest and a change record
/// read under the lock.
const MAX_COMMITS_CHECKED: u64 = 64;

/// The rows of one table a commit's resolution and checks read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reads {
    /// Rows by id: those the commit writes, or whose existence it checks.
    Ids(BTreeSet<String>),
    /// Rows found by other columns (`@unique` values, edges by endpoint):
    /// any change to the table may change what was found.
    All,
}

/// A commit resolved and its files written against `head`, without the lock.
pub(super) struct Early<'a> {
    pub head: Manifest,
    pub plan: Plan<'a>,
    pub staged: BTreeMap<String, StagedWrite>,
    reads: BTreeMap<String, Reads>,
    /// Whether the commit's change record is written.
    pub recorded: bool,
}

impl WriteTxn {
    /// Resolve, validate and stage the files of this commit against the
    /// branch head, without the lock. `None` when this commit does all of
    /// its work under the lock, or when anything fails (the work under the
    /// lock then meets the failure, or not, at the head it reads).
    pub(super) async fn start_early(&self, branch_id: &str) -> Option<Early<'_>> {
        if self.new_branch
            || !self.merge_parents.is_empty()
            || self
                .tables
                .values()
                .any(|t| t.overwrite || t.spill.is_some())
        {
            return None;
        }
        let head = self.graph.meta().head(branch_id).await.ok()?;
        if head.branch_id != self.base.manifest.branch_id {
            return None;
        }
        let snapshot = self.graph.snapshot_of(head.clone()).await.ok()?;
        let storage = self.graph.storage();
        // The rows of a table this commit only inserts into are known
        // before it resolves: their data files are written meanwhile.
        // (Loops, not iterator closures: a closure's borrow inside this
        // future would make it not `Send` for every lifetime.)
        let mut inserts = Vec::new();
        for (type_name, changes) in &self.tables {
            let Some(pinned) = head.tables.get(type_name) else {
                continue;
            };
            let mut rows: Vec<&Record> = Vec::new();
            for s in changes.rows.values() {
                match &s.change {
                    Pending::Insert(r) => rows.push(r),
                    _ => {
                        rows.clear();
                        break;
                    }
                }
            }
            if owns(pinned, branch_id) && !rows.is_empty() {
                inserts.push(self.stage_inserts(type_name, pinned, rows));
            }
        }
        let appended = futures::future::join_all(inserts);
        let resolved = async {
            let plan = self.resolve(&snapshot).await?;
            self.check_cardinality(&snapshot, &plan).await?;
            Ok::<_, Error>(plan)
        };
        let (resolved, appended) = futures::join!(resolved, appended);
        let mut inserted: BTreeMap<&str, (Vec<&str>, StagedWrite)> = BTreeMap::new();
        let mut failed = resolved.is_err();
        for (type_name, ids, s) in appended {
            match s {
                Ok(s) => {
                    inserted.insert(type_name, (ids, s));
                }
                Err(_) => failed = true,
            }
        }
        let mut staged: BTreeMap<String, StagedWrite> = BTreeMap::new();
        let plan = match resolved {
            Ok(plan) if !failed => plan,
            _ => {
                discard_all(self, inserted.into_values()).await;
                return None;
            }
        };
        // The change record names this commit only, and is read only for a
        // published one: written now, while the tables are staged.
        let record = self.change_record(&plan);
        let recorded = async {
            self.graph
                .write_change_record(&self.commit_id, &record)
                .await
                .is_ok()
        };
        let stage_all = async {
            for (type_name, tp) in &plan.tables {
                if tp.is_noop(false) {
                    continue;
                }
                let pinned = match head.tables.get(type_name) {
                    Some(p)
                        if owns(p, branch_id) && !tp.remove_all && tp.removed.len() <= ID_CHUNK =>
                    {
                        p
                    }
                    _ => {
                        failed = true;
                        break;
                    }
                };
                // Rows written while resolving stand when the plan writes just
                // them (no row of the table is removed, by a cascade say).
                if let Some((ids, s)) = inserted.remove(type_name.as_str()) {
                    let planned: Vec<&str> =
                        tp.new_rows.iter().map(|(r, _)| r.id.as_str()).collect();
                    if tp.removed.is_empty() && planned == ids {
                        staged.insert(type_name.clone(), s);
                        continue;
                    }
                    storage.discard_staged(s).await;
                }
                let stage = async {
                    let ds = storage.open_for_write(type_name, pinned).await?;
                    let batches = self.batches(type_name, tp)?;
                    let removed: Vec<&str> = tp.removed.iter().map(String::as_str).collect();
                    storage
                        .stage_delete_and_append(&ds, &removed, batches)
                        .await
                };
                match stage.await {
                    Ok(s) => {
                        staged.insert(type_name.clone(), s);
                    }
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
        };
        let ((), recorded) = futures::join!(stage_all, recorded);
        discard_all(self, inserted.into_values()).await;
        if failed {
            discard_all(self, staged.into_iter()).await;
            return None;
        }
        let reads = self.reads(&plan);
        Some(Early {
            head,
            plan,
            staged,
            reads,
            recorded,
        })
    }

    /// Write the data files of rows inserted into `type_name`, at `pinned`.
    async fn stage_inserts<'r>(
        &self,
        type_name: &'r str,
        pinned: &TableEntry,
        rows: Vec<&'r Record>,
    ) -> (&'r str, Vec<&'r str>, Result<StagedWrite>) {
        let storage = self.graph.storage();
        let staged = async {
            let ds = storage.open_for_write(type_name, pinned).await?;
            let batches = self.batches_of(type_name, &rows)?;
            storage.stage_delete_and_append(&ds, &[], batches).await
        };
        let staged = staged.await;
        let ids = rows.iter().map(|r| r.id.as_str()).collect();
        (type_name, ids, staged)
    }

    /// The rows of each table that resolving `plan` and checking it read.
    fn reads(&self, plan: &Plan<'_>) -> BTreeMap<String, Reads> {
        let catalog = self.catalog();
        let mut reads: BTreeMap<String, Reads> = BTreeMap::new();
        let mut add = |table: &str, ids: Option<Vec<String>>| {
            let entry = reads
                .entry(table.to_string())
                .or_insert_with(|| Reads::Ids(BTreeSet::new()));
            match (entry, ids) {
                (Reads::All, _) => {}
                (entry, None) => *entry = Reads::All,
                (Reads::Ids(have), Some(ids)) => have.extend(ids),
            }
        };
        for (type_name, changes) in &self.tables {
            add(type_name, Some(changes.rows.keys().cloned().collect()));
        }
        for (type_name, tp) in &plan.tables {
            add(type_name, Some(tp.removed.iter().cloned().collect()));
            add(type_name, Some(tp.new_ids.iter().cloned().collect()));
            let unique = match (catalog.node(type_name), catalog.edge(type_name)) {
                (Some(n), _) => !n.unique.is_empty(),
                (None, Some(e)) => !e.unique.is_empty(),
                (None, None) => false,
            };
            if unique && !tp.new_rows.is_empty() {
                add(type_name, None);
            }
            if let Some(edge) = catalog.edge(type_name) {
                // `@card` counts the edges of each source.
                if edge.card.is_some() && !tp.is_noop(false) {
                    add(type_name, None);
                }
                // Endpoints are looked up by id.
                let (mut src, mut dst) = (Vec::new(), Vec::new());
                for (r, _) in &tp.new_rows {
                    if let Some((s, d)) = &r.endpoints {
                        src.push(s.clone());
                        dst.push(d.clone());
                    }
                }
                add(&edge.from, Some(src));
                add(&edge.to, Some(dst));
            }
        }
        // Deleted nodes' edges are found by endpoint.
        for node_type in plan.deleted_nodes.keys() {
            for edge in catalog.edges_touching(node_type) {
                add(&edge.name, None);
            }
        }
        reads
    }

    /// Whether the early work stands at `head`, the head read under the
    /// lock: no commit published since the early head changed a row it read.
    pub(super) async fn early_holds(&self, early: &Early<'_>, head: &Manifest) -> Result<bool> {
        let before = &early.head;
        if head.commit.id == before.commit.id {
            return Ok(true);
        }
        if head.branch_id != before.branch_id
            || head.seq <= before.seq
            || head.seq - before.seq > MAX_COMMITS_CHECKED
        {
            return Ok(false);
        }
        // A table replaced rather than written (another path or Lance
        // branch) is not compared row by row.
        for table in early.reads.keys() {
            let (a, b) = (before.tables.get(table), head.tables.get(table));
            let same_table = match (a, b) {
                (Some(a), Some(b)) => a.path == b.path && a.lance_branch == b.lance_branch,
                (None, None) => true,
                _ => false,
            };
            if !same_table {
                return Ok(false);
            }
        }
        let meta = self.graph.meta();
        for seq in before.seq + 1..=head.seq {
            let Some(m) = meta.read_manifest(&head.branch_id, seq).await? else {
                return Ok(false);
            };
            // A commit without a readable record may have changed anything.
            let Some(record) = self.graph.change_record(&m.commit.id).await? else {
                return Ok(false);
            };
            for (table, change) in &record.tables {
                let overlaps = match (early.reads.get(table), change) {
                    (None, _) => false,
                    (Some(Reads::All), _) | (Some(_), TableChange::All) => true,
                    (Some(Reads::Ids(mine)), TableChange::Ids(theirs)) => !mine.is_disjoint(theirs),
                };
                if overlaps {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

impl Early<'_> {
    /// Remove the staged files; the commit redoes its work under the lock.
    pub(super) async fn discard(self, txn: &WriteTxn) {
        discard_all(txn, self.staged.into_iter()).await;
    }

    /// Remove everything written early: the commit is given up.
    pub(super) async fn abandon(self, txn: &WriteTxn) {
        if self.recorded {
            let _ = txn.graph.remove_change_record(&txn.commit_id).await;
        }
        self.discard(txn).await;
    }
}

async fn discard_all<K>(txn: &WriteTxn, staged: impl Iterator<Item = (K, StagedWrite)>) {
    let storage = txn.graph.storage();
    for (_, s) in staged {
        storage.discard_staged(s).await;
    }
}
