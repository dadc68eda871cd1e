//! Arrow values to Postgres Datums, and the Postgres type of every graph
//! column. Readers are resolved once per batch: each column is downcast
//! to its typed buffer once, and a scan's text and bytea values are built
//! as varlenas in one allocation per column in a memory context reset at
//! the next batch; a row then reads each cell with one match and no
//! allocation.

use std::sync::Arc;

use omnigraph_engine::deps::arrow_array::cast::AsArray;
use omnigraph_engine::deps::arrow_array::types::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int32Type, Int64Type,
    TimestampMicrosecondType, UInt32Type, UInt64Type,
};
use omnigraph_engine::deps::arrow_array::{Array, ArrayRef, RecordBatch};
use omnigraph_engine::deps::arrow_schema::{DataType, TimeUnit};
use omnigraph_engine::deps::lance::deps::datafusion::arrow::buffer::{
    BooleanBuffer, NullBuffer, ScalarBuffer,
};
use omnigraph_engine::schema::{PropType, ScalarType};
use pgrx::pg_sys::{self, Datum, Oid};
use serde::{Deserialize, Serialize};

use crate::functions::PG_EPOCH_OFFSET_US;

/// Days between 1970-01-01 and 2000-01-01 (the Postgres date epoch).
pub const PG_EPOCH_OFFSET_DAYS: i32 = 10_957;

/// The Postgres scalar a graph value becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Text,
    Bool,
    Int4,
    Int8,
    Numeric,
    Float4,
    Float8,
    Date,
    TimestampTz,
    Bytea,
}

/// A column's Postgres type: a scalar or a one-dimensional array of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgType {
    pub kind: Kind,
    pub array: bool,
}

impl Kind {
    pub fn oid(self) -> Oid {
        match self {
            Kind::Text => pg_sys::TEXTOID,
            Kind::Bool => pg_sys::BOOLOID,
            Kind::Int4 => pg_sys::INT4OID,
            Kind::Int8 => pg_sys::INT8OID,
            Kind::Numeric => pg_sys::NUMERICOID,
            Kind::Float4 => pg_sys::FLOAT4OID,
            Kind::Float8 => pg_sys::FLOAT8OID,
            Kind::Date => pg_sys::DATEOID,
            Kind::TimestampTz => pg_sys::TIMESTAMPTZOID,
            Kind::Bytea => pg_sys::BYTEAOID,
        }
    }

    fn array_oid(self) -> Oid {
        match self {
            Kind::Text => pg_sys::TEXTARRAYOID,
            Kind::Bool => pg_sys::BOOLARRAYOID,
            Kind::Int4 => pg_sys::INT4ARRAYOID,
            Kind::Int8 => pg_sys::INT8ARRAYOID,
            Kind::Numeric => pg_sys::NUMERICARRAYOID,
            Kind::Float4 => pg_sys::FLOAT4ARRAYOID,
            Kind::Float8 => pg_sys::FLOAT8ARRAYOID,
            Kind::Date => Oid::from(1182u32),
            Kind::TimestampTz => Oid::from(1185u32),
            Kind::Bytea => Oid::from(1001u32),
        }
    }
}

impl PgType {
    pub fn oid(self) -> Oid {
        if self.array {
            self.kind.array_oid()
        } else {
            self.kind.oid()
        }
    }

    /// Whether a column declared with `oid` can show this type.
    pub fn accepts(self, oid: Oid) -> bool {
        oid == self.oid() || (!self.array && self.kind == Kind::Text && oid == pg_sys::VARCHAROID)
    }
}

fn scalar_kind(s: ScalarType) -> Kind {
    match s {
        ScalarType::String => Kind::Text,
        ScalarType::Blob => Kind::Bytea,
        ScalarType::Bool => Kind::Bool,
        ScalarType::I32 => Kind::Int4,
        ScalarType::I64 | ScalarType::U32 => Kind::Int8,
        ScalarType::U64 => Kind::Numeric,
        ScalarType::F32 => Kind::Float4,
        ScalarType::F64 => Kind::Float8,
        ScalarType::Date => Kind::Date,
        ScalarType::DateTime => Kind::TimestampTz,
    }
}

