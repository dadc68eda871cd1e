//! Reads of a local graph's table files without a thread hand-off where
//! the caller runs its own thread.
//!
//! Lance's local reader opens and reads every file on tokio's blocking
//! pool: each read is a hand-off to another thread and back, two context
//! switches that cost tens of microseconds on a busy machine, and a read of
//! a few rows makes several. Datasets opened to be read instead use Lance's
//! object-store reader over [`LocalReads`]: `object_store`'s local file
//! system for everything but reads. A read (`get_opts`: a range, a whole
//! file or a HEAD) is a `pread` on the calling thread when that thread runs
//! a current-thread runtime (a Postgres backend waiting for its own read,
//! which has nothing else to do meanwhile), and on the blocking pool
//! otherwise, so a runtime's worker threads never stall on the disk and a
//! scan keeps its reads in parallel.
//!
//! Lance's data and index files (`*.lance`) are written once under a fresh
//! name and never changed, so their open files are kept ([`OPEN`]): a
//! read of one is a `pread` alone, without the open, `fstat` and close
//! (about 4 µs here, a dozen times in a read of a few rows of many columns).

use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use lance_io::object_store::providers::local::FileStoreProvider;
use lance_io::object_store::{ObjectStore as LanceStore, ObjectStoreParams, ObjectStoreProvider};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

use super::lru::SharedLru;

/// The local file system, with reads on the calling thread where it may
/// block (see the module documentation).
#[derive(Debug)]
pub(crate) struct LocalReads {
    inner: Arc<LocalFileSystem>,
}

impl LocalReads {
    pub(crate) fn new() -> LocalReads {
        LocalReads {
            inner: Arc::new(LocalFileSystem::new()),
        }
    }
}

impl fmt::Display for LocalReads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalReads({})", self.inner)
    }
}

fn generic(e: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalReads",
        source: Box::new(e),
    }
}

/// The object's metadata as `LocalFileSystem` gives it, so both agree on
/// sizes and entity tags.
fn object_meta(location: &Path, m: &std::fs::Metadata) -> ObjectMeta {
    let modified = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    ObjectMeta {
        location: location.clone(),
        last_modified: chrono::DateTime::from_timestamp(
            modified.as_secs() as i64,
            modified.subsec_nanos(),
        )
        .unwrap_or_default(),
        size: m.len(),
        e_tag: Some(format!(
            "\"{:x}-{:x}-{:x}\"",
            m.ino(),
            modified.as_micros(),
            m.len()
        )),
        version: None,
    }
}

/// An open file and what `fstat` said of it when it was opened.
#[derive(Clone)]
struct Opened {
    file: Arc<File>,
    meta: ObjectMeta,
}

/// Files [`OPEN`] keeps open: few enough not to crowd a Postgres
/// backend's own descriptors (it closes its own and retries when the
/// process runs out).
const OPEN_FILES: usize = 64;

/// Open files of the process's immutable table files, by path, the least
/// recently read closed first. A file removed since (a cleanup) stays
/// readable, with the content it always had, until it is closed.
static OPEN: LazyLock<SharedLru<Path, Opened>> = LazyLock::new(|| SharedLru::new(OPEN_FILES));

/// Whether a file is written once and never changed: Lance's data and
/// index files, named afresh (a UUID) by every write.
fn immutable(location: &Path) -> bool {
    location.filename().is_some_and(|n| n.ends_with(".lance"))
}

/// One `get_opts` against the file system, on the calling thread.
fn read(
    file: std::path::PathBuf,
    location: Path,
    options: GetOptions,
) -> object_store::Result<GetResult> {
    let not_found = |e: std::io::Error| object_store::Error::NotFound {
        path: location.to_string(),
        source: Box::new(e),
    };
    let f = File::open(&file).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => not_found(e),
        _ => generic(e),
    })?;
    let m = f.metadata().map_err(generic)?;
    if m.is_dir() {
        return Err(not_found(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "is a directory",
        )));
    }
    let opened = Opened {
        meta: object_meta(&location, &m),
        file: Arc::new(f),
    };
    if immutable(&location) {
        OPEN.insert(location.clone(), opened.clone());
    }
    read_open(&opened, location, options)
}

