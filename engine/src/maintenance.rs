//! Optimize: compaction and indexes, as one maintenance commit.
//!
//! [`Graph::optimize_begin`] takes the branch write lock (writers of the
//! branch wait; readers never do) and returns an [`Optimizer`]; the caller
//! optimizes the tables one at a time ([`Optimizer::optimize_table`], so a
//! frontend can report progress between them) and [`Optimizer::finish`]
//! publishes the new table versions as one commit with the message
//! `optimize` and an empty change record: the rows are the same, so diffs
//! and merges see no change, and a writer that began before it resolves
//! against it without a conflict (its rows compare equal).
//!
//! Per table: roll back what an interrupted commit left (recorded in the
//! recovery log), fork the table if the branch still reads its parent's
//! lineage, compact (Lance merges small fragments and drops deleted rows),
//! then build the indexes the schema asks for that are missing and fold new
//! fragments into those that are stale.

use std::collections::BTreeMap;

use crate::changes::ChangeRecord;
use crate::error::{Error, Result};
use crate::graph::{Graph, owns};
use crate::manifest::{CommitInfo, FORMAT_VERSION, Manifest, now_us};
use crate::schema::{Catalog, PropType, ScalarType};
use crate::storage::{IndexKind, TableEntry, VECTOR_INDEX_MIN_ROWS};

/// The commit message of an optimize.
pub const OPTIMIZE_MESSAGE: &str = "optimize";

/// What optimize did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableOptimize {
    pub type_name: String,
    pub fragments_before: usize,
    pub fragments_after: usize,
    pub rows: u64,
    /// The table's indexes afterwards, as `column (kind)`; a vector index
    /// the table is too small to train is listed with the reason instead.
    pub indexes: Vec<String>,
    /// Whether optimize wrote a new version of the table.
    pub changed: bool,
}

/// The indexes the schema asks for on a table, by column: `id` on every
/// table, `src` and `dst` on edges, and every `@key`, `@unique` and
/// `@index` property: BITMAP for booleans and enums (few distinct values),
/// a vector index for `Vector(n)`, BTREE otherwise. Lists and blobs get
/// none (Lance has no scalar index that answers our filters on them).
pub fn wanted_indexes(catalog: &Catalog, type_name: &str) -> Vec<(String, IndexKind)> {
    let mut columns: Vec<String> = vec!["id".to_string()];
    let groups: Vec<&Vec<String>> = if let Some(n) = catalog.node(type_name) {
        n.key.iter().chain(&n.unique).chain(&n.indexes).collect()
    } else if let Some(e) = catalog.edge(type_name) {
        columns.push("src".into());
        columns.push("dst".into());
        e.unique.iter().chain(&e.indexes).collect()
    } else {
        Vec::new()
    };
    for c in groups.into_iter().flatten() {
        if !columns.contains(c) {
            columns.push(c.clone());
        }
    }
    let props = catalog.properties(type_name).unwrap_or(&[]);
    columns
        .into_iter()
        .filter_map(|c| {
            let kind = match props.iter().find(|p| p.name == c).map(|p| &p.ty) {
                None => IndexKind::BTree, // id, src, dst
                Some(PropType::Scalar(ScalarType::Bool) | PropType::Enum(_)) => IndexKind::Bitmap,
                Some(PropType::Vector(_)) => IndexKind::IvfFlat,
                Some(PropType::List(_) | PropType::Scalar(ScalarType::Blob)) => return None,
                Some(PropType::Scalar(_)) => IndexKind::BTree,
            };
            Some((c, kind))
        })
        .collect()
}

/// An optimize in progress on one branch; holds the branch write lock.
#[must_use = "an optimize publishes nothing unless finished"]
pub struct Optimizer {
    graph: Graph,
    branch: String,
    actor: String,
    head: Manifest,
    tables: BTreeMap<String, TableEntry>,
    /// Tables written so far, at the version to roll back to on failure.
    written: Vec<(String, TableEntry)>,
    _lock: crate::lock::BranchLock,
}

impl Graph {
    /// Start optimizing `branch`: waits for its write lock like a commit.
    pub async fn optimize_begin(&self, branch: &str, actor: &str) -> Result<Optimizer> {
        let r = self.branch_ref(branch).await?;
        let lock = self.lock_branch(&r.id, branch).await?;
        let head = self.meta().repair_head(&r.id).await?;
        Ok(Optimizer {
            graph: self.clone(),
            branch: branch.to_string(),
            actor: actor.to_string(),
            tables: head.tables.clone(),
            head,
            written: Vec::new(),
            _lock: lock,
        })
    }

