//! One node or edge type of a snapshot as a DataFusion table: the columns
//! IMPORT FOREIGN SCHEMA gives (snake_case names, `id` and for edges
//! `src`, `dst` first), read by a Lance scan with the projection, the
//! filters the shared classification pushes, and the limit.

use std::sync::Arc;

use omnigraph_engine::Snapshot;
use omnigraph_engine::deps::arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use omnigraph_engine::deps::lance::deps::datafusion::catalog::{Session, TableProvider};
use omnigraph_engine::deps::lance::deps::datafusion::common::{DataFusionError, Result};
use omnigraph_engine::deps::lance::deps::datafusion::datasource::TableType;
use omnigraph_engine::deps::lance::deps::datafusion::logical_expr::{
    Expr as DfExpr, TableProviderFilterPushDown,
};
use omnigraph_engine::deps::lance::deps::datafusion::physical_expr::expressions::Column as PhysColumn;
use omnigraph_engine::deps::lance::deps::datafusion::physical_plan::projection::ProjectionExec;
use omnigraph_engine::deps::lance::deps::datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};

use super::pushdown::{Columns, from_datafusion};
use crate::filter::{self, Column, ColumnType, Pushdown};
use crate::names::pg_name;

/// An engine error inside DataFusion's, kept whole so the frontend can
/// report it (and its hint) as the engine error it is.
pub fn engine_error(e: omnigraph_engine::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

pub struct GraphTable {
    snapshot: Snapshot,
    type_name: String,
    /// The Lance table's schema (graph names).
    graph_schema: SchemaRef,
    /// What SQL sees: the same fields under their SQL names.
    schema: SchemaRef,
}

/// What a column holds, for the pushdown rules.
fn column_type(t: &DataType) -> ColumnType {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnType::Text,
        DataType::Boolean => ColumnType::Bool,
        t if crate::types::fits_int64(t) => ColumnType::Int,
        DataType::Float64 => ColumnType::Float64,
        DataType::Float32 => ColumnType::Float32,
        DataType::Date32 => ColumnType::Date,
        DataType::Timestamp(TimeUnit::Microsecond, _) => ColumnType::Timestamp,
        _ => ColumnType::Other,
    }
}

impl std::fmt::Debug for GraphTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphTable")
            .field("type_name", &self.type_name)
            .field("commit", &self.snapshot.commit().id)
            .finish()
    }
}

impl GraphTable {
    /// The SQL name of the table, and the table.
    pub fn new(snapshot: &Snapshot, type_name: &str) -> omnigraph_engine::Result<(String, Self)> {
        let graph_schema =
            omnigraph_engine::value::table_schema(snapshot.graph().catalog(), type_name)?;
        let fields: Vec<Field> = graph_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_name(pg_name(f.name())))
            .collect();
        let table = GraphTable {
            snapshot: snapshot.clone(),
            type_name: type_name.to_string(),
            graph_schema,
            schema: Arc::new(Schema::new(fields)),
        };
        Ok((pg_name(type_name), table))
    }

    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    fn pushed(&self, f: &DfExpr) -> Option<filter::Expr> {
        let e = from_datafusion(f, self);
        (filter::classify(&e) == Pushdown::Exact).then_some(e)
    }
}

impl Columns for GraphTable {
    fn column(&self, sql_name: &str) -> Option<Column> {
        let i = self.schema.index_of(sql_name).ok()?;
        let f = self.graph_schema.field(i);
        Some(Column {
            name: f.name().clone(),
            ty: column_type(f.data_type()),
        })
    }
}

#[async_trait::async_trait]
impl TableProvider for GraphTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&DfExpr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match self.pushed(f) {
                Some(_) => TableProviderFilterPushDown::Exact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[DfExpr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let indices: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let graph_names: Vec<String> = indices
            .iter()
            .map(|i| self.graph_schema.field(*i).name().clone())
            .collect();
        let ds = self
            .snapshot
            .dataset(&self.type_name)
            .await
            .map_err(engine_error)?;
        let mut scan = omnigraph_engine::scanner(&ds);
        if graph_names.is_empty() {
            scan.empty_project()?;
        } else {
            scan.project(&graph_names)?;
        }
        // DataFusion hands over only the filters we said are exact.
        let pushed: Vec<filter::Expr> = filters.iter().filter_map(|f| self.pushed(f)).collect();
        if let Some(all) = filter::and_all(pushed) {
            let e = filter::to_datafusion(&all, &[], Some(&self.graph_schema))
                .map_err(|e| DataFusionError::Plan(e.0))?;
            scan.filter_expr(e);
        }
        if let Some(n) = limit {
            scan.limit(Some(i64::try_from(n).unwrap_or(i64::MAX)), None)?;
        }
        let plan = scan.create_plan().await?;
        // Lance's columns carry graph names: rename them as SQL sees them.
        let out = plan.schema();
        let mut renamed: Vec<(Arc<dyn PhysicalExpr>, String)> = Vec::new();
        for i in &indices {
            let graph = self.graph_schema.field(*i).name();
            let pos = out.index_of(graph)?;
            renamed.push((
                Arc::new(PhysColumn::new(graph, pos)),
                self.schema.field(*i).name().clone(),
            ));
        }
        Ok(Arc::new(ProjectionExec::try_new(renamed, plan)?))
    }
}
