//! Cleanup: reclaim the table versions nothing needs any more, and say why
//! every other one is kept.
//!
//! A table version (a `(dataset, Lance branch, version)` triple) is kept
//! when, in order of the reason given:
//! 1. the head manifest of a live branch pins it (`head of branch b`);
//! 2. the merge base of a live branch and `main` pins it, so the next merge
//!    of that branch can read its base (`base of unmerged branch b`);
//! 3. a commit newer than `older_than` pins it, on any branch (`commit X
//!    is newer than older_than`);
//! 4. another Lance branch was forked from it (`fork point of branch b`);
//! 5. a Lance tag names it (`tagged t`);
//! 6. it is the latest version of its Lance branch, which Lance never
//!    removes (`latest version of the Lance branch`);
//! 7. its graph branch has no ref and was not recorded as deleted: a branch
//!    being created (`branch <id> is being created`).
//!
//! Every other version is removed with the files only it refers to. The
//! Lance branch of a deleted graph branch that keeps nothing goes whole.
//!
//! Locks: the Lance branches a live graph branch writes are cleaned under
//! that branch's write lock (writers wait, readers never), after rolling
//! back what an interrupted commit left (recorded in the recovery log);
//! with the lock held no writer can have files in flight there, so files
//! no version refers to (left by failed or killed writes) go too. Readers
//! whose snapshot is reclaimed get [`Error::VersionReclaimed`].
//!
//! The graph's own metadata (manifests, commit pointers, change records)
//! is kept: it is small, and it lets the log and `omnigraph_diff` name
//! reclaimed commits.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::graph::{Graph, owns, table_path};
use crate::manifest::{MAIN, Manifest, now_us};
use crate::storage::{LanceFork, file_name};

/// What cleanup does with a table version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupAction {
    Remove,
    Keep,
}

impl CleanupAction {
    pub fn as_str(self) -> &'static str {
        match self {
            CleanupAction::Remove => "remove",
            CleanupAction::Keep => "keep",
        }
    }
}

/// One row of a cleanup's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupRow {
    /// `None` for leftovers of no table (spill directories).
    pub type_name: Option<String>,
    /// The Lance branch (a graph branch id); `None` for Lance's main.
    pub lance_branch: Option<String>,
    /// `None` for files no version refers to.
    pub version: Option<u64>,
    pub action: CleanupAction,
    pub reason: String,
    /// Bytes the removal frees (0 for kept versions): the files that only
    /// this version (of those removed) refers to, and for removed versions
    /// the newest one that referred to a shared file carries it.
    pub bytes: u64,
}

type Key = (String, Option<String>, u64);

/// Why table versions are kept: reason by key, the lowest rank winning.
#[derive(Default)]
struct Keep {
    reasons: HashMap<Key, (u8, String)>,
    /// The newest commit pinning each version, for the removal reason.
    pinned_by: HashMap<Key, (i64, String)>,
}

impl Keep {
    fn pins(m: &Manifest) -> impl Iterator<Item = Key> + '_ {
        m.tables
            .values()
            .map(|t| (t.path.clone(), t.lance_branch.clone(), t.version))
    }

    fn keep(&mut self, m: &Manifest, rank: u8, reason: &str) {
        for k in Self::pins(m) {
            let better = self.reasons.get(&k).is_none_or(|(r, _)| rank < *r);
            if better {
                self.reasons.insert(k, (rank, reason.to_string()));
            }
        }
    }

    /// Every manifest: remember who pins what; keep what is recent.
    fn commit(&mut self, m: &Manifest, cutoff_us: i64) {
        for k in Self::pins(m) {
            let newer = self
                .pinned_by
                .get(&k)
                .is_none_or(|(t, _)| m.commit.committed_at_us > *t);
            if newer {
                self.pinned_by
                    .insert(k, (m.commit.committed_at_us, m.commit.id.clone()));
            }
        }
        if m.commit.committed_at_us >= cutoff_us {
            let reason = format!("commit {} is newer than older_than", m.commit.id);
            self.keep(m, 2, &reason);
        }
    }
}

/// Who writes a Lance branch.
enum Owner {
    Live(String),
    Deleted,
    Unknown,
}

