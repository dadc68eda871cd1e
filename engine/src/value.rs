//! Property values and their conversions: JSON input, Arrow columns, and the
//! canonical text of `@key` values that becomes a node's `id`.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, Date32Builder, FixedSizeListBuilder, Float32Builder,
    Float64Builder, Int32Builder, Int64Builder, LargeBinaryBuilder, ListBuilder, StringBuilder,
    TimestampMicrosecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, ArrowNativeTypeOp, ArrowPrimitiveType, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone, Utc};

use crate::error::{Error, Result, ViolationKind};
use crate::schema::{Catalog, PropType, Property, ScalarType, TypeKind};

/// A property value. Integers and floats are held wide and checked against
/// the property's declared width when coerced.
///
/// Equality is Postgres's: floats compare as `float8` does (NaN equals NaN,
/// `-0` equals `0`), so a stored NaN is not a change of value.
#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    String(String),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01T00:00:00Z.
    DateTime(i64),
    Bytes(Vec<u8>),
    List(Vec<Value>),
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        use Value::*;
        match (self, other) {
            (Null, Null) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (UInt(a), UInt(b)) => a == b,
            (Float(a), Float(b)) => a == b || (a.is_nan() && b.is_nan()),
            (String(a), String(b)) => a == b,
            (Date(a), Date(b)) => a == b,
            (DateTime(a), DateTime(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            (List(a), List(b)) => a == b,
            _ => false,
        }
    }
}

impl Value {
    /// Heap memory this value owns beyond its own size.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Value::String(s) => approx_string_bytes(s),
            Value::Bytes(b) => approx_alloc(b.len()),
            Value::List(items) => {
                approx_alloc(items.len() * std::mem::size_of::<Value>())
                    + items.iter().map(Value::heap_bytes).sum::<usize>()
            }
            _ => 0,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The value as JSON, for reports: numbers as numbers (non-finite
    /// floats as the strings `NaN`, `Infinity`, `-Infinity`, as Postgres
    /// prints them), dates and timestamps in ISO 8601, bytes as `\\x` hex.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::UInt(u) => J::from(*u),
            Value::Float(f) if f.is_nan() => J::from("NaN"),
            Value::Float(f) if f.is_infinite() => {
                J::from(if *f > 0.0 { "Infinity" } else { "-Infinity" })
            }
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::String(s) => J::from(s.as_str()),
            Value::Date(d) => J::from(date_to_string(*d)),
            Value::DateTime(us) => J::from(datetime_to_string(*us)),
            Value::Bytes(b) => {
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                J::from(format!("\\x{hex}"))
            }
            Value::List(items) => J::Array(items.iter().map(Value::to_json).collect()),
        }
    }

    /// Text for error messages and `@key` ids.
    pub fn display(&self) -> String {
        match self {
            Value::Null => "NULL".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::UInt(u) => u.to_string(),
            Value::Float(f) => {
                let f = if *f == 0.0 { 0.0 } else { *f };
                f.to_string()
            }
            Value::String(s) => s.clone(),
            Value::Date(d) => date_to_string(*d),
            Value::DateTime(us) => datetime_to_string(*us),
            Value::Bytes(b) => format!("<{} bytes>", b.len()),
            Value::List(items) => {
                format!(
                    "[{}]",
                    items
                        .iter()
                        .map(Value::display)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        }
    }
}

pub fn date_to_string(days: i32) -> String {
    // Checked: a date at the edge of i32 (Postgres's 'infinity' saturates
    // there) must not overflow the shift to the common era.
    days.checked_add(719_163)
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| format!("date({days})"))
}

pub fn datetime_to_string(us: i64) -> String {
    Utc.timestamp_micros(us)
        .single()
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string())
        .unwrap_or_else(|| format!("timestamp({us})"))
}

fn parse_date(s: &str) -> Option<i32> {
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(d.num_days_from_ce() - 719_163)
}

fn parse_datetime(s: &str) -> Option<i64> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&Utc).timestamp_micros());
    }
    // A timestamp without a zone is taken as UTC; a bare date as its midnight.
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(d) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(d.and_utc().timestamp_micros());
        }
    }
    parse_date(s).map(|d| i64::from(d) * 86_400_000_000)
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        buf = (buf << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    Some(out)
}

