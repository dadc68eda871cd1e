//! The owned filter model both frontends translate WHERE clauses into, its
//! pushdown classification, and its translation to a DataFusion expression
//! that Lance evaluates inside the scan.
//!
//! What is pushed, and why it gives the rows Postgres would give:
//! - `=`, `<>`, `<`, `<=`, `>`, `>=` between a column and a constant or a
//!   parameter, on integer, boolean, date, timestamp and text columns.
//!   Text ordering (`<`, `>`, ...) only under the C collation: other
//!   collations order text differently from Lance's byte order. Text
//!   equality is byte equality under every deterministic collation; a
//!   frontend models a comparison under a nondeterministic one (ICU,
//!   `deterministic = false`) as `Unsupported` (the FDW reads
//!   `pg_collation.collisdeterministic`).
//! - No comparison with NaN or an infinity, on any column.
//! - A boolean column alone is `col = true`, so `NOT col` leaves NULLs out.
//! - Double precision only against finite, non-zero constants: Arrow orders
//!   floats totally (`-0 < 0`, NaN is equal to NaN), Postgres says `-0 = 0`;
//!   the two agree away from zero and NaN. Real (F32) columns stay local,
//!   since DataFusion may narrow the constant to f32 where Postgres widens the
//!   column to f64.
//! - `IN (...)` / `= ANY(array)` and `NOT IN` / `<> ALL(array)` by the same rules.
//! - `IS [NOT] NULL` on any column; a boolean column alone (`WHERE flag`).
//! - `LIKE 'prefix%'` with a literal prefix (no wildcard or escape in it).
//! - `AND`, `OR`, `NOT` whose every part is pushed (SQL three-valued logic
//!   is the same on both sides).
//!
//! Everything else is `Unsupported` and Postgres evaluates it locally.

use omnigraph_engine::deps::arrow_schema::{DataType, Schema};
use omnigraph_engine::deps::lance::deps::datafusion::common::Column as DfColumn;
use omnigraph_engine::deps::lance::deps::datafusion::logical_expr::{Expr as DfExpr, lit};
use omnigraph_engine::deps::lance::deps::datafusion::scalar::ScalarValue;
use omnigraph_engine::{FilterShape, IndexKind};
use serde::{Deserialize, Serialize};

/// A constant value of a filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01 UTC.
    Timestamp(i64),
    /// The elements of an array parameter (`column = ANY($1)`), the value
    /// of a [`Value::Param`] in an IN list, which takes them one by one.
    List(Vec<Scalar>),
}

/// What a column holds, as far as pushdown rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColumnType {
    Text,
    Bool,
    Int,
    /// Double precision (F64).
    Float64,
    /// Real (F32): comparisons stay local.
    Float32,
    Date,
    Timestamp,
    /// Lists, bytes, numeric: only `IS [NOT] NULL` is pushed.
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// The name in the graph (Lance column name).
    pub name: String,
    pub ty: ColumnType,
}

/// A value side of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Const(Scalar),
    /// The n-th runtime parameter (a prepared statement's `$n`, or a value
    /// from an outer plan), supplied when the scan starts.
    Param(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl CmpOp {
    /// The operator with its operands swapped: `5 < x` is `x > 5`.
    pub fn flip(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::LtEq => CmpOp::GtEq,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::GtEq => CmpOp::LtEq,
            o => o,
        }
    }

    pub fn from_sql(op: &str) -> Option<CmpOp> {
        Some(match op {
            "=" => CmpOp::Eq,
            "<>" => CmpOp::NotEq,
            "<" => CmpOp::Lt,
            "<=" => CmpOp::LtEq,
            ">" => CmpOp::Gt,
            ">=" => CmpOp::GtEq,
            _ => return None,
        })
    }

    fn sql(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::NotEq => "<>",
            CmpOp::Lt => "<",
            CmpOp::LtEq => "<=",
            CmpOp::Gt => ">",
            CmpOp::GtEq => ">=",
        }
    }
}

