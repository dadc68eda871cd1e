//! The commit graph: commits by id, ancestry and merge bases.
//!
//! Commits never change once published, so the handle caches them; a walk
//! reads each commit's pointer and manifest once per handle. A parent made
//! unreadable by cleanup ends that line of history.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::error::{Error, Result};
use crate::graph::{Graph, ReadRef};
use crate::manifest::CommitInfo;

impl Graph {
    /// A published commit by id.
    pub(crate) async fn commit_info(&self, id: &str) -> Result<CommitInfo> {
        if let Some(c) = self.commit_cache().get(id) {
            return Ok(c.clone());
        }
        let commit = self.meta().manifest_of_commit(id).await?.commit;
        self.commit_cache().insert(id.to_string(), commit.clone());
        Ok(commit)
    }

    fn commit_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, CommitInfo>> {
        // A poisoned cache only means a panic elsewhere; its entries are still valid.
        self.inner
            .commits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every commit reachable from `id`, itself included.
    pub(crate) async fn ancestors(&self, id: &str) -> Result<HashMap<String, CommitInfo>> {
        let mut out = HashMap::new();
        let mut queue = VecDeque::from([id.to_string()]);
        while let Some(next) = queue.pop_front() {
            if out.contains_key(&next) {
                continue;
            }
            let c = match self.commit_info(&next).await {
                Ok(c) => c,
                // Reclaimed history: the walk stops there (the start must exist).
                Err(Error::CommitNotFound { .. }) if next != id => continue,
                Err(e) => return Err(e),
            };
            queue.extend(c.parents.iter().cloned());
            out.insert(next, c);
        }
        Ok(out)
    }

    /// The best common ancestor of two commits: a common ancestor that is
    /// not an ancestor of another common ancestor. When there are several
    /// (criss-cross histories), the newest by commit time wins, ties broken
    /// by the greater id. `None` when the histories share no commit.
    pub(crate) async fn merge_base_of(&self, a: &str, b: &str) -> Result<Option<CommitInfo>> {
        let of_a = self.ancestors(a).await?;
        if of_a.contains_key(b) {
            return Ok(of_a.get(b).cloned());
        }
        let of_b = self.ancestors(b).await?;
        if of_b.contains_key(a) {
            return Ok(of_b.get(a).cloned());
        }
        let common: HashMap<&String, &CommitInfo> = of_a
            .iter()
            .filter(|(id, _)| of_b.contains_key(*id))
            .collect();
        // Everything below a common commit is dominated by it.
        let mut dominated: HashSet<&str> = HashSet::new();
        let mut queue: VecDeque<&str> = common
            .values()
            .flat_map(|c| c.parents.iter().map(String::as_str))
            .collect();
        while let Some(id) = queue.pop_front() {
            if !dominated.insert(id) {
                continue;
            }
            if let Some(c) = common.get(&id.to_string()) {
                queue.extend(c.parents.iter().map(String::as_str));
            }
        }
        Ok(common
            .into_iter()
            .filter(|(id, _)| !dominated.contains(id.as_str()))
            .map(|(_, c)| c)
            .max_by(|x, y| (x.committed_at_us, &x.id).cmp(&(y.committed_at_us, &y.id)))
            .cloned())
    }

    /// The merge base of two refs (branch heads or commits): the commit id
    /// of their best common ancestor, `None` if they share no history.
    pub async fn merge_base(&self, a: &ReadRef, b: &ReadRef) -> Result<Option<CommitInfo>> {
        let a = self.snapshot(a).await?.commit().id.clone();
        let b = self.snapshot(b).await?.commit().id.clone();
        self.merge_base_of(&a, &b).await
    }
}