/// Convert a JSON value to a property value, checking it against the
/// property's type. `type_name` and the property name go into errors.
pub fn from_json(type_name: &str, prop: &Property, json: &serde_json::Value) -> Result<Value> {
    let bad = |why: &str| {
        Error::violation(
            ViolationKind::InvalidValue,
            type_name,
            &prop.name,
            json.to_string(),
            format!(
                "invalid value {json} for {type_name}.{} ({}): {why}",
                prop.name,
                prop.ty.describe()
            ),
        )
    };
    if json.is_null() {
        return Ok(Value::Null);
    }
    let v = match (&prop.ty, json) {
        (PropType::List(elem), serde_json::Value::Array(items)) => {
            let elem_prop = Property {
                name: prop.name.clone(),
                ty: PropType::Scalar(*elem),
                nullable: true,
                annotations: vec![],
            };
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(from_json(type_name, &elem_prop, item)?);
            }
            Value::List(out)
        }
        (PropType::Vector(n), serde_json::Value::Array(items)) => {
            if items.len() != *n as usize {
                return Err(bad(&format!("expected {n} numbers, found {}", items.len())));
            }
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item.as_f64() {
                    Some(f) => out.push(Value::Float(f)),
                    None => return Err(bad("vector elements must be numbers")),
                }
            }
            Value::List(out)
        }
        (PropType::Enum(_), serde_json::Value::String(s)) => Value::String(s.clone()),
        (PropType::Scalar(s), j) => match (s, j) {
            (ScalarType::String, serde_json::Value::String(x)) => Value::String(x.clone()),
            (ScalarType::Bool, serde_json::Value::Bool(b)) => Value::Bool(*b),
            (ScalarType::I32 | ScalarType::I64, serde_json::Value::Number(n)) => Value::Int(
                n.as_i64()
                    .ok_or_else(|| bad("not a whole number in range"))?,
            ),
            (ScalarType::U32 | ScalarType::U64, serde_json::Value::Number(n)) => Value::UInt(
                n.as_u64()
                    .ok_or_else(|| bad("not a non-negative whole number in range"))?,
            ),
            (ScalarType::F32 | ScalarType::F64, serde_json::Value::Number(n)) => {
                Value::Float(n.as_f64().ok_or_else(|| bad("not a number"))?)
            }
            (ScalarType::Date, serde_json::Value::String(x)) => {
                Value::Date(parse_date(x).ok_or_else(|| bad("expected a date as YYYY-MM-DD"))?)
            }
            (ScalarType::DateTime, serde_json::Value::String(x)) => {
                Value::DateTime(parse_datetime(x).ok_or_else(|| {
                    bad("expected an RFC 3339 timestamp such as 2024-01-31T12:00:00Z")
                })?)
            }
            (ScalarType::Blob, serde_json::Value::String(x)) => match x.strip_prefix("base64:") {
                Some(b64) => {
                    Value::Bytes(decode_base64(b64).ok_or_else(|| bad("malformed base64"))?)
                }
                None => return Err(bad("Blob values are written as \"base64:<payload>\"")),
            },
            _ => return Err(bad("wrong JSON type")),
        },
        _ => return Err(bad("wrong JSON type")),
    };
    coerce(type_name, prop, v)
}

/// Check a value against a property's type, narrowing numbers to the
/// declared width. NULL is allowed here; required-ness is checked by the caller.
pub fn coerce(type_name: &str, prop: &Property, v: Value) -> Result<Value> {
    if v.is_null() {
        return Ok(v);
    }
    // The value's text is built only for an error: every staged value
    // passes here.
    let bad = |shown: String, kind: ViolationKind, why: String| {
        Error::violation(
            kind,
            type_name,
            &prop.name,
            shown.clone(),
            format!(
                "invalid value '{shown}' for {type_name}.{} ({}): {why}",
                prop.name,
                prop.ty.describe()
            ),
        )
    };
    match (&prop.ty, v) {
        // Postgres text cannot hold NUL, so a stored one could never be read
        // back; refuse it as Postgres refuses `\u0000` in text.
        (_, Value::String(s)) if s.contains('\0') => {
            let shown = s.replace('\0', "\\u0000");
            Err(Error::violation(
                ViolationKind::InvalidValue,
                type_name,
                &prop.name,
                shown.clone(),
                format!(
                    "invalid value '{shown}' for {type_name}.{}: text may not contain the NUL character (\\u0000)",
                    prop.name
                ),
            ))
        }
        (PropType::Enum(values), Value::String(s)) => {
            if values.binary_search(&s).is_ok() {
                Ok(Value::String(s))
            } else {
                Err(Error::violation(
                    ViolationKind::InvalidEnum,
                    type_name,
                    &prop.name,
                    s.clone(),
                    format!(
                        "'{s}' is not a value of {type_name}.{}; allowed: {}",
                        prop.name,
                        values.join(", ")
                    ),
                ))
            }
        }
        (PropType::List(elem), Value::List(items)) => {
            let elem_prop = Property {
                name: prop.name.clone(),
                ty: PropType::Scalar(*elem),
                nullable: true,
                annotations: vec![],
            };
            items
                .into_iter()
                .map(|i| coerce(type_name, &elem_prop, i))
                .collect::<Result<Vec<_>>>()
                .map(Value::List)
        }
        (PropType::Vector(n), Value::List(items)) => {
            if items.len() != *n as usize {
                let found = items.len();
                return Err(bad(
                    Value::List(items).display(),
                    ViolationKind::InvalidValue,
                    format!("expected {n} elements, found {found}"),
                ));
            }
            let elem_prop = Property {
                name: prop.name.clone(),
                ty: PropType::Scalar(ScalarType::F32),
                nullable: false,
                annotations: vec![],
            };
            items
                .into_iter()
                .map(|i| coerce(type_name, &elem_prop, i))
                .collect::<Result<Vec<_>>>()
                .map(Value::List)
        }
        (PropType::Scalar(s), v) => {
            let out = match (s, v) {
                (ScalarType::String, Value::String(x)) => Value::String(x),
                (ScalarType::Bool, Value::Bool(b)) => Value::Bool(b),
                (ScalarType::I32, Value::Int(i)) if i32::try_from(i).is_ok() => Value::Int(i),
                (ScalarType::I32, Value::UInt(u)) if i32::try_from(u).is_ok() => {
                    Value::Int(u as i64)
                }
                (ScalarType::I64, Value::Int(i)) => Value::Int(i),
                (ScalarType::I64, Value::UInt(u)) if i64::try_from(u).is_ok() => {
                    Value::Int(u as i64)
                }
                (ScalarType::U32, Value::UInt(u)) if u32::try_from(u).is_ok() => Value::UInt(u),
                (ScalarType::U32, Value::Int(i)) if u32::try_from(i).is_ok() => {
                    Value::UInt(i as u64)
                }
                (ScalarType::U64, Value::UInt(u)) => Value::UInt(u),
                (ScalarType::U64, Value::Int(i)) if i >= 0 => Value::UInt(i as u64),
                // One NaN: a sign or payload bit would order differently
                // in Arrow (-NaN below -inf) while Postgres has a single NaN.
                (ScalarType::F32 | ScalarType::F64, Value::Float(f)) if f.is_nan() => {
                    Value::Float(f64::NAN)
                }
                (ScalarType::F32 | ScalarType::F64, Value::Float(f)) => Value::Float(f),
                (ScalarType::F32 | ScalarType::F64, Value::Int(i)) => Value::Float(i as f64),
                (ScalarType::F32 | ScalarType::F64, Value::UInt(u)) => Value::Float(u as f64),
                (ScalarType::Date, Value::Date(d)) => Value::Date(d),
                (ScalarType::DateTime, Value::DateTime(t)) => Value::DateTime(t),
                (ScalarType::Blob, Value::Bytes(b)) => Value::Bytes(b),
                (s, other) => {
                    return Err(bad(
                        other.display(),
                        ViolationKind::InvalidValue,
                        format!("not a {} or out of its range", s.name()),
                    ));
                }
            };
            if *s == ScalarType::F32
                && let Value::Float(f) = out
                && f.is_finite()
                && (f as f32).is_infinite()
            {
                return Err(bad(
                    out.display(),
                    ViolationKind::InvalidValue,
                    "out of the range of F32".into(),
                ));
            }
            Ok(out)
        }
        (ty, other) => Err(bad(
            other.display(),
            ViolationKind::InvalidValue,
            format!("expected {}", ty.describe()),
        )),
    }
}

