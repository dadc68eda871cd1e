//! The extension's graph-changing functions in SQL, with the same names,
//! positional arguments and results: `omnigraph_branch_create` and
//! `omnigraph_branch_delete` (scalar, `SELECT omnigraph_branch_create('g',
//! 'feature')`), and the table functions `omnigraph_branch_merge`,
//! `omnigraph_optimize`, `omnigraph_cleanup` and `omnigraph_recover`
//! (`SELECT * FROM omnigraph_branch_merge('g', 'feature')`).
//!
//! Each runs when its statement executes, never when it is only planned
//! (EXPLAIN, the extended protocol's Parse and Describe). Outside a
//! transaction each publishes at once, as the `omnigraph` verb of the same
//! name does. Inside BEGIN ... COMMIT the branch functions join the
//! transaction as in the extension (the session stages them: see
//! `QuerySession::branch_call_in_transaction`); optimize, cleanup and
//! recover publish at once there too, as the extension's do. The first
//! argument names the Postgres server in the extension; here it is
//! accepted and not used.

use std::sync::Arc;

use omnigraph_engine::deps::arrow_array::builder::StringBuilder;
use omnigraph_engine::deps::arrow_array::{ArrayRef, RecordBatch};
use omnigraph_engine::deps::arrow_schema::{DataType, Schema, SchemaRef};
use omnigraph_engine::deps::lance::deps::datafusion::catalog::{
    TableFunctionArgs, TableFunctionImpl, TableProvider,
};
use omnigraph_engine::deps::lance::deps::datafusion::common::{DataFusionError, Result};
use omnigraph_engine::deps::lance::deps::datafusion::execution::context::SessionContext;
use omnigraph_engine::deps::lance::deps::datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use omnigraph_engine::deps::lance::deps::datafusion::scalar::ScalarValue;
use omnigraph_engine::{Error as EngineError, Graph, OnConflict, ReadRef};

use super::functions::{Deferred, V, batch, check_arity, field, text, text_arg, text_list};
use super::table::engine_error;

/// Register the functions on `ctx`: they change `graph` as `actor`; inside
/// a transaction (`in_transaction`) they refuse to run.
pub fn register(ctx: &SessionContext, graph: &Graph, actor: &str, in_transaction: bool) {
    let env = Env {
        graph: graph.clone(),
        actor: actor.to_string(),
        in_transaction,
    };
    for (name, params, required) in TABLE_FUNCTIONS {
        ctx.register_udtf(
            name,
            Arc::new(TableFunction {
                name,
                params,
                required: *required,
                env: env.clone(),
            }),
        );
    }
    for (name, params, required) in SCALAR_FUNCTIONS {
        ctx.register_udf(ScalarUDF::new_from_impl(ScalarFunction {
            name,
            params,
            required: *required,
            env: env.clone(),
            signature: Signature::variadic_any(Volatility::Volatile),
        }));
    }
}

/// `(name, its arguments after the server, how many of those are required)`.
const TABLE_FUNCTIONS: &[(&str, &[&str], usize)] = &[
    (
        "omnigraph_branch_merge",
        &["source", "target", "on_conflict", "message"],
        1,
    ),
    ("omnigraph_optimize", &["branch"], 0),
    ("omnigraph_cleanup", &["older_than", "dry_run"], 0),
    ("omnigraph_recover", &["branch"], 0),
];

const SCALAR_FUNCTIONS: &[(&str, &[&str], usize)] = &[
    ("omnigraph_branch_create", &["name", "from_ref"], 1),
    ("omnigraph_branch_delete", &["name"], 1),
];

#[derive(Clone)]
struct Env {
    graph: Graph,
    actor: String,
    in_transaction: bool,
}

impl Env {
    /// Inside a transaction the session stages branch calls written in
    /// their plain form itself (`QuerySession`); any other form of them is
    /// refused rather than published before COMMIT.
    fn check(&self, name: &str) -> omnigraph_engine::Result<()> {
        if self.in_transaction {
            let form = if name == "omnigraph_branch_merge" {
                "SELECT * FROM omnigraph_branch_merge('graph', 'source', ...)"
            } else {
                "SELECT omnigraph_branch_create('graph', 'name') or SELECT omnigraph_branch_delete('graph', 'name')"
            };
            return Err(EngineError::Unsupported(format!(
                "{name} inside BEGIN ... COMMIT joins the transaction only when called as {form}, with constant arguments"
            )));
        }
        Ok(())
    }
}