/// The Postgres type of a property (the same mapping as `omnigraph_sql::types`).
pub fn pg_type(ty: &PropType) -> PgType {
    match ty {
        PropType::Scalar(s) => PgType {
            kind: scalar_kind(*s),
            array: false,
        },
        PropType::Enum(_) => PgType {
            kind: Kind::Text,
            array: false,
        },
        PropType::List(s) => PgType {
            kind: scalar_kind(*s),
            array: true,
        },
        PropType::Vector(_) => PgType {
            kind: Kind::Float4,
            array: true,
        },
    }
}

pub const TEXT: PgType = PgType {
    kind: Kind::Text,
    array: false,
};

fn text_datum(s: &str) -> Datum {
    // SAFETY: the pointer and length describe `s`, which outlives the call;
    // the function copies it into a palloc'd text in the current context.
    Datum::from(unsafe { pg_sys::cstring_to_text_with_len(s.as_ptr().cast(), s.len() as i32) })
}

fn bytea_datum(b: &[u8]) -> Datum {
    // SAFETY: as for text; bytea has the same varlena layout.
    Datum::from(unsafe { pg_sys::cstring_to_text_with_len(b.as_ptr().cast(), b.len() as i32) })
}

fn numeric_datum(v: u64) -> Datum {
    use pgrx::IntoDatum;
    // AnyNumeric holds any u64 exactly; its Datum is a palloc'd numeric.
    pgrx::AnyNumeric::from(v)
        .into_datum()
        .unwrap_or(Datum::from(0usize))
}

/// Value `i` of a scalar array as a Datum of `kind`; `None` for NULL.
fn scalar_datum(a: &dyn Array, i: usize, kind: Kind) -> Option<Datum> {
    if a.is_null(i) {
        return None;
    }
    Some(match (a.data_type(), kind) {
        (DataType::Utf8, _) => text_datum(a.as_string::<i32>().value(i)),
        (DataType::LargeUtf8, _) => text_datum(a.as_string::<i64>().value(i)),
        (DataType::Boolean, _) => Datum::from(a.as_boolean().value(i)),
        (DataType::Int32, _) => Datum::from(a.as_primitive::<Int32Type>().value(i)),
        (DataType::Int64, _) => Datum::from(a.as_primitive::<Int64Type>().value(i)),
        (DataType::UInt32, _) => Datum::from(i64::from(a.as_primitive::<UInt32Type>().value(i))),
        (DataType::UInt64, _) => numeric_datum(a.as_primitive::<UInt64Type>().value(i)),
        // Exact integer sums (scale 0) of pushed aggregates.
        (DataType::Decimal128(_, 0), _) => {
            use pgrx::IntoDatum;
            pgrx::AnyNumeric::from(a.as_primitive::<Decimal128Type>().value(i))
                .into_datum()
                .unwrap_or(Datum::from(0usize))
        }
        (DataType::Float32, _) => Datum::from(a.as_primitive::<Float32Type>().value(i).to_bits()),
        (DataType::Float64, _) => Datum::from(a.as_primitive::<Float64Type>().value(i).to_bits()),
        // Saturating: a value at the edge of the type reads as Postgres's
        // infinity instead of wrapping (the graph never stores one itself).
        (DataType::Date32, _) => Datum::from(
            a.as_primitive::<Date32Type>()
                .value(i)
                .saturating_sub(PG_EPOCH_OFFSET_DAYS),
        ),
        (DataType::Timestamp(TimeUnit::Microsecond, _), _) => Datum::from(
            a.as_primitive::<TimestampMicrosecondType>()
                .value(i)
                .saturating_sub(PG_EPOCH_OFFSET_US),
        ),
        (DataType::LargeBinary, _) => bytea_datum(a.as_binary::<i64>().value(i)),
        (DataType::Binary, _) => bytea_datum(a.as_binary::<i32>().value(i)),
        // The plan checked the column types; anything else is a bug.
        (other, _) => crate::pg::raise(
            pgrx::PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            format!("omnigraph: unexpected stored type {other} for a {kind:?} column"),
            None,
            None,
        ),
    })
}