/// [`coerce`] for a whole column given as an Arrow array of the
/// property's stored type ([`data_type`]): the same checks, and the same
/// errors (the first failing value is coerced alone for its message), with
/// no value built per row. `Ok(None)`: the array is of another type, and
/// its values are to be coerced one by one.
pub(crate) fn coerce_array(
    type_name: &str,
    prop: &Property,
    array: ArrayRef,
) -> Result<Option<ArrayRef>> {
    if array.data_type() != &data_type(&prop.ty) {
        return Ok(None);
    }
    let refused = |i: usize| match coerce(type_name, prop, scalar_at(array.as_ref(), i)) {
        Err(e) => e,
        Ok(_) => Error::Internal(format!(
            "{type_name}.{}: a value refused by column was accepted alone",
            prop.name
        )),
    };
    match &prop.ty {
        PropType::Scalar(ScalarType::String) | PropType::Enum(_) => {
            let allowed = match &prop.ty {
                PropType::Enum(values) => Some(values),
                _ => None,
            };
            let strings = array.as_string::<i32>();
            // Postgres text cannot hold NUL (see `coerce`).
            let any_nul = strings.values().contains(&0);
            if any_nul || allowed.is_some() {
                for (i, v) in strings.iter().enumerate() {
                    let Some(v) = v else { continue };
                    let bad = v.contains('\0')
                        || allowed
                            .is_some_and(|a| a.binary_search_by(|x| x.as_str().cmp(v)).is_err());
                    if bad {
                        return Err(refused(i));
                    }
                }
            }
            Ok(Some(array))
        }
        // One NaN, as `coerce` makes it.
        PropType::Scalar(ScalarType::F64) => Ok(Some(one_nan::<Float64Type>(array, f64::NAN))),
        PropType::Scalar(ScalarType::F32) => Ok(Some(one_nan::<Float32Type>(array, f32::NAN))),
        // Lists and vectors are checked element by element.
        PropType::List(_) | PropType::Vector(_) => Ok(None),
        PropType::Scalar(_) => Ok(Some(array)),
    }
}

/// `array` of floats with every NaN as `nan` (a sign or payload bit would
/// order differently in Arrow; Postgres has one NaN). The array itself
/// when it has no other NaN.
fn one_nan<T: ArrowPrimitiveType>(array: ArrayRef, nan: T::Native) -> ArrayRef {
    #[allow(clippy::eq_op)] // x != x: NaN
    let is_nan = |x: T::Native| x != x;
    let floats = array.as_primitive::<T>();
    // `is_eq` compares floats by total order: by their bits.
    if !floats.values().iter().any(|x| is_nan(*x) && !x.is_eq(nan)) {
        return array;
    }
    Arc::new(floats.unary::<_, T>(|x| if is_nan(x) { nan } else { x }))
}