impl Graph {
    /// Remove table versions no branch head, unmerged branch base, recent
    /// commit, fork or tag needs; with `dry_run`, only say what would go.
    /// `actor` is recorded for any recovery it does first.
    pub async fn cleanup(
        &self,
        older_than: Duration,
        dry_run: bool,
        actor: &str,
    ) -> Result<Vec<CleanupRow>> {
        let cutoff =
            now_us().saturating_sub(i64::try_from(older_than.as_micros()).unwrap_or(i64::MAX));
        let refs = self.meta().list_refs().await?;
        let live: HashMap<String, String> = refs
            .iter()
            .map(|r| (r.id.clone(), r.name.clone()))
            .collect();
        let mut keep = Keep::default();
        let mut seen: HashMap<String, u64> = HashMap::new();
        for id in self.meta().branch_ids().await? {
            self.read_manifests(&id, 0, cutoff, &mut keep, &mut seen)
                .await?;
        }
        let main_head = self.meta().head(MAIN).await?;
        for r in &refs {
            let head = self.meta().head(&r.id).await?;
            keep.keep(&head, 0, &format!("head of branch {}", r.name));
            if r.id == MAIN {
                continue;
            }
            if let Some(base) = self
                .merge_base_of(&head.commit.id, &main_head.commit.id)
                .await?
                && base.id != head.commit.id
            {
                let m = self.meta().manifest_of_commit(&base.id).await?;
                keep.keep(&m, 1, &format!("base of unmerged branch {}", r.name));
            }
        }

        // Lance branches by owner: Lance's main is the graph's main.
        let mut owners: BTreeSet<String> = BTreeSet::from([MAIN.to_string()]);
        let mut tables: Vec<(String, String, Vec<LanceFork>)> = Vec::new();
        for type_name in self.catalog().type_names() {
            let Some(kind) = self.catalog().kind_of(type_name) else {
                continue;
            };
            let path = table_path(kind, type_name);
            let forks = self.storage().lance_branches(type_name, &path).await?;
            owners.extend(forks.iter().map(|f| f.name.clone()));
            tables.push((type_name.to_string(), path, forks));
        }

        let mut rows = Vec::new();
        let mut gone: std::collections::HashSet<(String, String)> = Default::default();
        for owner_id in owners {
            let owner = match live.get(&owner_id) {
                Some(name) => Owner::Live(name.clone()),
                None if self.meta().is_deleted(&owner_id).await? => Owner::Deleted,
                None => Owner::Unknown,
            };
            let _lock = match &owner {
                Owner::Live(name) => {
                    let lock = self.lock_branch(&owner_id, name).await?;
                    // Commits published since the first read are new: keep them.
                    let from = seen.get(&owner_id).map_or(0, |s| s + 1);
                    self.read_manifests(&owner_id, from, cutoff, &mut keep, &mut seen)
                        .await?;
                    let head = self.meta().repair_head(&owner_id).await?;
                    keep.keep(&head, 0, &format!("head of branch {name}"));
                    if !dry_run {
                        for (type_name, t) in &head.tables {
                            if owns(t, &owner_id) {
                                self.recover_table(type_name, t, &owner_id, name, actor)
                                    .await?;
                            }
                        }
                    }
                    Some(lock)
                }
                _ => None,
            };
            let lance_branch = (owner_id != MAIN).then(|| owner_id.clone());
            for (type_name, path, forks) in &tables {
                if lance_branch
                    .as_ref()
                    .is_some_and(|b| !forks.iter().any(|f| &f.name == b))
                {
                    continue;
                }
                // Forks of deleted branches this cleanup removes whole (ids
                // sort before `main`, so they went first) pin nothing.
                let fork_points: Vec<(u64, String)> = forks
                    .iter()
                    .filter(|f| !gone.contains(&(path.clone(), f.name.clone())))
                    .filter(|f| f.parent == lance_branch)
                    .map(|f| {
                        let name = live.get(&f.name).cloned();
                        (f.parent_version, name.unwrap_or(f.name.clone()))
                    })
                    .collect();
                let cleaned = self
                    .clean_lance_branch(
                        &keep,
                        &owner,
                        type_name,
                        path,
                        lance_branch.as_deref(),
                        &fork_points,
                        dry_run,
                    )
                    .await?;
                if let Some(b) = &lance_branch
                    && cleaned.iter().all(|r| r.action == CleanupAction::Remove)
                {
                    gone.insert((path.clone(), b.clone()));
                }
                rows.extend(cleaned);
            }
        }
        rows.extend(self.clean_spills(dry_run)?);
        if !dry_run {
            // Handles of removed versions would only fail later.
            self.storage().forget_published();
        }
        Ok(rows)
    }

