//! Aggregates computed next to the data: `count(*)`, `count(col)`, `sum`,
//! `avg`, `min` and `max` over one type's table, optionally grouped by
//! some of its columns, with the result Postgres computes over the same
//! rows.
//!
//! The rows are those a [`Scan`] reads (the pushed filter, and inside a
//! write transaction its own writes), so the answer is the one a scan
//! followed by Postgres's aggregation would give. Only the columns the
//! aggregates and groups need are read. A `count(*)` of a whole table
//! without own writes is answered from Lance's metadata, with no scan.
//!
//! Results follow Postgres's types and rules:
//! - `count` is int8 and never NULL;
//! - `sum` of an int4 column is int8; of an int8 or numeric column
//!   numeric (exact, accumulated in 128 bits, returned as
//!   `Decimal128(38, 0)`); of a float column the same float type, and a
//!   finite sum that overflows is an error, as in Postgres;
//! - `avg` of an integer column is numeric: returned as the exact sum and
//!   count ([`AggColumn::Quotient`]), for the frontend to divide with its
//!   own numeric division; `avg` of a float column is float8;
//! - `sum`, `avg`, `min` and `max` over no values are NULL;
//! - `min` and `max` keep the column's type; text compares by bytes (the
//!   C collation: the frontend pushes text only then); floats order NaN
//!   above every number and tie -0 with 0, as Postgres does.
//!
//! Without grouping there is always one result row, over no rows too.
//! Groups are found by the byte image of their keys (Arrow's row format),
//! so NULL keys form one group, as in SQL. Grouping by a float column is
//! not offered: Postgres groups -0 with 0 and every NaN together.
//!
//! Floats are added in scan order, which may differ from the order
//! Postgres adds the same rows in; the last digits of a float sum can
//! differ, as they do between Postgres's serial and parallel plans.

use std::collections::HashMap;
use std::sync::Arc;

use omnigraph_engine::deps::arrow_array::cast::AsArray;
use omnigraph_engine::deps::arrow_array::types::{
    ArrowPrimitiveType, Date32Type, Float32Type, Float64Type, Int32Type, Int64Type,
    TimestampMicrosecondType, UInt32Type, UInt64Type,
};
use omnigraph_engine::deps::arrow_array::{
    Array, ArrayRef, Date32Array, Decimal128Array, Float32Array, Float64Array, Int32Array,
    Int64Array, LargeStringArray, StringArray, TimestampMicrosecondArray, UInt32Array, UInt64Array,
};
use omnigraph_engine::deps::arrow_schema::{DataType, Schema, TimeUnit};
use omnigraph_engine::deps::lance::deps::datafusion::arrow::row::{
    RowConverter, Rows as KeyRows, SortField,
};
use omnigraph_engine::{Snapshot, StagedView};
use serde::{Deserialize, Serialize};

use super::{Scan, ScanSpec};

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggFunc {
    /// `count(*)`: rows.
    CountRows,
    /// `count(col)`: non-NULL values.
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

/// One aggregate of a pushed aggregation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregate {
    pub func: AggFunc,
    /// The graph column aggregated; `None` for `count(*)`.
    pub column: Option<String>,
}

impl std::fmt::Display for Aggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.func {
            AggFunc::CountRows | AggFunc::Count => "count",
            AggFunc::Sum => "sum",
            AggFunc::Avg => "avg",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
        };
        write!(f, "{name}({})", self.column.as_deref().unwrap_or("*"))
    }
}

/// What to compute: groups (graph column names) and aggregates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateSpec {
    pub group_by: Vec<String>,
    pub aggregates: Vec<Aggregate>,
}

impl AggregateSpec {
    /// The columns a scan must read: the groups, then each aggregated
    /// column once.
    pub fn columns(&self) -> Vec<String> {
        let mut out = self.group_by.clone();
        for a in &self.aggregates {
            if let Some(c) = &a.column
                && !out.contains(c)
            {
                out.push(c.clone());
            }
        }
        out
    }

    /// `count(x), sum(y) GROUP BY a, b`, for EXPLAIN.
    pub fn describe(&self) -> String {
        let aggs: Vec<String> = self.aggregates.iter().map(|a| a.to_string()).collect();
        let mut text = aggs.join(", ");
        if !self.group_by.is_empty() {
            text.push_str(" GROUP BY ");
            text.push_str(&self.group_by.join(", "));
        }
        text
    }
}