/// Element storage facts of an array's element type.
#[derive(Clone, Copy)]
struct ElemInfo {
    oid: Oid,
    len: i16,
    byval: bool,
    align: std::ffi::c_char,
}

fn elem_info(kind: Kind) -> ElemInfo {
    let oid = kind.oid();
    let (mut len, mut byval, mut align) = (0i16, false, 0 as std::ffi::c_char);
    // SAFETY: oid is a built-in type; the function writes the three outputs.
    unsafe { pg_sys::get_typlenbyvalalign(oid, &mut len, &mut byval, &mut align) };
    ElemInfo {
        oid,
        len,
        byval,
        align,
    }
}

/// A column's values, typed once per batch so a row reads its cell with
/// one predictable match and no downcast.
enum Values {
    Int32(ScalarBuffer<i32>),
    Int64(ScalarBuffer<i64>),
    UInt32(ScalarBuffer<u32>),
    Float32(ScalarBuffer<f32>),
    Float64(ScalarBuffer<f64>),
    Bool(BooleanBuffer),
    /// Days since 1970, shifted to Postgres's epoch when read.
    Date(ScalarBuffer<i32>),
    /// Microseconds since 1970, shifted to Postgres's epoch when read.
    Timestamp(ScalarBuffer<i64>),
    /// Text or bytea values already built as varlenas in the batch's
    /// memory context (one allocation per column per batch).
    Varlena(Vec<Datum>),
    /// Anything else (numeric, arrays, text without a batch context): per cell.
    Other,
}

/// One fetched column of the current batch, downcast once.
pub struct ColumnReader {
    array: ArrayRef,
    ty: PgType,
    elem: Option<ElemInfo>,
    nulls: Option<NullBuffer>,
    values: Values,
}

/// Every non-NULL value of a text or bytea column as a varlena (4-byte
/// header, 4-byte aligned) in one allocation in `ctx`; NULL rows get a
/// zero Datum, never read. The column's type is resolved here, once;
/// `None` for a column that is not text or bytea.
///
/// # Safety
/// `ctx` is a valid memory context that outlives every use of the Datums.
unsafe fn varlenas(
    a: &dyn Array,
    nulls: Option<&NullBuffer>,
    ctx: pg_sys::MemoryContext,
) -> Option<Vec<Datum>> {
    // SAFETY: the caller's contract.
    unsafe {
        Some(match a.data_type() {
            DataType::Utf8 => {
                let a = a.as_string::<i32>();
                varlenas_of(a.len(), |i| a.value(i).as_bytes(), nulls, ctx)
            }
            DataType::LargeUtf8 => {
                let a = a.as_string::<i64>();
                varlenas_of(a.len(), |i| a.value(i).as_bytes(), nulls, ctx)
            }
            DataType::Binary => {
                let a = a.as_binary::<i32>();
                varlenas_of(a.len(), |i| a.value(i), nulls, ctx)
            }
            DataType::LargeBinary => {
                let a = a.as_binary::<i64>();
                varlenas_of(a.len(), |i| a.value(i), nulls, ctx)
            }
            _ => return None,
        })
    }
}

