//! Reading one type's table at a snapshot: the scan every frontend runs
//! (the Postgres extension's foreign scan, the shell's and the server's
//! tables).
//!
//! A [`Scan`] reads the columns, filter, order and limit of a
//! [`ScanSpec`] from Lance and yields Arrow batches of exactly the asked
//! columns. Inside a write transaction it reads the transaction's own
//! writes too ([`StagedView`]): the committed rows minus those the
//! transaction replaced or deleted, its staged rows in memory (filtered
//! and ordered as Lance would, `staged`) and its spilled rows. With an
//! order the sources are merged by their order keys (a k-way merge over
//! Arrow's row format), so the result is ordered as one scan would be;
//! the limit counts rows after that.
//!
//! Nothing here knows a frontend: the extension converts the batches to
//! tuples, the shell hands them to DataFusion. Errors are engine errors; a
//! table version that cleanup reclaimed under the read is reported as
//! [`omnigraph_engine::Error::VersionReclaimed`].

pub mod aggregate;
mod staged;

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use omnigraph_engine::deps::arrow_array::cast::AsArray;
use omnigraph_engine::deps::arrow_array::{
    ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions,
};
use omnigraph_engine::deps::arrow_schema::{DataType, Field, FieldRef, Schema};
use omnigraph_engine::deps::lance::Dataset;
use omnigraph_engine::deps::lance::dataset::scanner::{ColumnOrdering, DatasetRecordBatchStream};
use omnigraph_engine::deps::lance::deps::datafusion::arrow::compute::{
    SortOptions, cast, filter_record_batch, interleave_record_batch,
};
use omnigraph_engine::deps::lance::deps::datafusion::arrow::row::{
    self as arrow_row, RowConverter, Rows as KeyRows, SortField,
};
use omnigraph_engine::deps::lance::deps::datafusion::logical_expr::Expr as DfExpr;
use omnigraph_engine::deps::lance::deps::datafusion::scalar::ScalarValue;
use omnigraph_engine::{Error, IndexKind, Result, Snapshot, StagedView};

use crate::filter::{self, Scalar};

pub use staged::SortKey;

/// Rows per batch a scan asks Lance for, and the most a merge emits at once.
pub const BATCH_ROWS: usize = 8192;

/// A limit up to which rows without filter or order are read by offset
/// (Lance `take`) instead of a scan: planning a scan costs more than
/// reading a few rows.
pub const TAKE_ROWS: u64 = 1024;

/// What to read from one type's table.
#[derive(Debug, Clone, Default)]
pub struct ScanSpec {
    pub type_name: String,
    /// Graph column names: the columns of every batch, in this order.
    /// Empty when only rows are counted.
    pub columns: Vec<String>,
    /// The pushed filter (graph names), with its parameters' values.
    pub filter: Option<filter::Expr>,
    pub params: Vec<Scalar>,
    pub order: Vec<SortKey>,
    /// At most this many rows (a LIMIT plus its OFFSET).
    pub limit: Option<u64>,
    /// Committed rows skipped first: with `limit`, one range of the
    /// table, for a partitioned read. Only without a filter and outside a
    /// write transaction (the offset counts stored rows).
    pub offset: Option<u64>,
}

/// Where a source's rows come from.
enum Rows {
    /// A Lance scan: the committed rows, or the transaction's spilled rows.
    Lance(DatasetRecordBatchStream),
    /// The transaction's staged rows, already filtered and ordered.
    Memory(Option<RecordBatch>),
}

/// One input of a scan. Without writes in this transaction a scan has one
/// source, the committed rows.
struct Source {
    rows: Rows,
    /// The committed rows: read errors are checked against cleanup, and
    /// rows the transaction replaced are skipped.
    committed: bool,
    /// The current batch, its order keys (merges only) and the next row.
    batch: Option<RecordBatch>,
    keys: Option<KeyRows>,
    row: usize,
    done: bool,
}

