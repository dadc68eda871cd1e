//! The store every write of a local graph goes through: `object_store`'s
//! local file system with fsync (a staged file is synced before it is
//! renamed or linked into place, then its directory), except for Lance's
//! version hint and its small transaction files ([`advisory`]).
//!
//! Lance rewrites `_versions/latest_version_hint.json` after every commit
//! of a table. It is a hint: a reader checks the version it names and
//! probes upward from it, and falls back to listing the manifests when the
//! hint is missing, torn or names a version that does not exist
//! (`lance_table::io::commit::read_version_hint_and_probe`). Losing it in a
//! crash costs a longer probe, so it is written without the two fsyncs
//! (the file and `_versions/`) that would otherwise follow every Lance
//! commit: about 0.4 ms of each on this machine.
//!
//! Lance's probe assumes the versions above the hint are contiguous. A
//! cleanup may remove an unpublished version below a newer unpublished one
//! (a recovery's restore); if a crash then also left the hint older than
//! that gap, a Lance commit may be written into the gap. Nothing reads it
//! wrongly: readers read the versions the graph's manifests pin, and the
//! next commit of the table finds the newer version (`Storage::latest_version`
//! probes the next one) and rolls it back like any unpublished version.

use std::fmt;
use std::sync::Arc;

use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

/// Lance's version hint file, in every table's `_versions/`.
pub(crate) const VERSION_HINT: &str = "latest_version_hint.json";

/// Lance's transaction files (`_transactions/*.txn`) up to this size are
/// advisory. Lance writes each commit's transaction twice: into this file,
/// and inline in the manifest that commits it when it encodes to at most
/// 20 MiB (`MAX_INLINE_TRANSACTION_BYTES` in `lance::io::commit`). Readers
/// of a transaction (conflict resolution, `Dataset::read_transaction`) read
/// the inline copy first; the file, named by the manifest, is read only
/// without one. A file well under the limit has an inline twin, so its loss
/// in a crash loses nothing; a larger one is synced like any file.
pub(crate) const ADVISORY_TRANSACTION_BYTES: usize = 1 << 20;

/// Whether an object of `size` bytes (`None`: unknown) is advisory: its
/// loss or a torn copy after a crash is harmless, so it is written without
/// fsync.
pub(crate) fn advisory(location: &Path, size: Option<usize>) -> bool {
    let parent = location.parts().rev().nth(1);
    let in_dir = |dir: &str| parent.as_ref().is_some_and(|p| p.as_ref() == dir);
    let version_hint = location.filename() == Some(VERSION_HINT) && in_dir("_versions");
    let transaction = location.extension() == Some("txn")
        && in_dir("_transactions")
        && size.is_some_and(|s| s <= ADVISORY_TRANSACTION_BYTES);
    version_hint || transaction
}

/// The local file system, durable for every write but advisory ones.
#[derive(Debug)]
pub(crate) struct DurableLocal {
    synced: LocalFileSystem,
    unsynced: LocalFileSystem,
}

impl DurableLocal {
    pub(crate) fn new() -> DurableLocal {
        DurableLocal {
            synced: LocalFileSystem::new().with_fsync(true),
            unsynced: LocalFileSystem::new(),
        }
    }

    fn for_write(&self, location: &Path, size: Option<usize>) -> &LocalFileSystem {
        match advisory(location, size) {
            true => &self.unsynced,
            false => &self.synced,
        }
    }
}

impl fmt::Display for DurableLocal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DurableLocal({})", self.synced)
    }
}

/// The store [`super::DURABLE_LOCAL`] gives Lance.
pub(crate) fn durable_local() -> Arc<dyn ObjectStore> {
    Arc::new(DurableLocal::new())
}

#[async_trait::async_trait]
impl ObjectStore for DurableLocal {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.for_write(location, Some(payload.content_length()))
            .put_opts(location, payload, opts)
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.for_write(location, None)
            .put_multipart_opts(location, opts)
            .await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.synced.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.synced.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.synced.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.synced.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.synced.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.synced.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.for_write(to, None).copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.for_write(to, None)
            .rename_opts(from, to, options)
            .await
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;

    use super::*;

    #[test]
    fn only_version_hints_and_small_transaction_files_are_advisory() {
        let small = Some(4096);
        let large = Some(ADVISORY_TRANSACTION_BYTES + 1);
        for (path, size, expected) in [
            (
                "g/nodes/Person/_versions/latest_version_hint.json",
                small,
                true,
            ),
            (
                "g/nodes/Person/tree/b1/_versions/latest_version_hint.json",
                None,
                true,
            ),
            (
                "g/nodes/Person/_versions/18446744073709551614.manifest",
                small,
                false,
            ),
            ("g/nodes/Person/data/latest_version_hint.json", small, false),
            (
                "g/_graph/branches/main/00000000000000000001.json",
                small,
                false,
            ),
            ("g/nodes/Person/_transactions/1-x.txn", small, true),
            ("g/nodes/Person/tree/b1/_transactions/1-x.txn", small, true),
            ("g/nodes/Person/_transactions/1-x.txn", large, false),
            ("g/nodes/Person/_transactions/1-x.txn", None, false),
            ("g/nodes/Person/data/1-x.txn", small, false),
            ("latest_version_hint.json", small, false),
        ] {
            assert_eq!(
                advisory(&Path::from(path), size),
                expected,
                "{path} {size:?}"
            );
        }
    }

    /// Writes of both kinds land whole, are read back, replaced and
    /// removed like any object of the local file system.
    #[tokio::test]
    async fn writes_land_through_either_store() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = DurableLocal::new();
        for rel in [
            "t/_versions/latest_version_hint.json",
            "t/_versions/1.manifest",
        ] {
            let location = Path::from_absolute_path(dir.path().join(rel)).expect("a path");
            assert_eq!(
                advisory(&location, Some(3)),
                rel.ends_with(".json"),
                "{rel}"
            );
            store.put(&location, "one".into()).await.expect("put");
            store.put(&location, "two".into()).await.expect("replace");
            let got = store
                .get(&location)
                .await
                .expect("get")
                .bytes()
                .await
                .expect("bytes");
            assert_eq!(&got[..], b"two", "{rel}");
            let on_disk = std::fs::read(dir.path().join(rel)).expect("the file");
            assert_eq!(on_disk, b"two", "{rel}");
            store.delete(&location).await.expect("delete");
            assert!(!dir.path().join(rel).exists(), "{rel}");
        }
    }
}
