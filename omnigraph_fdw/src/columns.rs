//! INSERT and COPY values read from slots into columns. Where the foreign
//! column's Postgres type maps exactly onto the property's stored Arrow
//! type (text to a string or enum, bigint, integer, double precision, real,
//! boolean, date, timestamptz), the values go straight into an Arrow
//! builder of that type: no graph value is built per cell, and text is
//! copied once, into the column's buffer. The engine checks such a column
//! as a whole ([`omnigraph_engine::NewRows::arrays`]). Every other pairing
//! (lists, numeric, bytea, a type the engine must convert) is read value
//! by value, as before.

use omnigraph_engine::Value;
use omnigraph_engine::deps::arrow_array::ArrayRef;
use omnigraph_engine::deps::arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder, Int32Builder,
    Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use omnigraph_engine::schema::{PropType, ScalarType};
use pgrx::FromDatum;
use pgrx::pg_sys::Datum;

use crate::datum::{Kind, unix_days, unix_us};
use crate::modify::{column_value, unstorable};
use crate::quals::FilterColumn;

/// One INSERT target's values so far.
pub(crate) enum Column {
    /// Converted value by value.
    Values(Vec<Value>),
    Text(StringBuilder),
    Int64(Int64Builder),
    Int32(Int32Builder),
    Float64(Float64Builder),
    Float32(Float32Builder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
}

/// A column's values, handed over.
pub(crate) enum Taken {
    Values(Vec<Value>),
    Array(ArrayRef),
}

impl Column {
    /// The column for a target of Postgres type `c.ty` holding a property
    /// of type `prop` (`None`: not a declared property; the engine reports
    /// it).
    pub(crate) fn new(c: &FilterColumn, prop: Option<&PropType>) -> Column {
        use PropType::{Enum, Scalar};
        if c.ty.array {
            return Column::Values(Vec::new());
        }
        match (c.ty.kind, prop) {
            (Kind::Text, Some(Scalar(ScalarType::String) | Enum(_))) => {
                Column::Text(StringBuilder::new())
            }
            (Kind::Int8 | Kind::Int4, Some(Scalar(ScalarType::I64))) => {
                Column::Int64(Int64Builder::new())
            }
            (Kind::Int4, Some(Scalar(ScalarType::I32))) => Column::Int32(Int32Builder::new()),
            (Kind::Float8, Some(Scalar(ScalarType::F64))) => Column::Float64(Float64Builder::new()),
            (Kind::Float4, Some(Scalar(ScalarType::F32))) => Column::Float32(Float32Builder::new()),
            (Kind::Bool, Some(Scalar(ScalarType::Bool))) => Column::Bool(BooleanBuilder::new()),
            (Kind::Date, Some(Scalar(ScalarType::Date))) => Column::Date(Date32Builder::new()),
            (Kind::TimestampTz, Some(Scalar(ScalarType::DateTime))) => {
                Column::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
            _ => Column::Values(Vec::new()),
        }
    }

    /// Append a slot's value of target `c`; returns the memory it holds
    /// (estimated, for the staging budget).
    ///
    /// # Safety
    /// `d` is a valid Datum of `c`'s type unless `isnull`; a text value is
    /// copied before the caller's per-tuple memory context is reset.
    pub(crate) unsafe fn push(&mut self, d: Datum, isnull: bool, c: &FilterColumn) -> usize {
        const NULL_BYTES: usize = 1;
        // A by-value type: `$v` is evaluated only for a value.
        macro_rules! fixed {
            ($b:expr, $v:expr) => {{
                if isnull {
                    $b.append_null();
                    NULL_BYTES
                } else {
                    let v = $v;
                    $b.append_value(v);
                    std::mem::size_of_val(&v)
                }
            }};
        }
        match self {
            Column::Values(values) => {
                // SAFETY: per the contract.
                let v = unsafe { column_value(d, isnull, c) };
                let bytes = std::mem::size_of::<Value>() + v.heap_bytes();
                values.push(v);
                bytes
            }
            Column::Text(b) => {
                // SAFETY: d is a text Datum; the &str borrows its detoasted
                // copy, valid in the current memory context, and is copied
                // into the builder at once.
                match unsafe { <&str>::from_datum(d, isnull) } {
                    Some(s) => {
                        b.append_value(s);
                        s.len() + std::mem::size_of::<i32>()
                    }
                    None => {
                        b.append_null();
                        NULL_BYTES
                    }
                }
            }
            Column::Int64(b) => match c.ty.kind {
                Kind::Int4 => fixed!(b, i64::from(d.value() as i32)),
                _ => fixed!(b, d.value() as i64),
            },
            Column::Int32(b) => fixed!(b, d.value() as i32),
            Column::Float64(b) => fixed!(b, f64::from_bits(d.value() as u64)),
            Column::Float32(b) => fixed!(b, f32::from_bits(d.value() as u32)),
            Column::Bool(b) => fixed!(b, d.value() != 0),
            // Infinity raises the value path's error.
            Column::Date(b) => fixed!(b, unix_days(d).unwrap_or_else(|e| unstorable(e, c))),
            Column::Timestamp(b) => fixed!(b, unix_us(d).unwrap_or_else(|e| unstorable(e, c))),
        }
    }

    /// The values so far, leaving the column empty.
    pub(crate) fn take(&mut self) -> Taken {
        fn array(b: &mut dyn ArrayBuilder) -> Taken {
            Taken::Array(b.finish())
        }
        match self {
            Column::Values(values) => {
                let n = values.len();
                Taken::Values(std::mem::replace(values, Vec::with_capacity(n)))
            }
            Column::Text(b) => array(b),
            Column::Int64(b) => array(b),
            Column::Int32(b) => array(b),
            Column::Float64(b) => array(b),
            Column::Float32(b) => array(b),
            Column::Bool(b) => array(b),
            Column::Date(b) => array(b),
            Column::Timestamp(b) => array(b),
        }
    }
}