impl Source {
    fn new(rows: Rows, committed: bool) -> Source {
        Source {
            rows,
            committed,
            batch: None,
            keys: None,
            row: 0,
            done: false,
        }
    }

    /// Whether the source points at a row of its current batch.
    fn has_row(&self) -> bool {
        self.batch.as_ref().is_some_and(|b| self.row < b.num_rows())
    }
}

/// A running read of one table. See the module documentation.
pub struct Scan {
    snapshot: Snapshot,
    type_name: String,
    sources: Vec<Source>,
    /// The transaction's view and the position of `id` in each batch, when
    /// committed rows it replaced must be skipped.
    hidden: Option<(Arc<StagedView>, usize)>,
    /// The table's type of each column read (when merging sources).
    types: Vec<DataType>,
    /// The asked columns come first in every batch; order keys and `id`
    /// needed only to merge follow them.
    width: usize,
    order: Vec<SortKey>,
    /// Positions of the order keys in each batch, when sources are merged.
    order_columns: Vec<usize>,
    converter: Option<RowConverter>,
    /// The source being read when sources are read one after another.
    current: usize,
    remaining: Option<u64>,
}

/// The position of `name` in `columns`, appending it when absent.
fn position_or_push(columns: &mut Vec<String>, name: &str) -> usize {
    match columns.iter().position(|c| c == name) {
        Some(i) => i,
        None => {
            columns.push(name.to_string());
            columns.len() - 1
        }
    }
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("scan: {e}"))
}

/// The Lance filter of a spec (`None` without one), literals typed as the
/// columns of `table` (the table's Arrow schema).
fn lance_filter(spec: &ScanSpec, table: &Schema) -> Result<Option<DfExpr>> {
    let Some(f) = &spec.filter else {
        return Ok(None);
    };
    filter::to_datafusion(f, &spec.params, Some(table))
        .map(Some)
        .map_err(|e| internal(e.0))
}

/// A Lance scan of `ds` with a projection, filter, order and limit.
async fn lance_rows(
    ds: &Dataset,
    columns: &[String],
    filter: Option<DfExpr>,
    order: &[SortKey],
    (limit, offset): (Option<u64>, Option<u64>),
) -> Result<DatasetRecordBatchStream> {
    let mut scan = omnigraph_engine::scanner(ds);
    if columns.is_empty() {
        scan.empty_project()?;
    } else {
        scan.project(columns)?;
    }
    if let Some(f) = filter {
        scan.filter_expr(f);
    }
    if !order.is_empty() {
        scan.order_by(Some(
            order
                .iter()
                .map(|o| ColumnOrdering {
                    ascending: o.ascending,
                    nulls_first: o.nulls_first,
                    column_name: o.column.clone(),
                })
                .collect(),
        ))?;
    }
    if limit.is_some() || offset.is_some() {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        scan.limit(limit.map(n), offset.map(n))?;
    }
    scan.batch_size(BATCH_ROWS);
    Ok(scan.try_into_stream().await?)
}