    /// Optimize every table of `branch` as one commit.
    pub async fn optimize(
        &self,
        branch: &str,
        actor: &str,
    ) -> Result<(Option<CommitInfo>, Vec<TableOptimize>)> {
        let mut o = self.optimize_begin(branch, actor).await?;
        let mut out = Vec::new();
        for type_name in o.type_names() {
            match o.optimize_table(&type_name).await {
                Ok(t) => out.push(t),
                Err(e) => {
                    o.abandon().await;
                    return Err(e);
                }
            }
        }
        Ok((o.finish().await?, out))
    }
}

impl Optimizer {
    /// The types of the branch, in name order.
    pub fn type_names(&self) -> Vec<String> {
        self.tables.keys().cloned().collect()
    }

    /// Compact one table and bring its indexes up to date.
    pub async fn optimize_table(&mut self, type_name: &str) -> Result<TableOptimize> {
        let storage = self.graph.storage();
        let branch_id = self.head.branch_id.clone();
        let pinned = self
            .tables
            .get(type_name)
            .cloned()
            .ok_or_else(|| crate::value::unknown_type(self.graph.catalog(), type_name))?;
        let before = storage.open(type_name, &pinned).await?;
        let fragments_before = before.manifest().fragments.len();
        let rows = storage.count(&before, None).await?;
        let wanted = wanted_indexes(self.graph.catalog(), type_name);
        let have = storage.indexes(&before).await?;
        let compactable = fragments_before > 1
            || before
                .manifest()
                .fragments
                .iter()
                .any(|f| f.deletion_file.is_some());
        let index_work =
            wanted.iter().any(
                |(column, kind)| match have.iter().find(|i| &i.column == column) {
                    None => *kind != IndexKind::IvfFlat || rows >= VECTOR_INDEX_MIN_ROWS,
                    Some(i) => i.kind != *kind || i.uncovered_rows > 0,
                },
            );
        let mut changed = false;
        let mut ds = before;
        if compactable || index_work {
            let mut entry = if owns(&pinned, &branch_id) {
                let (version, _) = self
                    .graph
                    .recover_table(type_name, &pinned, &branch_id, &self.branch, &self.actor)
                    .await?;
                TableEntry {
                    version,
                    ..pinned.clone()
                }
            } else {
                storage.fork(type_name, &pinned, &branch_id).await?
            };
            self.written.push((type_name.to_string(), entry.clone()));
            ds = storage.open_for_write(type_name, &entry).await?;
            changed |= storage.compact(&mut ds).await?;
            let have = storage.indexes(&ds).await?;
            for (column, kind) in &wanted {
                match have.iter().find(|i| &i.column == column) {
                    Some(i) if i.kind == *kind => {
                        if i.uncovered_rows > 0 {
                            storage.refresh_index(&mut ds, &i.name).await?;
                            changed = true;
                        }
                    }
                    _ if *kind == IndexKind::IvfFlat && rows < VECTOR_INDEX_MIN_ROWS => {}
                    _ => {
                        storage.build_index(&mut ds, column, *kind, rows).await?;
                        changed = true;
                    }
                }
            }
            entry.version = ds.version_id();
            if changed {
                self.tables.insert(type_name.to_string(), entry);
            }
        }
        let have = storage.indexes(&ds).await?;
        let mut indexes: Vec<String> = Vec::new();
        for (column, kind) in &wanted {
            match have.iter().find(|i| &i.column == column) {
                Some(i) => indexes.push(format!("{column} ({})", i.kind.as_str())),
                None if *kind == IndexKind::IvfFlat => indexes.push(format!(
                    "{column} (no vector index: needs {VECTOR_INDEX_MIN_ROWS} rows to train, has {rows})"
                )),
                None => {}
            }
        }
        Ok(TableOptimize {
            type_name: type_name.to_string(),
            fragments_before,
            fragments_after: ds.manifest().fragments.len(),
            rows,
            indexes,
            changed,
        })
    }