/// One aggregate's results, one value per group.
#[derive(Debug, Clone)]
pub enum AggColumn {
    Values(ArrayRef),
    /// `avg` of an integer column: the exact sum (`Decimal128(38, 0)`,
    /// NULL over no values) and the count, for a numeric division.
    Quotient {
        sum: ArrayRef,
        count: ArrayRef,
    },
}

/// The result: one row per group.
#[derive(Debug, Clone)]
pub struct Aggregated {
    pub rows: usize,
    /// One array per `group_by` column, in the table's types.
    pub groups: Vec<ArrayRef>,
    /// One per aggregate, in the spec's order.
    pub aggregates: Vec<AggColumn>,
}

#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    #[error(transparent)]
    Read(#[from] omnigraph_engine::Error),
    /// A result out of its type's range; the message is Postgres's.
    #[error("{0}")]
    OutOfRange(&'static str),
    /// Arrow refused an operation on the scanned columns.
    #[error("aggregating: {0}")]
    Arrow(String),
    /// A function over a column type it is not defined for: the frontend
    /// offered a pushdown it should not have.
    #[error("{0} is not computed next to the data for a column of type {1}")]
    Unsupported(String, DataType),
}

type Result<T> = std::result::Result<T, AggregateError>;

const FLOAT_OVERFLOW: &str = "value out of range: overflow";
const BIGINT_RANGE: &str = "bigint out of range";

/// Compute `agg` over the rows `scan` reads (its columns are replaced by
/// the ones the aggregation needs).
pub async fn aggregate(
    snapshot: &Snapshot,
    view: Option<Arc<StagedView>>,
    scan: &ScanSpec,
    agg: &AggregateSpec,
) -> Result<Aggregated> {
    let columns = agg.columns();
    if columns.is_empty() && scan.filter.is_none() && view.is_none() {
        // Only count(*): Lance's metadata holds it.
        let n = snapshot.count(&scan.type_name).await? as i64;
        return Ok(Aggregated {
            rows: 1,
            groups: Vec::new(),
            aggregates: agg
                .aggregates
                .iter()
                .map(|_| AggColumn::Values(Arc::new(Int64Array::from(vec![n]))))
                .collect(),
        });
    }
    let spec = ScanSpec {
        columns: columns.clone(),
        order: Vec::new(),
        limit: None,
        offset: None,
        ..scan.clone()
    };
    let table = omnigraph_engine::value::table_schema(snapshot.graph().catalog(), &scan.type_name)?;
    let mut accs = agg
        .aggregates
        .iter()
        .map(|a| {
            let dt = match &a.column {
                Some(c) => Some(table.field_with_name(c).map_err(arrow_error)?.data_type()),
                None => None,
            };
            Acc::new(a, dt)
        })
        .collect::<Result<Vec<_>>>()?;
    // Where each aggregate's column is in a batch.
    let positions: Vec<Option<usize>> = agg
        .aggregates
        .iter()
        .map(|a| {
            a.column
                .as_ref()
                .and_then(|c| columns.iter().position(|n| n == c))
        })
        .collect();
    let mut groups = Grouping::new(agg.group_by.len());
    let mut reader = Scan::open(snapshot, view, &spec).await?;
    while let Some(batch) = reader.next_batch().await? {
        let ids = groups.assign(&batch.columns()[..agg.group_by.len()], batch.num_rows())?;
        for (acc, at) in accs.iter_mut().zip(&positions) {
            acc.resize(groups.len());
            acc.update(at.map(|i| batch.column(i)), &ids, batch.num_rows())?;
        }
    }
    let rows = groups.len();
    let aggregates = accs
        .into_iter()
        .map(|mut acc| {
            acc.resize(rows);
            acc.finish()
        })
        .collect::<Result<_>>()?;
    Ok(Aggregated {
        rows,
        groups: groups.finish(&table, &agg.group_by)?,
        aggregates,
    })
}

/// Group numbers by key. Without keys there is one group.
struct Grouping {
    width: usize,
    converter: Option<RowConverter>,
    index: HashMap<Box<[u8]>, usize>,
    keys: Option<KeyRows>,
    count: usize,
}

impl Grouping {
    fn new(width: usize) -> Grouping {
        Grouping {
            width,
            converter: None,
            index: HashMap::new(),
            keys: None,
            // Without keys there is one group, over no rows too.
            count: usize::from(width == 0),
        }
    }

    fn len(&self) -> usize {
        self.count
    }

    /// The group of every row of a batch, creating groups as needed
    /// (empty without keys: every row is in the one group).
    fn assign(&mut self, keys: &[ArrayRef], rows: usize) -> Result<Vec<usize>> {
        if self.width == 0 {
            return Ok(Vec::new());
        }
        if self.converter.is_none() {
            let fields = keys
                .iter()
                .map(|k| SortField::new(k.data_type().clone()))
                .collect();
            let converter = RowConverter::new(fields).map_err(arrow_error)?;
            self.keys = Some(converter.empty_rows(0, 0));
            self.converter = Some(converter);
        }
        let (Some(converter), Some(stored)) = (self.converter.as_ref(), self.keys.as_mut()) else {
            return Ok(Vec::new());
        };
        let converted = converter.convert_columns(keys).map_err(arrow_error)?;
        let mut ids = Vec::with_capacity(rows);
        for i in 0..rows {
            let row = converted.row(i);
            let id = match self.index.get(row.as_ref()) {
                Some(id) => *id,
                None => {
                    let id = self.count;
                    self.index.insert(row.as_ref().into(), id);
                    stored.push(row);
                    self.count += 1;
                    id
                }
            };
            ids.push(id);
        }
        Ok(ids)
    }

    /// The key columns, one value per group.
    fn finish(self, table: &Schema, names: &[String]) -> Result<Vec<ArrayRef>> {
        match (self.converter, self.keys) {
            (Some(c), Some(keys)) => c.convert_rows(keys.iter()).map_err(arrow_error),
            _ => {
                // No rows were grouped: empty columns of the table's types.
                names
                    .iter()
                    .map(|n| {
                        let f = table.field_with_name(n).map_err(arrow_error)?;
                        Ok(omnigraph_engine::deps::arrow_array::new_empty_array(
                            f.data_type(),
                        ))
                    })
                    .collect()
            }
        }
    }
}

fn arrow_error(e: impl std::fmt::Display) -> AggregateError {
    AggregateError::Arrow(e.to_string())
}

/// The group of row `i` (the only group when there are no keys).
#[inline]
fn group(ids: &[usize], i: usize) -> usize {
    if ids.is_empty() { 0 } else { ids[i] }
}

/// Call `f(row, value)` for every non-NULL value of a primitive array.
fn each<T: ArrowPrimitiveType>(a: &dyn Array, mut f: impl FnMut(usize, T::Native)) {
    let a = a.as_primitive::<T>();
    let values = a.values();
    match a.nulls().filter(|n| n.null_count() > 0) {
        None => values.iter().enumerate().for_each(|(i, v)| f(i, *v)),
        Some(nulls) => {
            for i in nulls.valid_indices() {
                f(i, values[i]);
            }
        }
    }
}

/// Every non-NULL value of an integer column, widened.
fn each_int(a: &dyn Array, f: impl FnMut(usize, i128)) -> bool {
    let mut f = f;
    match a.data_type() {
        DataType::Int32 => each::<Int32Type>(a, |i, v| f(i, v.into())),
        DataType::Int64 => each::<Int64Type>(a, |i, v| f(i, v.into())),
        DataType::UInt32 => each::<UInt32Type>(a, |i, v| f(i, v.into())),
        DataType::UInt64 => each::<UInt64Type>(a, |i, v| f(i, v.into())),
        DataType::Date32 => each::<Date32Type>(a, |i, v| f(i, v.into())),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            each::<TimestampMicrosecondType>(a, |i, v| f(i, v.into()))
        }
        _ => return false,
    }
    true
}