/// A table function's call.
#[derive(Debug, Clone)]
enum Call {
    Merge {
        source: String,
        target: String,
        policy: OnConflict,
        message: Option<String>,
    },
    Optimize {
        branch: String,
    },
    Cleanup {
        older_than: std::time::Duration,
        dry_run: bool,
    },
    Recover {
        branch: String,
    },
}

struct TableFunction {
    name: &'static str,
    params: &'static [&'static str],
    required: usize,
    env: Env,
}

impl std::fmt::Debug for TableFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// An interval argument: an SQL interval (`interval '7 days'`) or text
/// (`'7 days'`, as the extension's argument is written).
fn duration_arg(name: &str, e: &Expr) -> Result<std::time::Duration> {
    let bad = || {
        DataFusionError::Plan(format!(
            "{name}: older_than must be an interval such as '7 days', got {e}"
        ))
    };
    match e {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) => {
            let days = i64::from(v.months) * 30 + i64::from(v.days);
            let nanos = i128::from(days) * 86_400_000_000_000 + i128::from(v.nanoseconds);
            u64::try_from(nanos)
                .map(std::time::Duration::from_nanos)
                .map_err(|_| bad())
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => {
            let ms = i64::from(v.days) * 86_400_000 + i64::from(v.milliseconds);
            u64::try_from(ms)
                .map(std::time::Duration::from_millis)
                .map_err(|_| bad())
        }
        _ => {
            let text = text_arg(name, e).map_err(|_| bad())?;
            crate::cli::parse_duration(&text).map_err(|_| bad())
        }
    }
}

fn bool_arg(name: &str, e: &Expr) -> Result<bool> {
    match e {
        Expr::Literal(ScalarValue::Boolean(Some(b)), _) => Ok(*b),
        _ => Err(DataFusionError::Plan(format!(
            "{name}: dry_run must be true or false, got {e}"
        ))),
    }
}

impl TableFunctionImpl for TableFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        check_arity(self.name, self.params, self.required, exprs.len())?;
        let text = |i: usize, default: &str| -> Result<String> {
            match exprs.get(i) {
                Some(e) => text_arg(self.name, e),
                None => Ok(default.to_string()),
            }
        };
        let call = match self.name {
            "omnigraph_branch_merge" => {
                let source = text(1, "")?;
                let target = text(2, "main")?;
                if source == target {
                    return Err(engine_error(EngineError::InvalidArgument(format!(
                        "cannot merge branch '{source}' into itself"
                    ))));
                }
                Call::Merge {
                    source,
                    target,
                    policy: text(3, "fail")?.parse().map_err(engine_error)?,
                    message: match exprs.get(4) {
                        Some(Expr::Literal(v, _)) if v.is_null() => None,
                        Some(e) => Some(text_arg(self.name, e)?),
                        None => None,
                    },
                }
            }
            "omnigraph_optimize" => Call::Optimize {
                branch: text(1, "main")?,
            },
            "omnigraph_cleanup" => Call::Cleanup {
                older_than: match exprs.get(1) {
                    Some(e) => duration_arg(self.name, e)?,
                    None => std::time::Duration::from_secs(7 * 86_400),
                },
                dry_run: match exprs.get(2) {
                    Some(e) => bool_arg(self.name, e)?,
                    None => false,
                },
            },
            _ => Call::Recover {
                branch: text(1, "main")?,
            },
        };
        let (name, env) = (self.name, self.env.clone());
        Ok(Deferred::new(name, schema_of(&call), move || {
            Box::pin(run(name, call.clone(), env.clone()))
        }))
    }
}

/// `omnigraph_branch_merge`'s columns.
fn merge_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("status", DataType::Utf8),
        field("commit_id", DataType::Utf8),
        field("inserted", DataType::Int64),
        field("updated", DataType::Int64),
        field("deleted", DataType::Int64),
        field("conflicts", DataType::Int64),
    ]))
}

/// `omnigraph_branch_merge`'s row, as a batch (the session stages merges
/// inside a transaction itself and reports them with it).
pub(super) fn merge_batch(r: &omnigraph_engine::MergeResult) -> Result<RecordBatch> {
    batch(&merge_schema(), vec![merge_row(r)])
}

fn merge_row(r: &omnigraph_engine::MergeResult) -> Vec<V> {
    vec![
        text(r.status.as_str()),
        V::Text(r.commit_id.clone()),
        V::Int(r.inserted),
        V::Int(r.updated),
        V::Int(r.deleted),
        V::Int(r.conflicts),
    ]
}