/// A filter over one table's columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    /// `column op value`; `c_collation` is true when text is compared
    /// under the C (byte-order) collation.
    Cmp {
        column: Column,
        op: CmpOp,
        value: Value,
        c_collation: bool,
    },
    /// `column IN (values)`, or `NOT IN` when negated.
    InList {
        column: Column,
        values: Vec<Value>,
        negated: bool,
    },
    IsNull {
        column: Column,
        negated: bool,
    },
    /// A boolean column used as a condition (`WHERE flag`).
    BoolColumn(Column),
    /// `column LIKE 'prefix%'`.
    Prefix {
        column: Column,
        prefix: String,
    },
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    /// Something the frontend could not model; the reason is for EXPLAIN and tests.
    Unsupported(String),
}

/// Whether a filter runs in the Lance scan with Postgres's exact result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushdown {
    /// Lance evaluates it with the same result; Postgres need not recheck.
    Exact,
    /// Postgres evaluates it; the reason says why.
    Unsupported(String),
}

fn value_ok(ty: ColumnType, op: CmpOp, v: &Value, c_collation: bool) -> Result<(), String> {
    // NaN and infinities compare differently in Arrow and Postgres, and a
    // plan's JSON cannot carry them: never pushed, whatever the column.
    if matches!(v, Value::Const(Scalar::Float(f)) if !f.is_finite()) {
        return Err("comparison with NaN or infinity".into());
    }
    match ty {
        ColumnType::Int | ColumnType::Bool | ColumnType::Date | ColumnType::Timestamp => Ok(()),
        ColumnType::Text if matches!(op, CmpOp::Eq | CmpOp::NotEq) || c_collation => Ok(()),
        ColumnType::Text => Err("text ordering under a non-C collation".into()),
        ColumnType::Float64 => match v {
            Value::Const(Scalar::Float(f)) if f.is_finite() && *f != 0.0 => Ok(()),
            Value::Const(Scalar::Int(i)) if *i != 0 => Ok(()),
            Value::Const(Scalar::Null) => Ok(()),
            _ => Err("double precision compared with zero, NaN, infinity or a parameter".into()),
        },
        ColumnType::Float32 => Err("real columns are compared locally".into()),
        ColumnType::Other => Err("comparison on a list, bytes or numeric column".into()),
    }
}

/// Deepest nesting of AND/OR/NOT a pushed filter may have. Deeper filters
/// run locally: plans carry filters as JSON (serde_json refuses more than
/// 128 levels) and every walk over a filter is recursive, so the bound keeps
/// both the plan and the stack safe whatever the query.
pub const MAX_DEPTH: usize = 32;

/// Classify a filter. Only `Exact` filters are pushed.
pub fn classify(e: &Expr) -> Pushdown {
    classify_at(e, 0)
}

fn classify_at(e: &Expr, depth: usize) -> Pushdown {
    if depth > MAX_DEPTH {
        return Pushdown::Unsupported(format!(
            "conditions nested more than {MAX_DEPTH} levels deep"
        ));
    }
    let r = match e {
        Expr::Cmp {
            column,
            op,
            value,
            c_collation,
        } => value_ok(column.ty, *op, value, *c_collation),
        Expr::InList { column, values, .. } => values
            .iter()
            .try_for_each(|v| value_ok(column.ty, CmpOp::Eq, v, false)),
        Expr::IsNull { .. } => Ok(()),
        Expr::BoolColumn(c) if c.ty == ColumnType::Bool => Ok(()),
        Expr::BoolColumn(_) => Err("not a boolean column".into()),
        Expr::Prefix { column, prefix } => {
            if column.ty != ColumnType::Text {
                Err("LIKE on a non-text column".into())
            } else if prefix.contains(['%', '_', '\\']) {
                Err("LIKE pattern is not a plain prefix".into())
            } else {
                Ok(())
            }
        }
        Expr::And(parts) | Expr::Or(parts) => {
            parts
                .iter()
                .try_for_each(|p| match classify_at(p, depth + 1) {
                    Pushdown::Exact => Ok(()),
                    Pushdown::Unsupported(r) => Err(r),
                })
        }
        Expr::Not(inner) => match classify_at(inner, depth + 1) {
            Pushdown::Exact => Ok(()),
            Pushdown::Unsupported(r) => Err(r),
        },
        Expr::Unsupported(r) => Err(r.clone()),
    };
    match r {
        Ok(()) => Pushdown::Exact,
        Err(reason) => Pushdown::Unsupported(reason),
    }
}