    /// Read the manifests of branch `id` from `from_seq` to its head.
    async fn read_manifests(
        &self,
        id: &str,
        from_seq: u64,
        cutoff: i64,
        keep: &mut Keep,
        seen: &mut HashMap<String, u64>,
    ) -> Result<()> {
        let head = match self.meta().head(id).await {
            Ok(m) => m,
            // A branch directory with no readable manifest pins nothing.
            Err(Error::Storage(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        for seq in from_seq..=head.seq {
            if let Some(m) = self.meta().read_manifest(id, seq).await? {
                keep.commit(&m, cutoff);
            }
        }
        seen.insert(id.to_string(), head.seq);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn clean_lance_branch(
        &self,
        keep: &Keep,
        owner: &Owner,
        type_name: &str,
        path: &str,
        lance_branch: Option<&str>,
        fork_points: &[(u64, String)],
        dry_run: bool,
    ) -> Result<Vec<CleanupRow>> {
        let storage = self.storage();
        let (versions, tags) = storage.versions(type_name, path, lance_branch).await?;
        let latest = versions.iter().copied().max().unwrap_or(0);
        let row = |version: Option<u64>, action, reason: String, bytes| CleanupRow {
            type_name: Some(type_name.to_string()),
            lance_branch: lance_branch.map(str::to_string),
            version,
            action,
            reason,
            bytes,
        };
        let mut rows = Vec::new();
        let mut remove = Vec::new();
        for &v in &versions {
            let key = (path.to_string(), lance_branch.map(str::to_string), v);
            let kept = if let Some((_, reason)) = keep.reasons.get(&key) {
                Some(reason.clone())
            } else if let Some((_, child)) = fork_points.iter().find(|(fv, _)| *fv == v) {
                Some(format!("fork point of branch {child}"))
            } else if let Some((_, tag)) = tags.iter().find(|(tv, _)| *tv == v) {
                Some(format!("tagged {tag}"))
            } else if let (Owner::Unknown, Some(id)) = (owner, lance_branch) {
                Some(format!(
                    "branch {id} has no ref and was not deleted: it is being created"
                ))
            } else if v == latest && !matches!(owner, Owner::Deleted) {
                Some("latest version of the Lance branch (Lance keeps it)".to_string())
            } else {
                None
            };
            match kept {
                Some(reason) => rows.push(row(Some(v), CleanupAction::Keep, reason, 0)),
                None => remove.push(v),
            }
        }
        let why_removed = |v: u64| -> String {
            let key = (path.to_string(), lance_branch.map(str::to_string), v);
            let why = match keep.pinned_by.get(&key) {
                Some((_, commit)) => format!("commit {commit} is older than older_than"),
                None => "no commit pins it (an intermediate or unpublished version)".to_string(),
            };
            match (owner, lance_branch) {
                (Owner::Deleted, Some(id)) => format!("branch {id} was deleted; {why}"),
                _ => why,
            }
        };

        // A deleted branch's fork that keeps nothing goes whole.
        if let (Owner::Deleted, Some(id)) = (owner, lance_branch)
            && remove.len() == versions.len()
        {
            let bytes = storage.lance_branch_bytes(path, id).await?;
            let deleted = dry_run || storage.delete_lance_branch(type_name, path, id).await?;
            if deleted {
                for &v in &remove {
                    let b = if v == latest { bytes } else { 0 };
                    rows.push(row(Some(v), CleanupAction::Remove, why_removed(v), b));
                }
                return Ok(rows);
            }
            // Still referenced: remove what Lance allows, keep the latest.
            remove.retain(|v| *v != latest);
            rows.push(row(
                Some(latest),
                CleanupAction::Keep,
                "latest version of the Lance branch (Lance keeps it)".to_string(),
                0,
            ));
        }

        // Which removed version each file belonged to: the newest one
        // referring to it.
        let mut owner_of: HashMap<String, u64> = HashMap::new();
        for &v in remove.iter().rev() {
            for k in storage
                .version_file_keys(type_name, path, lance_branch, v)
                .await?
            {
                owner_of.entry(k).or_insert(v);
            }
        }
        // No writer can be mid-write on this Lance branch: its graph branch
        // is locked by us, or deleted.
        let orphans = matches!(owner, Owner::Live(_) | Owner::Deleted);
        let files = storage
            .remove_versions(
                type_name,
                path,
                lance_branch,
                remove.clone(),
                orphans,
                dry_run,
            )
            .await?;
        let mut bytes: HashMap<u64, u64> = HashMap::new();
        let mut orphan_bytes = 0u64;
        for (file, size) in files {
            let name = file_name(&file);
            let stem = name.split('.').next().unwrap_or(name);
            let index_id = file
                .split("_indices/")
                .nth(1)
                .and_then(|rest| rest.split('/').next());
            let v = [Some(name), Some(stem), index_id]
                .into_iter()
                .flatten()
                .find_map(|k| owner_of.get(k));
            match v {
                Some(v) => *bytes.entry(*v).or_default() += size,
                None => orphan_bytes += size,
            }
        }
        for &v in &remove {
            rows.push(row(
                Some(v),
                CleanupAction::Remove,
                why_removed(v),
                bytes.get(&v).copied().unwrap_or(0),
            ));
        }
        if orphan_bytes > 0 {
            rows.push(row(
                None,
                CleanupAction::Remove,
                "files no version refers to (left by failed or killed writes)".to_string(),
                orphan_bytes,
            ));
        }
        Ok(rows)
    }

    /// Spill directories of processes that no longer exist (a backend
    /// killed mid-transaction): `pgsql_tmp_omnigraph_<pid>_<ulid>`.
    fn clean_spills(&self, dry_run: bool) -> Result<Vec<CleanupRow>> {
        let dir = self.spill_dir();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut rows = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("pgsql_tmp_omnigraph_")
                .and_then(|rest| rest.split('_').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let bytes = dir_bytes(&e.path());
            if !dry_run {
                std::fs::remove_dir_all(e.path())?;
            }
            rows.push(CleanupRow {
                type_name: None,
                lance_branch: None,
                version: None,
                action: CleanupAction::Remove,
                reason: format!("spill directory {name} of process {pid}, which has exited"),
                bytes,
            });
        }
        Ok(rows)
    }
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