fn schema_of(call: &Call) -> SchemaRef {
    let t = || DataType::Utf8;
    let fields = match call {
        Call::Merge { .. } => return merge_schema(),
        Call::Optimize { .. } => vec![
            field("type_name", t()),
            field("fragments_before", DataType::Int64),
            field("fragments_after", DataType::Int64),
            field("rows", DataType::Int64),
            field("indexes", text_list()),
        ],
        Call::Cleanup { .. } => vec![
            field("type_name", t()),
            field("lance_branch", t()),
            field("version", DataType::Int64),
            field("action", t()),
            field("reason", t()),
            field("bytes", DataType::Int64),
        ],
        Call::Recover { .. } => vec![field("omnigraph_recover", t())],
    };
    Arc::new(Schema::new(fields))
}

/// Run a graph-changing call (when its plan executes).
async fn run(name: &'static str, call: Call, env: Env) -> omnigraph_engine::Result<Vec<Vec<V>>> {
    // Optimize, cleanup and recover publish at once, as in the
    // extension; a merge joins the transaction (see `Env::check`).
    if matches!(call, Call::Merge { .. }) {
        env.check(name)?;
    }
    let g = &env.graph;
    let int = |n: u64| V::Int(n);
    Ok(match call {
        Call::Merge {
            source,
            target,
            policy,
            message,
        } => {
            let r = g
                .merge(&source, &target, policy, message.as_deref(), &env.actor)
                .await?;
            vec![merge_row(&r)]
        }
        Call::Optimize { branch } => g
            .optimize(&branch, &env.actor)
            .await?
            .1
            .into_iter()
            .map(|t| {
                vec![
                    text(t.type_name),
                    int(t.fragments_before as u64),
                    int(t.fragments_after as u64),
                    int(t.rows),
                    V::List(t.indexes),
                ]
            })
            .collect(),
        Call::Cleanup {
            older_than,
            dry_run,
        } => g
            .cleanup(older_than, dry_run, &env.actor)
            .await?
            .into_iter()
            .map(|r| {
                vec![
                    V::Text(r.type_name),
                    V::Text(r.lance_branch),
                    r.version.map_or(V::Null, int),
                    text(r.action.as_str()),
                    text(r.reason),
                    int(r.bytes),
                ]
            })
            .collect(),
        Call::Recover { branch } => g
            .recover(&branch, &env.actor)
            .await?
            .into_iter()
            .map(|t| vec![text(t)])
            .collect(),
    })
}

/// `omnigraph_branch_create` / `omnigraph_branch_delete`: scalar functions
/// that change the graph when evaluated.
#[derive(Debug)]
struct ScalarFunction {
    name: &'static str,
    params: &'static [&'static str],
    required: usize,
    env: Env,
    signature: Signature,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").field("actor", &self.actor).finish()
    }
}

impl PartialEq for ScalarFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for ScalarFunction {}

impl std::hash::Hash for ScalarFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for ScalarFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        check_arity(self.name, self.params, self.required, arg_types.len())?;
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let mut out = StringBuilder::new();
        for row in 0..rows {
            let arg = |i: usize| -> Result<Option<String>> {
                let Some(a) = args.args.get(i) else {
                    return Ok(None);
                };
                let v = match a {
                    ColumnarValue::Scalar(s) => s.clone(),
                    ColumnarValue::Array(arr) => ScalarValue::try_from_array(arr, row)?,
                };
                match v {
                    ScalarValue::Utf8(s) | ScalarValue::Utf8View(s) | ScalarValue::LargeUtf8(s) => {
                        Ok(s)
                    }
                    ScalarValue::Null => Ok(None),
                    other => Err(DataFusionError::Plan(format!(
                        "{}: arguments must be text, got {other}",
                        self.name
                    ))),
                }
            };
            let name = arg(1)?.ok_or_else(|| {
                DataFusionError::Plan(format!("{}: the branch name must not be NULL", self.name))
            })?;
            let from = arg(2)?.unwrap_or_else(|| "main".to_string());
            let env = self.env.clone();
            let fname = self.name;
            // The engine is async; the function is evaluated on a worker
            // of the session's multi-threaded runtime.
            let result = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async move {
                    env.check(fname)?;
                    if fname == "omnigraph_branch_create" {
                        let info = env
                            .graph
                            .branch_create(&name, &ReadRef::parse(&from))
                            .await?;
                        Ok::<_, EngineError>(Some(info.head_commit))
                    } else {
                        env.graph.branch_delete(&name).await?;
                        Ok(None)
                    }
                })
            })
            .map_err(engine_error)?;
            out.append_option(result);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
    }
}