/// # Safety
/// As for [`varlenas`]; `bytes(i)` is value `i` for every `i < len`.
unsafe fn varlenas_of<'a>(
    len: usize,
    bytes: impl Fn(usize) -> &'a [u8],
    nulls: Option<&NullBuffer>,
    ctx: pg_sys::MemoryContext,
) -> Vec<Datum> {
    const HEADER: usize = 4;
    let valid = |i: usize| nulls.is_none_or(|n| n.is_valid(i));
    let padded = |n: usize| (HEADER + n + 3) & !3;
    let total: usize = (0..len)
        .filter(|i| valid(*i))
        .map(|i| padded(bytes(i).len()))
        .sum();
    let mut out = Vec::with_capacity(len);
    // SAFETY: the block holds `total` bytes; each value is written inside
    // it at a 4-byte aligned offset (the block is MAXALIGNed); the header
    // is the 4-byte varlena header (SET_VARSIZE_4B: total length << 2 on a
    // little-endian machine).
    unsafe {
        let base = pg_sys::MemoryContextAllocHuge(ctx, total.max(1)) as *mut u8;
        let mut at = 0usize;
        for i in 0..len {
            if !valid(i) {
                out.push(Datum::from(0usize));
                continue;
            }
            let b = bytes(i);
            let p = base.add(at);
            (p as *mut u32).write(((HEADER + b.len()) as u32) << 2);
            std::ptr::copy_nonoverlapping(b.as_ptr(), p.add(HEADER), b.len());
            out.push(Datum::from(p));
            at += padded(b.len());
        }
    }
    out
}

#[cfg(target_endian = "big")]
compile_error!("varlenas() writes little-endian varlena headers");

impl ColumnReader {
    /// A reader whose text is allocated per value in the current memory
    /// context when read.
    pub fn new(array: ArrayRef, ty: PgType) -> ColumnReader {
        // SAFETY: no memory context is given.
        unsafe { ColumnReader::with_context(array, ty, None) }
    }

    /// A reader whose text and bytea values are built at once in `ctx`.
    ///
    /// # Safety
    /// `ctx`, when given, is a valid memory context that is not reset
    /// while the reader's Datums are in use.
    pub unsafe fn with_context(
        array: ArrayRef,
        ty: PgType,
        ctx: Option<pg_sys::MemoryContext>,
    ) -> ColumnReader {
        let elem = ty.array.then(|| elem_info(ty.kind));
        let nulls = array.logical_nulls().filter(|n| n.null_count() > 0);
        let values = if ty.array {
            Values::Other
        } else {
            let a = array.as_ref();
            match a.data_type() {
                DataType::Int32 => Values::Int32(a.as_primitive::<Int32Type>().values().clone()),
                DataType::Int64 => Values::Int64(a.as_primitive::<Int64Type>().values().clone()),
                DataType::UInt32 => Values::UInt32(a.as_primitive::<UInt32Type>().values().clone()),
                DataType::Float32 => {
                    Values::Float32(a.as_primitive::<Float32Type>().values().clone())
                }
                DataType::Float64 => {
                    Values::Float64(a.as_primitive::<Float64Type>().values().clone())
                }
                DataType::Boolean => Values::Bool(a.as_boolean().values().clone()),
                DataType::Date32 => Values::Date(a.as_primitive::<Date32Type>().values().clone()),
                DataType::Timestamp(TimeUnit::Microsecond, _) => Values::Timestamp(
                    a.as_primitive::<TimestampMicrosecondType>()
                        .values()
                        .clone(),
                ),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary => {
                    // SAFETY: per the contract.
                    ctx.and_then(|ctx| unsafe { varlenas(a, nulls.as_ref(), ctx) })
                        .map_or(Values::Other, Values::Varlena)
                }
                _ => Values::Other,
            }
        };
        ColumnReader {
            array,
            ty,
            elem,
            nulls,
            values,
        }
    }

    /// The Datum of row `i`, or `None` for NULL. Allocates (text without a
    /// batch context, numeric, arrays) in the current memory context: the
    /// executor's per-tuple context.
    #[inline]
    pub fn datum(&self, i: usize) -> Option<Datum> {
        if self.nulls.as_ref().is_some_and(|n| n.is_null(i)) {
            return None;
        }
        Some(match &self.values {
            Values::Int32(v) => Datum::from(v[i]),
            Values::Int64(v) => Datum::from(v[i]),
            Values::UInt32(v) => Datum::from(i64::from(v[i])),
            Values::Float32(v) => Datum::from(v[i].to_bits()),
            Values::Float64(v) => Datum::from(v[i].to_bits()),
            Values::Bool(v) => Datum::from(v.value(i)),
            // Saturating: a value at the edge of the type reads as
            // Postgres's infinity instead of wrapping.
            Values::Date(v) => Datum::from(v[i].saturating_sub(PG_EPOCH_OFFSET_DAYS)),
            Values::Timestamp(v) => Datum::from(v[i].saturating_sub(PG_EPOCH_OFFSET_US)),
            Values::Varlena(v) => v[i],
            Values::Other => return self.datum_slow(i),
        })
    }