/// The committed rows of a type at `snapshot`: looked up through an index
/// when the filter is an equality (or IN list) an index answers alone and
/// no order is asked, scanned otherwise.
async fn committed_rows(
    snapshot: &Snapshot,
    (spec, table): (&ScanSpec, &Schema),
    columns: &[String],
    filter: Option<DfExpr>,
    range: (Option<u64>, Option<u64>),
) -> Result<Rows> {
    let rows = async {
        let ds = snapshot.dataset(&spec.type_name).await?;
        if let Some((column, values)) = lookup(spec, table, columns, range) {
            // A column the equality fixes to one value is not read: every
            // row found holds that value (the lookup's types compare
            // exactly: text, integers, booleans, dates, timestamps).
            let fixed = match values.as_slice() {
                [value] if columns.len() > 1 && columns.contains(&column) => Some(value),
                _ => None,
            };
            let read: Vec<String> = columns
                .iter()
                .filter(|c| fixed.is_none() || **c != column)
                .cloned()
                .collect();
            let mut found = omnigraph_engine::index_lookup(&ds, &column, &values, &read).await?;
            if found.is_none()
                && let Some(ids) = key_ids(snapshot, &spec.type_name, &column, &values)
            {
                found = omnigraph_engine::index_lookup(&ds, "id", &ids, &read).await?;
            }
            if let Some(batch) = found {
                let batch = match fixed {
                    Some(value) => with_fixed_column(&ds, batch, columns, &column, value)?,
                    None => batch,
                };
                return Ok(Rows::Memory((batch.num_rows() > 0).then_some(batch)));
            }
        }
        lance_rows(&ds, columns, filter, &spec.order, range)
            .await
            .map(Rows::Lance)
    };
    match rows.await {
        Ok(rows) => Ok(rows),
        Err(e) => Err(snapshot.read_error(&spec.type_name, e).await),
    }
}

