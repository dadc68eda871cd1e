//! Selecting from rows held in memory with the same filter, projection and
//! order a Lance scan applies: a transaction's staged rows are read next to
//! the committed ones, so both must agree on what matches and in what order.
//! The filter is evaluated by DataFusion, the engine Lance itself uses.

use std::sync::Arc;

use omnigraph_engine::deps::arrow_array::{BooleanArray, RecordBatch};
use omnigraph_engine::deps::lance::deps::datafusion::arrow::compute::{
    SortColumn, SortOptions, filter_record_batch, lexsort_to_indices, take_record_batch,
};
use omnigraph_engine::deps::lance::deps::datafusion::common::DFSchema;
use omnigraph_engine::deps::lance::deps::datafusion::common::tree_node::{
    TransformedResult, TreeNode,
};
use omnigraph_engine::deps::lance::deps::datafusion::logical_expr::Expr as DfExpr;
use omnigraph_engine::deps::lance::deps::datafusion::logical_expr::execution_props::ExecutionProps;
use omnigraph_engine::deps::lance::deps::datafusion::optimizer::analyzer::type_coercion::TypeCoercionRewriter;
use omnigraph_engine::deps::lance::deps::datafusion::physical_expr::create_physical_expr;

use crate::filter::FilterError;

/// One ORDER BY key, as pushed to Lance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub column: String,
    pub ascending: bool,
    pub nulls_first: bool,
}

fn err(e: impl std::fmt::Display) -> FilterError {
    FilterError(e.to_string())
}

/// The rows of `batch` matching `filter`, sorted by `order`, with only
/// `columns` (in that order).
pub fn select(
    batch: &RecordBatch,
    filter: Option<&DfExpr>,
    columns: &[String],
    order: &[SortKey],
) -> Result<RecordBatch, FilterError> {
    let mut batch = batch.clone();
    if let Some(f) = filter {
        let schema = DFSchema::try_from(batch.schema().as_ref().clone()).map_err(err)?;
        // Constants are typed as the filter model's widest type (an Int64
        // literal for every integer column); coerce them to the columns' own
        // types as Lance's planner does, or an I32 column cannot be compared.
        let coerced = f
            .clone()
            .rewrite(&mut TypeCoercionRewriter::new(&schema))
            .data()
            .map_err(err)?;
        let expr = create_physical_expr(&coerced, &schema, &ExecutionProps::new()).map_err(err)?;
        let mask = expr
            .evaluate(&batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(err)?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| err("the filter is not a boolean expression"))?;
        batch = filter_record_batch(&batch, mask).map_err(err)?;
    }
    if !order.is_empty() && batch.num_rows() > 1 {
        let keys = order
            .iter()
            .map(|k| {
                let i = batch.schema().index_of(&k.column).map_err(err)?;
                Ok(SortColumn {
                    values: batch.column(i).clone(),
                    options: Some(SortOptions {
                        descending: !k.ascending,
                        nulls_first: k.nulls_first,
                    }),
                })
            })
            .collect::<Result<Vec<_>, FilterError>>()?;
        let indices = lexsort_to_indices(&keys, None).map_err(err)?;
        batch = take_record_batch(&batch, &indices).map_err(err)?;
    }
    let indices = columns
        .iter()
        .map(|c| batch.schema().index_of(c).map_err(err))
        .collect::<Result<Vec<_>, _>>()?;
    let projected = batch.project(&indices).map_err(err)?;
    RecordBatch::try_new_with_options(
        Arc::new(projected.schema().as_ref().clone()),
        projected.columns().to_vec(),
        &omnigraph_engine::deps::arrow_array::RecordBatchOptions::new()
            .with_row_count(Some(projected.num_rows())),
    )
    .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::{CmpOp, Column, ColumnType, Expr, Scalar, Value, to_datafusion};
    use omnigraph_engine::deps::arrow_array::{Int64Array, StringArray};
    use omnigraph_engine::deps::arrow_schema::{DataType, Field, Schema};

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("age", DataType::Int64, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "c", "d"])),
                Arc::new(Int64Array::from(vec![Some(30), None, Some(10), Some(20)])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn filters_sorts_and_projects_like_a_scan() {
        let age = Column {
            name: "age".into(),
            ty: ColumnType::Int,
        };
        let e = Expr::Cmp {
            column: age,
            op: CmpOp::GtEq,
            value: Value::Const(Scalar::Int(15)),
            c_collation: true,
        };
        let f = to_datafusion(&e, &[], None).unwrap();
        let order = [SortKey {
            column: "age".into(),
            ascending: true,
            nulls_first: false,
        }];
        let out = select(&batch(), Some(&f), &["id".to_string()], &order).unwrap();
        let ids = out
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        // NULL age does not match `age >= 15`, as in SQL.
        assert_eq!(ids.iter().flatten().collect::<Vec<_>>(), ["d", "a"]);
    }

    fn ids_where(batch: &RecordBatch, e: &Expr) -> Vec<String> {
        let f = to_datafusion(e, &[], None).unwrap();
        let out = select(batch, Some(&f), &["id".to_string()], &[]).unwrap();
        let ids = out
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        ids.iter().map(|s| s.unwrap().to_string()).collect()
    }

    #[test]
    fn narrow_integer_columns_compare_with_the_model_s_int64_constants() {
        use omnigraph_engine::deps::arrow_array::Int32Array;
        let schema = Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("n", DataType::Int32, true),
        ]);
        let b = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(Int32Array::from(vec![Some(1), Some(5)])),
            ],
        )
        .unwrap();
        let e = Expr::Cmp {
            column: Column {
                name: "n".into(),
                ty: ColumnType::Int,
            },
            op: CmpOp::Gt,
            value: Value::Const(Scalar::Int(2)),
            c_collation: false,
        };
        assert_eq!(ids_where(&b, &e), ["b"]);
    }

    #[test]
    fn not_of_a_boolean_column_leaves_nulls_out_as_postgres_does() {
        use omnigraph_engine::deps::arrow_array::BooleanArray;
        let schema = Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("ok", DataType::Boolean, true),
        ]);
        let b = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(vec!["t", "f", "n"])),
                Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
            ],
        )
        .unwrap();
        let ok = Expr::BoolColumn(Column {
            name: "ok".into(),
            ty: ColumnType::Bool,
        });
        assert_eq!(ids_where(&b, &ok), ["t"]);
        assert_eq!(ids_where(&b, &Expr::Not(Box::new(ok))), ["f"]);
    }

    #[test]
    fn empty_projection_keeps_the_row_count() {
        let out = select(&batch(), None, &[], &[]).unwrap();
        assert_eq!(out.num_rows(), 4);
        assert_eq!(out.num_columns(), 0);
    }

    #[test]
    fn nulls_order_as_asked() {
        let order = [SortKey {
            column: "age".into(),
            ascending: false,
            nulls_first: true,
        }];
        let out = select(&batch(), None, &["id".to_string()], &order).unwrap();
        let ids = out
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(
            ids.iter().flatten().collect::<Vec<_>>(),
            ["b", "a", "d", "c"]
        );
    }
}