/// The canonical text of a single `@key` value.
pub fn key_text(v: &Value) -> Result<String> {
    match v {
        Value::Float(f) if !f.is_finite() => Err(Error::InvalidArgument(
            "a key cannot be NaN or infinite".into(),
        )),
        Value::Null => Err(Error::InvalidArgument("a key cannot be NULL".into())),
        v => Ok(v.display()),
    }
}

/// The node `id` for a `@key` tuple: the value's text for a single key, a JSON
/// array of the texts for a composite key.
pub fn key_id(parts: &[Value]) -> Result<String> {
    if parts.len() == 1 {
        return key_text(&parts[0]);
    }
    let texts = parts.iter().map(key_text).collect::<Result<Vec<_>>>()?;
    Ok(serde_json::Value::from(texts).to_string())
}

/// One row of a node or edge table.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: String,
    /// `(src, dst)` for edges.
    pub endpoints: Option<(String, String)>,
    pub props: BTreeMap<String, Value>,
}

impl Record {
    pub fn prop(&self, name: &str) -> &Value {
        self.props.get(name).unwrap_or(&Value::Null)
    }

    /// A column's value, including the system columns `id`, `src` and `dst`.
    pub fn column(&self, name: &str) -> Value {
        match (name, &self.endpoints) {
            ("id", _) => Value::String(self.id.clone()),
            ("src", Some((s, _))) => Value::String(s.clone()),
            ("dst", Some((_, d))) => Value::String(d.clone()),
            _ => self.prop(name).clone(),
        }
    }

    /// The row as a JSON object: `id`, `src` and `dst` for edges, then
    /// every property (NULL ones included).
    pub fn to_json(&self, properties: &[crate::schema::Property]) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("id".into(), self.id.clone().into());
        if let Some((s, d)) = &self.endpoints {
            m.insert("src".into(), s.clone().into());
            m.insert("dst".into(), d.clone().into());
        }
        for p in properties {
            m.insert(p.name.clone(), self.prop(&p.name).to_json());
        }
        serde_json::Value::Object(m)
    }

    /// Names of the columns (`src`, `dst` and properties) whose values
    /// differ between two versions of a row, in `properties` order.
    pub fn changed_columns(
        &self,
        other: &Record,
        properties: &[crate::schema::Property],
    ) -> Vec<String> {
        let mut out = Vec::new();
        for end in ["src", "dst"] {
            if self.endpoints.is_some() && self.column(end) != other.column(end) {
                out.push(end.to_string());
            }
        }
        for p in properties {
            if self.prop(&p.name) != other.prop(&p.name) {
                out.push(p.name.clone());
            }
        }
        out
    }

    /// Estimated memory this record holds, for staging budgets.
    pub fn approx_bytes(&self) -> usize {
        let ends = self
            .endpoints
            .as_ref()
            .map_or(0, |(s, d)| approx_string_bytes(s) + approx_string_bytes(d));
        approx_string_bytes(&self.id) + ends + approx_props_bytes(&self.props)
    }
}

/// Bytes the allocator hands out for one heap block of `n` bytes: a
/// 16-byte header, rounded up to 16 (glibc malloc).
fn approx_alloc(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n + 16).div_ceil(16) * 16
    }
}

/// Heap memory of a string's contents.
pub(crate) fn approx_string_bytes(s: &str) -> usize {
    approx_alloc(s.len())
}

/// Memory one entry takes in a `BTreeMap<K, V>`: nodes hold up to 11 entries
/// and are between half and fully used, so count two slots per entry.
pub(crate) fn approx_map_entry_bytes<K, V>() -> usize {
    2 * (std::mem::size_of::<K>() + std::mem::size_of::<V>())
}

/// Memory of a property map: its entries, key names and values.
pub(crate) fn approx_props_bytes(props: &BTreeMap<String, Value>) -> usize {
    props
        .iter()
        .map(|(k, v)| {
            approx_map_entry_bytes::<String, Value>() + approx_string_bytes(k) + v.heap_bytes()
        })
        .sum()
}

fn scalar_data_type(s: ScalarType) -> DataType {
    match s {
        ScalarType::String => DataType::Utf8,
        ScalarType::Blob => DataType::LargeBinary,
        ScalarType::Bool => DataType::Boolean,
        ScalarType::I32 => DataType::Int32,
        ScalarType::I64 => DataType::Int64,
        ScalarType::U32 => DataType::UInt32,
        ScalarType::U64 => DataType::UInt64,
        ScalarType::F32 => DataType::Float32,
        ScalarType::F64 => DataType::Float64,
        ScalarType::Date => DataType::Date32,
        ScalarType::DateTime => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    }
}

/// The Arrow type a property is stored as.
pub fn data_type(ty: &PropType) -> DataType {
    match ty {
        PropType::Scalar(s) => scalar_data_type(*s),
        PropType::Enum(_) => DataType::Utf8,
        PropType::List(s) => {
            DataType::List(Arc::new(Field::new("item", scalar_data_type(*s), true)))
        }
        PropType::Vector(n) => DataType::FixedSizeList(
            Arc::new(Field::new("item", DataType::Float32, true)),
            *n as i32,
        ),
    }
}

