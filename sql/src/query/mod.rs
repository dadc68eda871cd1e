//! SQL over a graph without PostgreSQL: DataFusion planning and execution
//! over the engine's snapshots.
//!
//! A [`QuerySession`] reads one branch head (or one commit). Every
//! statement takes a fresh snapshot of it, so each statement sees the
//! commits published before it started, as a READ COMMITTED statement in
//! Postgres does. Tables are the node and edge types under the names
//! `IMPORT FOREIGN SCHEMA` gives ([`table::GraphTable`]); filters are
//! pushed into Lance by the FDW's classification ([`pushdown`]).
//!
//! Reads only, for now: DML says it is not built yet, and DDL or anything
//! that would touch the file system (`CREATE EXTERNAL TABLE`, `COPY`) is
//! refused.

pub mod pushdown;
pub mod table;

use std::sync::Arc;

use omnigraph_engine::deps::arrow_array::RecordBatch;
use omnigraph_engine::deps::arrow_schema::SchemaRef;
use omnigraph_engine::deps::lance::deps::datafusion::common::DataFusionError;
use omnigraph_engine::deps::lance::deps::datafusion::execution::context::{
    SQLOptions, SessionContext,
};
use omnigraph_engine::deps::lance::deps::datafusion::logical_expr::{DdlStatement, LogicalPlan};
use omnigraph_engine::deps::lance::deps::datafusion::sql::parser::{DFParser, Statement};
use omnigraph_engine::{Graph, ReadRef, Snapshot, is_commit_id};

use table::GraphTable;

/// Why a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Engine(#[from] omnigraph_engine::Error),
    #[error("{0}")]
    DataFusion(#[source] DataFusionError),
    /// A construct the frontend does not support, named.
    #[error("{0}")]
    Unsupported(String),
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        // An engine error raised inside a scan stays an engine error.
        match e {
            DataFusionError::External(inner) => match inner.downcast::<omnigraph_engine::Error>() {
                Ok(engine) => QueryError::Engine(*engine),
                Err(other) => QueryError::DataFusion(DataFusionError::External(other)),
            },
            DataFusionError::Context(ctx, inner) => match QueryError::from(*inner) {
                QueryError::DataFusion(d) => {
                    QueryError::DataFusion(DataFusionError::Context(ctx, Box::new(d)))
                }
                other => other,
            },
            e => QueryError::DataFusion(e),
        }
    }
}

/// What one statement gave.
#[derive(Debug)]
pub enum Outcome {
    Rows {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
    /// A `SET omnigraph.branch` / `omnigraph.commit`: what is read now.
    Set(String),
}

/// A table as `\d` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub name: String,
    pub type_name: String,
    pub kind: &'static str,
}

/// SQL over one graph, reading a branch head or a commit.
pub struct QuerySession {
    graph: Graph,
    target: ReadRef,
}

impl QuerySession {
    /// Check that `target` exists (a missing branch or commit fails here).
    pub async fn new(graph: Graph, target: ReadRef) -> Result<QuerySession, QueryError> {
        graph.snapshot(&target).await?;
        Ok(QuerySession { graph, target })
    }

    pub fn target(&self) -> &ReadRef {
        &self.target
    }

    /// The tables, in schema order.
    pub fn tables(&self) -> Vec<TableInfo> {
        let catalog = self.graph.catalog();
        catalog
            .type_names()
            .into_iter()
            .map(|t| TableInfo {
                name: crate::names::pg_name(t),
                type_name: t.to_string(),
                kind: match catalog.kind_of(t) {
                    Some(omnigraph_engine::schema::TypeKind::Edge) => "edge",
                    _ => "node",
                },
            })
            .collect()
    }

    /// A table's columns as SQL sees them; `None` for an unknown table.
    pub async fn describe(&self, table: &str) -> Result<Option<SchemaRef>, QueryError> {
        let snap = self.graph.snapshot(&self.target).await?;
        for t in self.tables() {
            if t.name == table {
                let (_, gt) = GraphTable::new(&snap, &t.type_name)?;
                use omnigraph_engine::deps::lance::deps::datafusion::catalog::TableProvider;
                return Ok(Some(gt.schema()));
            }
        }
        Ok(None)
    }

    /// Run every statement of `sql`, in order; stops at the first error.
    pub async fn run(&mut self, sql: &str) -> Result<Vec<Outcome>, QueryError> {
        let statements = DFParser::parse_sql(sql)?;
        let mut out = Vec::new();
        for stmt in statements {
            out.push(self.statement(stmt).await?);
        }
        Ok(out)
    }

