//! Short reads of one table version: a scanner with bounded read-ahead,
//! rows by offset, and lookups of equal values through a scalar index and
//! the fragments it does not cover.

use std::sync::{Arc, LazyLock};

use arrow_array::RecordBatch;
use futures::TryStreamExt;
use lance::Dataset;

use super::lru::SharedLru;
use super::{index_name, uncovered_fragments};
use crate::error::{Error, Result};

/// I/O a scan may queue ahead of its consumer. Lance's default is 2 GiB,
/// which a slow consumer (a cursor, a commit appending what it reads) would
/// fill with the whole table.
pub const SCAN_IO_BUFFER_BYTES: u64 = 64 << 20;

/// A scanner of `ds` with bounded read-ahead; every scan starts here.
pub fn scanner(ds: &Dataset) -> lance::dataset::scanner::Scanner {
    let mut scan = ds.scan();
    scan.io_buffer_size(SCAN_IO_BUFFER_BYTES);
    scan
}

/// Rows `range` (positions among the live rows, in storage order) of the
/// named columns of `ds`, read by offset: no scan is planned, so a short
/// range costs the chunk reads alone. `range` must lie within the rows.
pub async fn take_range(
    ds: &Dataset,
    columns: &[String],
    range: std::ops::Range<u64>,
) -> Result<RecordBatch> {
    let projection = ds.schema().project(columns)?;
    // Each fragment's share of the range, in its live rows; a fragment that
    // does not record how many rows it holds or lost sends the whole read
    // to Lance's take, which counts them.
    let mut parts = Vec::new();
    let (mut skip, mut want) = (range.start, range.end.saturating_sub(range.start));
    for f in ds.manifest().fragments.iter() {
        if want == 0 {
            break;
        }
        let Some(live) = live_rows(f) else {
            parts.clear();
            break;
        };
        let live = live as u64;
        if skip >= live {
            skip -= live;
            continue;
        }
        let n = want.min(live - skip);
        let (Ok(start), Ok(end)) = (u32::try_from(skip), u32::try_from(skip + n)) else {
            parts.clear();
            break;
        };
        parts.push((f.id, Rows::Live(start..end)));
        (skip, want) = (0, want - n);
    }
    if want > 0 || parts.is_empty() {
        let offsets: Vec<u64> = range.collect();
        return Ok(ds.take(&offsets, projection).await?);
    }
    read_fragments(ds, parts, &projection, false).await
}

/// The live rows of a fragment (its rows less its deleted ones), from the
/// manifest; `None` when the fragment does not record both counts.
fn live_rows(f: &lance_table::format::Fragment) -> Option<usize> {
    let deleted = match &f.deletion_file {
        None => Some(0),
        Some(d) => d.num_deleted_rows,
    };
    f.physical_rows?.checked_sub(deleted?)
}

/// Which rows of one fragment [`read_fragments`] reads.
enum Rows {
    /// A range of the live rows (positions after deletions).
    Live(std::ops::Range<u32>),
    /// A range of physical offsets; deleted rows are skipped. Offsets
    /// that form a range are read as one, as Lance's own take does: a
    /// range is scheduled once per column, offsets one by one.
    Range(std::ops::Range<u32>),
    /// Rows by physical offset, ascending; deleted ones are skipped.
    Offsets(Vec<u32>),
}

impl Rows {
    /// Rows by physical offset (ascending, without duplicates), read as
    /// one range when they are one.
    fn offsets(offsets: Vec<u32>) -> Rows {
        let range = match (offsets.first(), offsets.last()) {
            (Some(&first), Some(&last)) => last
                .checked_add(1)
                .filter(|end| (end - first) as usize == offsets.len())
                .map(|end| first..end),
            _ => None,
        };
        match range {
            Some(range) => Rows::Range(range),
            None => Rows::Offsets(offsets),
        }
    }
}

