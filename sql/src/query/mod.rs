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
//! INSERT, UPDATE and DELETE stage rows into an engine `WriteTxn`: one
//! commit per statement, or per BEGIN ... COMMIT. Inside a transaction
//! every statement reads the branch as of BEGIN plus the transaction's own
//! writes (`WriteTxn::view`), like REPEATABLE READ; rows another commit
//! changed meanwhile make COMMIT fail with a conflict. DDL and anything that would touch the file
//! system (`CREATE EXTERNAL TABLE`, `COPY`) is refused.

pub mod functions;
pub mod pushdown;
pub mod table;

use std::sync::Arc;

use omnigraph_engine::deps::arrow_array::RecordBatch;
use omnigraph_engine::deps::arrow_schema::SchemaRef;
use omnigraph_engine::deps::lance::deps::datafusion::common::Column as DfColumn;
use omnigraph_engine::deps::lance::deps::datafusion::common::DataFusionError;
use omnigraph_engine::deps::lance::deps::datafusion::execution::context::{
    SQLOptions, SessionContext,
};
use omnigraph_engine::deps::lance::deps::datafusion::logical_expr::dml::InsertOp;
use omnigraph_engine::deps::lance::deps::datafusion::logical_expr::{
    DdlStatement, DmlStatement, Expr as DfExpr, LogicalPlan, LogicalPlanBuilder, WriteOp,
};
use omnigraph_engine::deps::lance::deps::datafusion::sql::parser::{DFParser, Statement};
use omnigraph_engine::schema::TypeKind;
use omnigraph_engine::{Graph, ReadRef, Snapshot, WriteTxn, is_commit_id};

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
        /// Planning, execution and collecting the rows (not printing them).
        elapsed: std::time::Duration,
    },
    /// A `SET omnigraph.branch` / `omnigraph.commit`: what is read now.
    Set(String),
    /// What a write or transaction statement did, as Postgres's command
    /// tag (`INSERT 0 3`, `COMMIT`).
    Tag(String),
}

/// A table as `\d` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub name: String,
    pub type_name: String,
    pub kind: TypeKind,
}

/// SQL over one graph, reading a branch head or a commit.
pub struct QuerySession {
    graph: Graph,
    target: ReadRef,
    actor: String,
    /// The transaction BEGIN opened, if any.
    txn: Option<Txn>,
    /// `SET omnigraph.commit_message`: the message of the commits made here.
    message: String,
    /// `SET omnigraph.staging_memory`: bytes of staged rows kept in memory
    /// before inserts spill (the engine's default when unset).
    staging_memory: Option<usize>,
}

struct Txn {
    write: WriteTxn,
    /// A statement failed: everything but COMMIT / ROLLBACK is refused,
    /// and COMMIT rolls back, as in Postgres.
    failed: bool,
}

impl QuerySession {
    /// Check that `target` exists (a missing branch or commit fails here).
    /// `actor` is who commits made here name.
    pub async fn new(
        graph: Graph,
        target: ReadRef,
        actor: &str,
    ) -> Result<QuerySession, QueryError> {
        graph.snapshot(&target).await?;
        Ok(QuerySession {
            graph,
            target,
            actor: actor.to_string(),
            txn: None,
            message: String::new(),
            staging_memory: None,
        })
    }

