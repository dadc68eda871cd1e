//! DataFusion filters as the shared filter model ([`crate::filter::Expr`]),
//! so the standalone frontend pushes into Lance exactly what the FDW's
//! classification pushes, translated by the same code.

use omnigraph_engine::deps::lance::deps::datafusion::logical_expr::{
    Expr as DfExpr, Operator, expr::InList, expr::Like,
};
use omnigraph_engine::deps::lance::deps::datafusion::scalar::ScalarValue;

use crate::filter::{CmpOp, Column, Expr, Scalar, Value};

/// A table's columns as filters see them: SQL name -> graph column.
pub trait Columns {
    fn column(&self, sql_name: &str) -> Option<Column>;
}

/// The filter model of a DataFusion filter over one table; what cannot be
/// modelled is `Expr::Unsupported` (DataFusion evaluates it). Text compares
/// by bytes in DataFusion, as under Postgres's C collation.
pub fn from_datafusion(e: &DfExpr, cols: &dyn Columns) -> Expr {
    model(e, cols, 0)
}

fn model(e: &DfExpr, cols: &dyn Columns, depth: usize) -> Expr {
    // Named by kind, not printed: printing walks the whole expression.
    let unsupported = || Expr::Unsupported(format!("{} not pushed", e.variant_name()));
    // Deeper filters stay with DataFusion (and the walk stays bounded).
    if depth > crate::filter::MAX_DEPTH {
        return Expr::Unsupported("filter nested too deeply to push".into());
    }
    match e {
        DfExpr::BinaryExpr(b) => match b.op {
            Operator::And | Operator::Or => {
                let parts = vec![
                    from_datafusion(&b.left, cols),
                    from_datafusion(&b.right, cols),
                ];
                if b.op == Operator::And {
                    Expr::And(parts)
                } else {
                    Expr::Or(parts)
                }
            }
            op => {
                let Some(op) = cmp_op(op) else {
                    return unsupported();
                };
                match (column(&b.left, cols), constant(&b.right)) {
                    (Some(column), Some(v)) => Expr::Cmp {
                        column,
                        op,
                        value: Value::Const(v),
                        c_collation: true,
                    },
                    _ => match (constant(&b.left), column(&b.right, cols)) {
                        (Some(v), Some(column)) => Expr::Cmp {
                            column,
                            op: op.flip(),
                            value: Value::Const(v),
                            c_collation: true,
                        },
                        _ => unsupported(),
                    },
                }
            }
        },
        DfExpr::InList(InList {
            expr,
            list,
            negated,
        }) => {
            let values: Option<Vec<Value>> =
                list.iter().map(|v| constant(v).map(Value::Const)).collect();
            match (column(expr, cols), values) {
                (Some(column), Some(values)) => Expr::InList {
                    column,
                    values,
                    negated: *negated,
                },
                _ => unsupported(),
            }
        }
        DfExpr::IsNull(inner) | DfExpr::IsNotNull(inner) => match column(inner, cols) {
            Some(column) => Expr::IsNull {
                column,
                negated: matches!(e, DfExpr::IsNotNull(_)),
            },
            None => unsupported(),
        },
        DfExpr::Like(Like {
            negated: false,
            expr,
            pattern,
            escape_char: None,
            case_insensitive: false,
        }) => match (column(expr, cols), constant(pattern)) {
            (Some(column), Some(Scalar::Text(p))) => match literal_prefix(&p) {
                Some(prefix) => Expr::Prefix { column, prefix },
                None => unsupported(),
            },
            _ => unsupported(),
        },
        DfExpr::Not(inner) => Expr::Not(Box::new(model(inner, cols, depth + 1))),
        DfExpr::Column(_) => match column(e, cols) {
            Some(c) => Expr::BoolColumn(c),
            None => unsupported(),
        },
        _ => unsupported(),
    }
}

fn cmp_op(op: Operator) -> Option<CmpOp> {
    Some(match op {
        Operator::Eq => CmpOp::Eq,
        Operator::NotEq => CmpOp::NotEq,
        Operator::Lt => CmpOp::Lt,
        Operator::LtEq => CmpOp::LtEq,
        Operator::Gt => CmpOp::Gt,
        Operator::GtEq => CmpOp::GtEq,
        _ => return None,
    })
}

fn column(e: &DfExpr, cols: &dyn Columns) -> Option<Column> {
    match e {
        DfExpr::Column(c) => cols.column(&c.name),
        _ => None,
    }
}