    fn datum_slow(&self, i: usize) -> Option<Datum> {
        if !self.ty.array {
            return scalar_datum(self.array.as_ref(), i, self.ty.kind);
        }
        if self.array.is_null(i) {
            return None;
        }
        let values: Arc<dyn Array> = match self.array.data_type() {
            DataType::List(_) => self.array.as_list::<i32>().value(i),
            DataType::LargeList(_) => self.array.as_list::<i64>().value(i),
            DataType::FixedSizeList(_, _) => self.array.as_fixed_size_list().value(i),
            _ => return scalar_datum(self.array.as_ref(), i, self.ty.kind),
        };
        let n = values.len();
        let mut datums: Vec<Datum> = Vec::with_capacity(n);
        let mut nulls: Vec<bool> = Vec::with_capacity(n);
        for j in 0..n {
            match scalar_datum(values.as_ref(), j, self.ty.kind) {
                Some(d) => {
                    datums.push(d);
                    nulls.push(false);
                }
                None => {
                    datums.push(Datum::from(0usize));
                    nulls.push(true);
                }
            }
        }
        let e = self.elem.unwrap_or_else(|| elem_info(self.ty.kind));
        let mut dims = [n as i32];
        let mut lbs = [1i32];
        // SAFETY: datums/nulls hold n entries of the element type; dims and lbs
        // describe one dimension; construct_md_array copies into a palloc'd array.
        let arr = unsafe {
            if n == 0 {
                pg_sys::construct_empty_array(e.oid)
            } else {
                pg_sys::construct_md_array(
                    datums.as_mut_ptr(),
                    nulls.as_mut_ptr(),
                    1,
                    dims.as_mut_ptr(),
                    lbs.as_mut_ptr(),
                    e.oid,
                    e.len.into(),
                    e.byval,
                    e.align,
                )
            }
        };
        Some(Datum::from(arr))
    }
}

/// Readers for a batch whose columns are, in order, the given
/// `(attribute number, type)` pairs; each paired with its slot index.
/// With `ctx`, the batch's text and bytea values are built there at once.
///
/// # Safety
/// `ctx`, when given, is a valid memory context that is not reset while
/// the readers' Datums are in use.
pub unsafe fn batch_readers(
    batch: &RecordBatch,
    columns: impl Iterator<Item = (i16, PgType)>,
    ctx: Option<pg_sys::MemoryContext>,
) -> Vec<(usize, ColumnReader)> {
    columns
        .enumerate()
        .map(|(i, (attno, ty))| {
            // SAFETY: per the contract.
            let reader = unsafe { ColumnReader::with_context(batch.column(i).clone(), ty, ctx) };
            (attno as usize - 1, reader)
        })
        .collect()
}

/// Write row `row` into a tuple's values/nulls (columns not read stay NULL).
pub fn fill_row(
    readers: &[(usize, ColumnReader)],
    row: usize,
    values: &mut [Datum],
    nulls: &mut [bool],
) {
    nulls.fill(true);
    for (idx, r) in readers {
        if let Some(d) = r.datum(row) {
            values[*idx] = d;
            nulls[*idx] = false;
        }
    }
}

/// A Postgres value the graph cannot store, with the SQLSTATE to report.
pub struct Unstorable {
    pub code: pgrx::PgSqlErrorCode,
    pub reason: &'static str,
}

