//! The extension's read-only `omnigraph_*` table functions, with the same
//! names, arguments and result columns, so a query written for the FDW
//! runs in `omnigraph sql`: `omnigraph_log`, `omnigraph_branch_list`,
//! `omnigraph_diff`, `omnigraph_merge_conflicts`,
//! `omnigraph_recovery_status`, `omnigraph_recovery_log`.
//!
//! The first argument names the Postgres server in the extension; here the
//! graph is the one the session opened, and the argument is accepted and
//! not used. Refs are branch names or commit ids.

use std::sync::Arc;

use futures::future::BoxFuture;
use omnigraph_engine::deps::arrow_array::builder::{
    Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use omnigraph_engine::deps::arrow_array::{ArrayRef, RecordBatch};
use omnigraph_engine::deps::arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use omnigraph_engine::deps::lance::deps::datafusion::catalog::{
    Session, TableFunctionArgs, TableFunctionImpl, TableProvider,
};
use omnigraph_engine::deps::lance::deps::datafusion::common::{DataFusionError, Result};
use omnigraph_engine::deps::lance::deps::datafusion::datasource::TableType;
use omnigraph_engine::deps::lance::deps::datafusion::execution::context::SessionContext;
use omnigraph_engine::deps::lance::deps::datafusion::execution::{
    SendableRecordBatchStream, TaskContext,
};
use omnigraph_engine::deps::lance::deps::datafusion::logical_expr::Expr;
use omnigraph_engine::deps::lance::deps::datafusion::physical_plan::ExecutionPlan;
use omnigraph_engine::deps::lance::deps::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use omnigraph_engine::deps::lance::deps::datafusion::physical_plan::streaming::{
    PartitionStream, StreamingTableExec,
};
use omnigraph_engine::deps::lance::deps::datafusion::scalar::ScalarValue;
use omnigraph_engine::{Graph, OnConflict, ReadRef, Side};

use super::table::engine_error;

/// Which function, with its arguments.
#[derive(Debug, Clone)]
enum Call {
    Log { branch: String },
    BranchList,
    Diff { from: String, to: String },
    MergeConflicts { source: String, target: String },
    RecoveryStatus,
    RecoveryLog,
}

/// `(name, its arguments after the server, how many of those are required)`.
const FUNCTIONS: &[(&str, &[&str], usize)] = &[
    ("omnigraph_log", &["branch"], 0),
    ("omnigraph_branch_list", &[], 0),
    ("omnigraph_diff", &["from_ref", "to_ref"], 2),
    ("omnigraph_merge_conflicts", &["source", "target"], 1),
    ("omnigraph_recovery_status", &[], 0),
    ("omnigraph_recovery_log", &[], 0),
];

/// Register the functions on `ctx`, reading `graph`.
pub fn register(ctx: &SessionContext, graph: &Graph) {
    for (name, params, required) in FUNCTIONS {
        ctx.register_udtf(
            name,
            Arc::new(Function {
                name,
                params,
                required: *required,
                graph: graph.clone(),
            }),
        );
    }
}

struct Function {
    name: &'static str,
    params: &'static [&'static str],
    required: usize,
    graph: Graph,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// The arity check every `omnigraph_*` function makes: `server` plus
/// `params`, the first `required` of them required.
pub(super) fn check_arity(
    name: &str,
    params: &[&str],
    required: usize,
    given: usize,
) -> Result<()> {
    let (least, most) = (required + 1, params.len() + 1);
    if (least..=most).contains(&given) {
        return Ok(());
    }
    let count = if least == most {
        format!("{most}")
    } else {
        format!("{least} to {most}")
    };
    let p: Vec<String> = params.iter().map(|p| format!(", {p}")).collect();
    Err(DataFusionError::Plan(format!(
        "{name} takes {count} arguments: {name}(server{})",
        p.concat()
    )))
}

pub(super) fn text_arg(name: &str, e: &Expr) -> Result<String> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => Ok(s.clone()),
        _ => Err(DataFusionError::Plan(format!(
            "{name}: arguments must be text constants, got {e}"
        ))),
    }
}