/// Errors building the Lance expression (a parameter missing at run time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError(pub String);

impl std::fmt::Display for FilterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn scalar_value(ty: ColumnType, s: &Scalar) -> ScalarValue {
    match (ty, s) {
        (_, Scalar::Null) => ScalarValue::Null,
        (_, Scalar::Bool(b)) => ScalarValue::Boolean(Some(*b)),
        (ColumnType::Float64, Scalar::Int(i)) => ScalarValue::Float64(Some(*i as f64)),
        (_, Scalar::Int(i)) => ScalarValue::Int64(Some(*i)),
        (_, Scalar::Float(f)) => ScalarValue::Float64(Some(*f)),
        (_, Scalar::Text(t)) => ScalarValue::Utf8(Some(t.clone())),
        (_, Scalar::Date(d)) => ScalarValue::Date32(Some(*d)),
        (_, Scalar::Timestamp(us)) => {
            ScalarValue::TimestampMicrosecond(Some(*us), Some("UTC".into()))
        }
        // Only an IN list takes a list, element by element (`in_list`):
        // compared whole, a list matches nothing.
        (_, Scalar::List(_)) => ScalarValue::Null,
    }
}

/// The literal of `s` for a comparison with column `c`: of the column's
/// own Arrow type where it converts exactly (an integer constant against
/// an `I32` column is an Int32), since Lance answers a filter from an index
/// only when the literal has the column's type; otherwise as
/// [`scalar_value`] gives it, and DataFusion widens the column.
fn literal(c: &Column, s: &Scalar, schema: Option<&Schema>) -> DfExpr {
    let v = scalar_value(c.ty, s);
    let target = schema
        .and_then(|sc| sc.field_with_name(&c.name).ok())
        .map(|f| f.data_type());
    let typed = match (target, &v) {
        (Some(t), ScalarValue::Int64(Some(_))) if t.is_integer() && *t != DataType::Int64 => {
            v.cast_to(t).ok()
        }
        _ => None,
    };
    lit(typed.unwrap_or(v))
}

fn resolve<'a>(v: &'a Value, params: &'a [Scalar]) -> Result<&'a Scalar, FilterError> {
    match v {
        Value::Const(s) => Ok(s),
        Value::Param(i) => params
            .get(*i)
            .ok_or_else(|| FilterError(format!("parameter {i} has no value"))),
    }
}

/// The values of an IN list with its parameters' values substituted, an
/// array parameter's elements in its place.
fn in_list<'a>(values: &'a [Value], params: &'a [Scalar]) -> Result<Vec<&'a Scalar>, FilterError> {
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        match resolve(v, params)? {
            Scalar::List(items) => out.extend(items),
            s => out.push(s),
        }
    }
    Ok(out)
}

fn column(c: &Column) -> DfExpr {
    // Not `col()`: it parses the name as SQL and would lower-case `joinedOn`.
    DfExpr::Column(DfColumn::new_unqualified(c.name.as_str()))
}

/// Translate an `Exact` filter into a DataFusion expression for
/// `Scanner::filter_expr`, with parameter values substituted and literals
/// typed as the columns of `schema` (the table's Arrow schema), if given.
pub fn to_datafusion(
    e: &Expr,
    params: &[Scalar],
    schema: Option<&Schema>,
) -> Result<DfExpr, FilterError> {
    Ok(match e {
        Expr::Cmp {
            column: c,
            op,
            value,
            ..
        } => {
            let l = column(c);
            let r = literal(c, resolve(value, params)?, schema);
            match op {
                CmpOp::Eq => l.eq(r),
                CmpOp::NotEq => l.not_eq(r),
                CmpOp::Lt => l.lt(r),
                CmpOp::LtEq => l.lt_eq(r),
                CmpOp::Gt => l.gt(r),
                CmpOp::GtEq => l.gt_eq(r),
            }
        }
        Expr::InList {
            column: c,
            values,
            negated,
        } => {
            let list = in_list(values, params)?
                .into_iter()
                .map(|s| literal(c, s, schema))
                .collect();
            column(c).in_list(list, *negated)
        }
        Expr::IsNull {
            column: c,
            negated: false,
        } => column(c).is_null(),
        Expr::IsNull {
            column: c,
            negated: true,
        } => column(c).is_not_null(),
        // `= true`, not IS TRUE: under NOT, a NULL must stay unknown (and
        // the row filtered out), as in Postgres.
        Expr::BoolColumn(c) => column(c).eq(lit(true)),
        Expr::Prefix { column: c, prefix } => column(c).like(lit(format!("{prefix}%"))),
        Expr::And(parts) => conjunction(parts, params, schema, DfExpr::and, true)?,
        Expr::Or(parts) => conjunction(parts, params, schema, DfExpr::or, false)?,
        Expr::Not(inner) => !to_datafusion(inner, params, schema)?,
        Expr::Unsupported(r) => return Err(FilterError(format!("cannot push down: {r}"))),
    })
}