/// Every non-NULL value of a float column, as f64 (exact for float4).
fn each_float(a: &dyn Array, f: impl FnMut(usize, f64)) -> bool {
    let mut f = f;
    match a.data_type() {
        DataType::Float32 => each::<Float32Type>(a, |i, v| f(i, v.into())),
        DataType::Float64 => each::<Float64Type>(a, &mut f),
        _ => return false,
    }
    true
}

/// Postgres's float addition: a finite sum that overflows is an error.
#[inline]
fn add_f64(acc: f64, v: f64) -> Result<f64> {
    let r = acc + v;
    if r.is_infinite() && acc.is_finite() && v.is_finite() {
        return Err(AggregateError::OutOfRange(FLOAT_OVERFLOW));
    }
    Ok(r)
}

#[inline]
fn add_f32(acc: f32, v: f32) -> Result<f32> {
    let r = acc + v;
    if r.is_infinite() && acc.is_finite() && v.is_finite() {
        return Err(AggregateError::OutOfRange(FLOAT_OVERFLOW));
    }
    Ok(r)
}

/// Postgres's float order: NaN above every number, -0 equal to 0.
fn float_cmp(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
    }
}

/// Whether `new` replaces `best` for min (`max == false`) or max. On a
/// tie the newer value wins, as in Postgres's `float8larger`.
#[inline]
fn better(max: bool, ord: std::cmp::Ordering) -> bool {
    if max { ord.is_ge() } else { ord.is_le() }
}

