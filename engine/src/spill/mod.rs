//! Spilling a large transaction's staged inserts to local Lance files.
//!
//! A transaction holds its staged rows in memory until COMMIT. Past a
//! threshold, the plain inserts of a table move to a spill: a Lance
//! dataset in a private local directory with the table's columns plus
//! `_omnigraph_seq`, the staging operation that produced the row (so a
//! rollback to a savepoint removes exactly the later rows), and
//! `_omnigraph_line`, the input line the row came from (an NDJSON load's;
//! NULL otherwise), so an error the commit finds in a spilled row names
//! its line. The spilled ids are known by their 128-bit hashes, kept in
//! sorted files beside the rows with a Bloom filter in memory ([`ids`]): a
//! few bytes an id, not the 16 of the hash nor the row.
//!
//! The directory is removed when the spill is dropped (commit, rollback,
//! error). A process that dies leaves it behind: its name starts with
//! `pgsql_tmp`, so when the spill directory is Postgres's own
//! `base/pgsql_tmp`, the server removes it at its next start.

mod ids;

use std::collections::HashSet;
use std::hash::{BuildHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, RecordBatchIterator, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use futures::TryStreamExt;
use lance::Dataset;
use lance::dataset::WriteMode;

use crate::error::{Error, Result};
use crate::schema::{Catalog, TypeKind};
use crate::value::{Record, batch_to_records, records_to_batch};

use ids::SpilledIds;

/// The column holding a spilled row's staging sequence number.
/// A reserved property name (`schema::catalog::RESERVED`), so it cannot
/// collide with a property.
pub(crate) const SEQ: &str = "_omnigraph_seq";

/// The column holding a spilled row's input line (NULL for none); a
/// reserved property name too.
pub(crate) const LINE: &str = "_omnigraph_line";

/// Whether a column is the spill's own, not the table's.
pub(crate) fn is_own_column(name: &str) -> bool {
    name == SEQ || name == LINE
}

/// A 128-bit hash of an id: two SipHash values under keys drawn at random
/// once per process (ids chosen to collide cannot be computed ahead, so
/// the sets of these hashes may use them as they are). A collision
/// between two distinct ids of one transaction is vanishingly unlikely
/// (about 2^-88 for a billion rows), and would only make a row be read
/// back from the spill needlessly. Hashes mean nothing across processes.
pub(crate) fn id_hash(id: &str) -> u128 {
    static KEYS: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    let keys = KEYS.get_or_init(std::hash::RandomState::new);
    let half = |salt: u8| {
        let mut h = keys.build_hasher();
        salt.hash(&mut h);
        id.hash(&mut h);
        h.finish()
    };
    (u128::from(half(1)) << 64) | u128::from(half(2))
}

/// Builds the hasher of a set of [`id_hash`] values: they are uniform
/// already, so hashing them again (SipHash, the std default) only costs.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHashState;

impl BuildHasher for IdHashState {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

/// The hasher of [`IdHashState`]: folds the 128-bit hash to 64 bits.
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys are hashed; any other input is still folded in.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64);
    }
}

/// A set of [`id_hash`] values.
pub(crate) type IdHashSet = HashSet<u128, IdHashState>;

/// I/O a stream of the spilled rows queues ahead of its consumer.
const SPILL_IO_BUFFER_BYTES: u64 = 8 << 20;

/// Spilled inserts of one table in one transaction.
pub(crate) struct Spill {
    dir: PathBuf,
    type_name: String,
    kind: TypeKind,
    ds: Option<Dataset>,
    ids: SpilledIds,
    /// Rows in the spill.
    rows: u64,
}

impl Spill {
    /// A new, empty spill in a fresh directory under `parent`.
    pub fn create(parent: &Path, type_name: &str, kind: TypeKind) -> Result<Spill> {
        let dir = parent.join(format!(
            "pgsql_tmp_omnigraph_{}_{}",
            std::process::id(),
            ulid::Ulid::new()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::Storage(format!(
                "cannot create the spill directory {}: {e}",
                dir.display()
            ))
        })?;
        Ok(Spill {
            ids: SpilledIds::new(&dir),
            dir,
            type_name: type_name.to_string(),
            kind,
            ds: None,
            rows: 0,
        })
    }