/// The system columns of a type: `id` for nodes, `id, src, dst` for edges.
pub fn system_columns(kind: TypeKind) -> &'static [&'static str] {
    match kind {
        TypeKind::Node => &["id"],
        TypeKind::Edge => &["id", "src", "dst"],
    }
}

/// The Arrow schema of a node or edge table.
pub fn table_schema(catalog: &Catalog, type_name: &str) -> Result<SchemaRef> {
    let kind = kind_of(catalog, type_name)?;
    let props = catalog.properties(type_name).unwrap_or_default();
    let mut fields: Vec<Field> = system_columns(kind)
        .iter()
        .map(|c| Field::new(*c, DataType::Utf8, false))
        .collect();
    fields.extend(
        props
            .iter()
            .map(|p| Field::new(&p.name, data_type(&p.ty), p.nullable)),
    );
    Ok(Arc::new(Schema::new(fields)))
}

/// Whether `type_name` is a node or an edge type; an error naming it (with
/// a hint) when the catalog has no such type.
pub(crate) fn kind_of(catalog: &Catalog, type_name: &str) -> Result<TypeKind> {
    catalog
        .kind_of(type_name)
        .ok_or_else(|| unknown_type(catalog, type_name))
}

pub(crate) fn unknown_type(catalog: &Catalog, name: &str) -> Error {
    let hint = catalog
        .type_names()
        .into_iter()
        .find(|t| t.eq_ignore_ascii_case(name))
        .map(|t| format!("; did you mean '{t}'?"))
        .unwrap_or_default();
    Error::UnknownType {
        name: name.to_string(),
        hint,
    }
}

fn append_scalar(b: &mut dyn ArrayBuilder, s: ScalarType, v: &Value) -> Result<()> {
    let mismatch = || {
        Error::Internal(format!(
            "value {} does not fit a {} column",
            v.display(),
            s.name()
        ))
    };
    // One arm per column type: the builder, and the value pattern it takes.
    macro_rules! push {
        ($ty:ty, $pat:pat => $val:expr) => {{
            let builder = b
                .as_any_mut()
                .downcast_mut::<$ty>()
                .ok_or_else(|| Error::Internal("column builder of the wrong type".into()))?;
            match v {
                Value::Null => builder.append_null(),
                $pat => builder.append_value($val),
                _ => return Err(mismatch()),
            }
        }};
    }
    match s {
        ScalarType::String => push!(StringBuilder, Value::String(x) => x.as_str()),
        ScalarType::Blob => push!(LargeBinaryBuilder, Value::Bytes(x) => x.as_slice()),
        ScalarType::Bool => push!(BooleanBuilder, Value::Bool(x) => *x),
        ScalarType::I32 => push!(Int32Builder, Value::Int(x) => *x as i32),
        ScalarType::I64 => push!(Int64Builder, Value::Int(x) => *x),
        ScalarType::U32 => push!(UInt32Builder, Value::UInt(x) => *x as u32),
        ScalarType::U64 => push!(UInt64Builder, Value::UInt(x) => *x),
        ScalarType::F32 => push!(Float32Builder, Value::Float(x) => *x as f32),
        ScalarType::F64 => push!(Float64Builder, Value::Float(x) => *x),
        ScalarType::Date => push!(Date32Builder, Value::Date(x) => *x),
        ScalarType::DateTime => push!(TimestampMicrosecondBuilder, Value::DateTime(x) => *x),
    }
    Ok(())
}

fn scalar_builder(s: ScalarType, capacity: usize) -> Box<dyn ArrayBuilder> {
    match s {
        ScalarType::String => Box::new(StringBuilder::with_capacity(capacity, capacity * 8)),
        ScalarType::Blob => Box::new(LargeBinaryBuilder::new()),
        ScalarType::Bool => Box::new(BooleanBuilder::with_capacity(capacity)),
        ScalarType::I32 => Box::new(Int32Builder::with_capacity(capacity)),
        ScalarType::I64 => Box::new(Int64Builder::with_capacity(capacity)),
        ScalarType::U32 => Box::new(UInt32Builder::with_capacity(capacity)),
        ScalarType::U64 => Box::new(UInt64Builder::with_capacity(capacity)),
        ScalarType::F32 => Box::new(Float32Builder::with_capacity(capacity)),
        ScalarType::F64 => Box::new(Float64Builder::with_capacity(capacity)),
        ScalarType::Date => Box::new(Date32Builder::with_capacity(capacity)),
        ScalarType::DateTime => {
            Box::new(TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"))
        }
    }
}

fn column_array(prop: &Property, values: &[&Value]) -> Result<ArrayRef> {
    let n = values.len();
    let array: ArrayRef = match &prop.ty {
        PropType::Scalar(s) => {
            let mut b = scalar_builder(*s, n);
            for v in values {
                append_scalar(b.as_mut(), *s, v)?;
            }
            b.finish()
        }
        PropType::Enum(_) => {
            let mut b = scalar_builder(ScalarType::String, n);
            for v in values {
                append_scalar(b.as_mut(), ScalarType::String, v)?;
            }
            b.finish()
        }
        PropType::List(s) => {
            let mut b = ListBuilder::new(scalar_builder(*s, n)).with_field(Field::new(
                "item",
                scalar_data_type(*s),
                true,
            ));
            for v in values {
                match v {
                    Value::List(items) => {
                        for i in items {
                            append_scalar(b.values().as_mut(), *s, i)?;
                        }
                        b.append(true);
                    }
                    _ => b.append(false),
                }
            }
            Arc::new(b.finish())
        }
        PropType::Vector(dim) => {
            let mut b = FixedSizeListBuilder::new(
                Float32Builder::with_capacity(n * *dim as usize),
                *dim as i32,
            )
            .with_field(Field::new("item", DataType::Float32, true));
            for v in values {
                match v {
                    Value::List(items) => {
                        for i in items {
                            b.values().append_option(match i {
                                Value::Float(f) => Some(*f as f32),
                                _ => None,
                            });
                        }
                        b.append(true);
                    }
                    _ => {
                        for _ in 0..*dim {
                            b.values().append_null();
                        }
                        b.append(false);
                    }
                }
            }
            Arc::new(b.finish())
        }
    };
    Ok(array)
}

/// Build a record batch in the table's schema from records.
pub fn records_to_batch(
    catalog: &Catalog,
    type_name: &str,
    records: &[&Record],
) -> Result<RecordBatch> {
    let props = catalog.properties(type_name).unwrap_or_default();
    let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let endpoints: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            r.endpoints
                .as_ref()
                .map_or(("", ""), |e| (e.0.as_str(), e.1.as_str()))
        })
        .collect();
    let props = prop_columns(props, records)
        .into_iter()
        .map(PropColumn::Values)
        .collect();
    columns_to_batch(catalog, type_name, &ids, &endpoints, props)
}