/// The rows `parts` names (fragment id, rows) of `ds`, `projection`'s
/// columns, in the order given; `with_address` adds `_rowaddr` (UInt64)
/// last. A part of a fragment the version does not hold reads nothing.
///
/// Each fragment is read through its own reader. `Dataset::take` does the
/// same, but first builds its projection plan and afterwards runs it as a
/// DataFusion plan over the result, with schema conversions on both sides:
/// for a take of a few rows, about a third of its cost. The graph's tables
/// hold no column type that plan converts (Lance's JSON).
async fn read_fragments(
    ds: &Dataset,
    parts: Vec<(u64, Rows)>,
    projection: &lance::datatypes::Schema,
    with_address: bool,
) -> Result<RecordBatch> {
    use futures::StreamExt;
    let mut fields: Vec<arrow_schema::Field> = arrow_schema::Schema::from(projection)
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    if with_address {
        fields.push(arrow_schema::Field::new(
            ROW_ADDR,
            arrow_schema::DataType::UInt64,
            false,
        ));
    }
    let schema = Arc::new(arrow_schema::Schema::new(fields));
    let reads = parts.into_iter().filter_map(|(id, rows)| {
        let fragment = usize::try_from(id)
            .ok()
            .and_then(|id| ds.get_fragment(id))?;
        let schema = &schema;
        Some(async move {
            let reader = fragment_reader(ds, &fragment, projection, with_address).await?;
            let batch = match rows {
                Rows::Live(range) => {
                    let rows = range.len().max(1) as u32;
                    let batches: Vec<RecordBatch> = reader
                        .read_range(range, rows)
                        .await?
                        .buffered(1)
                        .try_collect()
                        .await?;
                    concat(schema, &batches)?
                }
                Rows::Range(range) => {
                    reader
                        .read_range_as_batch(range.start as usize..range.end as usize)
                        .await?
                }
                Rows::Offsets(offsets) => reader.take_as_batch(&offsets, None).await?,
            };
            Ok::<_, Error>(batch)
        })
    });
    let batches: Vec<RecordBatch> = futures::stream::iter(reads)
        .buffered(FRAGMENT_READS)
        .try_collect()
        .await?;
    concat(&schema, &batches)
}

/// A fragment of a table (its location, and its metadata: the files it
/// reads, all named afresh by every write, its deletion file and its row
/// count), the field ids read, and whether row addresses are.
type ReaderKey = (String, String, Vec<i32>, bool);

/// Fragment readers [`fragment_reader`] keeps opened.
const OPENED_READERS: usize = 256;

static READERS: LazyLock<SharedLru<ReaderKey, lance::dataset::fragment::FragmentReader>> =
    LazyLock::new(|| SharedLru::new(OPENED_READERS));

/// A reader of `projection`'s columns of one fragment of `ds`, kept per
/// process. A fragment's content is fixed by its metadata, whatever the
/// version it is part of, so a reader serves every version holding the
/// fragment unchanged: a commit appends a fragment and leaves the others,
/// and the next lookup or short read opens only the new one. Opening one
/// (its data files, their column schedulers, its deletion vector) cost a
/// quarter of a 10-row read of 14 columns.
///
/// Its files are read through Lance's lite I/O scheduler, which starts no
/// task of its own: a read is done when its future is (our local reads
/// return at once), so a reader kept open is not tied to the runtime that
/// opened it, and opening one spawns nothing.
async fn fragment_reader(
    ds: &Dataset,
    fragment: &lance::dataset::fragment::FileFragment,
    projection: &lance::datatypes::Schema,
    with_address: bool,
) -> Result<lance::dataset::fragment::FragmentReader> {
    use lance::dataset::fragment::FragReadConfig;
    use lance_io::scheduler::{ScanScheduler, SchedulerConfig};
    let key = serde_json::to_string(fragment.metadata()).ok().map(|meta| {
        (
            ds.uri().to_string(),
            meta,
            projection.field_ids(),
            with_address,
        )
    });
    if let Some(found) = key.as_ref().and_then(|k| READERS.get(k)) {
        return Ok(found);
    }
    let scheduler = ScanScheduler::new(
        ds.object_store(None).await?,
        SchedulerConfig {
            // No back pressure: every read collects what it asked for
            // (a request may be larger than any budget), and readers kept
            // open share their scheduler between callers.
            io_buffer_size_bytes: 0,
            use_lite_scheduler: Some(true),
        },
    );
    let config = FragReadConfig::default()
        .with_row_address(with_address)
        .with_scan_scheduler(scheduler);
    let reader = fragment.open(projection, config).await?;
    if let Some(key) = key {
        READERS.insert(key, reader.clone());
    }
    Ok(reader)
}