    /// Whether a transaction is open (BEGIN without COMMIT or ROLLBACK yet).
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
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
                kind: catalog.kind_of(t).unwrap_or(TypeKind::Node),
            })
            .collect()
    }

    /// A table's columns as SQL sees them; `None` for an unknown table.
    pub async fn describe(&self, table: &str) -> Result<Option<SchemaRef>, QueryError> {
        let snap = self.graph.snapshot(&self.target).await?;
        for t in self.tables() {
            if t.name == table {
                let (_, gt) = GraphTable::new(&snap, &t.type_name, None)?;
                use omnigraph_engine::deps::lance::deps::datafusion::catalog::TableProvider;
                return Ok(Some(gt.schema()));
            }
        }
        Ok(None)
    }

    /// Run every statement of `sql`, in order; stops at the first error.
    pub async fn run(&mut self, sql: &str) -> Result<Vec<Outcome>, QueryError> {
        let statements = match DFParser::parse_sql(sql) {
            Ok(s) => s,
            Err(e) => {
                // A syntax error aborts an open transaction too.
                if let Some(t) = &mut self.txn {
                    t.failed = true;
                }
                return Err(e.into());
            }
        };
        let mut out = Vec::new();
        for stmt in statements {
            // Boxed: a statement's future (DataFusion planning, scans,
            // commits) is large and deep; callers keep a small one.
            out.push(Box::pin(self.statement(stmt)).await?);
        }
        Ok(out)
    }

    async fn statement(&mut self, stmt: Statement) -> Result<Outcome, QueryError> {
        let text = stmt.to_string();
        if let Some(commit) = transaction_statement(&text) {
            return match commit {
                None => self.begin().await,
                Some(commit) => self.end(commit).await,
            };
        }
        if let Some((name, value)) = set_statement(&text) {
            // Write settings may change inside a transaction (the message
            // applies at COMMIT, staging memory from the next transaction
            // on); what is read may not.
            match name.as_str() {
                "omnigraph.commit_message" => self.message = value,
                "omnigraph.staging_memory" => {
                    self.staging_memory =
                        Some(parse_memory(&value).map_err(QueryError::Unsupported)?);
                }
                _ if self.txn.is_some() => {
                    return Err(QueryError::Unsupported(format!(
                        "SET {name} inside a transaction: COMMIT or ROLLBACK first"
                    )));
                }
                _ => return self.set(&name, &value).await,
            }
            return Ok(Outcome::Tag("SET".into()));
        }
        let result = self.planned(stmt).await;
        if result.is_err()
            && let Some(t) = &mut self.txn
        {
            t.failed = true;
        }
        result
    }

    async fn planned(&mut self, stmt: Statement) -> Result<Outcome, QueryError> {
        if self.txn.as_ref().is_some_and(|t| t.failed) {
            return Err(QueryError::Unsupported(
                "current transaction is aborted, commands ignored until end of transaction block (ROLLBACK)"
                    .into(),
            ));
        }

        // Inside a transaction: its snapshot, with its own writes.
        let (snap, ctx) = match &self.txn {
            Some(t) => {
                let snap = t.write.base().clone();
                let ctx = context(&snap, Some(&t.write)).await?;
                (snap, ctx)
            }
            None => {
                let snap = self.graph.snapshot(&self.target).await?;
                let ctx = context(&snap, None).await?;
                (snap, ctx)
            }
        };
        let started = std::time::Instant::now();
        let plan = ctx.state().statement_to_plan(stmt).await?;
        if let LogicalPlan::Dml(d) = &plan {
            return self.dml(&ctx, &snap, d).await;
        }
        refuse(&plan)?;
        let df = ctx.execute_logical_plan(plan).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        Ok(Outcome::Rows {
            schema,
            batches,
            elapsed: started.elapsed(),
        })
    }

    fn branch(&self) -> Result<String, QueryError> {
        match &self.target {
            ReadRef::Branch(b) => Ok(b.clone()),
            ReadRef::Commit(c) => Err(QueryError::Unsupported(format!(
                "commit {c} is read-only: SET omnigraph.branch to write"
            ))),
        }
    }

    async fn begin(&mut self) -> Result<Outcome, QueryError> {
        if self.txn.is_some() {
            return Ok(Outcome::Tag(
                "WARNING: there is already a transaction in progress".into(),
            ));
        }
        let write = self.begin_write(None).await?;
        self.txn = Some(Txn {
            write,
            failed: false,
        });
        Ok(Outcome::Tag("BEGIN".into()))
    }

    /// A write transaction on the branch read, with the session's message;
    /// its conflict checks start from `base`, the snapshot the statement
    /// read (so a value read there and written back is never a lost
    /// update), or from the branch head now.
    async fn begin_write(&self, base: Option<&Snapshot>) -> Result<WriteTxn, QueryError> {
        let branch = self.branch()?;
        let mut write = match base {
            Some(snap) => self.graph.begin_at(snap.clone(), &self.actor)?,
            None => self.graph.begin(&branch, &self.actor).await?,
        };
        write.set_message(self.message.clone());
        if let Some(bytes) = self.staging_memory {
            write.set_staging_memory(bytes);
        }
        Ok(write)
    }

    async fn end(&mut self, commit: bool) -> Result<Outcome, QueryError> {
        let Some(t) = self.txn.take() else {
            return Ok(Outcome::Tag(
                "WARNING: there is no transaction in progress".into(),
            ));
        };
        if !commit || t.failed {
            return Ok(Outcome::Tag("ROLLBACK".into()));
        }
        let mut write = t.write;
        write.set_message(self.message.clone());
        Ok(Outcome::Tag(match write.commit().await? {
            Some(summary) => format!("COMMIT (commit {})", summary.commit.id),
            None => "COMMIT".into(),
        }))
    }

    /// INSERT, UPDATE or DELETE: staged into the open transaction, or
    /// committed at once (autocommit).
    async fn dml(
        &mut self,
        ctx: &SessionContext,
        snap: &Snapshot,
        d: &DmlStatement,
    ) -> Result<Outcome, QueryError> {
        let table = d.table_name.table();
        let Some(info) = self.tables().into_iter().find(|t| t.name == table) else {
            return Err(QueryError::Unsupported(format!(
                "no table named \"{table}\""
            )));
        };
        // A commit is read-only: say so before reading anything.
        self.branch()?;
        let (_, gt) = GraphTable::new(snap, &info.type_name, None)?;
        // UPDATE and DELETE read only the ids and the assigned values.
        let (tag, op, keep) = match &d.op {
            WriteOp::Insert(InsertOp::Append) => ("INSERT 0", Op::Insert, None),
            WriteOp::Update => {
                let assigned = assigned_columns(&d.input)?;
                let cols = gt.graph_names(&assigned);
                check_updatable(snap, &info, &cols)?;
                let keep = std::iter::once("id".to_string()).chain(assigned).collect();
                ("UPDATE", Op::Update(cols), Some(keep))
            }
            WriteOp::Delete => ("DELETE", Op::Delete, Some(vec!["id".to_string()])),
            other => {
                return Err(QueryError::Unsupported(format!(
                    "{} is not supported in `omnigraph sql`",
                    other.to_string().to_uppercase()
                )));
            }
        };
        let input = match keep {
            None => (*d.input).clone(),
            Some(keep) => {
                let exprs: Vec<DfExpr> = keep
                    .iter()
                    .map(|c| DfExpr::Column(DfColumn::from_name(c.as_str())))
                    .collect();
                LogicalPlanBuilder::from((*d.input).clone())
                    .project(exprs)?
                    .build()?
            }
        };
        let batches = ctx.execute_logical_plan(input).await?.collect().await?;
        let mut autocommit = None;
        let write = match &mut self.txn {
            Some(t) => &mut t.write,
            None => autocommit.insert(self.begin_write(Some(snap)).await?),
        };
        let mut n = 0u64;
        let mut deleted = Vec::new();
        for b in &batches {
            for r in omnigraph_engine::value::batch_to_records(&gt.graph_batch(b)?)? {
                n += 1;
                if matches!(op, Op::Delete) && info.kind == TypeKind::Node {
                    deleted.push(r.id.clone());
                }
                stage(write, &info, r, &op).await?;
            }
        }
        let mut tag = format!("{tag} {n}");
        if !deleted.is_empty() {
            // Deleting nodes deletes their edges, visible to the
            // transaction's next statements at once.
            let edges = write
                .delete_incident_edges(&info.type_name, &deleted, snap)
                .await?;
            if edges > 0 {
                tag.push_str(&format!(" (and {edges} incident edge(s))"));
            }
        }
        if let Some(w) = autocommit
            && let Some(summary) = w.commit().await?
        {
            tag.push_str(&format!(" (commit {})", summary.commit.id));
        }
        Ok(Outcome::Tag(tag))
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

/// What a DML statement does to each row it produced.
enum Op {
    /// A new row (its `id` given, or made from the key or a new ULID).
    Insert,
    /// Set these properties (graph names) of the row `id`.
    Update(Vec<String>),
    /// Delete the row `id` (and a node's edges).
    Delete,
}

/// Stage one row of a DML statement.
async fn stage(
    write: &mut WriteTxn,
    info: &TableInfo,
    r: omnigraph_engine::Record,
    op: &Op,
) -> Result<(), QueryError> {
    let t = info.type_name.as_str();
    match op {
        Op::Insert => {
            // An omitted or NULL property is absent (a required one is
            // then the engine's error, naming it).
            let props = r.props.into_iter().filter(|(_, v)| !v.is_null()).collect();
            let id = (!r.id.is_empty()).then_some(r.id);
            match r.endpoints {
                Some((src, dst)) if src.is_empty() || dst.is_empty() => {
                    let end = if src.is_empty() { "src" } else { "dst" };
                    return Err(QueryError::Unsupported(format!(
                        "null value in column \"{end}\" of table {} violates not-null constraint: every {t} edge needs a {end} node id",
                        info.name
                    )));
                }
                Some((src, dst)) => {
                    write
                        .add_edge(t, &src, &dst, props, id, false, None)
                        .await?;
                }
                None => {
                    write.add_node(t, props, id, false, None).await?;
                }
            }
        }
        // `SET a = a` changes nothing: stage nothing (no rewrite, no
        // conflict), as Postgres's FDW path does.
        Op::Update(cols) if cols.is_empty() => {}
        Op::Update(cols) => {
            let props = r
                .props
                .into_iter()
                .filter(|(k, _)| cols.contains(k))
                .collect();
            write.update(t, &r.id, props).await?;
        }
        Op::Delete => write.delete(t, &r.id).await?,
    }
    Ok(())
}

/// Identity never changes: `id`, an edge's `src`/`dst` and a node's
/// `@key` properties cannot be assigned.
fn check_updatable(snap: &Snapshot, info: &TableInfo, cols: &[String]) -> Result<(), QueryError> {
    let catalog = snap.graph().catalog();
    let key: Vec<String> = catalog
        .node(&info.type_name)
        .and_then(|n| n.key.clone())
        .unwrap_or_default();
    for c in cols {
        let system = omnigraph_engine::value::system_columns(info.kind).contains(&c.as_str());
        if system || key.contains(c) {
            let what = if system {
                "a system column"
            } else {
                "the @key"
            };
            return Err(QueryError::Unsupported(format!(
                "cannot UPDATE column \"{}\" of table {}: {}.{c} is {what}; a row's identity never changes (DELETE the row and INSERT it with the new value)",
                crate::names::pg_name(c),
                info.name,
                info.type_name
            )));
        }
    }
    Ok(())
}

/// The columns an UPDATE assigns: the input projection's expressions
/// that are not the column itself.
fn assigned_columns(input: &LogicalPlan) -> Result<Vec<String>, QueryError> {
    let LogicalPlan::Projection(p) = input else {
        return Err(QueryError::Unsupported(
            "this form of UPDATE is not supported".into(),
        ));
    };
    let mut out = Vec::new();
    for (e, (_, field)) in p.expr.iter().zip(p.schema.iter()) {
        let unchanged = match e.clone().unalias() {
            omnigraph_engine::deps::lance::deps::datafusion::logical_expr::Expr::Column(c) => {
                c.name == *field.name()
            }
            _ => false,
        };
        if !unchanged {
            out.push(field.name().clone());
        }
    }
    Ok(out)
}

/// A DataFusion context with the snapshot's tables, and the open
/// transaction's changes to them.
async fn context(snap: &Snapshot, txn: Option<&WriteTxn>) -> Result<SessionContext, QueryError> {
    let ctx = SessionContext::new();
    for type_name in snap.graph().catalog().type_names() {
        let view = match txn {
            Some(t) => t.view(type_name, snap).await?,
            None => None,
        };
        let (name, table) = GraphTable::new(snap, type_name, view)?;
        ctx.register_table(name.as_str(), Arc::new(table))?;
    }
    functions::register(&ctx, snap.graph());
    Ok(ctx)
}

/// Refuse what the shell does not do, naming it.
fn refuse(plan: &LogicalPlan) -> Result<(), QueryError> {
    let unsupported = |what: &str| Err(QueryError::Unsupported(what.to_string()));
    match plan {
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

/// A memory size as Postgres writes one: a whole number and `B`, `kB`
/// (the default), `MB`, `GB` or `TB`.
fn parse_memory(value: &str) -> Result<usize, String> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("invalid value for omnigraph.staging_memory: \"{value}\""))?;
    let per: usize = match unit.trim() {
        "B" => 1,
        "" | "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        other => {
            return Err(format!(
                "invalid unit \"{other}\" for omnigraph.staging_memory: use B, kB, MB, GB or TB"
            ));
        }
    };
    n.checked_mul(per).filter(|b| *b > 0).ok_or_else(|| {
        format!(
            "omnigraph.staging_memory must be between 1 byte and {} bytes",
            usize::MAX
        )
    })
}