    /// Bytes the spill's files take on disk.
    pub fn disk_bytes(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            entries
                .filter_map(|e| e.ok())
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.dir)
    }

    /// Whether a row of this id is spilled.
    pub fn contains(&self, id: &str) -> Result<bool> {
        self.contains_hash(id_hash(id))
    }

    /// Whether a row of an id of this [`id_hash`] is spilled.
    pub fn contains_hash(&self, hash: u128) -> Result<bool> {
        self.ids.contains(hash)
    }

    /// Rows in the spill.
    pub fn len(&self) -> u64 {
        self.rows
    }

    pub fn dataset(&self) -> Option<&Dataset> {
        self.ds.as_ref()
    }

    fn uri(&self) -> Result<String> {
        self.dir
            .join("rows.lance")
            .to_str()
            .map(str::to_string)
            .ok_or_else(|| {
                Error::Storage(format!("spill path {} is not UTF-8", self.dir.display()))
            })
    }

    /// Append rows, each with the sequence number of its staging operation
    /// and its input line.
    pub async fn write(
        &mut self,
        catalog: &Catalog,
        rows: &[(&Record, u64, Option<usize>)],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let records: Vec<&Record> = rows.iter().map(|(r, _, _)| *r).collect();
        let batch = records_to_batch(catalog, &self.type_name, &records)?;
        let seqs = UInt64Array::from_iter_values(rows.iter().map(|(_, s, _)| *s));
        let lines: UInt64Array = rows.iter().map(|(_, _, l)| l.map(|l| l as u64)).collect();
        let hashes: Vec<u128> = rows.iter().map(|(r, _, _)| id_hash(&r.id)).collect();
        self.append(batch, seqs, lines, &hashes).await
    }

    /// Append a batch in the table's schema whose rows were all staged by
    /// one operation, `seq`; `hashes` are its rows' [`id_hash`]es and
    /// `lines` their input lines (empty: none).
    pub async fn write_batch(
        &mut self,
        batch: RecordBatch,
        seq: u64,
        hashes: &[u128],
        lines: &[usize],
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let seqs = UInt64Array::from_value(seq, batch.num_rows());
        let lines: UInt64Array = match lines.len() == batch.num_rows() {
            true => lines.iter().map(|l| Some(*l as u64)).collect(),
            false => std::iter::repeat_n(None::<u64>, batch.num_rows()).collect(),
        };
        self.append(batch, seqs, lines, hashes).await
    }

    /// Write a batch with its rows' sequence numbers and lines as one more
    /// fragment; `hashes` are its rows' [`id_hash`]es.
    async fn append(
        &mut self,
        batch: RecordBatch,
        seqs: UInt64Array,
        lines: UInt64Array,
        hashes: &[u128],
    ) -> Result<()> {
        // Ids first: ids without rows are only looked for in vain.
        self.ids.add(hashes)?;
        let n = batch.num_rows() as u64;
        let mut fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(SEQ, DataType::UInt64, false));
        fields.push(Field::new(LINE, DataType::UInt64, true));
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.push(Arc::new(seqs));
        columns.push(Arc::new(lines));
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        let schema = batch.schema();
        let mode = if self.ds.is_some() {
            WriteMode::Append
        } else {
            WriteMode::Create
        };
        let reader = RecordBatchIterator::new(vec![Ok(batch)], schema);
        let params = crate::storage::write_params(mode);
        let ds = Dataset::write(reader, self.uri()?.as_str(), Some(params)).await?;
        self.ds = Some(ds);
        self.rows += n;
        Ok(())
    }

    /// Remove the spilled rows of `ids` and return them (in no order), each
    /// with the sequence number of the operation that staged it and its
    /// input line; ids that are not spilled are skipped. One read and one
    /// delete of the spill, so callers pass a chunk of ids (`ID_CHUNK`) at
    /// a time. On an error nothing was removed.
    pub async fn take(&mut self, ids: &[&str]) -> Result<Vec<(Record, u64, Option<usize>)>> {
        let mut wanted: Vec<&str> = Vec::new();
        for id in ids {
            if self.contains(id)? {
                wanted.push(*id);
            }
        }
        let Some(ds) = self.ds.as_mut() else {
            return Ok(Vec::new());
        };
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let filter = crate::graph::in_filter("id", wanted.iter().copied());
        let mut scan = crate::storage::scanner(ds);
        scan.filter(&filter)?;
        let batches: Vec<RecordBatch> = scan.try_into_stream().await?.try_collect().await?;
        let mut found = Vec::new();
        for b in &batches {
            let seqs = b
                .column_by_name(SEQ)
                .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
                .ok_or_else(|| {
                    Error::Internal("a spill batch without its sequence column".into())
                })?;
            let lines = spilled_lines(b);
            let records = batch_to_records(b, self.kind)?;
            found.extend(
                records
                    .into_iter()
                    .zip(seqs.values().iter().copied())
                    .zip(lines)
                    .map(|((r, seq), line)| (r, seq, line)),
            );
        }
        if !found.is_empty() {
            ds.delete(&filter).await?;
            for (r, _, _) in &found {
                self.ids.remove(id_hash(&r.id));
            }
            self.rows -= found.len() as u64;
        }
        Ok(found)
    }

    /// The spilled rows matching a Lance filter (left in the spill).
    pub async fn rows_where(&self, filter: &str) -> Result<Vec<Record>> {
        let Some(ds) = &self.ds else {
            return Ok(Vec::new());
        };
        let mut scan = crate::storage::scanner(ds);
        let columns: Vec<String> = ds
            .schema()
            .fields
            .iter()
            .map(|f| f.name.clone())
            .filter(|n| !is_own_column(n))
            .collect();
        scan.project(&columns)?;
        scan.filter(filter)?;
        let batches: Vec<RecordBatch> = scan.try_into_stream().await?.try_collect().await?;
        let mut out = Vec::new();
        for b in &batches {
            out.extend(batch_to_records(b, self.kind)?);
        }
        Ok(out)
    }

    /// The input line of the spilled row of `id` (`None` without one).
    pub async fn line_of(&self, id: &str) -> Result<Option<usize>> {
        let Some(ds) = &self.ds else {
            return Ok(None);
        };
        let mut scan = crate::storage::scanner(ds);
        scan.project(&[LINE])?;
        scan.filter(&format!("id = {}", crate::value::sql_literal(id)))?;
        let batches: Vec<RecordBatch> = scan.try_into_stream().await?.try_collect().await?;
        Ok(batches.iter().flat_map(spilled_lines).find_map(|line| line))
    }

    /// Ids of the spilled rows matching a Lance filter.
    pub async fn ids_where(&self, filter: &str) -> Result<Vec<String>> {
        let Some(ds) = &self.ds else {
            return Ok(Vec::new());
        };
        let mut scan = crate::storage::scanner(ds);
        scan.project(&["id"])?;
        scan.filter(filter)?;
        let batches: Vec<RecordBatch> = scan.try_into_stream().await?.try_collect().await?;
        let mut out = Vec::new();
        for b in &batches {
            out.extend(batch_to_records(b, self.kind)?.into_iter().map(|r| r.id));
        }
        Ok(out)
    }

    /// Remove every row staged at or after `seq` (a rollback to a savepoint).
    pub async fn truncate_from(&mut self, seq: u64) -> Result<()> {
        let Some(ds) = self.ds.as_mut() else {
            return Ok(());
        };
        let filter = format!("{SEQ} >= {seq}");
        let mut scan = crate::storage::scanner(ds);
        scan.project(&["id"])?;
        scan.filter(&filter)?;
        let batches: Vec<RecordBatch> = scan.try_into_stream().await?.try_collect().await?;
        let mut gone = Vec::new();
        for b in &batches {
            gone.extend(
                batch_to_records(b, self.kind)?
                    .into_iter()
                    .map(|r| id_hash(&r.id)),
            );
        }
        if !gone.is_empty() {
            ds.delete(&filter).await?;
            self.rows -= gone.len() as u64;
            for h in gone {
                self.ids.remove(h);
            }
        }
        Ok(())
    }

    /// The spilled rows (of `fragments` only, if given), batch by batch,
    /// in `columns`.
    pub async fn stream(
        &self,
        columns: &[String],
        fragments: Option<Vec<lance_table::format::Fragment>>,
    ) -> Result<Option<lance::dataset::scanner::DatasetRecordBatchStream>> {
        let Some(ds) = &self.ds else {
            return Ok(None);
        };
        let mut scan = crate::storage::scanner(ds);
        scan.project(columns)?;
        if let Some(fragments) = fragments {
            scan.with_fragments(fragments);
        }
        scan.batch_size(8192);
        // Read ahead of a commit appending the rows only as far as the
        // append needs: the scan's usual 64 MiB would fill while Lance
        // encodes, held on top of the writer's buffers.
        scan.io_buffer_size(SPILL_IO_BUFFER_BYTES);
        Ok(Some(scan.try_into_stream().await?))
    }
}

/// The input line of each row of a batch read from a spill, by its
/// [`LINE`] column (`None` for a row without one, or a batch without the
/// column).
pub(crate) fn spilled_lines(batch: &RecordBatch) -> Vec<Option<usize>> {
    use arrow_array::Array;
    match batch
        .column_by_name(LINE)
        .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
    {
        Some(lines) => (0..lines.len())
            .map(|i| {
                (!lines.is_null(i))
                    .then(|| usize::try_from(lines.value(i)).ok())
                    .flatten()
            })
            .collect(),
        None => vec![None; batch.num_rows()],
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        // Best effort: an orphan directory is harmless and reclaimable.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