impl TableFunctionImpl for Function {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        check_arity(self.name, self.params, self.required, exprs.len())?;
        let values: Vec<String> = exprs
            .iter()
            .map(|e| text_arg(self.name, e))
            .collect::<Result<_>>()?;
        let arg = |i: usize, default: &str| {
            values
                .get(i)
                .cloned()
                .unwrap_or_else(|| default.to_string())
        };
        let call = match self.name {
            "omnigraph_log" => Call::Log {
                branch: arg(1, "main"),
            },
            "omnigraph_branch_list" => Call::BranchList,
            "omnigraph_diff" => Call::Diff {
                from: arg(1, ""),
                to: arg(2, ""),
            },
            "omnigraph_merge_conflicts" => Call::MergeConflicts {
                source: arg(1, ""),
                target: arg(2, "main"),
            },
            "omnigraph_recovery_status" => Call::RecoveryStatus,
            _ => Call::RecoveryLog,
        };
        let table = Arc::new(FunctionTable {
            call: call.clone(),
            graph: self.graph.clone(),
        });
        Ok(Deferred::new(
            format!("{call:?}"),
            schema_of(&call),
            move || {
                let table = table.clone();
                Box::pin(async move { table.rows().await })
            },
        ))
    }
}

pub(super) fn field(name: &str, t: DataType) -> Field {
    Field::new(name, t, true)
}

pub(super) fn text_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

fn time() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn schema_of(call: &Call) -> SchemaRef {
    let t = || DataType::Utf8;
    let fields = match call {
        Call::Log { .. } => vec![
            field("commit_id", t()),
            field("parents", text_list()),
            field("branch", t()),
            field("actor", t()),
            field("message", t()),
            field("committed_at", time()),
        ],
        Call::BranchList => vec![
            field("name", t()),
            field("head_commit", t()),
            field("created_at", time()),
        ],
        Call::Diff { .. } => vec![
            field("type_name", t()),
            field("id", t()),
            field("change", t()),
            field("properties", text_list()),
            field("before", t()),
            field("after", t()),
        ],
        Call::MergeConflicts { .. } => vec![
            field("type_name", t()),
            field("id", t()),
            field("kind", t()),
            field("property", t()),
            field("base", t()),
            field("ours", t()),
            field("theirs", t()),
            field("detail", t()),
        ],
        Call::RecoveryStatus => vec![
            field("branch", t()),
            field("type_name", t()),
            field("pinned_version", DataType::Int64),
            field("latest_version", DataType::Int64),
            field("state", t()),
        ],
        Call::RecoveryLog => vec![
            field("recovered_at", time()),
            field("actor", t()),
            field("branch", t()),
            field("type_name", t()),
            field("from_version", DataType::Int64),
            field("to_version", DataType::Int64),
        ],
    };
    Arc::new(Schema::new(fields))
}

/// One result column being built.
enum Col {
    Text(StringBuilder),
    List(ListBuilder<StringBuilder>),
    Int(Int64Builder),
    Time(TimestampMicrosecondBuilder),
}

/// One value of a result row.
pub(super) enum V {
    Text(Option<String>),
    List(Vec<String>),
    Int(u64),
    Time(i64),
    Null,
}

pub(super) fn text(s: impl Into<String>) -> V {
    V::Text(Some(s.into()))
}

fn json(v: Option<serde_json::Value>) -> V {
    V::Text(v.map(|v| v.to_string()))
}

pub(super) fn batch(schema: &SchemaRef, rows: Vec<Vec<V>>) -> Result<RecordBatch> {
    let mut cols: Vec<Col> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::List(_) => Col::List(ListBuilder::new(StringBuilder::new())),
            DataType::Int64 => Col::Int(Int64Builder::new()),
            DataType::Timestamp(..) => {
                Col::Time(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
            _ => Col::Text(StringBuilder::new()),
        })
        .collect();
    for row in rows {
        for (c, v) in cols.iter_mut().zip(row) {
            match (c, v) {
                (Col::Text(b), V::Text(s)) => b.append_option(s),
                (Col::List(b), V::List(items)) => {
                    for i in items {
                        b.values().append_value(i);
                    }
                    b.append(true);
                }
                (Col::Int(b), V::Int(n)) => b.append_value(i64::try_from(n).unwrap_or(i64::MAX)),
                (Col::Time(b), V::Time(us)) => b.append_value(us),
                (Col::Text(b), V::Null) => b.append_null(),
                (Col::List(b), V::Null) => b.append(false),
                (Col::Int(b), V::Null) => b.append_null(),
                (Col::Time(b), V::Null) => b.append_null(),
                _ => {
                    return Err(DataFusionError::Internal(
                        "a function's row does not match its columns".into(),
                    ));
                }
            }
        }
    }
    let arrays: Vec<ArrayRef> = cols
        .into_iter()
        .map(|c| -> ArrayRef {
            match c {
                Col::Text(mut b) => Arc::new(b.finish()),
                Col::List(mut b) => Arc::new(b.finish()),
                Col::Int(mut b) => Arc::new(b.finish()),
                Col::Time(mut b) => Arc::new(b.finish()),
            }
        })
        .collect();
    Ok(RecordBatch::try_new(schema.clone(), arrays)?)
}