/// The running state of one aggregate, one slot per group.
enum Acc {
    /// `count(*)`: rows.
    CountRows(Vec<i64>),
    /// `count(col)`: non-NULL values.
    Count(Vec<i64>),
    /// sum of integers: int8 for int4 input, numeric otherwise.
    SumInt {
        to_numeric: bool,
        sum: Vec<Option<i128>>,
    },
    /// sum of float4, added in float4 as Postgres's `float4pl` does.
    SumFloat4(Vec<Option<f32>>),
    SumFloat8(Vec<Option<f64>>),
    AvgInt {
        sum: Vec<i128>,
        n: Vec<i64>,
    },
    AvgFloat {
        sum: Vec<f64>,
        n: Vec<i64>,
    },
    MinMaxInt {
        max: bool,
        ty: DataType,
        best: Vec<Option<i128>>,
    },
    MinMaxFloat {
        max: bool,
        ty: DataType,
        best: Vec<Option<f64>>,
    },
    MinMaxText {
        max: bool,
        large: bool,
        best: Vec<Option<String>>,
    },
}

fn is_int(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Int32 | DataType::Int64 | DataType::UInt32 | DataType::UInt64
    )
}

impl Acc {
    fn new(a: &Aggregate, dt: Option<&DataType>) -> Result<Acc> {
        let unsupported =
            || AggregateError::Unsupported(a.to_string(), dt.cloned().unwrap_or(DataType::Null));
        Ok(match (a.func, dt) {
            (AggFunc::CountRows, _) => Acc::CountRows(Vec::new()),
            (AggFunc::Count, Some(_)) => Acc::Count(Vec::new()),
            (AggFunc::Sum, Some(dt)) if is_int(dt) => Acc::SumInt {
                to_numeric: *dt != DataType::Int32,
                sum: Vec::new(),
            },
            (AggFunc::Sum, Some(DataType::Float32)) => Acc::SumFloat4(Vec::new()),
            (AggFunc::Sum, Some(DataType::Float64)) => Acc::SumFloat8(Vec::new()),
            (AggFunc::Avg, Some(dt)) if is_int(dt) => Acc::AvgInt {
                sum: Vec::new(),
                n: Vec::new(),
            },
            (AggFunc::Avg, Some(DataType::Float32 | DataType::Float64)) => Acc::AvgFloat {
                sum: Vec::new(),
                n: Vec::new(),
            },
            (AggFunc::Min | AggFunc::Max, Some(dt)) => {
                let max = a.func == AggFunc::Max;
                match dt {
                    DataType::Float32 | DataType::Float64 => Acc::MinMaxFloat {
                        max,
                        ty: dt.clone(),
                        best: Vec::new(),
                    },
                    DataType::Utf8 | DataType::LargeUtf8 => Acc::MinMaxText {
                        max,
                        large: *dt == DataType::LargeUtf8,
                        best: Vec::new(),
                    },
                    DataType::Int32
                    | DataType::Int64
                    | DataType::UInt32
                    | DataType::UInt64
                    | DataType::Date32
                    | DataType::Timestamp(TimeUnit::Microsecond, _) => Acc::MinMaxInt {
                        max,
                        ty: dt.clone(),
                        best: Vec::new(),
                    },
                    _ => return Err(unsupported()),
                }
            }
            _ => return Err(unsupported()),
        })
    }