    async fn statement(&mut self, stmt: Statement) -> Result<Outcome, QueryError> {
        let text = stmt.to_string();
        if let Some((name, value)) = set_statement(&text) {
            return self.set(&name, &value).await;
        }
        let snap = self.graph.snapshot(&self.target).await?;
        let ctx = context(&snap)?;
        let state = ctx.state();
        let plan = state.statement_to_plan(stmt).await?;
        refuse(&plan)?;
        let df = ctx.execute_logical_plan(plan).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        Ok(Outcome::Rows { schema, batches })
    }

    async fn set(&mut self, name: &str, value: &str) -> Result<Outcome, QueryError> {
        let target = match name {
            "omnigraph.branch" => ReadRef::Branch(value.to_string()),
            "omnigraph.commit" if is_commit_id(value) => ReadRef::Commit(value.to_string()),
            "omnigraph.commit" => {
                return Err(QueryError::Unsupported(format!(
                    "'{value}' is not a commit id"
                )));
            }
            other => {
                return Err(QueryError::Unsupported(format!(
                    "unrecognized configuration parameter \"{other}\": omnigraph.branch and omnigraph.commit can be set"
                )));
            }
        };
        self.graph.snapshot(&target).await?;
        self.target = target;
        Ok(Outcome::Set(match &self.target {
            ReadRef::Branch(b) => format!("reading branch {b}"),
            ReadRef::Commit(c) => format!("reading commit {c}"),
        }))
    }
}

/// A DataFusion context with the snapshot's tables.
fn context(snap: &Snapshot) -> Result<SessionContext, QueryError> {
    let ctx = SessionContext::new();
    for type_name in snap.graph().catalog().type_names() {
        let (name, table) = GraphTable::new(snap, type_name)?;
        ctx.register_table(name.as_str(), Arc::new(table))?;
    }
    Ok(ctx)
}

/// Refuse what the shell does not do, naming it.
fn refuse(plan: &LogicalPlan) -> Result<(), QueryError> {
    let unsupported = |what: &str| Err(QueryError::Unsupported(what.to_string()));
    match plan {
        LogicalPlan::Dml(d) => unsupported(&format!(
            "{} in `omnigraph sql` is not built yet: write with `omnigraph load`, or through the PostgreSQL extension",
            d.op.to_string().to_uppercase()
        )),
        LogicalPlan::Ddl(DdlStatement::CreateExternalTable(_)) => unsupported(
            "CREATE EXTERNAL TABLE is not supported: `omnigraph sql` reads the graph's own tables and no other files",
        ),
        LogicalPlan::Ddl(d) => unsupported(&format!(
            "{} is not supported: the graph's tables come from its schema",
            d.name()
        )),
        LogicalPlan::Copy(_) => unsupported(
            "COPY is not supported: `omnigraph sql` writes no files (use --format csv or json)",
        ),
        LogicalPlan::Statement(s) => unsupported(&format!(
            "{} is not supported in `omnigraph sql` yet",
            s.name()
        )),
        _ => SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(plan)
            .map_err(QueryError::from),
    }
}

/// `SET a.b = 'v'` / `SET a.b TO v`: the name (lower case) and the value.
fn set_statement(text: &str) -> Option<(String, String)> {
    let rest = text
        .trim()
        .strip_prefix("SET ")
        .or_else(|| text.trim().strip_prefix("set "))?;
    let (name, value) = match rest.split_once('=') {
        Some((n, v)) => (n, v),
        None => {
            let lower = rest.to_ascii_lowercase();
            let at = lower.find(" to ")?;
            (&rest[..at], &rest[at + 4..])
        }
    };
    let value = value.trim();
    let value = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .map(|v| v.replace("''", "'"))
        .unwrap_or_else(|| value.to_string());
    Some((name.trim().to_ascii_lowercase(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_statements() {
        assert_eq!(
            set_statement("SET omnigraph.branch = 'feature'"),
            Some(("omnigraph.branch".into(), "feature".into()))
        );
        assert_eq!(
            set_statement("SET Omnigraph.Branch TO 'it''s'"),
            Some(("omnigraph.branch".into(), "it's".into()))
        );
        assert_eq!(
            set_statement("SET omnigraph.commit = x"),
            Some(("omnigraph.commit".into(), "x".into()))
        );
        assert_eq!(set_statement("SELECT 1"), None);
    }
}
