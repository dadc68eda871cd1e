//! The graph's own metadata under `<root>/_graph/`: branch refs, the chain of
//! manifests per branch, and commit pointers. See docs/dev/storage.md.
//!
//! A manifest is the whole published state of one branch after one commit:
//! the commit record and the `(path, lance_branch, version)` pin of every
//! table. Manifests of a branch are numbered 0, 1, 2, ... and each is created
//! with put-if-absent, so publishing seq `n+1` is the compare-and-swap that
//! makes a commit visible, atomically, to every reader in every process.

use std::collections::BTreeMap;

use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::{Parsed, Storage, TableEntry};

pub const FORMAT_VERSION: u32 = 1;
pub const MAIN: &str = "main";

/// `graph.json`: marks a complete graph (written last by `create`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GraphMeta {
    pub format_version: u32,
    pub created_at_us: i64,
}

/// One commit of the graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    /// A ULID.
    pub id: String,
    /// Parent commit ids: none for the first commit, one for an ordinary
    /// commit, two for a merge (first parent = the branch's previous head).
    pub parents: Vec<String>,
    /// The branch the commit was made on.
    pub branch: String,
    pub actor: String,
    pub message: String,
    /// Microseconds since the Unix epoch.
    pub committed_at_us: i64,
}

/// The published state of one branch after one commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub branch_id: String,
    pub seq: u64,
    pub commit: CommitInfo,
    /// Type name -> table pin.
    pub tables: BTreeMap<String, TableEntry>,
}

/// A branch ref: the name users see and the id its storage is keyed by, so a
/// deleted and re-created name never sees the old branch's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BranchRef {
    pub name: String,
    pub id: String,
    pub created_at_us: i64,
    /// The commit the branch started from (none for `main`).
    pub from_commit: Option<String>,
}

/// Where a commit was published: `branches/<branch_id>/<seq>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CommitPointer {
    branch_id: String,
    seq: u64,
}

pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Branch names: `/`-separated segments of ASCII letters, digits, `.`, `-`
/// and `_`; the same rules as Lance and git refs, so names can appear in
/// paths and in `IMPORT FOREIGN SCHEMA`.
pub fn check_branch_name(name: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(Error::InvalidBranchName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 200 {
        return bad("it is longer than 200 characters");
    }
    if is_commit_id(name) {
        // Functions that take "a branch or a commit id" must never guess.
        return bad("it has the form of a commit id (26 characters of Crockford base 32)");
    }
    for seg in name.split('/') {
        if seg.is_empty() {
            return bad("it has an empty path segment");
        }
        if seg.starts_with('.') || seg.ends_with(".lock") || seg.contains("..") {
            return bad("segments may not start with '.', contain '..' or end in '.lock'");
        }
        if !seg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return bad("use only ASCII letters, digits, '.', '-', '_' and '/'");
        }
    }
    Ok(())
}

/// Commit ids are ULIDs: 26 characters of Crockford base 32.
pub fn is_commit_id(s: &str) -> bool {
    s.len() == 26
        && s.chars().all(|c| {
            c.is_ascii_digit() || (c.is_ascii_uppercase() && !matches!(c, 'I' | 'L' | 'O' | 'U'))
        })
}

/// How many unreadable newest manifests a read skips before giving up.
const MAX_TORN_MANIFESTS: u64 = 8;

fn ref_file(name: &str) -> String {
    // '~' cannot occur in a valid name, so the encoding is reversible.
    format!("{}.json", name.replace('/', "~"))
}

fn manifest_file(seq: u64) -> String {
    format!("{seq:020}.json")
}

pub(crate) struct Meta<'a> {
    pub storage: &'a Storage,
}