    fn resize(&mut self, groups: usize) {
        match self {
            Acc::CountRows(n) | Acc::Count(n) => n.resize(groups, 0),
            Acc::SumInt { sum, .. } => sum.resize(groups, None),
            Acc::SumFloat4(sum) => sum.resize(groups, None),
            Acc::SumFloat8(sum) => sum.resize(groups, None),
            Acc::AvgInt { sum, n } => {
                sum.resize(groups, 0);
                n.resize(groups, 0);
            }
            Acc::AvgFloat { sum, n } => {
                sum.resize(groups, 0.0);
                n.resize(groups, 0);
            }
            Acc::MinMaxInt { best, .. } => best.resize(groups, None),
            Acc::MinMaxFloat { best, .. } => best.resize(groups, None),
            Acc::MinMaxText { best, .. } => best.resize(groups, None),
        }
    }

    /// Fold one batch: `values` is the aggregated column (none for
    /// `count(*)`), `ids` each row's group (empty: one group).
    fn update(&mut self, values: Option<&ArrayRef>, ids: &[usize], rows: usize) -> Result<()> {
        if let Acc::CountRows(n) = self {
            if ids.is_empty() {
                n[0] += rows as i64;
            } else {
                ids.iter().for_each(|g| n[*g] += 1);
            }
            return Ok(());
        }
        let Some(a) = values.map(|v| v.as_ref()) else {
            return Err(AggregateError::Unsupported(
                "an aggregate of no column".into(),
                DataType::Null,
            ));
        };
        let mut failed = None;
        let handled = match self {
            Acc::CountRows(_) => true,
            Acc::Count(n) => {
                if ids.is_empty() {
                    n[0] += (a.len() - a.null_count()) as i64;
                } else {
                    match a.logical_nulls() {
                        None => ids.iter().for_each(|g| n[*g] += 1),
                        Some(nulls) => nulls.valid_indices().for_each(|i| n[ids[i]] += 1),
                    }
                }
                true
            }
            Acc::SumInt { sum, .. } => each_int(a, |i, v| {
                let s = &mut sum[group(ids, i)];
                *s = Some(s.unwrap_or(0) + v);
            }),
            Acc::SumFloat4(sum) => {
                each::<Float32Type>(a, |i, v| {
                    let s = &mut sum[group(ids, i)];
                    match add_f32(s.unwrap_or(0.0), v) {
                        Ok(r) => *s = Some(r),
                        Err(e) => failed = Some(e),
                    }
                });
                true
            }
            Acc::SumFloat8(sum) => each_float(a, |i, v| {
                let s = &mut sum[group(ids, i)];
                match add_f64(s.unwrap_or(0.0), v) {
                    Ok(r) => *s = Some(r),
                    Err(e) => failed = Some(e),
                }
            }),
            Acc::AvgInt { sum, n } => each_int(a, |i, v| {
                let g = group(ids, i);
                sum[g] += v;
                n[g] += 1;
            }),
            Acc::AvgFloat { sum, n } => each_float(a, |i, v| {
                let g = group(ids, i);
                match add_f64(sum[g], v) {
                    Ok(r) => sum[g] = r,
                    Err(e) => failed = Some(e),
                }
                n[g] += 1;
            }),
            Acc::MinMaxInt { max, best, .. } => {
                let max = *max;
                each_int(a, |i, v| {
                    let b = &mut best[group(ids, i)];
                    if b.is_none_or(|cur| better(max, v.cmp(&cur))) {
                        *b = Some(v);
                    }
                })
            }
            Acc::MinMaxFloat { max, best, .. } => {
                let max = *max;
                each_float(a, |i, v| {
                    let b = &mut best[group(ids, i)];
                    if b.is_none_or(|cur| better(max, float_cmp(v, cur))) {
                        *b = Some(v);
                    }
                })
            }
            Acc::MinMaxText { max, best, .. } => {
                let max = *max;
                let mut fold = |i: usize, v: &str| {
                    let b = &mut best[group(ids, i)];
                    let replace = match b {
                        None => true,
                        Some(cur) => {
                            let ord = v.as_bytes().cmp(cur.as_bytes());
                            if max { ord.is_gt() } else { ord.is_lt() }
                        }
                    };
                    if replace {
                        *b = Some(v.to_string());
                    }
                };
                match a.data_type() {
                    DataType::Utf8 => a
                        .as_string::<i32>()
                        .iter()
                        .enumerate()
                        .for_each(|(i, v)| v.into_iter().for_each(|v| fold(i, v))),
                    DataType::LargeUtf8 => a
                        .as_string::<i64>()
                        .iter()
                        .enumerate()
                        .for_each(|(i, v)| v.into_iter().for_each(|v| fold(i, v))),
                    _ => {
                        return Err(AggregateError::Unsupported(
                            "min/max".into(),
                            a.data_type().clone(),
                        ));
                    }
                }
                true
            }
        };
        if let Some(e) = failed {
            return Err(e);
        }
        if !handled {
            return Err(AggregateError::Unsupported(
                "an aggregate".into(),
                a.data_type().clone(),
            ));
        }
        Ok(())
    }