/// A read-only function's call.
struct FunctionTable {
    call: Call,
    graph: Graph,
}

impl FunctionTable {
    async fn rows(&self) -> omnigraph_engine::Result<Vec<Vec<V>>> {
        let g = &self.graph;
        Ok(match &self.call {
            Call::Log { branch } => g
                .log(branch, usize::MAX)
                .await?
                .into_iter()
                .map(|c| {
                    vec![
                        text(c.id),
                        V::List(c.parents),
                        text(c.branch),
                        text(c.actor),
                        text(c.message),
                        V::Time(c.committed_at_us),
                    ]
                })
                .collect(),
            Call::BranchList => g
                .branch_list()
                .await?
                .into_iter()
                .map(|b| vec![text(b.name), text(b.head_commit), V::Time(b.created_at_us)])
                .collect(),
            Call::Diff { from, to } => {
                let a = Side::new(from.clone(), g.snapshot(&ReadRef::parse(from)).await?, None);
                let b = Side::new(to.clone(), g.snapshot(&ReadRef::parse(to)).await?, None);
                g.diff(&a, &b)
                    .await?
                    .changes
                    .into_iter()
                    .map(|c| {
                        vec![
                            text(c.type_name),
                            text(c.id),
                            text(c.change.as_str()),
                            V::List(c.properties),
                            json(c.before),
                            json(c.after),
                        ]
                    })
                    .collect()
            }
            Call::MergeConflicts { source, target } => {
                let theirs = Side::new(
                    source.clone(),
                    g.snapshot(&ReadRef::parse(source)).await?,
                    None,
                );
                let ours = Side::new(
                    target.clone(),
                    g.snapshot(&ReadRef::parse(target)).await?,
                    None,
                );
                g.plan_merge(&theirs, &ours, OnConflict::Fail)
                    .await?
                    .conflicts
                    .into_iter()
                    .map(|c| {
                        vec![
                            text(c.type_name),
                            text(c.id),
                            text(c.kind.as_str()),
                            V::Text(c.property),
                            json(c.base),
                            json(c.ours),
                            json(c.theirs),
                            text(c.detail),
                        ]
                    })
                    .collect()
            }
            Call::RecoveryStatus => g
                .recovery_status()
                .await?
                .into_iter()
                .map(|r| {
                    vec![
                        text(r.branch),
                        text(r.type_name),
                        V::Int(r.pinned_version),
                        V::Int(r.latest_version),
                        text(r.state.as_str()),
                    ]
                })
                .collect(),
            Call::RecoveryLog => g
                .recovery_log()
                .await?
                .into_iter()
                .map(|r| {
                    vec![
                        V::Time(r.recovered_at_us),
                        text(r.actor),
                        text(r.branch),
                        text(r.type_name),
                        V::Int(r.from_version),
                        V::Int(r.to_version),
                    ]
                })
                .collect(),
        })
    }
}

/// A function's result as a table whose rows are computed when the plan
/// executes (a [`PartitionStream`]), never when it is only planned
/// (`EXPLAIN`, the wire protocol's Parse and Describe).
pub(super) struct Deferred {
    name: String,
    schema: SchemaRef,
    run: Arc<dyn Fn() -> RowsFuture + Send + Sync>,
}

/// A function's rows, computed by the engine.
pub(super) type RowsFuture = BoxFuture<'static, omnigraph_engine::Result<Vec<Vec<V>>>>;

impl Deferred {
    pub(super) fn new(
        name: impl Into<String>,
        schema: SchemaRef,
        run: impl Fn() -> RowsFuture + Send + Sync + 'static,
    ) -> Arc<Deferred> {
        Arc::new(Deferred {
            name: name.into(),
            schema,
            run: Arc::new(run),
        })
    }
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl PartitionStream for Deferred {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let schema = self.schema.clone();
        let rows = (self.run)();
        let once = futures::stream::once(async move {
            let rows = rows.await.map_err(engine_error)?;
            batch(&schema, rows)
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), once))
    }
}

#[async_trait::async_trait]
impl TableProvider for Deferred {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let me = Arc::new(Deferred {
            name: self.name.clone(),
            schema: self.schema.clone(),
            run: self.run.clone(),
        });
        Ok(Arc::new(StreamingTableExec::try_new(
            self.schema.clone(),
            vec![me],
            projection,
            Vec::new(),
            false,
            None,
        )?))
    }
}