impl Meta<'_> {
    fn refs_dir(&self) -> Path {
        self.storage.meta_path("refs")
    }

    fn manifest_path(&self, branch_id: &str, seq: u64) -> Path {
        self.storage
            .meta_path(&format!("branches/{branch_id}/{}", manifest_file(seq)))
    }

    fn head_hint_path(&self, branch_id: &str) -> Path {
        self.storage
            .meta_path(&format!("branches/{branch_id}/HEAD"))
    }

    fn commit_path(&self, id: &str) -> Path {
        self.storage.meta_path(&format!("commits/{id}.json"))
    }

    pub async fn read_graph_meta(&self) -> Result<Option<GraphMeta>> {
        self.storage
            .get_parsed::<GraphMeta>(&self.storage.meta_path("graph.json"))
            .await?
            .cloned()
    }

    pub async fn write_graph_meta(&self, meta: &GraphMeta) -> Result<bool> {
        self.storage
            .put_if_absent(
                &self.storage.meta_path("graph.json"),
                serde_json::to_vec_pretty(meta)?,
            )
            .await
    }

    pub async fn read_schema(&self) -> Result<Option<String>> {
        Ok(self
            .storage
            .get(&self.storage.meta_path("schema.pg"))
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    pub async fn write_schema(&self, src: &str) -> Result<()> {
        self.storage
            .put(&self.storage.meta_path("schema.pg"), src.as_bytes())
            .await
    }

    pub async fn read_ref(&self, name: &str) -> Result<Option<BranchRef>> {
        let path = self.refs_dir().join(ref_file(name));
        self.storage.get_parsed::<BranchRef>(&path).await?.cloned()
    }

    /// Create a ref; `false` when the name is taken.
    pub async fn create_ref(&self, r: &BranchRef) -> Result<bool> {
        let path = self.refs_dir().join(ref_file(&r.name));
        self.storage
            .put_if_absent(&path, serde_json::to_vec_pretty(r)?)
            .await
    }

    /// Delete a ref. Its branch id is first recorded as deleted
    /// (`deleted/<id>.json`), so cleanup can tell a deleted branch's
    /// manifests and table forks from those of a branch being created
    /// (which has no ref yet either).
    pub async fn delete_ref(&self, name: &str) -> Result<()> {
        if let Some(r) = self.read_ref(name).await? {
            let tombstone = serde_json::json!({"name": r.name, "deleted_at_us": now_us()});
            self.storage
                .put(&self.deleted_path(&r.id), &serde_json::to_vec(&tombstone)?)
                .await?;
        }
        self.storage
            .delete_object(&self.refs_dir().join(ref_file(name)))
            .await
    }

    /// Whether the branch of this id was deleted (see [`Self::delete_ref`]).
    pub async fn is_deleted(&self, branch_id: &str) -> Result<bool> {
        self.storage.exists(&self.deleted_path(branch_id)).await
    }

    fn deleted_path(&self, branch_id: &str) -> Path {
        self.storage.meta_path(&format!("deleted/{branch_id}.json"))
    }

    /// The ids of every branch that has manifests: live, deleted, or being
    /// created.
    pub async fn branch_ids(&self) -> Result<Vec<String>> {
        self.storage
            .list_dirs(&self.storage.meta_path("branches"))
            .await
    }

    pub async fn list_refs(&self) -> Result<Vec<BranchRef>> {
        let mut out = Vec::new();
        for path in self.storage.list_objects(&self.refs_dir()).await? {
            // A ref deleted between the listing and the read is skipped.
            if let Some(bytes) = self.storage.get(&path).await? {
                out.push(serde_json::from_slice::<BranchRef>(&bytes)?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub async fn read_manifest(&self, branch_id: &str, seq: u64) -> Result<Option<Manifest>> {
        self.storage
            .get_parsed::<Manifest>(&self.manifest_path(branch_id, seq))
            .await?
            .cloned()
    }

    /// The newest readable manifest of a branch. Manifests are written
    /// durably before they are linked into place, so a torn or empty newest
    /// manifest can only come from outside (a file system that lost data,
    /// a copy taken mid-write): it is skipped, and readers see the commit
    /// before it. [`repair_head`](Self::repair_head) removes it.
    pub async fn head(&self, branch_id: &str) -> Result<Manifest> {
        Ok(self.readable_head(branch_id).await?.0)
    }

    /// The newest readable manifest and the seqs of unreadable ones after it.
    async fn readable_head(&self, branch_id: &str) -> Result<(Manifest, Vec<u64>)> {
        let last = self.last_seq(branch_id).await?;
        let mut torn = Vec::new();
        for seq in (last.saturating_sub(MAX_TORN_MANIFESTS)..=last).rev() {
            // I/O errors propagate; only content that does not parse as this
            // manifest counts as torn.
            match self
                .storage
                .get_parsed::<Manifest>(&self.manifest_path(branch_id, seq))
                .await?
            {
                Parsed::Absent => continue,
                Parsed::Value(m) if m.seq == seq && m.branch_id == branch_id => {
                    self.storage.saw_head(branch_id, seq);
                    return Ok(((*m).clone(), torn));
                }
                _ => torn.push(seq),
            }
        }
        Err(Error::Storage(format!(
            "branch {branch_id} has no readable manifest among its newest {}",
            MAX_TORN_MANIFESTS + 1
        )))
    }

    /// Under the branch lock: remove unreadable manifests after the newest
    /// readable one, so the next commit can publish in their place; returns
    /// the readable head.
    pub async fn repair_head(&self, branch_id: &str) -> Result<Manifest> {
        let (head, torn) = self.readable_head(branch_id).await?;
        for seq in torn {
            self.storage
                .delete_object(&self.manifest_path(branch_id, seq))
                .await?;
        }
        Ok(head)
    }

    /// The seq of the newest manifest file of a branch. The HEAD hint is
    /// only a starting point (it is written after the publish and may lag);
    /// the manifests themselves are the truth, so we probe forward from it.
    ///
    /// The head this handle read last is a better starting point than the
    /// hint (which costs a read); it is used when its manifest is still there.
    async fn last_seq(&self, branch_id: &str) -> Result<u64> {
        let mut seq = match self.storage.seen_head(branch_id) {
            Some(seen)
                if self
                    .storage
                    .exists(&self.manifest_path(branch_id, seen))
                    .await? =>
            {
                seen
            }
            _ => {
                let hint = match self.storage.get(&self.head_hint_path(branch_id)).await? {
                    Some(b) => String::from_utf8_lossy(&b)
                        .trim()
                        .parse::<u64>()
                        .unwrap_or(0),
                    None => 0,
                };
                match self
                    .storage
                    .exists(&self.manifest_path(branch_id, hint))
                    .await?
                {
                    true => hint,
                    false => 0,
                }
            }
        };
        // Gallop forward, then binary-search the last existing seq.
        let mut step = 1u64;
        while self
            .storage
            .exists(&self.manifest_path(branch_id, seq + step))
            .await?
        {
            seq += step;
            step *= 2;
        }
        let (mut lo, mut hi) = (seq, seq + step);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self
                .storage
                .exists(&self.manifest_path(branch_id, mid))
                .await?
            {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Record where a commit is about to be published. Written before the
    /// publish, so every published commit has a pointer; a pointer whose
    /// manifest does not carry the commit is from a failed attempt.
    pub async fn write_commit_pointer(
        &self,
        commit_id: &str,
        branch_id: &str,
        seq: u64,
    ) -> Result<()> {
        let p = CommitPointer {
            branch_id: branch_id.to_string(),
            seq,
        };
        self.storage
            .put(&self.commit_path(commit_id), &serde_json::to_vec(&p)?)
            .await
    }

    /// Publish a manifest: `false` when another writer took that seq first.
    pub async fn publish(&self, m: &Manifest) -> Result<bool> {
        let bytes = serde_json::to_vec_pretty(m)?;
        if !self
            .storage
            .put_if_absent(&self.manifest_path(&m.branch_id, m.seq), bytes)
            .await?
        {
            return Ok(false);
        }
        // The hint is advisory: failing to write it, or losing it in a
        // crash, costs a longer probe only, so it is not synced.
        let _ = self
            .storage
            .put_advisory(
                &self.head_hint_path(&m.branch_id),
                m.seq.to_string().as_bytes(),
            )
            .await;
        Ok(true)
    }

    /// The manifest that a commit published.
    pub async fn manifest_of_commit(&self, commit_id: &str) -> Result<Manifest> {
        let not_found = || Error::CommitNotFound {
            id: commit_id.to_string(),
        };
        if commit_id.is_empty() || !commit_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(not_found());
        }
        let ptr = self
            .storage
            .get_parsed::<CommitPointer>(&self.commit_path(commit_id))
            .await?
            .cloned()?
            .ok_or_else(not_found)?;
        match self.read_manifest(&ptr.branch_id, ptr.seq).await? {
            Some(m) if m.commit.id == commit_id => Ok(m),
            _ => Err(not_found()),
        }
    }
}