/// A property's column on its way into a batch.
pub(crate) enum PropColumn<'v> {
    Values(Vec<&'v Value>),
    /// Already of the property's stored type, and checked.
    Array(ArrayRef),
}

/// Build a record batch in the table's schema from its columns: the ids,
/// the endpoints (ignored for a node type) and each property's column in
/// the catalog's order, all of one length.
pub(crate) fn columns_to_batch(
    catalog: &Catalog,
    type_name: &str,
    ids: &[&str],
    endpoints: &[(&str, &str)],
    props: Vec<PropColumn<'_>>,
) -> Result<RecordBatch> {
    let schema = table_schema(catalog, type_name)?;
    let kind = kind_of(catalog, type_name)?;
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    let text = |values: &mut dyn Iterator<Item = &str>| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(ids.len(), ids.len() * 16);
        for v in values {
            b.append_value(v);
        }
        Arc::new(b.finish())
    };
    columns.push(text(&mut ids.iter().copied()));
    if kind == TypeKind::Edge {
        columns.push(text(&mut endpoints.iter().map(|e| e.0)));
        columns.push(text(&mut endpoints.iter().map(|e| e.1)));
    }
    let declared = catalog.properties(type_name).unwrap_or_default();
    for (prop, column) in declared.iter().zip(props) {
        columns.push(match column {
            PropColumn::Values(values) => column_array(prop, &values)?,
            PropColumn::Array(array) => array,
        });
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Each property's values over `records` (NULL where a record lacks it),
/// in `props`' order. A record's properties are a map sorted by name: one
/// walk of it beside the names in the same order finds them all, where a
/// lookup per property (about four string comparisons each) was a fifth
/// of a bulk insert's time.
fn prop_columns<'r>(props: &[Property], records: &[&'r Record]) -> Vec<Vec<&'r Value>> {
    let mut by_name: Vec<usize> = (0..props.len()).collect();
    by_name.sort_by(|a, b| props[*a].name.cmp(&props[*b].name));
    let mut columns: Vec<Vec<&Value>> = props
        .iter()
        .map(|_| Vec::with_capacity(records.len()))
        .collect();
    for r in records {
        let mut have = r.props.iter().peekable();
        for &i in &by_name {
            let name = props[i].name.as_str();
            let mut value = &Value::Null;
            while let Some((k, v)) = have.peek() {
                match k.as_str().cmp(name) {
                    std::cmp::Ordering::Less => {
                        have.next();
                    }
                    std::cmp::Ordering::Equal => {
                        value = *v;
                        have.next();
                        break;
                    }
                    std::cmp::Ordering::Greater => break,
                }
            }
            columns[i].push(value);
        }
    }
    columns
}

pub(crate) fn scalar_at(array: &dyn Array, i: usize) -> Value {
    if array.is_null(i) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(i).to_string()),
        DataType::LargeBinary => Value::Bytes(array.as_binary::<i64>().value(i).to_vec()),
        DataType::Binary => Value::Bytes(array.as_binary::<i32>().value(i).to_vec()),
        DataType::Boolean => Value::Bool(array.as_boolean().value(i)),
        DataType::Int32 => Value::Int(i64::from(array.as_primitive::<Int32Type>().value(i))),
        DataType::Int64 => Value::Int(array.as_primitive::<Int64Type>().value(i)),
        DataType::UInt32 => Value::UInt(u64::from(array.as_primitive::<UInt32Type>().value(i))),
        DataType::UInt64 => Value::UInt(array.as_primitive::<UInt64Type>().value(i)),
        DataType::Float32 => Value::Float(f64::from(array.as_primitive::<Float32Type>().value(i))),
        DataType::Float64 => Value::Float(array.as_primitive::<Float64Type>().value(i)),
        DataType::Date32 => Value::Date(array.as_primitive::<Date32Type>().value(i)),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Value::DateTime(array.as_primitive::<TimestampMicrosecondType>().value(i))
        }
        DataType::List(_) => {
            let list = array.as_list::<i32>().value(i);
            Value::List(
                (0..list.len())
                    .map(|j| scalar_at(list.as_ref(), j))
                    .collect(),
            )
        }
        DataType::FixedSizeList(_, _) => {
            let list = array.as_fixed_size_list().value(i);
            Value::List(
                (0..list.len())
                    .map(|j| scalar_at(list.as_ref(), j))
                    .collect(),
            )
        }
        _ => Value::Null,
    }
}

