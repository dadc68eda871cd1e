//! One node or edge type of a snapshot as a DataFusion table: the columns
//! IMPORT FOREIGN SCHEMA gives (snake_case names, `id` and for edges
//! `src`, `dst` first), read by a Lance scan with the projection, the
//! filters the shared classification pushes, and the limit.

use std::sync::Arc;

use omnigraph_engine::deps::arrow_array::RecordBatch;
use omnigraph_engine::deps::arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use omnigraph_engine::deps::lance::deps::datafusion::catalog::{Session, TableProvider};
use omnigraph_engine::deps::lance::deps::datafusion::common::Column as DfColumn;
use omnigraph_engine::deps::lance::deps::datafusion::common::{DataFusionError, Result};
use omnigraph_engine::deps::lance::deps::datafusion::datasource::TableType;
use omnigraph_engine::deps::lance::deps::datafusion::datasource::memory::MemorySourceConfig;
use omnigraph_engine::deps::lance::deps::datafusion::logical_expr::lit;
use omnigraph_engine::deps::lance::deps::datafusion::logical_expr::{
    Expr as DfExpr, TableProviderFilterPushDown,
};
use omnigraph_engine::deps::lance::deps::datafusion::physical_expr::expressions::Column as PhysColumn;
use omnigraph_engine::deps::lance::deps::datafusion::physical_plan::empty::EmptyExec;
use omnigraph_engine::deps::lance::deps::datafusion::physical_plan::projection::ProjectionExec;
use omnigraph_engine::deps::lance::deps::datafusion::physical_plan::union::UnionExec;
use omnigraph_engine::deps::lance::deps::datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use omnigraph_engine::{Snapshot, StagedView};

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
    /// The open transaction's changes to this table, if it made any.
    view: Option<StagedView>,
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
    pub fn new(
        snapshot: &Snapshot,
        type_name: &str,
        view: Option<StagedView>,
    ) -> omnigraph_engine::Result<(String, Self)> {
        let graph_schema =
            omnigraph_engine::value::table_schema(snapshot.graph().catalog(), type_name)?;
        let fields: Vec<Field> = graph_schema
            .fields()
            .iter()
            // Nullable: a key's node gets its `id` from the key, and a
            // missing required value is the engine's error to report.
            .map(|f| {
                f.as_ref()
                    .clone()
                    .with_name(pg_name(f.name()))
                    .with_nullable(true)
            })
            .collect();
        let table = GraphTable {
            snapshot: snapshot.clone(),
            view,
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
                // The transaction's own rows are not filtered by the scan:
                // DataFusion filters them again.
                Some(_) if self.view.is_some() => TableProviderFilterPushDown::Inexact,
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
        let pushed: Vec<filter::Expr> = filters.iter().filter_map(|f| self.pushed(f)).collect();
        let filter = match filter::and_all(pushed) {
            Some(all) => Some(
                filter::to_datafusion(&all, &[], Some(&self.graph_schema))
                    .map_err(|e| DataFusionError::Plan(e.0))?,
            ),
            None => None,
        };
        let Some(view) = &self.view else {
            let ds = self
                .snapshot
                .dataset(&self.type_name)
                .await
                .map_err(engine_error)?;
            let plan = lance_plan(&ds, &graph_names, filter, limit).await?;
            return self.renamed(plan, &indices);
        };
        // Read-your-writes: the committed rows the transaction did not
        // replace or delete, its rows in memory, its spilled rows.
        let mut parts = Vec::new();
        if !view.hide_all {
            let ds = self
                .snapshot
                .dataset(&self.type_name)
                .await
                .map_err(engine_error)?;
            let mut f = filter.clone();
            if !view.hidden.is_empty() {
                let id = DfExpr::Column(DfColumn::new_unqualified("id"));
                let hidden = id.in_list(view.hidden.iter().map(|h| lit(h.clone())).collect(), true);
                f = Some(match f {
                    Some(f) => f.and(hidden),
                    None => hidden,
                });
            }
            parts.push(self.renamed(lance_plan(&ds, &graph_names, f, None).await?, &indices)?);
        }
        if let Some(rows) = &view.rows {
            let schema = rows.schema();
            let memory = MemorySourceConfig::try_new_exec(&[vec![rows.clone()]], schema, None)?;
            parts.push(self.renamed(memory, &indices)?);
        }
        if let Some(spill) = &view.spill {
            parts.push(self.renamed(
                lance_plan(spill, &graph_names, filter, None).await?,
                &indices,
            )?);
        }
        if parts.is_empty() {
            let schema = self.schema.project(&indices)?;
            return Ok(Arc::new(EmptyExec::new(Arc::new(schema))));
        }
        UnionExec::try_new(parts)
    }
}

/// A Lance scan of `columns` (graph names) through `filter`, up to `limit` rows.
async fn lance_plan(
    ds: &omnigraph_engine::deps::lance::Dataset,
    columns: &[String],
    filter: Option<DfExpr>,
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let mut scan = omnigraph_engine::scanner(ds);
    if columns.is_empty() {
        scan.empty_project()?;
    } else {
        scan.project(columns)?;
    }
    if let Some(f) = filter {
        scan.filter_expr(f);
    }
    if let Some(n) = limit {
        scan.limit(Some(i64::try_from(n).unwrap_or(i64::MAX)), None)?;
    }
    Ok(scan.create_plan().await?)
}

impl GraphTable {
    /// The graph names of SQL columns (unknown names are left out).
    pub(crate) fn graph_names(&self, sql: &[String]) -> Vec<String> {
        sql.iter()
            .filter_map(|c| self.schema.index_of(c).ok())
            .map(|i| self.graph_schema.field(i).name().clone())
            .collect()
    }

    /// A batch of this table's SQL columns (any subset, any order) under
    /// the graph's names, as the engine reads records.
    pub(crate) fn graph_batch(&self, b: &RecordBatch) -> Result<RecordBatch> {
        let mut fields = Vec::new();
        for f in b.schema().fields() {
            let i = self.schema.index_of(f.name())?;
            fields.push(
                f.as_ref()
                    .clone()
                    .with_name(self.graph_schema.field(i).name()),
            );
        }
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            b.columns().to_vec(),
        )?)
    }

    /// `plan`'s columns (graph names) as the projected SQL columns.
    fn renamed(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        indices: &[usize],
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let out = plan.schema();
        let mut renamed: Vec<(Arc<dyn PhysicalExpr>, String)> = Vec::new();
        for i in indices {
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