/// BEGIN / START TRANSACTION (`None`), COMMIT / END (`Some(true)`),
/// ROLLBACK / ABORT (`Some(false)`).
fn transaction_statement(text: &str) -> Option<Option<bool>> {
    let upper = text.trim().trim_end_matches(';').to_ascii_uppercase();
    let words: Vec<&str> = upper.split_whitespace().collect();
    let tail_ok = |rest: &[&str]| matches!(rest, [] | ["TRANSACTION"] | ["WORK"]);
    match words.as_slice() {
        ["BEGIN", rest @ ..] if tail_ok(rest) => Some(None),
        ["START", "TRANSACTION"] => Some(None),
        ["COMMIT" | "END", rest @ ..] if tail_ok(rest) => Some(Some(true)),
        ["ROLLBACK" | "ABORT", rest @ ..] if tail_ok(rest) => Some(Some(false)),
        _ => None,
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

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("1MB"), Ok(1 << 20));
        assert_eq!(parse_memory("64"), Ok(64 << 10));
        assert_eq!(parse_memory("512 kB"), Ok(512 << 10));
        assert!(parse_memory("0").is_err());
        assert!(
            parse_memory("1 parsec")
                .unwrap_err()
                .contains("invalid unit")
        );
        assert!(parse_memory("lots").is_err());
    }

    #[test]
    fn transaction_statements() {
        for (text, want) in [
            ("BEGIN", Some(None)),
            ("begin transaction;", Some(None)),
            ("START TRANSACTION", Some(None)),
            ("COMMIT", Some(Some(true))),
            ("end work", Some(Some(true))),
            ("ROLLBACK", Some(Some(false))),
            ("abort", Some(Some(false))),
            ("BEGIN ISOLATION LEVEL SERIALIZABLE", None),
            ("ROLLBACK TO SAVEPOINT a", None),
            ("SELECT 1", None),
        ] {
            assert_eq!(transaction_statement(text), want, "{text}");
        }
    }
}