    fn finish(self) -> Result<AggColumn> {
        let numeric = |v: Vec<Option<i128>>| -> Result<ArrayRef> {
            Ok(Arc::new(
                Decimal128Array::from(v)
                    .with_precision_and_scale(38, 0)
                    .map_err(arrow_error)?,
            ))
        };
        Ok(AggColumn::Values(match self {
            Acc::CountRows(n) | Acc::Count(n) => Arc::new(Int64Array::from(n)),
            Acc::SumInt {
                to_numeric: true,
                sum,
            } => numeric(sum)?,
            Acc::SumInt { sum, .. } => {
                let out = sum
                    .into_iter()
                    .map(|s| s.map(i64::try_from).transpose())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|_| AggregateError::OutOfRange(BIGINT_RANGE))?;
                Arc::new(Int64Array::from(out))
            }
            Acc::SumFloat4(sum) => Arc::new(Float32Array::from(sum)),
            Acc::SumFloat8(sum) => Arc::new(Float64Array::from(sum)),
            Acc::AvgInt { sum, n } => {
                let sums = sum
                    .iter()
                    .zip(&n)
                    .map(|(s, n)| (*n > 0).then_some(*s))
                    .collect();
                return Ok(AggColumn::Quotient {
                    sum: numeric(sums)?,
                    count: Arc::new(Int64Array::from(n)),
                });
            }
            Acc::AvgFloat { sum, n } => Arc::new(Float64Array::from(
                sum.iter()
                    .zip(&n)
                    .map(|(s, n)| (*n > 0).then(|| s / *n as f64))
                    .collect::<Vec<_>>(),
            )),
            Acc::MinMaxInt { ty, best, .. } => int_array(&ty, best),
            Acc::MinMaxFloat { ty, best, .. } => {
                if ty == DataType::Float32 {
                    Arc::new(Float32Array::from(
                        best.into_iter()
                            .map(|v| v.map(|v| v as f32))
                            .collect::<Vec<_>>(),
                    ))
                } else {
                    Arc::new(Float64Array::from(best))
                }
            }
            Acc::MinMaxText { large, best, .. } => {
                if large {
                    Arc::new(LargeStringArray::from(best))
                } else {
                    Arc::new(StringArray::from(best))
                }
            }
        }))
    }
}