/// One `get_opts` of an open file, on the calling thread.
fn read_open(
    opened: &Opened,
    location: Path,
    options: GetOptions,
) -> object_store::Result<GetResult> {
    let meta = ObjectMeta {
        location,
        ..opened.meta.clone()
    };
    options.check_preconditions(&meta)?;
    let range: Range<u64> = match &options.range {
        Some(r) => r.as_range(meta.size).map_err(generic)?,
        None => 0..meta.size,
    };
    let bytes = if options.head {
        Bytes::new()
    } else {
        let len = usize::try_from(range.end - range.start).map_err(generic)?;
        let mut buf = vec![0u8; len];
        opened
            .file
            .read_exact_at(&mut buf, range.start)
            .map_err(generic)?;
        Bytes::from(buf)
    };
    Ok(GetResult {
        payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(bytes) }).boxed()),
        meta,
        range,
        attributes: Attributes::default(),
        extensions: Default::default(),
    })
}

#[async_trait::async_trait]
impl ObjectStore for LocalReads {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let inline = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
        let opened = match immutable(location) {
            true => OPEN.get(location),
            false => None,
        };
        let location = location.clone();
        if let Some(opened) = opened {
            if inline {
                return read_open(&opened, location, options);
            }
            return tokio::task::spawn_blocking(move || read_open(&opened, location, options))
                .await
                .map_err(generic)?;
        }
        let file = self.inner.path_to_filesystem(&location)?;
        if inline {
            return read(file, location, options);
        }
        tokio::task::spawn_blocking(move || read(file, location, options))
            .await
            .map_err(generic)?
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

/// Lance's local store in its "object store" mode (every file operation
/// through `inner`, none through Lance's own local reader and writer),
/// with `inner` made by `inner`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalProvider {
    pub inner: fn() -> Arc<dyn ObjectStore>,
}

/// The store of datasets opened to be read: reads through [`LocalReads`].
pub(crate) const LOCAL_READS: LocalProvider = LocalProvider {
    inner: || Arc::new(LocalReads::new()),
};

#[async_trait::async_trait]
impl ObjectStoreProvider for LocalProvider {
    async fn new_store(
        &self,
        _base: url::Url,
        params: &ObjectStoreParams,
    ) -> lance::Result<LanceStore> {
        let url = url::Url::parse("file-object-store:///")
            .map_err(|e| lance::Error::invalid_input(format!("file-object-store URL: {e}")))?;
        let mut store = FileStoreProvider.new_store(url, params).await?;
        store.inner = (self.inner)();
        Ok(store)
    }

    fn extract_path(&self, url: &url::Url) -> lance::Result<Path> {
        FileStoreProvider.extract_path(url)
    }

    fn calculate_object_store_prefix(
        &self,
        url: &url::Url,
        options: Option<&std::collections::HashMap<String, String>>,
    ) -> lance::Result<String> {
        FileStoreProvider.calculate_object_store_prefix(url, options)
    }
}

#[cfg(test)]
mod tests {
    use object_store::{GetRange, ObjectStore};

    use super::*;