fn constant(e: &DfExpr) -> Option<Scalar> {
    let DfExpr::Literal(v, _) = e else {
        return None;
    };
    Some(match v {
        v if v.is_null() => Scalar::Null,
        ScalarValue::Boolean(Some(b)) => Scalar::Bool(*b),
        ScalarValue::Int8(Some(i)) => Scalar::Int(i64::from(*i)),
        ScalarValue::Int16(Some(i)) => Scalar::Int(i64::from(*i)),
        ScalarValue::Int32(Some(i)) => Scalar::Int(i64::from(*i)),
        ScalarValue::Int64(Some(i)) => Scalar::Int(*i),
        ScalarValue::UInt8(Some(i)) => Scalar::Int(i64::from(*i)),
        ScalarValue::UInt16(Some(i)) => Scalar::Int(i64::from(*i)),
        ScalarValue::UInt32(Some(i)) => Scalar::Int(i64::from(*i)),
        ScalarValue::UInt64(Some(i)) => Scalar::Int(i64::try_from(*i).ok()?),
        ScalarValue::Float64(Some(f)) => Scalar::Float(*f),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Scalar::Text(s.clone()),
        ScalarValue::Date32(Some(d)) => Scalar::Date(*d),
        ScalarValue::TimestampMicrosecond(Some(us), _) => Scalar::Timestamp(*us),
        _ => return None,
    })
}

/// `abc%` -> `abc`: a pattern that is a literal prefix and one final `%`.
fn literal_prefix(pattern: &str) -> Option<String> {
    let prefix = pattern.strip_suffix('%')?;
    (!prefix.is_empty() && !prefix.contains(['%', '_', '\\'])).then(|| prefix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::{ColumnType, Pushdown, classify};
    use omnigraph_engine::deps::lance::deps::datafusion::logical_expr::{col, lit};

    struct Cols;
    impl Columns for Cols {
        fn column(&self, sql_name: &str) -> Option<Column> {
            let (name, ty) = match sql_name {
                "age" => ("age", ColumnType::Int),
                "name" => ("name", ColumnType::Text),
                "joined_on" => ("joinedOn", ColumnType::Date),
                "score" => ("score", ColumnType::Float64),
                "active" => ("active", ColumnType::Bool),
                _ => return None,
            };
            Some(Column {
                name: name.into(),
                ty,
            })
        }
    }

    fn pushed(e: DfExpr) -> Pushdown {
        classify(&from_datafusion(&e, &Cols))
    }

    #[test]
    fn the_fdw_s_rules_decide() {
        assert_eq!(pushed(col("age").gt(lit(26i32))), Pushdown::Exact);
        assert_eq!(pushed(lit(26i64).lt(col("age"))), Pushdown::Exact);
        assert_eq!(pushed(col("name").lt(lit("b"))), Pushdown::Exact);
        assert_eq!(
            pushed(col("age").in_list(vec![lit(1i64), lit(2i64)], true)),
            Pushdown::Exact
        );
        assert_eq!(pushed(col("joined_on").is_null()), Pushdown::Exact);
        assert_eq!(pushed(col("name").like(lit("Al%"))), Pushdown::Exact);
        assert_eq!(pushed(col("active")), Pushdown::Exact);
        assert_eq!(
            pushed(col("age").gt(lit(1i64)).and(col("name").eq(lit("x")))),
            Pushdown::Exact
        );
        // An OR chain deeper than the model allows stays with DataFusion
        // (the SQL parser bounds nesting itself, well below a stack's worth).
        let chain = (0..200).fold(col("age").eq(lit(0i64)), |e, i| {
            e.or(col("age").eq(lit(i as i64)))
        });
        assert!(matches!(pushed(chain), Pushdown::Unsupported(_)));
        // Graph names, not SQL names, reach Lance.
        match from_datafusion(&col("joined_on").is_not_null(), &Cols) {
            Expr::IsNull { column, negated } => {
                assert_eq!((column.name.as_str(), negated), ("joinedOn", true))
            }
            other => panic!("{other:?}"),
        }
        // Stay with DataFusion: a wildcard inside the pattern, an
        // expression over a column, an unknown column, float zero.
        for e in [
            col("name").like(lit("A_%")),
            (col("age") + lit(1i64)).eq(lit(5i64)),
            col("nope").eq(lit(1i64)),
            col("score").eq(lit(0.0f64)),
            col("age").gt(lit(1i64)).or(col("age").eq(col("age"))),
        ] {
            assert!(
                matches!(pushed(e.clone()), Pushdown::Unsupported(_)),
                "{e} was pushed"
            );
        }
    }
}