/// Widened integer values back in their column's type (they came from it,
/// so they fit).
fn int_array(ty: &DataType, v: Vec<Option<i128>>) -> ArrayRef {
    fn narrow<T: TryFrom<i128>>(v: Vec<Option<i128>>) -> Vec<Option<T>> {
        v.into_iter()
            .map(|x| x.and_then(|x| T::try_from(x).ok()))
            .collect()
    }
    match ty {
        DataType::Int32 => Arc::new(Int32Array::from(narrow::<i32>(v))),
        DataType::UInt32 => Arc::new(UInt32Array::from(narrow::<u32>(v))),
        DataType::UInt64 => Arc::new(UInt64Array::from(narrow::<u64>(v))),
        DataType::Date32 => Arc::new(Date32Array::from(narrow::<i32>(v))),
        DataType::Timestamp(TimeUnit::Microsecond, tz) => Arc::new(
            TimestampMicrosecondArray::from(narrow::<i64>(v)).with_timezone_opt(tz.clone()),
        ),
        _ => Arc::new(Int64Array::from(narrow::<i64>(v))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(func: AggFunc, dt: &DataType) -> Acc {
        Acc::new(
            &Aggregate {
                func,
                column: Some("x".into()),
            },
            Some(dt),
        )
        .unwrap()
    }

    fn run(func: AggFunc, values: ArrayRef, ids: &[usize], groups: usize) -> Result<AggColumn> {
        let mut a = acc(func, values.data_type());
        a.resize(groups);
        a.update(Some(&values), ids, values.len())?;
        a.finish()
    }

    fn values(c: AggColumn) -> ArrayRef {
        match c {
            AggColumn::Values(v) => v,
            AggColumn::Quotient { .. } => panic!("a quotient"),
        }
    }

    #[test]
    fn sums_follow_postgres_types() {
        let ints: ArrayRef = Arc::new(Int32Array::from(vec![Some(i32::MAX), None, Some(i32::MAX)]));
        let s = values(run(AggFunc::Sum, ints, &[], 1).unwrap());
        assert_eq!(s.as_primitive::<Int64Type>().value(0), 2 * i32::MAX as i64);
        let bigs: ArrayRef = Arc::new(Int64Array::from(vec![i64::MAX, i64::MAX]));
        let s = values(run(AggFunc::Sum, bigs, &[], 1).unwrap());
        let d = s.as_any().downcast_ref::<Decimal128Array>().unwrap();
        assert_eq!(d.value(0), 2 * i64::MAX as i128);
        let empty: ArrayRef = Arc::new(Int64Array::from(vec![None::<i64>]));
        let s = values(run(AggFunc::Sum, empty, &[], 1).unwrap());
        assert!(s.is_null(0));
    }

    #[test]
    fn float_overflow_is_an_error_but_infinity_is_not() {
        let big: ArrayRef = Arc::new(Float64Array::from(vec![f64::MAX, f64::MAX]));
        assert!(matches!(
            run(AggFunc::Sum, big, &[], 1),
            Err(AggregateError::OutOfRange(FLOAT_OVERFLOW))
        ));
        let inf: ArrayRef = Arc::new(Float64Array::from(vec![f64::INFINITY, 1.0]));
        let s = values(run(AggFunc::Sum, inf, &[], 1).unwrap());
        assert_eq!(s.as_primitive::<Float64Type>().value(0), f64::INFINITY);
        let big32: ArrayRef = Arc::new(Float32Array::from(vec![f32::MAX, f32::MAX]));
        assert!(run(AggFunc::Sum, big32, &[], 1).is_err());
    }

    #[test]
    fn min_max_order_like_postgres() {
        let f: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(1.0),
            Some(f64::NAN),
            None,
            Some(-3.0),
        ]));
        let mx = values(run(AggFunc::Max, f.clone(), &[], 1).unwrap());
        assert!(mx.as_primitive::<Float64Type>().value(0).is_nan());
        let mn = values(run(AggFunc::Min, f, &[], 1).unwrap());
        assert_eq!(mn.as_primitive::<Float64Type>().value(0), -3.0);
        let t: ArrayRef = Arc::new(StringArray::from(vec![
            Some("b"),
            Some("B"),
            None,
            Some("a"),
        ]));
        let mn = values(run(AggFunc::Min, t.clone(), &[], 1).unwrap());
        assert_eq!(mn.as_string::<i32>().value(0), "B");
        let mx = values(run(AggFunc::Max, t, &[], 1).unwrap());
        assert_eq!(mx.as_string::<i32>().value(0), "b");
    }

    #[test]
    fn groups_count_and_average() {
        let v: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(2), None, Some(4)]));
        let ids = [0, 1, 1, 0];
        let n = values(run(AggFunc::Count, v.clone(), &ids, 2).unwrap());
        assert_eq!(n.as_primitive::<Int64Type>().values().to_vec(), vec![2, 1]);
        let AggColumn::Quotient { sum, count } = run(AggFunc::Avg, v, &ids, 3).unwrap() else {
            panic!("avg of integers is a quotient");
        };
        let sum = sum.as_any().downcast_ref::<Decimal128Array>().unwrap();
        assert_eq!((sum.value(0), sum.value(1)), (5, 2));
        assert!(sum.is_null(2), "a group with no values averages to NULL");
        assert_eq!(
            count.as_primitive::<Int64Type>().values().to_vec(),
            vec![2, 1, 0]
        );
    }

    #[test]
    fn grouping_by_keys_with_nulls() {
        let mut g = Grouping::new(1);
        let keys: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), None, Some("a"), None]));
        assert_eq!(g.assign(&[keys], 4).unwrap(), vec![0, 1, 0, 1]);
        let more: ArrayRef = Arc::new(StringArray::from(vec![Some("b"), Some("a")]));
        assert_eq!(g.assign(&[more], 2).unwrap(), vec![2, 0]);
        assert_eq!(g.len(), 3);
    }
}