    /// The same answers as `LocalFileSystem` for whole reads, ranges,
    /// offsets, suffixes, HEAD, preconditions, a missing file and a
    /// directory.
    async fn agrees_with_local_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.bin");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&file, &data).unwrap();
        let path = Path::from_filesystem_path(&file).unwrap();
        let ours = LocalReads::new();
        let theirs = LocalFileSystem::new();
        let range = |r: GetRange| GetOptions {
            range: Some(r),
            ..Default::default()
        };
        let cases = [
            GetOptions::default(),
            range(GetRange::Bounded(10..20)),
            range(GetRange::Bounded(0..10_000)),
            range(GetRange::Offset(9_990)),
            range(GetRange::Suffix(5)),
            GetOptions {
                head: true,
                ..Default::default()
            },
        ];
        for opts in cases {
            let a = ours.get_opts(&path, opts.clone()).await.unwrap();
            let b = theirs.get_opts(&path, opts.clone()).await.unwrap();
            assert_eq!((&a.meta, &a.range), (&b.meta, &b.range), "{opts:?}");
            if !opts.head {
                let (a, b) = (a.bytes().await.unwrap(), b.bytes().await.unwrap());
                assert_eq!(a, b, "{opts:?}");
                assert_eq!(a.as_ref(), &data[b_range(&opts, data.len())]);
            }
        }
        // A range past the end, a precondition that fails, a missing file
        // and a directory are errors, as there.
        for opts in [
            range(GetRange::Bounded(20_000..20_010)),
            GetOptions {
                if_match: Some("\"no\"".into()),
                ..Default::default()
            },
        ] {
            assert!(
                ours.get_opts(&path, opts.clone()).await.is_err(),
                "{opts:?}"
            );
            assert!(theirs.get_opts(&path, opts).await.is_err());
        }
        let missing = Path::from_filesystem_path(dir.path()).unwrap().join("none");
        assert!(matches!(
            ours.get_opts(&missing, GetOptions::default()).await,
            Err(object_store::Error::NotFound { .. })
        ));
        let dir_path = Path::from_filesystem_path(dir.path()).unwrap();
        assert!(matches!(
            ours.get_opts(&dir_path, GetOptions::default()).await,
            Err(object_store::Error::NotFound { .. })
        ));
    }

    fn b_range(opts: &GetOptions, len: usize) -> std::ops::Range<usize> {
        match &opts.range {
            None => 0..len,
            Some(r) => {
                let r = r.as_range(len as u64).unwrap();
                r.start as usize..r.end as usize
            }
        }
    }

    /// A `.lance` file stays open once read: removed, it still reads as
    /// it was until [`OPEN_FILES`] other files have been read since; any
    /// other file is opened anew each time.
    async fn immutable_files_stay_open() {
        let dir = tempfile::tempdir().unwrap();
        let ours = LocalReads::new();
        let write = |name: &str, byte: u8| {
            let file = dir.path().join(name);
            std::fs::write(&file, vec![byte; 100]).unwrap();
            Path::from_filesystem_path(&file).unwrap()
        };
        let (kept, other) = (write("a.lance", 1), write("a.json", 2));
        for p in [&kept, &other] {
            ours.get_opts(p, GetOptions::default()).await.unwrap();
        }
        std::fs::remove_file(dir.path().join("a.lance")).unwrap();
        std::fs::remove_file(dir.path().join("a.json")).unwrap();
        let read = ours.get_opts(&kept, GetOptions::default()).await.unwrap();
        assert_eq!(read.meta.size, 100);
        assert_eq!(read.bytes().await.unwrap().as_ref(), &[1u8; 100]);
        assert!(matches!(
            ours.get_opts(&other, GetOptions::default()).await,
            Err(object_store::Error::NotFound { .. })
        ));
        for i in 0..OPEN_FILES {
            let p = write(&format!("b{i}.lance"), 3);
            ours.get_opts(&p, GetOptions::default()).await.unwrap();
        }
        assert!(matches!(
            ours.get_opts(&kept, GetOptions::default()).await,
            Err(object_store::Error::NotFound { .. })
        ));
    }

    /// A runtime whose reads run on the calling thread.
    fn calling_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    /// A runtime whose reads run on the blocking pool.
    fn blocking_pool() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap()
    }

    #[test]
    fn immutable_files_stay_open_on_the_calling_thread_and_the_blocking_pool() {
        calling_thread().block_on(immutable_files_stay_open());
        blocking_pool().block_on(immutable_files_stay_open());
    }

    #[test]
    fn reads_on_the_calling_thread_agree_with_local_file_system() {
        calling_thread().block_on(agrees_with_local_file_system());
    }

    #[test]
    fn reads_on_the_blocking_pool_agree_with_local_file_system() {
        blocking_pool().block_on(agrees_with_local_file_system());
    }
}