/// A filter an index lookup answers: `column = v` or `column IN (v, ...)`
/// on a text, integer, boolean, date or timestamp column (not a float:
/// Postgres's `-0 = 0` and NaN equality are not an index's), with its
/// values as literals of the column's type in `schema`. `None` for any
/// other filter, or a value of another type (it is left to a scan, which
/// compares as Postgres would).
pub fn lookup(e: &Expr, params: &[Scalar], schema: &Schema) -> Option<(String, Vec<ScalarValue>)> {
    let (c, values): (&Column, Vec<&Scalar>) = match e {
        Expr::Cmp {
            column,
            op: CmpOp::Eq,
            value,
            ..
        } => (column, vec![resolve(value, params).ok()?]),
        Expr::InList {
            column,
            values,
            negated: false,
        } => (column, in_list(values, params).ok()?),
        _ => return None,
    };
    if !matches!(
        c.ty,
        ColumnType::Text
            | ColumnType::Int
            | ColumnType::Bool
            | ColumnType::Date
            | ColumnType::Timestamp
    ) {
        return None;
    }
    let target = schema.field_with_name(&c.name).ok()?.data_type();
    let literals = values
        .into_iter()
        .map(|v| match literal(c, v, Some(schema)) {
            DfExpr::Literal(s, _) if s.data_type() == *target && !s.is_null() => Some(s),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some((c.name.clone(), literals))
}

fn conjunction(
    parts: &[Expr],
    params: &[Scalar],
    schema: Option<&Schema>,
    join: fn(DfExpr, DfExpr) -> DfExpr,
    empty: bool,
) -> Result<DfExpr, FilterError> {
    let mut out: Option<DfExpr> = None;
    for p in parts {
        let e = to_datafusion(p, params, schema)?;
        out = Some(match out {
            None => e,
            Some(acc) => join(acc, e),
        });
    }
    Ok(out.unwrap_or_else(|| lit(empty)))
}

/// The indexes a Lance scan answers `e` from, as `(column, kind)`, given
/// which index (if any) answers a filter of a shape on a column: every
/// indexed part of an AND, and an OR only when all its parts are indexed.
/// `NOT`, `<>` and `NOT IN` are counted as unindexed (Lance rechecks them).
pub fn index_use(
    e: &Expr,
    index: &dyn Fn(&str, FilterShape) -> Option<IndexKind>,
) -> Vec<(String, IndexKind)> {
    fn walk(
        e: &Expr,
        index: &dyn Fn(&str, FilterShape) -> Option<IndexKind>,
    ) -> Option<Vec<(String, IndexKind)>> {
        let leaf = |c: &Column, shape| index(&c.name, shape).map(|k| vec![(c.name.clone(), k)]);
        match e {
            Expr::Cmp { column, op, .. } => match op {
                CmpOp::Eq => leaf(column, FilterShape::Equal),
                CmpOp::NotEq => None,
                _ => leaf(column, FilterShape::Range),
            },
            Expr::InList {
                column,
                negated: false,
                ..
            } => leaf(column, FilterShape::In),
            Expr::IsNull {
                column,
                negated: false,
            } => leaf(column, FilterShape::IsNull),
            Expr::BoolColumn(c) => leaf(c, FilterShape::Equal),
            Expr::Prefix { column, .. } => leaf(column, FilterShape::Prefix),
            Expr::And(parts) => {
                let used: Vec<_> = parts
                    .iter()
                    .filter_map(|p| walk(p, index))
                    .flatten()
                    .collect();
                (!used.is_empty()).then_some(used)
            }
            Expr::Or(parts) => parts
                .iter()
                .map(|p| walk(p, index))
                .collect::<Option<Vec<_>>>()
                .map(|v| v.into_iter().flatten().collect()),
            _ => None,
        }
    }
    let mut out = walk(e, index).unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    out.retain(|(c, _)| seen.insert(c.clone()));
    out
}

/// AND of several filters (the pushed top-level quals of one scan).
pub fn and_all(parts: Vec<Expr>) -> Option<Expr> {
    match parts.len() {
        0 => None,
        1 => parts.into_iter().next(),
        _ => Some(Expr::And(parts)),
    }
}

fn show_scalar(s: &Scalar) -> String {
    match s {
        Scalar::Null => "NULL".into(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(f) => format!("{f:?}"),
        Scalar::Text(t) => format!("'{}'", t.replace('\'', "''")),
        Scalar::Date(d) => format!("date '{}'", omnigraph_engine::value::date_to_string(*d)),
        Scalar::Timestamp(t) => format!(
            "timestamptz '{}'",
            omnigraph_engine::value::datetime_to_string(*t)
        ),
        Scalar::List(items) => format!(
            "ARRAY[{}]",
            items.iter().map(show_scalar).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn show_value(v: &Value) -> String {
    match v {
        Value::Const(s) => show_scalar(s),
        Value::Param(i) => format!("${}", i + 1),
    }
}

/// Readable text of a filter for EXPLAIN, in graph names.
pub fn display(e: &Expr) -> String {
    match e {
        Expr::Cmp {
            column, op, value, ..
        } => format!("{} {} {}", column.name, op.sql(), show_value(value)),
        Expr::InList {
            column,
            values,
            negated,
        } => format!(
            "{} {}IN ({})",
            column.name,
            if *negated { "NOT " } else { "" },
            values.iter().map(show_value).collect::<Vec<_>>().join(", ")
        ),
        Expr::IsNull { column, negated } => format!(
            "{} IS {}NULL",
            column.name,
            if *negated { "NOT " } else { "" }
        ),
        Expr::BoolColumn(c) => c.name.clone(),
        Expr::Prefix { column, prefix } => {
            format!("{} LIKE '{}%'", column.name, prefix.replace('\'', "''"))
        }
        Expr::And(parts) => parts.iter().map(paren).collect::<Vec<_>>().join(" AND "),
        Expr::Or(parts) => parts.iter().map(paren).collect::<Vec<_>>().join(" OR "),
        Expr::Not(inner) => format!("NOT {}", paren(inner)),
        Expr::Unsupported(r) => format!("<{r}>"),
    }
}

fn paren(e: &Expr) -> String {
    match e {
        Expr::And(_) | Expr::Or(_) => format!("({})", display(e)),
        _ => display(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, ty: ColumnType) -> Column {
        Column {
            name: name.into(),
            ty,
        }
    }

    fn cmp(name: &str, ty: ColumnType, op: CmpOp, v: Scalar) -> Expr {
        Expr::Cmp {
            column: c(name, ty),
            op,
            value: Value::Const(v),
            c_collation: false,
        }
    }

    #[test]
    fn classification_follows_the_documented_rules() {
        use ColumnType::*;
        let exact = |e: &Expr| classify(e) == Pushdown::Exact;
        assert!(exact(&cmp("age", Int, CmpOp::Gt, Scalar::Int(3))));
        assert!(exact(&cmp(
            "name",
            Text,
            CmpOp::Eq,
            Scalar::Text("x".into())
        )));
        assert!(!exact(&cmp(
            "name",
            Text,
            CmpOp::Lt,
            Scalar::Text("x".into())
        )));
        assert!(exact(&Expr::Cmp {
            column: c("name", Text),
            op: CmpOp::Lt,
            value: Value::Const(Scalar::Text("x".into())),
            c_collation: true
        }));
        assert!(exact(&cmp("score", Float64, CmpOp::Gt, Scalar::Float(1.5))));
        assert!(!exact(&cmp(
            "score",
            Float64,
            CmpOp::Eq,
            Scalar::Float(0.0)
        )));
        assert!(!exact(&cmp(
            "score",
            Float64,
            CmpOp::Eq,
            Scalar::Float(f64::NAN)
        )));
        assert!(!exact(&cmp("w", Float32, CmpOp::Gt, Scalar::Float(1.5))));
        assert!(!exact(&Expr::Cmp {
            column: c("score", Float64),
            op: CmpOp::Eq,
            value: Value::Param(0),
            c_collation: false
        }));
        assert!(exact(&Expr::Cmp {
            column: c("age", Int),
            op: CmpOp::Eq,
            value: Value::Param(0),
            c_collation: false
        }));
        assert!(exact(&Expr::IsNull {
            column: c("tags", Other),
            negated: true
        }));
        assert!(!exact(&cmp("tags", Other, CmpOp::Eq, Scalar::Null)));
        assert!(exact(&Expr::Prefix {
            column: c("name", Text),
            prefix: "Al".into()
        }));
        assert!(!exact(&Expr::Prefix {
            column: c("name", Text),
            prefix: "A_".into()
        }));
        let ok = cmp("age", Int, CmpOp::Gt, Scalar::Int(3));
        let bad = Expr::Unsupported("function call".into());
        assert!(exact(&Expr::Or(vec![ok.clone(), ok.clone()])));
        assert!(!exact(&Expr::Or(vec![ok.clone(), bad.clone()])));
        assert!(!exact(&Expr::And(vec![ok.clone(), bad.clone()])));
        assert!(!exact(&Expr::Not(Box::new(bad))));
        assert!(exact(&Expr::InList {
            column: c("age", Int),
            values: vec![Value::Const(Scalar::Int(1)), Value::Param(0)],
            negated: true
        }));
    }

    #[test]
    fn translation_substitutes_parameters() {
        let e = Expr::And(vec![
            Expr::Cmp {
                column: c("age", ColumnType::Int),
                op: CmpOp::GtEq,
                value: Value::Param(0),
                c_collation: false,
            },
            Expr::Not(Box::new(Expr::IsNull {
                column: c("joinedOn", ColumnType::Date),
                negated: false,
            })),
        ]);
        let df = to_datafusion(&e, &[Scalar::Int(30)], None).unwrap();
        assert_eq!(df.to_string(), "age >= Int64(30) AND NOT joinedOn IS NULL");
        assert!(to_datafusion(&e, &[], None).is_err());
        assert_eq!(display(&e), "age >= $1 AND NOT joinedOn IS NULL");
        let p = Expr::Prefix {
            column: c("name", ColumnType::Text),
            prefix: "O'B".into(),
        };
        assert_eq!(display(&p), "name LIKE 'O''B%'");
        assert_eq!(
            to_datafusion(&p, &[], None).unwrap().to_string(),
            "name LIKE Utf8(\"O'B%\")"
        );
        let ts = cmp("at", ColumnType::Timestamp, CmpOp::Lt, Scalar::Timestamp(5));
        assert!(
            to_datafusion(&ts, &[], None)
                .unwrap()
                .to_string()
                .contains("TimestampMicrosecond(5, Some(\"UTC\"))")
        );
    }
}

/// Generated filters: classification, translation, display and the JSON
/// round trip plans rely on never panic, and every filter classified
/// `Exact` survives that round trip and translates. 100,000 cases by
/// default (`OMNIGRAPH_FUZZ_CASES`, `OMNIGRAPH_FUZZ_SEED` to vary).
#[cfg(test)]
mod generated {
    use super::*;
    use proptest::prelude::*;

    fn scalar() -> impl Strategy<Value = Scalar> {
        prop_oneof![
            Just(Scalar::Null),
            any::<bool>().prop_map(Scalar::Bool),
            prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX), Just(0)]
                .prop_map(Scalar::Int),
            prop_oneof![
                any::<f64>(),
                Just(f64::NAN),
                Just(-f64::NAN),
                Just(f64::INFINITY),
                Just(-0.0),
                Just(f64::MIN_POSITIVE)
            ]
            .prop_map(Scalar::Float),
            "\\PC{0,8}".prop_map(Scalar::Text),
            prop_oneof![any::<i32>(), Just(i32::MIN), Just(i32::MAX)].prop_map(Scalar::Date),
            prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX)].prop_map(Scalar::Timestamp),
        ]
    }

    fn column() -> impl Strategy<Value = Column> {
        use ColumnType::*;
        (
            "[a-zA-Z_]{1,6}|\"|x y",
            prop::sample::select(vec![
                Text, Bool, Int, Float64, Float32, Date, Timestamp, Other,
            ]),
        )
            .prop_map(|(name, ty)| Column { name, ty })
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            scalar().prop_map(Value::Const),
            (0..4usize).prop_map(Value::Param)
        ]
    }

    fn leaf() -> impl Strategy<Value = Expr> {
        let op = prop::sample::select(vec![
            CmpOp::Eq,
            CmpOp::NotEq,
            CmpOp::Lt,
            CmpOp::LtEq,
            CmpOp::Gt,
            CmpOp::GtEq,
        ]);
        prop_oneof![
            (column(), op, value(), any::<bool>()).prop_map(|(column, op, value, c_collation)| {
                Expr::Cmp {
                    column,
                    op,
                    value,
                    c_collation,
                }
            }),
            (
                column(),
                prop::collection::vec(value(), 0..4),
                any::<bool>()
            )
                .prop_map(|(column, values, negated)| Expr::InList {
                    column,
                    values,
                    negated
                }),
            (column(), any::<bool>())
                .prop_map(|(column, negated)| Expr::IsNull { column, negated }),
            column().prop_map(Expr::BoolColumn),
            (column(), "\\PC{0,6}").prop_map(|(column, prefix)| Expr::Prefix { column, prefix }),
            "\\PC{0,6}".prop_map(Expr::Unsupported),
        ]
    }

    fn expr() -> impl Strategy<Value = Expr> {
        leaf().prop_recursive(48, 96, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Expr::And),
                prop::collection::vec(inner.clone(), 0..3).prop_map(Expr::Or),
                inner.prop_map(|e| Expr::Not(Box::new(e))),
            ]
        })
    }

    /// A chain `NOT (a AND NOT (b OR ...))` of `depth` levels.
    fn nested(depth: usize, leaf: Expr) -> Expr {
        (0..depth).fold(leaf, |e, i| match i % 3 {
            0 => Expr::Not(Box::new(e)),
            1 => Expr::And(vec![e]),
            _ => Expr::Or(vec![e]),
        })
    }

    fn check(e: &Expr, params: &[Scalar]) {
        let _ = display(e);
        if classify(e) == Pushdown::Exact {
            let json = serde_json::to_string(e).expect("an Exact filter serializes");
            let back: Expr = serde_json::from_str(&json).unwrap_or_else(|err| {
                panic!("an Exact filter must survive the plan's JSON: {err}")
            });
            assert_eq!(classify(&back), Pushdown::Exact);
            let _ = to_datafusion(&back, params, None);
        }
    }

    proptest! {
        #![proptest_config(omnigraph_engine::testing::fuzz_config())]

        #[test]
        fn any_filter_classifies_translates_and_round_trips(
            e in expr(),
            params in prop::collection::vec(scalar(), 0..4),
        ) {
            check(&e, &params);
        }
    }

    #[test]
    fn depth_bound_is_exact_at_the_edge() {
        let leaf = Expr::IsNull {
            column: Column {
                name: "a".into(),
                ty: ColumnType::Int,
            },
            negated: false,
        };
        assert_eq!(classify(&nested(MAX_DEPTH, leaf.clone())), Pushdown::Exact);
        check(&nested(MAX_DEPTH, leaf.clone()), &[]);
        assert!(matches!(
            classify(&nested(MAX_DEPTH + 1, leaf.clone())),
            Pushdown::Unsupported(r) if r.contains("nested more than 32 levels")
        ));
        // Very deep trees are classified without exhausting the stack.
        assert!(matches!(
            classify(&nested(5_000, leaf)),
            Pushdown::Unsupported(_)
        ));
    }
}