/// `batch` (the rows read of `columns` but `column`, in that order) with
/// `column` holding `value` in every row, in its place among `columns`.
fn with_fixed_column(
    ds: &Dataset,
    batch: RecordBatch,
    columns: &[String],
    column: &str,
    value: &ScalarValue,
) -> Result<RecordBatch> {
    let read = batch.schema();
    let (fields, arrays): (Vec<FieldRef>, Vec<ArrayRef>) = columns
        .iter()
        .map(|c| match c == column {
            true => {
                let field = ds
                    .schema()
                    .field(column)
                    .map(|f| Arc::new(Field::from(f)))
                    .ok_or_else(|| internal(format!("no column {column} to fill")))?;
                let array = value
                    .to_array_of_size(batch.num_rows())
                    .map_err(|e| internal(format!("a column of {value}: {e}")))?;
                Ok((field, array))
            }
            false => {
                let i = read
                    .index_of(c)
                    .map_err(|_| internal(format!("a lookup did not read {c}")))?;
                Ok((read.fields()[i].clone(), batch.column(i).clone()))
            }
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .unzip();
    RecordBatch::try_new(
        Arc::new(Schema::new_with_metadata(fields, read.metadata().clone())),
        arrays,
    )
    .map_err(|e| internal(e.to_string()))
}

/// The column and values of a read an index lookup may answer: an
/// equality or IN list ([`filter::lookup`]) with no order or offset, and
/// some columns to read.
fn lookup(
    spec: &ScanSpec,
    table: &Schema,
    columns: &[String],
    (_, offset): (Option<u64>, Option<u64>),
) -> Option<(String, Vec<ScalarValue>)> {
    let f = spec.filter.as_ref()?;
    if !spec.order.is_empty() || offset.is_some() || columns.is_empty() {
        return None;
    }
    filter::lookup(f, &spec.params, table)
}

/// The ids of the nodes whose `@key` (the single column `column`) has one
/// of `values`: a node's id is its key's canonical text (docs/dev/storage.md),
/// so an equality on the key is one on `id`, which every table of more
/// than a few thousand rows indexes. `None` for any other column, or a
/// value of a type the rewrite does not cover.
fn key_ids(
    snapshot: &Snapshot,
    type_name: &str,
    column: &str,
    values: &[ScalarValue],
) -> Option<Vec<ScalarValue>> {
    let node = snapshot.graph().catalog().node(type_name)?;
    if !matches!(node.key.as_deref(), Some([key]) if key == column) {
        return None;
    }
    values
        .iter()
        .map(|v| {
            let value = match v {
                ScalarValue::Utf8(Some(s)) => omnigraph_engine::Value::String(s.clone()),
                ScalarValue::Int32(Some(i)) => omnigraph_engine::Value::Int((*i).into()),
                ScalarValue::Int64(Some(i)) => omnigraph_engine::Value::Int(*i),
                _ => return None,
            };
            let id = omnigraph_engine::value::key_text(&value).ok()?;
            Some(ScalarValue::Utf8(Some(id)))
        })
        .collect()
}

/// The row positions a spec reads by offset: a short limit with no filter,
/// order or own writes, and some columns.
fn take_range(spec: &ScanSpec) -> Option<(u64, u64)> {
    let limit = spec.limit.filter(|n| *n <= TAKE_ROWS)?;
    (spec.filter.is_none() && spec.order.is_empty() && !spec.columns.is_empty())
        .then(|| (spec.offset.unwrap_or(0), limit))
}

/// The committed rows `offset..offset + limit` (fewer at the table's end),
/// read by offset; `None` when there are none.
async fn taken_rows(
    snapshot: &Snapshot,
    spec: &ScanSpec,
    (offset, limit): (u64, u64),
) -> Result<Option<RecordBatch>> {
    let rows = async {
        let total = snapshot.count(&spec.type_name).await?;
        let start = offset.min(total);
        let end = offset.saturating_add(limit).min(total);
        if start == end {
            return Ok(None);
        }
        let ds = snapshot.dataset(&spec.type_name).await?;
        omnigraph_engine::take_range(&ds, &spec.columns, start..end)
            .await
            .map(Some)
    };
    match rows.await {
        Ok(rows) => Ok(rows),
        Err(e) => Err(snapshot.read_error(&spec.type_name, e).await),
    }
}

/// The rows of `batch` whose `id` (column `id`) the transaction did not replace.
fn without_hidden(batch: &RecordBatch, id: usize, hidden: &HashSet<String>) -> Result<RecordBatch> {
    let ids = batch
        .column(id)
        .as_string_opt::<i32>()
        .ok_or_else(|| internal("the id column is not text"))?;
    let keep: BooleanArray = ids
        .iter()
        .map(|v| Some(!v.is_some_and(|s| hidden.contains(s))))
        .collect();
    Ok(filter_record_batch(batch, &keep)?)
}

/// `batch` with its columns cast to `types` where they differ (none do
/// when every source was written from the table's schema).
fn with_types(batch: RecordBatch, types: &[DataType]) -> Result<RecordBatch> {
    if types.len() != batch.num_columns()
        || batch
            .columns()
            .iter()
            .zip(types)
            .all(|(c, t)| c.data_type() == t)
    {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(types)
        .map(|(c, t)| cast(c, t))
        .collect::<Result<Vec<_>, _>>()?;
    let fields: Vec<_> = batch
        .schema()
        .fields()
        .iter()
        .zip(types)
        .map(|(f, t)| f.as_ref().clone().with_data_type(t.clone()))
        .collect();
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

/// The first `width` columns of `batch` (its row count kept when none).
fn leading_columns(batch: RecordBatch, width: usize) -> Result<RecordBatch> {
    if batch.num_columns() == width {
        return Ok(batch);
    }
    let fields: Vec<_> = batch
        .schema()
        .fields()
        .iter()
        .take(width)
        .cloned()
        .collect();
    let columns: Vec<ArrayRef> = batch.columns().iter().take(width).cloned().collect();
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

/// The ids of the rows `spec`'s filter matches, in scan order: the
/// committed rows the transaction still sees (without those `view`
/// replaced or deleted) and the transaction's own. What a direct UPDATE
/// or DELETE changes; only the `id` column is read.
pub async fn matching_ids(
    snapshot: &Snapshot,
    view: Option<Arc<StagedView>>,
    spec: &ScanSpec,
) -> Result<Vec<String>> {
    let spec = ScanSpec {
        columns: vec!["id".to_string()],
        order: Vec::new(),
        ..spec.clone()
    };
    let mut scan = Scan::open(snapshot, view, &spec).await?;
    let mut ids = Vec::new();
    while let Some(batch) = scan.next_batch().await? {
        let column = batch
            .column(0)
            .as_string_opt::<i32>()
            .ok_or_else(|| internal("the id column is not text"))?;
        ids.extend(column.iter().flatten().map(str::to_string));
    }
    Ok(ids)
}

impl Scan {
    /// Start reading: open the table at the snapshot's version and start
    /// the Lance scans. `view` is the open transaction's changes to the
    /// table, if it made any.
    pub async fn open(
        snapshot: &Snapshot,
        view: Option<Arc<StagedView>>,
        spec: &ScanSpec,
    ) -> Result<Scan> {
        let table =
            omnigraph_engine::value::table_schema(snapshot.graph().catalog(), &spec.type_name)?;
        let filter = lance_filter(spec, &table)?;
        let mut columns = spec.columns.clone();
        let mut scan = Scan {
            snapshot: snapshot.clone(),
            type_name: spec.type_name.clone(),
            sources: Vec::new(),
            hidden: None,
            types: Vec::new(),
            width: columns.len(),
            order: spec.order.clone(),
            order_columns: Vec::new(),
            converter: None,
            current: 0,
            remaining: spec.limit,
        };
        if spec.limit == Some(0) {
            // Nothing to read: no Lance scan is started.
            return Ok(scan);
        }
        if spec.offset.is_some() && (view.is_some() || spec.filter.is_some()) {
            return Err(internal(
                "a range of rows is read only without a filter or own writes",
            ));
        }
        let Some(view) = view else {
            if let Some(range) = take_range(spec) {
                let rows = taken_rows(snapshot, spec, range).await?;
                scan.sources.push(Source::new(Rows::Memory(rows), true));
                return Ok(scan);
            }
            let range = (spec.limit, spec.offset);
            let rows = committed_rows(snapshot, (spec, &table), &columns, filter, range).await?;
            scan.sources.push(Source::new(rows, true));
            return Ok(scan);
        };
        // Merging needs the order keys in every batch, and skipping the
        // replaced committed rows needs their id.
        scan.order_columns = spec
            .order
            .iter()
            .map(|o| position_or_push(&mut columns, &o.column))
            .collect();
        let skip = !view.hide_all && !view.hidden.is_empty();
        if skip {
            let id = position_or_push(&mut columns, "id");
            scan.hidden = Some((view.clone(), id));
        }
        // Merged batches must agree on every column's type: the
        // transaction's rows are read as the table's types.
        scan.types = columns
            .iter()
            .map(|c| Ok(table.field_with_name(c)?.data_type().clone()))
            .collect::<Result<_>>()?;
        if !view.hide_all {
            // A limit on committed rows only holds when none are skipped.
            let limit = if skip { None } else { spec.limit };
            let rows = committed_rows(
                snapshot,
                (spec, &table),
                &columns,
                filter.clone(),
                (limit, None),
            )
            .await?;
            scan.sources.push(Source::new(rows, true));
        }
        if let Some(rows) = &view.rows {
            let selected = staged::select(rows, filter.as_ref(), &columns, &spec.order)
                .map_err(|e| internal(e.0))?;
            scan.sources
                .push(Source::new(Rows::Memory(Some(selected)), false));
        }
        if let Some(spill) = &view.spill {
            let rows = lance_rows(spill, &columns, filter, &spec.order, (spec.limit, None)).await?;
            scan.sources.push(Source::new(Rows::Lance(rows), false));
        }
        Ok(scan)
    }

    /// Whether every row is already read (a short range by offset, an
    /// index lookup, staged rows): the rest of the scan does no I/O.
    pub fn is_read(&self) -> bool {
        self.sources
            .iter()
            .all(|s| matches!(s.rows, Rows::Memory(_)))
    }

    /// The next batch of rows (never empty), or `None` at the end.
    pub async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        if self.remaining == Some(0) {
            return Ok(None);
        }
        let next = if self.order_columns.is_empty() || self.sources.len() < 2 {
            self.next_in_turn().await?
        } else {
            self.next_merged().await?
        };
        let Some(mut batch) = next else {
            return Ok(None);
        };
        if let Some(n) = self.remaining.as_mut() {
            if batch.num_rows() as u64 > *n {
                batch = batch.slice(0, *n as usize);
            }
            *n -= batch.num_rows() as u64;
        }
        leading_columns(batch, self.width).map(Some)
    }

    /// The sources one after another: committed, staged, spilled.
    async fn next_in_turn(&mut self) -> Result<Option<RecordBatch>> {
        while self.current < self.sources.len() {
            if let Some(b) = self.pull(self.current).await? {
                return Ok(Some(b));
            }
            self.current += 1;
        }
        Ok(None)
    }

    /// The next non-empty batch of source `i` (rows the transaction
    /// replaced left out), or `None` when it has no more.
    async fn pull(&mut self, i: usize) -> Result<Option<RecordBatch>> {
        loop {
            let src = &mut self.sources[i];
            let next = match &mut src.rows {
                Rows::Lance(stream) => match stream.next().await {
                    None => None,
                    Some(Ok(b)) => Some(b),
                    Some(Err(e)) if src.committed => {
                        return Err(self.snapshot.read_error(&self.type_name, e.into()).await);
                    }
                    Some(Err(e)) => return Err(e.into()),
                },
                Rows::Memory(b) => b.take(),
            };
            let Some(mut batch) = next else {
                return Ok(None);
            };
            if src.committed
                && let Some((view, id)) = &self.hidden
            {
                batch = without_hidden(&batch, *id, &view.hidden)?;
            }
            if !src.committed {
                batch = with_types(batch, &self.types)?;
            }
            if batch.num_rows() > 0 {
                return Ok(Some(batch));
            }
        }
    }

    /// The order keys of a batch, in Arrow's byte-comparable row format.
    fn keys(&mut self, batch: &RecordBatch) -> Result<KeyRows> {
        let arrays: Vec<ArrayRef> = self
            .order_columns
            .iter()
            .map(|i| batch.column(*i).clone())
            .collect();
        if self.converter.is_none() {
            let fields = self
                .order
                .iter()
                .zip(&arrays)
                .map(|(o, a)| {
                    SortField::new_with_options(
                        a.data_type().clone(),
                        SortOptions {
                            descending: !o.ascending,
                            nulls_first: o.nulls_first,
                        },
                    )
                })
                .collect();
            self.converter = Some(RowConverter::new(fields)?);
        }
        match &self.converter {
            Some(c) => Ok(c.convert_columns(&arrays)?),
            None => Err(internal("no row converter")),
        }
    }

    /// Up to [`BATCH_ROWS`] rows merged from all sources by their order
    /// keys. A batch ends early when a source must load its next batch
    /// (the rows taken from the old one are emitted first).
    async fn next_merged(&mut self) -> Result<Option<RecordBatch>> {
        let most = self
            .remaining
            .map_or(BATCH_ROWS, |n| (n.min(BATCH_ROWS as u64)) as usize);
        let mut taken: Vec<(usize, usize)> = Vec::new();
        loop {
            for i in 0..self.sources.len() {
                let src = &self.sources[i];
                if src.done || src.has_row() {
                    continue;
                }
                if !taken.is_empty() {
                    return self.emit(&taken).map(Some);
                }
                let next = self.pull(i).await?;
                let keys = match &next {
                    Some(b) => Some(self.keys(b)?),
                    None => None,
                };
                let src = &mut self.sources[i];
                src.done = next.is_none();
                src.batch = next;
                src.keys = keys;
                src.row = 0;
            }
            // The source whose current row sorts first (the earlier source on ties).
            let mut best: Option<usize> = None;
            for (i, src) in self.sources.iter().enumerate() {
                if !src.has_row() {
                    continue;
                }
                fn key(s: &Source) -> Option<arrow_row::Row<'_>> {
                    s.keys.as_ref().map(|k| k.row(s.row))
                }
                best = match best {
                    Some(b) if key(&self.sources[b]) <= key(src) => Some(b),
                    _ => Some(i),
                };
            }
            let Some(i) = best else {
                return if taken.is_empty() {
                    Ok(None)
                } else {
                    self.emit(&taken).map(Some)
                };
            };
            let src = &mut self.sources[i];
            taken.push((i, src.row));
            src.row += 1;
            if taken.len() >= most {
                return self.emit(&taken).map(Some);
            }
        }
    }

    /// One batch of the rows taken, `(source, row)` in order.
    fn emit(&self, taken: &[(usize, usize)]) -> Result<RecordBatch> {
        let mut batches: Vec<&RecordBatch> = Vec::new();
        let mut slot = vec![usize::MAX; self.sources.len()];
        for (i, src) in self.sources.iter().enumerate() {
            if let Some(b) = &src.batch {
                slot[i] = batches.len();
                batches.push(b);
            }
        }
        let indices: Vec<(usize, usize)> = taken
            .iter()
            .map(|(source, row)| (slot[*source], *row))
            .collect();
        Ok(interleave_record_batch(&batches, &indices)?)
    }
}

/// What a scan reads, for EXPLAIN (the extension's ExplainForeignScan and
/// the shell's plan show the same facts).
#[derive(Debug, Clone)]
pub struct ScanExplain {
    pub type_name: String,
    /// `None` for a snapshot pinned to a commit.
    pub branch: Option<String>,
    pub commit: String,
    pub filter: Option<String>,
    /// The indexes of the pinned table version Lance answers the filter
    /// from (rows written since an index was built are scanned).
    pub indexes: Vec<(String, IndexKind)>,
    pub columns: Vec<String>,
    pub order: Vec<String>,
}

impl ScanExplain {
    pub async fn new(snapshot: &Snapshot, spec: &ScanSpec) -> Result<ScanExplain> {
        let indexes = match &spec.filter {
            Some(f) => {
                let indexes = snapshot.indexes(&spec.type_name).await?;
                let answered = |column: &str, shape| {
                    indexes
                        .iter()
                        .find(|i| i.column == column && i.kind.answers(shape))
                        .map(|i| i.kind)
                };
                filter::index_use(f, &answered)
            }
            None => Vec::new(),
        };
        Ok(ScanExplain {
            type_name: spec.type_name.clone(),
            branch: snapshot.branch().map(str::to_string),
            commit: snapshot.commit().id.clone(),
            filter: spec.filter.as_ref().map(filter::display),
            indexes,
            columns: spec.columns.clone(),
            order: spec
                .order
                .iter()
                .map(|o| {
                    format!(
                        "{} {} NULLS {}",
                        o.column,
                        if o.ascending { "ASC" } else { "DESC" },
                        if o.nulls_first { "FIRST" } else { "LAST" }
                    )
                })
                .collect(),
        })
    }

    /// The facts as labelled lines, in the order EXPLAIN prints them.
    pub fn lines(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("Omnigraph Type", self.type_name.clone()),
            (
                "Omnigraph Branch",
                self.branch
                    .clone()
                    .unwrap_or_else(|| "(pinned commit)".to_string()),
            ),
            ("Omnigraph Commit", self.commit.clone()),
        ];
        if let Some(f) = &self.filter {
            out.push(("Pushed Filter", f.clone()));
        }
        for (column, kind) in &self.indexes {
            out.push(("Omnigraph Index", format!("{column} ({})", kind.as_str())));
        }
        // count(*) and the like read no column data at all.
        out.push((
            "Columns Read",
            if self.columns.is_empty() {
                "(none)".to_string()
            } else {
                self.columns.join(", ")
            },
        ));
        if !self.order.is_empty() {
            out.push(("Pushed Order", self.order.join(", ")));
        }
        out
    }
}