/// A Postgres value of a column of type `ty` as a graph value.
///
/// # Safety
/// `d` is a Datum of the column's type (`ty.oid()`, or varchar for text)
/// unless `isnull`. Allocations go to the current memory context.
pub unsafe fn graph_value(
    d: Datum,
    isnull: bool,
    ty: PgType,
) -> Result<omnigraph_engine::Value, Unstorable> {
    use omnigraph_engine::Value as V;
    if isnull {
        return Ok(V::Null);
    }
    if !ty.array {
        // SAFETY: per the contract.
        return unsafe { scalar_value(d, ty.kind) };
    }
    let e = elem_info(ty.kind);
    let mut elems: *mut Datum = std::ptr::null_mut();
    let mut nulls: *mut bool = std::ptr::null_mut();
    let mut n: i32 = 0;
    // SAFETY: d is an array of the element type; detoasting returns a
    // plain copy when needed; deconstruct_array pallocs the two outputs.
    unsafe {
        let arr = pg_sys::pg_detoast_datum(d.cast_mut_ptr()) as *mut pg_sys::ArrayType;
        if (*arr).ndim > 1 {
            return Err(Unstorable {
                code: pgrx::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                reason: "a list property holds a one-dimensional array, not a multi-dimensional one",
            });
        }
        pg_sys::deconstruct_array(
            arr,
            e.oid,
            e.len.into(),
            e.byval,
            e.align,
            &mut elems,
            &mut nulls,
            &mut n,
        );
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n as usize {
            if *nulls.add(i) {
                out.push(V::Null);
            } else {
                out.push(scalar_value(*elems.add(i), ty.kind)?);
            }
        }
        Ok(V::List(out))
    }
}

/// Postgres's `-infinity` / `infinity` for date (DATEVAL_NOBEGIN/NOEND) and
/// timestamptz (DT_NOBEGIN/DT_NOEND): graph dates and times are finite.
const INFINITE: Unstorable = Unstorable {
    code: pgrx::PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
    reason: "infinite dates and timestamps cannot be stored; graph dates and times are finite",
};

/// A date Datum as the graph's days since 1970-01-01; infinity is refused.
pub(crate) fn unix_days(d: Datum) -> Result<i32, Unstorable> {
    match d.value() as i32 {
        i32::MIN | i32::MAX => Err(INFINITE),
        days => Ok(days.saturating_add(PG_EPOCH_OFFSET_DAYS)),
    }
}

/// A timestamptz Datum as the graph's microseconds since 1970; infinity is
/// refused.
pub(crate) fn unix_us(d: Datum) -> Result<i64, Unstorable> {
    match d.value() as i64 {
        i64::MIN | i64::MAX => Err(INFINITE),
        us => Ok(us.saturating_add(PG_EPOCH_OFFSET_US)),
    }
}

/// # Safety
/// `d` is a non-null Datum of `kind`'s type.
unsafe fn scalar_value(d: Datum, kind: Kind) -> Result<omnigraph_engine::Value, Unstorable> {
    use omnigraph_engine::Value as V;
    use pgrx::FromDatum;
    // SAFETY (all arms): by-value kinds are read from the Datum; varlena
    // kinds are detoasted and copied by pgrx's FromDatum.
    Ok(unsafe {
        match kind {
            Kind::Text => V::String(String::from_datum(d, false).unwrap_or_default()),
            Kind::Bytea => V::Bytes(Vec::<u8>::from_datum(d, false).unwrap_or_default()),
            Kind::Bool => V::Bool(d.value() != 0),
            Kind::Int4 => V::Int(i64::from(d.value() as i32)),
            Kind::Int8 => V::Int(d.value() as i64),
            Kind::Float4 => V::Float(f64::from(f32::from_bits(d.value() as u32))),
            Kind::Float8 => V::Float(f64::from_bits(d.value() as u64)),
            Kind::Date => V::Date(unix_days(d)?),
            Kind::TimestampTz => V::DateTime(unix_us(d)?),
            Kind::Numeric => {
                let text = pgrx::AnyNumeric::from_datum(d, false)
                    .map(|n| n.to_string())
                    .unwrap_or_default();
                // A value the graph type cannot hold is passed as text so
                // the engine's coercion reports it with the property's name.
                match text.parse::<u64>() {
                    Ok(u) => V::UInt(u),
                    Err(_) => V::String(text),
                }
            }
        }
    })
}