/// Every value of an array, in order.
pub(crate) fn array_values(array: &dyn Array) -> Vec<Value> {
    (0..array.len()).map(|i| scalar_at(array, i)).collect()
}

/// Read records back from a batch of a node or edge table of `kind` (any
/// projection that includes `id`; edges also need `src` and `dst`, which
/// are properties like any other of a node type).
pub fn batch_to_records(batch: &RecordBatch, kind: TypeKind) -> Result<Vec<Record>> {
    let schema = batch.schema();
    let col = |name: &str| schema.index_of(name).ok().map(|i| batch.column(i).clone());
    let id = col("id").ok_or_else(|| Error::Internal("batch without an id column".into()))?;
    let edge = kind == TypeKind::Edge;
    let (src, dst) = match edge {
        true => (col("src"), col("dst")),
        false => (None, None),
    };
    let system = system_columns(kind);
    let props: Vec<(String, ArrayRef)> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        // Every other column is a property, `_`-prefixed names included;
        // only a spill's own columns (reserved names) are not.
        .filter(|(f, _)| {
            !system.contains(&f.name().as_str()) && !crate::spill::is_own_column(f.name())
        })
        .map(|(f, c)| (f.name().clone(), c.clone()))
        .collect();
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let text = |a: &ArrayRef| match scalar_at(a.as_ref(), i) {
            Value::String(s) => s,
            _ => String::new(),
        };
        let endpoints = match (&src, &dst) {
            (Some(s), Some(d)) => Some((text(s), text(d))),
            _ => None,
        };
        let props = props
            .iter()
            .map(|(n, a)| (n.clone(), scalar_at(a.as_ref(), i)))
            .collect();
        out.push(Record {
            id: text(&id),
            endpoints,
            props,
        });
    }
    Ok(out)
}

