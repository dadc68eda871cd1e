//! The graph's small metadata objects (refs, manifests, commit pointers)
//! read parsed, through a per-handle cache: on a local graph a `stat`
//! tells whether the file is the one parsed before, which saves the read
//! and the parse (about half of resolving a branch head per statement).

use std::any::Any;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use object_store::path::Path;
use serde::de::DeserializeOwned;

use super::lru::SharedLru;
use super::{Storage, absent};
use crate::error::Result;

/// What [`Storage::get_parsed`] found.
pub(crate) enum Parsed<T> {
    Absent,
    Value(Arc<T>),
    /// The object exists but is not a `T` (a torn manifest, say).
    Unparsable(serde_json::Error),
}

impl<T: Clone> Parsed<T> {
    /// The value (a copy), `None` when absent, a parse failure as an error.
    pub(crate) fn cloned(self) -> Result<Option<T>> {
        match self {
            Parsed::Value(v) => Ok(Some((*v).clone())),
            Parsed::Absent => Ok(None),
            Parsed::Unparsable(e) => Err(e.into()),
        }
    }
}

/// Identifies one file's content as far as these objects need: every write
/// of one is a new file renamed or linked into place (a new inode, a new
/// change time), and none is modified where it lies.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            ctime: (m.ctime(), m.ctime_nsec()),
            mtime: (m.mtime(), m.mtime_nsec()),
        }
    }
}

type Entry = (Stamp, Arc<dyn Any + Send + Sync>);

/// Objects kept parsed per graph handle.
const PARSED_OBJECTS: usize = 256;

pub(crate) struct ParsedCache(SharedLru<std::path::PathBuf, Entry>);

impl ParsedCache {
    pub(crate) fn new() -> ParsedCache {
        ParsedCache(SharedLru::new(PARSED_OBJECTS))
    }
}

impl Storage {
    /// The JSON object at `path`, parsed as `T`. On a local graph the
    /// parsed value is kept with the file's stamp and served again while
    /// the stamp is unchanged; elsewhere the object is read each time.
    pub(crate) async fn get_parsed<T>(&self, path: &Path) -> Result<Parsed<T>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let parse = |bytes: &[u8]| match serde_json::from_slice::<T>(bytes) {
            Ok(v) => Parsed::Value(Arc::new(v)),
            Err(e) => Parsed::Unparsable(e),
        };
        let Some(file) = self.local_file(path) else {
            return Ok(match self.get(path).await? {
                Some(bytes) => parse(&bytes),
                None => Parsed::Absent,
            });
        };
        let stamp = match std::fs::metadata(&file) {
            Ok(m) if m.is_file() => Stamp::of(&m),
            Ok(_) => return Ok(Parsed::Absent),
            Err(e) if absent(&e) => return Ok(Parsed::Absent),
            Err(e) => return Err(e.into()),
        };
        if let Some((seen, value)) = self.parsed.0.get(&file)
            && seen == stamp
            && let Ok(value) = value.downcast::<T>()
        {
            return Ok(Parsed::Value(value));
        }
        // Read after the stat: a file replaced in between is kept under
        // the older stamp, which the next stat no longer matches.
        let bytes = match std::fs::read(&file) {
            Ok(bytes) => bytes,
            Err(e) if absent(&e) => return Ok(Parsed::Absent),
            Err(e) => return Err(e.into()),
        };
        let parsed = parse(&bytes);
        if let Parsed::Value(v) = &parsed {
            self.parsed.0.insert(file, (stamp, v.clone()));
        }
        Ok(parsed)
    }

    /// The head seq of `branch_id` this handle read last.
    pub(crate) fn seen_head(&self, branch_id: &str) -> Option<u64> {
        self.heads.lock().ok()?.get(branch_id).copied()
    }

    pub(crate) fn saw_head(&self, branch_id: &str, seq: u64) {
        if let Ok(mut heads) = self.heads.lock() {
            heads.insert(branch_id.to_string(), seq);
        }
    }
}
