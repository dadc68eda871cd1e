//! One node or edge type of a snapshot as a DataFusion table: the columns
//! IMPORT FOREIGN SCHEMA gives (snake_case names, `id` and for edges
//! `src`, `dst` first), read by the scan every frontend shares
//! ([`crate::scan`]) with the projection, the filters the shared
//! classification pushes, and the limit.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use omnigraph_engine::deps::arrow_array::{RecordBatch, RecordBatchOptions};
use omnigraph_engine::deps::arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use omnigraph_engine::deps::lance::deps::datafusion::catalog::{Session, TableProvider};
use omnigraph_engine::deps::lance::deps::datafusion::common::stats::Precision;
use omnigraph_engine::deps::lance::deps::datafusion::common::{
    DataFusionError, Result, Statistics,
};
use omnigraph_engine::deps::lance::deps::datafusion::datasource::TableType;
use omnigraph_engine::deps::lance::deps::datafusion::execution::TaskContext;
use omnigraph_engine::deps::lance::deps::datafusion::logical_expr::{
    Expr as DfExpr, TableProviderFilterPushDown,
};
use omnigraph_engine::deps::lance::deps::datafusion::physical_expr::EquivalenceProperties;
use omnigraph_engine::deps::lance::deps::datafusion::physical_plan::execution_plan::{
    Boundedness, EmissionType,
};
use omnigraph_engine::deps::lance::deps::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use omnigraph_engine::deps::lance::deps::datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use omnigraph_engine::{Snapshot, StagedView};

use super::pushdown::{Columns, from_datafusion};
use crate::filter::{self, Column, ColumnType, Pushdown};
use crate::names::pg_name;
use crate::scan::{Scan, ScanExplain, ScanSpec};

/// An engine error inside DataFusion's, kept whole so the frontend can
/// report it (and its hint) as the engine error it is.
pub fn engine_error(e: omnigraph_engine::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

pub struct GraphTable {
    snapshot: Snapshot,
    /// The open transaction's changes to this table, if it made any.
    view: Option<Arc<StagedView>>,
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
        view: Option<Arc<StagedView>>,
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
        // The shared scan applies a pushed filter to every row it returns,
        // the transaction's own included.
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
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[DfExpr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let indices: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let pushed: Vec<filter::Expr> = filters.iter().filter_map(|f| self.pushed(f)).collect();
        let spec = ScanSpec {
            type_name: self.type_name.clone(),
            columns: indices
                .iter()
                .map(|i| self.graph_schema.field(*i).name().clone())
                .collect(),
            filter: filter::and_all(pushed),
            params: Vec::new(),
            order: Vec::new(),
            limit: limit.map(|n| n as u64),
            offset: None,
        };
        // Planning reads table metadata too: a version reclaimed under it
        // is reported as such.
        let reported =
            |e| async { engine_error(self.snapshot.read_error(&self.type_name, e).await) };
        let explain = match ScanExplain::new(&self.snapshot, &spec).await {
            Ok(e) => e,
            Err(e) => return Err(reported(e).await),
        };
        let schema = Arc::new(self.schema.project(&indices)?);
        // The committed row count is metadata: with it DataFusion answers
        // count(*) without a scan and sizes joins.
        let mut statistics = Statistics::new_unknown(&schema);
        let mut ranges = vec![None];
        if self.view.is_none() && spec.filter.is_none() {
            let rows = match self.snapshot.count(&self.type_name).await {
                Ok(n) => n,
                Err(e) => return Err(reported(e).await),
            };
            if limit.is_none() {
                ranges = partition(rows, state.config().target_partitions());
            }
            let rows = usize::try_from(rows).unwrap_or(usize::MAX);
            statistics.num_rows = Precision::Exact(limit.map_or(rows, |n| n.min(rows)));
        }
        Ok(Arc::new(GraphScanExec {
            properties: Arc::new(PlanProperties::new(
                EquivalenceProperties::new(schema.clone()),
                Partitioning::UnknownPartitioning(ranges.len()),
                EmissionType::Incremental,
                Boundedness::Bounded,
            )),
            snapshot: self.snapshot.clone(),
            view: self.view.clone(),
            spec,
            explain,
            schema,
            statistics: Arc::new(statistics),
            ranges,
        }))
    }
}

/// Rows per partition below which a table is read as one stream.
const PARTITION_ROWS: u64 = 2 * crate::scan::BATCH_ROWS as u64;

/// `rows` committed rows as up to `partitions` ranges `(offset, count)`,
/// each read (and decoded) by its own stream; one whole read when small.
fn partition(rows: u64, partitions: usize) -> Vec<Option<(u64, u64)>> {
    let k = (partitions as u64).min(rows / PARTITION_ROWS);
    if k < 2 {
        return vec![None];
    }
    let size = rows.div_ceil(k);
    (0..k)
        .map(|i| {
            let offset = i * size;
            Some((offset, size.min(rows - offset)))
        })
        .collect()
}

/// The shared scan ([`crate::scan`]) as a DataFusion leaf: one partition
/// whose batches carry the SQL column names.
pub struct GraphScanExec {
    snapshot: Snapshot,
    view: Option<Arc<StagedView>>,
    spec: ScanSpec,
    explain: ScanExplain,
    /// The projected columns under their SQL names.
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    statistics: Arc<Statistics>,
    /// One `(offset, count)` of committed rows per partition, or a single
    /// `None`: the whole read as one stream.
    ranges: Vec<Option<(u64, u64)>>,
}

impl std::fmt::Debug for GraphScanExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphScanExec")
            .field("spec", &self.spec)
            .field("commit", &self.explain.commit)
            .finish()
    }
}