    /// Publish the optimized tables as one commit; `None` when no table
    /// changed (nothing is published).
    pub async fn finish(self) -> Result<Option<CommitInfo>> {
        if self.tables == self.head.tables {
            // Forks or rollbacks without a change are harmless: the next
            // write of the branch writes on them.
            return Ok(None);
        }
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            branch_id: self.head.branch_id.clone(),
            seq: self.head.seq + 1,
            commit: CommitInfo {
                id: ulid::Ulid::new().to_string(),
                parents: vec![self.head.commit.id.clone()],
                branch: self.branch.clone(),
                actor: self.actor.clone(),
                message: OPTIMIZE_MESSAGE.to_string(),
                committed_at_us: now_us(),
            },
            tables: self.tables.clone(),
        };
        let published = async {
            crate::commit::write_commit_records(
                &self.graph,
                &manifest.commit.id,
                &manifest.branch_id,
                manifest.seq,
                &ChangeRecord::default(),
            )
            .await?;
            if self.graph.meta().publish(&manifest).await? {
                Ok(())
            } else {
                Err(Error::Conflict {
                    branch: self.branch.clone(),
                    message: "another writer published first without holding the branch lock"
                        .into(),
                })
            }
        }
        .await;
        match published {
            Ok(()) => Ok(Some(manifest.commit)),
            Err(e) => {
                self.abandon().await;
                Err(e)
            }
        }
    }

    /// Publish nothing, and restore the tables written so far.
    pub async fn abandon(self) {
        for (type_name, entry) in &self.written {
            let _ = self
                .graph
                .roll_back_unpublished(type_name, entry, &self.head.branch_id)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::commit::tuple_filter;
    use crate::graph::in_filter;
    use crate::value::Value;
    use crate::{Graph, LoadMode, ReadRef};

    const SCHEMA: &str = "node Item {\n  sku: String @key\n  qty: I32 @unique\n  \
        code: String?\n  tag: String?\n  @unique(code, tag)\n}\n\
        edge Rel: Item -> Item {}\n";

    /// The filters commits and merges look rows up with (duplicate ids,
    /// edge endpoints and the edges of deleted nodes, conflict detection,
    /// `@unique` tuples, including on an `I32` column whose literal the
    /// filter spells as a plain integer) are answered by the indexes
    /// optimize builds, and still find rows written after it.
    #[tokio::test]
    async fn commit_time_lookups_go_through_the_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let uri = dir.path().join("g").to_string_lossy().into_owned();
        let g = Graph::create(&uri, SCHEMA, "t").await.unwrap();
        let item = |i: usize| {
            format!(
                r#"{{"type": "Item", "data": {{"sku": "s{i}", "qty": {i}, "code": "c{}", "tag": "t{i}"}}}}"#,
                i % 7
            )
        };
        let rel = |i: usize| {
            format!(
                r#"{{"edge": "Rel", "from": "s{i}", "to": "s{}", "data": {{}}}}"#,
                i + 1
            )
        };
        let rows: Vec<String> = (0..300).map(item).chain((0..299).map(rel)).collect();
        g.load("main", &rows.join("\n"), LoadMode::Append, "t", "")
            .await
            .unwrap();
        g.optimize("main", "t").await.unwrap();
        // Written after the optimize: not covered by any index yet.
        g.load(
            "main",
            &[item(300), rel(299)].join("\n"),
            LoadMode::Append,
            "t",
            "",
        )
        .await
        .unwrap();

        let snap = g.snapshot(&ReadRef::main()).await.unwrap();
        let props = g.catalog().properties("Item").unwrap();
        let s = |v: &str| Value::String(v.to_string());
        let cases = [
            ("Item", in_filter("id", ["s5", "s300"].into_iter()), 2),
            ("Rel", in_filter("src", ["s5", "s299"].into_iter()), 2),
            (
                "Rel",
                format!(
                    "{} OR {}",
                    in_filter("src", ["s7"].into_iter()),
                    in_filter("dst", ["s7"].into_iter())
                ),
                2,
            ),
            (
                "Item",
                tuple_filter(props, &["qty".into()], &[Value::Int(300)]).unwrap(),
                1,
            ),
            (
                "Item",
                [
                    tuple_filter(props, &["code".into(), "tag".into()], &[s("c3"), s("t3")]),
                    tuple_filter(props, &["code".into(), "tag".into()], &[s("c6"), s("t300")]),
                ]
                .into_iter()
                .collect::<crate::Result<Vec<_>>>()
                .unwrap()
                .join(" OR "),
                2,
            ),
        ];
        for (type_name, filter, want) in cases {
            let plan = snap.explain(type_name, &["id"], &filter).await.unwrap();
            assert!(
                plan.contains("ScalarIndexQuery"),
                "{type_name} WHERE {filter} does not use an index:\n{plan}"
            );
            let found = snap.read_where(type_name, Some(&filter)).await.unwrap();
            assert_eq!(found.len(), want, "{type_name} WHERE {filter}");
        }
    }
}