/// `batches` as one batch of `schema` (the fields the reads were asked
/// for; the reader's own schema may differ in field metadata).
fn concat(schema: &arrow_schema::SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch> {
    let columns = match batches {
        [] => return Ok(RecordBatch::new_empty(schema.clone())),
        [one] => one.columns().to_vec(),
        _ => arrow_select::concat::concat_batches(&batches[0].schema(), batches)?
            .columns()
            .to_vec(),
    };
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Fragments [`read_fragments`] reads at once.
const FRAGMENT_READS: usize = 8;

/// The rows of `ds` at `addresses` (row addresses, ascending, without
/// duplicates), `projection`'s columns, deleted rows skipped.
async fn take_addresses(
    ds: &Dataset,
    addresses: &[u64],
    projection: &lance::datatypes::Schema,
) -> Result<RecordBatch> {
    let parts = by_fragment(addresses)
        .into_iter()
        .map(|(id, offsets)| (id, Rows::offsets(offsets)))
        .collect();
    read_fragments(ds, parts, projection, false).await
}

/// Row addresses (fragment id in the high 32 bits, offset in the low),
/// ascending, grouped by fragment: `(fragment id, offsets)` in order.
pub(crate) fn by_fragment(addresses: &[u64]) -> Vec<(u64, Vec<u32>)> {
    let mut parts: Vec<(u64, Vec<u32>)> = Vec::new();
    for a in addresses {
        let (id, offset) = (a >> 32, *a as u32);
        match parts.last_mut() {
            Some((last, o)) if *last == id => o.push(offset),
            _ => parts.push((id, vec![offset])),
        }
    }
    parts
}

/// Most rows [`index_lookup`] reads at once; a lookup matching more is
/// left to a scan, which streams.
pub const LOOKUP_ROWS: u64 = 8192;

/// The rows of `ds` whose `column` equals one of `values` (named columns),
/// found by searching the graph's BTree or Bitmap index on `column` and
/// taking the matches by row id: no scan of the indexed fragments is
/// planned, which is most of the cost of a read of a few rows. Deleted
/// rows are not returned (the take skips them).
///
/// Fragments written since the index was built (each commit appends one)
/// are searched by [`uncovered_matches`], their matches taken with the
/// indexed ones, in storage order; past its size they are scanned with the
/// filter, and their matches follow the indexed ones. A table of at most
/// [`UNCOVERED_TAKE_ROWS`] rows without such an index is searched as if
/// the index covered nothing.
///
/// `None` when a scan must answer: no such index on a larger table, a
/// result that needs a recheck, a value that is not of the column's type,
/// or more than [`LOOKUP_ROWS`] matches.
pub async fn index_lookup(
    ds: &Dataset,
    column: &str,
    values: &[lance::deps::datafusion::scalar::ScalarValue],
    columns: &[String],
) -> Result<Option<RecordBatch>> {
    let Some(Located { rows, unsearched }) = locate(ds, column, values).await? else {
        return Ok(None);
    };
    let projection = ds.schema().project(columns)?;
    let schema = Arc::new(arrow_schema::Schema::from(&projection));
    let indexed = take_addresses(ds, &rows, &projection).await?;
    let Some(uncovered) = unsearched else {
        return Ok(Some(indexed));
    };
    let Some(unindexed) = scan_fragments(ds, uncovered, column, values, columns).await? else {
        return Ok(None);
    };
    if indexed.num_rows() + unindexed.num_rows() > LOOKUP_ROWS as usize {
        return Ok(None);
    }
    Ok(Some(arrow_select::concat::concat_batches(
        &schema,
        [&indexed, &unindexed],
    )?))
}

/// The addresses of the rows of `ds` whose `column` equals one of
/// `values`, found as [`index_lookup`] finds them, without reading the
/// rows. They may include rows deleted since the index was built.
/// `None` where `index_lookup` would scan: the caller filters instead.
pub(crate) async fn row_addresses(
    ds: &Dataset,
    column: &str,
    values: &[lance::deps::datafusion::scalar::ScalarValue],
) -> Result<Option<Vec<u64>>> {
    Ok(match locate(ds, column, values).await? {
        Some(Located {
            rows,
            unsearched: None,
        }) => Some(rows),
        _ => None,
    })
}

/// Where the rows an index lookup wants are.
struct Located {
    /// Row addresses, sorted, without repeats: of the indexed rows
    /// (deleted ones included) and of the live matches in the fragments
    /// the index does not cover.
    rows: Vec<u64>,
    /// Fragments outside the index holding too many rows to read their
    /// column whole: their matches are not in `rows`, a filtered scan must
    /// find them.
    unsearched: Option<Vec<lance_table::format::Fragment>>,
}

/// The search of [`index_lookup`]: `None` when a scan must answer.
async fn locate(
    ds: &Dataset,
    column: &str,
    values: &[lance::deps::datafusion::scalar::ScalarValue],
) -> Result<Option<Located>> {
    use lance_index::metrics::NoOpMetricsCollector;
    use lance_index::scalar::{SargableQuery, SearchResult};

    let Some(field) = ds.schema().field(column) else {
        return Ok(None);
    };
    // A value of another type would be compared after a cast, which may
    // round; the scan compares as the query asked.
    let data_type = field.data_type();
    if values.is_empty()
        || values
            .iter()
            .any(|v| v.is_null() || v.data_type() != data_type)
    {
        return Ok(None);
    }
    let ColumnIndex { segments, opened } = &*column_index(ds, column).await?;
    let Some(opened) = opened else {
        return Ok(None);
    };
    let uncovered: Vec<lance_table::format::Fragment> =
        uncovered_fragments(ds, segments).cloned().collect();
    // Without an index, only a table small enough to read the column of
    // whole is looked up (by `uncovered_matches`); a larger one is scanned.
    let rows_of = |fragments: &[lance_table::format::Fragment]| {
        fragments
            .iter()
            .map(|f| f.physical_rows.map(|n| n as u64))
            .sum::<Option<u64>>()
    };
    if segments.is_empty() && rows_of(&uncovered).is_none_or(|n| n > UNCOVERED_TAKE_ROWS) {
        return Ok(None);
    }
    let query = match values {
        [v] => SargableQuery::Equals(v.clone()),
        _ => SargableQuery::IsIn(values.to_vec()),
    };
    // Row ids and row addresses are one domain unless stable row ids are
    // on (the graph never turns them on); then only row-id answers serve.
    let stable_ids = ds.manifest().uses_stable_row_ids();
    let mut rows: Vec<u64> = Vec::new();
    for (segment, index) in segments.iter().zip(opened) {
        if stable_ids && index.results_are_row_addresses() {
            return Ok(None);
        }
        let SearchResult::Exact(set) = index.search(&query, &NoOpMetricsCollector).await? else {
            return Ok(None);
        };
        let found = set.true_rows();
        let Some(ids) = found.row_addrs() else {
            return Ok(None);
        };
        // Only the fragments the segment covers (as `uncovered_fragments`
        // counts them; the others are searched by reading them): Lance
        // drops a fragment from a segment's coverage when it rewrites the
        // indexed column there, and the file keeps the old addresses, which
        // a delete by address must not trust.
        let covers = |address: &u64| {
            segment
                .fragment_bitmap
                .as_ref()
                .is_some_and(|b| b.contains((address >> 32) as u32))
        };
        rows.extend(ids.map(u64::from).filter(covers));
        if rows.len() as u64 > LOOKUP_ROWS {
            return Ok(None);
        }
    }
    let unsearched = match uncovered_matches(ds, &uncovered, column, values).await? {
        Some(found) => {
            rows.extend(found);
            None
        }
        None if segments.is_empty() => return Ok(None),
        None => Some(uncovered),
    };
    if rows.len() as u64 > LOOKUP_ROWS {
        return Ok(None);
    }
    rows.sort_unstable();
    rows.dedup();
    Ok(Some(Located { rows, unsearched }))
}

/// The column of row addresses Lance adds to a read that asks for them
/// (`lance_core::ROW_ADDR`).
const ROW_ADDR: &str = "_rowaddr";

/// The segments of the graph's index on one column of one table version,
/// opened.
struct ColumnIndex {
    segments: Vec<lance_table::format::IndexMetadata>,
    /// `None` unless every segment is a BTree or Bitmap index.
    opened: Option<Vec<Arc<dyn lance_index::scalar::ScalarIndex>>>,
}

/// A table version (its location, version and transaction file, which no
/// other version shares) and a column.
type ColumnIndexKey = (String, u64, String, String);

/// Column indexes [`column_index`] keeps opened.
const OPENED_INDEXES: usize = 128;

static OPENED: LazyLock<SharedLru<ColumnIndexKey, Arc<ColumnIndex>>> =
    LazyLock::new(|| SharedLru::new(OPENED_INDEXES));

/// The index on `column` of `ds`'s version, its segments opened: kept per
/// process, since a version's indexes never change. Finding and opening
/// them costs about 20 µs per lookup otherwise (of a join probe's 150).
async fn column_index(ds: &Dataset, column: &str) -> Result<Arc<ColumnIndex>> {
    use lance::index::DatasetIndexInternalExt;
    use lance_index::metrics::NoOpMetricsCollector;
    let key = ds.manifest().transaction_file.clone().map(|txn| {
        (
            ds.uri().to_string(),
            ds.manifest().version,
            txn,
            column.to_string(),
        )
    });
    if let Some(found) = key.as_ref().and_then(|k| OPENED.get(k)) {
        return Ok(found);
    }
    let segments =
        lance::index::scalar::load_named_scalar_segments(ds, column, &index_name(column)).await?;
    let scalar = |s: &lance_table::format::IndexMetadata| {
        s.index_details.as_ref().is_some_and(|d| {
            d.type_url.ends_with("BTreeIndexDetails") || d.type_url.ends_with("BitmapIndexDetails")
        })
    };
    let opened = match segments.iter().all(scalar) {
        false => None,
        true => {
            let mut opened = Vec::with_capacity(segments.len());
            for s in &segments {
                opened.push(
                    ds.open_scalar_index(column, &s.uuid, &NoOpMetricsCollector)
                        .await?,
                );
            }
            Some(opened)
        }
    };
    let found = Arc::new(ColumnIndex { segments, opened });
    if let Some(key) = key {
        OPENED.insert(key, found.clone());
    }
    Ok(found)
}

/// Fragments outside an index holding at most this many rows are searched
/// by reading their column whole (a take, no scan planned); more are
/// scanned with the filter.
const UNCOVERED_TAKE_ROWS: u64 = 16_384;

/// The addresses of the live rows of `fragments` whose `column` equals one
/// of `values`, found by reading that column of their live rows with the
/// rows' addresses and comparing in memory: a few small fragments (what
/// commits since the index was built wrote) cost a few reads, where a
/// filtered scan would cost its planning. `None` past
/// [`UNCOVERED_TAKE_ROWS`] rows, when a fragment does not record how many
/// rows it holds or lost, or with stable row ids.
async fn uncovered_matches(
    ds: &Dataset,
    fragments: &[lance_table::format::Fragment],
    column: &str,
    values: &[lance::deps::datafusion::scalar::ScalarValue],
) -> Result<Option<Vec<u64>>> {
    use lance::deps::datafusion::scalar::ScalarValue;
    // The matches are taken by row id, which is the address unless stable
    // row ids are on (the graph never turns them on).
    if ds.manifest().uses_stable_row_ids() {
        return Ok(None);
    }
    let mut parts = Vec::new();
    let mut total = 0u64;
    for f in fragments {
        let (Some(rows), Some(live)) = (f.physical_rows, live_rows(f)) else {
            return Ok(None);
        };
        total += rows as u64;
        if total > UNCOVERED_TAKE_ROWS {
            return Ok(None);
        }
        let live = u32::try_from(live)
            .map_err(|_| Error::Internal(format!("fragment {} has {live} rows", f.id)))?;
        if live > 0 {
            parts.push((f.id, Rows::Live(0..live)));
        }
    }
    if parts.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let taken = read_fragments(ds, parts, &ds.schema().project(&[column])?, true).await?;
    let (Some(found), Some(at)) = (
        taken.column_by_name(column),
        taken
            .column_by_name(ROW_ADDR)
            .and_then(|a| a.as_any().downcast_ref::<arrow_array::UInt64Array>()),
    ) else {
        return Err(Error::Internal(format!(
            "a read of {column} with row addresses returned columns {:?}",
            taken.schema().fields()
        )));
    };
    let values: std::collections::HashSet<&ScalarValue> = values.iter().collect();
    let mut matched = Vec::new();
    for i in 0..taken.num_rows() {
        let value = ScalarValue::try_from_array(found, i)
            .map_err(|e| Error::Internal(format!("a value of {column}: {e}")))?;
        if values.contains(&value) {
            matched.push(at.value(i));
        }
    }
    Ok(Some(matched))
}

/// The rows of `fragments` of `ds` whose `column` equals one of `values`
/// (named columns, in storage order), read by a filtered scan of those
/// fragments alone; `None` past [`LOOKUP_ROWS`] matches.
async fn scan_fragments(
    ds: &Dataset,
    fragments: Vec<lance_table::format::Fragment>,
    column: &str,
    values: &[lance::deps::datafusion::scalar::ScalarValue],
    columns: &[String],
) -> Result<Option<RecordBatch>> {
    use lance::deps::datafusion::common::Column;
    use lance::deps::datafusion::logical_expr::{Expr, lit};
    let target = Expr::Column(Column::new_unqualified(column));
    let filter = match values {
        [v] => target.eq(lit(v.clone())),
        _ => target.in_list(values.iter().cloned().map(lit).collect(), false),
    };
    let mut scan = scanner(ds);
    scan.with_fragments(fragments);
    scan.project(columns)?;
    scan.filter_expr(filter);
    let mut stream = scan.try_into_stream().await?;
    let mut batches = Vec::new();
    let mut rows = 0;
    while let Some(batch) = stream.try_next().await? {
        rows += batch.num_rows();
        if rows as u64 > LOOKUP_ROWS {
            return Ok(None);
        }
        batches.push(batch);
    }
    let schema = Arc::new(arrow_schema::Schema::from(&ds.schema().project(columns)?));
    Ok(Some(arrow_select::concat::concat_batches(
        &schema, &batches,
    )?))
}