impl DisplayAs for GraphScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let e = &self.explain;
        write!(
            f,
            "OmnigraphScan: type={}, branch={}, commit={}",
            e.type_name,
            e.branch.as_deref().unwrap_or("(pinned commit)"),
            e.commit
        )?;
        if let Some(filter) = &e.filter {
            write!(f, ", filter={filter}")?;
        }
        for (column, kind) in &e.indexes {
            write!(f, ", index={column} ({})", kind.as_str())?;
        }
        write!(f, ", columns=[{}]", e.columns.join(", "))?;
        if self.ranges.len() > 1 {
            write!(f, ", partitions={}", self.ranges.len())?;
        }
        if let Some(n) = self.spec.limit {
            write!(f, ", limit={n}")?;
        }
        if let Some(view) = &self.view {
            // What the open transaction adds to the committed rows.
            let mut own = Vec::new();
            if view.hide_all {
                own.push("replaces all".to_string());
            } else if !view.hidden.is_empty() {
                own.push(format!("hides {}", view.hidden.len()));
            }
            if let Some(rows) = &view.rows {
                own.push(format!("{} staged", rows.num_rows()));
            }
            if view.spill.is_some() {
                own.push("spilled".to_string());
            }
            write!(f, ", own writes=[{}]", own.join(", "))?;
        }
        Ok(())
    }
}

impl ExecutionPlan for GraphScanExec {
    fn name(&self) -> &str {
        "OmnigraphScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "OmnigraphScan has no children".to_string(),
            ))
        }
    }

    fn partition_statistics(&self, partition: Option<usize>) -> Result<Arc<Statistics>> {
        match partition.and_then(|p| self.ranges.get(p)) {
            Some(Some((_, count))) => {
                let mut s = Statistics::new_unknown(&self.schema);
                s.num_rows = Precision::Exact(usize::try_from(*count).unwrap_or(usize::MAX));
                Ok(Arc::new(s))
            }
            _ => Ok(self.statistics.clone()),
        }
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let (snapshot, view, mut spec) =
            (self.snapshot.clone(), self.view.clone(), self.spec.clone());
        match self.ranges.get(partition) {
            Some(Some((offset, count))) => {
                spec.offset = Some(*offset);
                spec.limit = Some(*count);
            }
            Some(None) => {}
            None => {
                return Err(DataFusionError::Internal(format!(
                    "OmnigraphScan has no partition {partition}"
                )));
            }
        }
        let schema = self.schema.clone();
        let rows = futures::stream::once(async move { Scan::open(&snapshot, view, &spec).await })
            .map_ok(|scan| {
                futures::stream::try_unfold(scan, |mut scan| async move {
                    Ok(scan.next_batch().await?.map(|b| (b, scan)))
                })
            })
            .try_flatten()
            .map_err(engine_error);
        let out = schema.clone();
        let renamed = rows.map(move |b| {
            let b = b?;
            // The same arrays under the SQL names.
            Ok(RecordBatch::try_new_with_options(
                out.clone(),
                b.columns().to_vec(),
                &RecordBatchOptions::new().with_row_count(Some(b.num_rows())),
            )?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, renamed)))
    }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_tables_are_read_in_ranges_that_cover_every_row() {
        assert_eq!(partition(1_000, 2), vec![None]);
        assert_eq!(partition(2 * PARTITION_ROWS - 1, 2), vec![None]);
        assert_eq!(partition(1_000_001, 1), vec![None]);
        let r = partition(1_000_001, 2);
        assert_eq!(r, vec![Some((0, 500_001)), Some((500_001, 500_000))]);
        let r = partition(100_000, 8);
        assert_eq!(r.len(), 6);
        let total: u64 = r.iter().flatten().map(|(_, n)| n).sum();
        assert_eq!(total, 100_000);
    }
}