/// Quote a column name for a Lance filter (unquoted names are lower-cased).
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quote a string as an SQL literal for a Lance filter.
pub fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::parse_schema;

    #[test]
    fn nul_in_text_is_refused_and_named_without_the_nul() {
        let p = Property {
            name: "name".into(),
            ty: PropType::Scalar(ScalarType::String),
            nullable: true,
            annotations: vec![],
        };
        let e = coerce("Person", &p, Value::String("a\0b".into())).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("a\\u0000b") && !msg.contains('\0'), "{msg}");
        let list = Property {
            ty: PropType::List(ScalarType::String),
            ..p
        };
        assert!(
            coerce(
                "Person",
                &list,
                Value::List(vec![Value::String("\0".into())])
            )
            .is_err()
        );
    }

    /// Each record's properties, found by one ordered walk, are what a
    /// lookup by name gives: present, missing (NULL), beside names the
    /// catalog does not list, for properties declared out of name order.
    #[test]
    fn property_columns_match_lookups_by_name() {
        let prop = |name: &str| Property {
            name: name.into(),
            ty: PropType::Scalar(ScalarType::I64),
            nullable: true,
            annotations: vec![],
        };
        let props = vec![prop("m"), prop("b"), prop("zz"), prop("a"), prop("ba")];
        let names = ["a", "b", "ba", "m", "zz", "c", "y", "zzz", "0"];
        let records: Vec<Record> = (0u32..512)
            .map(|bits| Record {
                id: bits.to_string(),
                endpoints: None,
                props: names
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| bits & (1 << i) != 0)
                    .map(|(i, n)| (n.to_string(), Value::Int(i as i64 * 10 + i64::from(bits))))
                    .collect(),
            })
            .collect();
        let refs: Vec<&Record> = records.iter().collect();
        let columns = prop_columns(&props, &refs);
        assert_eq!(columns.len(), props.len());
        for (p, column) in props.iter().zip(&columns) {
            let expected: Vec<&Value> = refs.iter().map(|r| r.prop(&p.name)).collect();
            assert_eq!(column, &expected, "{}", p.name);
        }
    }

    #[test]
    fn nan_is_one_value_equal_to_itself() {
        let p = Property {
            name: "x".into(),
            ty: PropType::Scalar(ScalarType::F64),
            nullable: true,
            annotations: vec![],
        };
        let neg_nan = -f64::NAN;
        let Value::Float(f) = coerce("T", &p, Value::Float(neg_nan)).unwrap() else {
            panic!("not a float")
        };
        assert!(f.is_nan() && f.is_sign_positive());
        assert_eq!(Value::Float(f64::NAN), Value::Float(neg_nan));
        assert_eq!(Value::Float(-0.0), Value::Float(0.0));
        assert_ne!(Value::Float(1.0), Value::Float(f64::NAN));
    }

    #[test]
    fn extreme_dates_and_times_display_without_overflow() {
        for d in [i32::MIN, i32::MAX, i32::MAX - 719_162] {
            assert!(!date_to_string(d).is_empty());
        }
        for t in [i64::MIN, i64::MAX] {
            assert!(!datetime_to_string(t).is_empty());
        }
    }

    #[test]
    fn dates_round_trip() {
        let d = parse_date("2021-03-04").unwrap();
        assert_eq!(date_to_string(d), "2021-03-04");
        assert_eq!(parse_date("1970-01-01"), Some(0));
        let t = parse_datetime("2021-03-04T09:00:00Z").unwrap();
        assert_eq!(datetime_to_string(t), "2021-03-04T09:00:00Z");
        assert_eq!(parse_datetime("2021-03-04T10:00:00+01:00"), Some(t));
        assert!(parse_date("2021-02-30").is_none());
    }

    #[test]
    fn record_size_estimate_counts_contents_and_slots() {
        let small = Record {
            id: "k1".into(),
            endpoints: None,
            props: BTreeMap::from([("age".to_string(), Value::Int(3))]),
        };
        let big = Record {
            props: BTreeMap::from([
                ("age".to_string(), Value::Int(3)),
                ("bio".to_string(), Value::String("x".repeat(1000))),
                (
                    "tags".to_string(),
                    Value::List(vec![Value::String("abc".into()); 10]),
                ),
            ]),
            ..small.clone()
        };
        let slot = approx_map_entry_bytes::<String, Value>();
        // id and key name allocations plus one map entry
        assert_eq!(small.approx_bytes(), 32 + 32 + slot);
        // the 1,000-byte string and the list's buffer and items count in full
        let extra = big.approx_bytes() - small.approx_bytes();
        assert!(
            extra >= 1000 + 10 * std::mem::size_of::<Value>() + 10 * 32,
            "{extra}"
        );
        assert!(extra < 1000 + 2 * slot + 1024, "{extra}");
    }

    #[test]
    fn base64_decodes() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert!(decode_base64("a*b").is_none());
    }

    #[test]
    fn key_ids_are_canonical() {
        assert_eq!(key_id(&[Value::String("alice".into())]).unwrap(), "alice");
        assert_eq!(key_id(&[Value::Int(-5)]).unwrap(), "-5");
        assert_eq!(key_id(&[Value::Float(-0.0)]).unwrap(), "0");
        assert_eq!(
            key_id(&[Value::String("eu".into()), Value::Int(7)]).unwrap(),
            r#"["eu","7"]"#
        );
        assert!(key_id(&[Value::Float(f64::NAN)]).is_err());
    }

    #[test]
    fn json_values_are_checked_against_types() {
        let c = parse_schema("node A { a: I32 b: enum(x, y-z) c: [I64]? d: Vector(2)? e: U32? }")
            .unwrap();
        let p = |n: &str| {
            c.nodes[0]
                .properties
                .iter()
                .find(|p| p.name == n)
                .unwrap()
                .clone()
        };
        assert_eq!(
            from_json("A", &p("a"), &serde_json::json!(5)).unwrap(),
            Value::Int(5)
        );
        assert!(from_json("A", &p("a"), &serde_json::json!(1u64 << 40)).is_err());
        assert!(from_json("A", &p("a"), &serde_json::json!("5")).is_err());
        assert!(from_json("A", &p("b"), &serde_json::json!("y-z")).is_ok());
        let e = from_json("A", &p("b"), &serde_json::json!("w")).unwrap_err();
        assert!(
            matches!(e, Error::Validation(v) if v.kind == ViolationKind::InvalidEnum && v.value == "w")
        );
        assert!(from_json("A", &p("d"), &serde_json::json!([1.0])).is_err());
        assert!(from_json("A", &p("e"), &serde_json::json!(-1)).is_err());
    }

    #[test]
    fn records_round_trip_through_arrow() {
        let c = parse_schema(include_str!("../../examples/social/schema.pg")).unwrap();
        let mut props = BTreeMap::new();
        props.insert("name".to_string(), Value::String("Alice".into()));
        props.insert("slug".to_string(), Value::String("alice".into()));
        props.insert("status".to_string(), Value::String("active".into()));
        props.insert(
            "tags".to_string(),
            Value::List(vec![Value::String("a".into())]),
        );
        props.insert("age".to_string(), Value::Int(30));
        props.insert("joinedOn".to_string(), Value::Date(5));
        let r = Record {
            id: "alice".into(),
            endpoints: None,
            props,
        };
        let batch = records_to_batch(&c, "Person", &[&r]).unwrap();
        let back = batch_to_records(&batch, TypeKind::Node).unwrap();
        assert_eq!(back[0].id, "alice");
        assert_eq!(back[0].prop("tags"), r.prop("tags"));
        assert_eq!(back[0].prop("age"), &Value::Int(30));
        assert_eq!(back[0].prop("email"), &Value::Null);
    }
}
