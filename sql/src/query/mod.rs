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
pub mod operations;
pub mod pushdown;
pub mod table;

use std::sync::Arc;

use omnigraph_engine::deps::arrow_array::RecordBatch;
use omnigraph_engine::deps::arrow_schema::{DataType, SchemaRef};
use omnigraph_engine::deps::lance::deps::datafusion::arrow::compute::concat_batches;
use omnigraph_engine::deps::lance::deps::datafusion::common::Column as DfColumn;
use omnigraph_engine::deps::lance::deps::datafusion::common::DataFusionError;
use omnigraph_engine::deps::lance::deps::datafusion::common::ParamValues;
use omnigraph_engine::deps::lance::deps::datafusion::execution::SendableRecordBatchStream;
use omnigraph_engine::deps::lance::deps::datafusion::execution::context::{
    SQLOptions, SessionContext,
};
use omnigraph_engine::deps::lance::deps::datafusion::logical_expr::dml::InsertOp;
use omnigraph_engine::deps::lance::deps::datafusion::logical_expr::{
    DdlStatement, DmlStatement, Expr as DfExpr, LogicalPlan, LogicalPlanBuilder, WriteOp,
};
use omnigraph_engine::deps::lance::deps::datafusion::sql::parser::{DFParser, Statement};
use omnigraph_engine::deps::lance::deps::datafusion::sql::sqlparser::ast::Statement as SqlStatement;
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
    /// A statement after a failed one in the same transaction.
    #[error(
        "current transaction is aborted, commands ignored until end of transaction block (ROLLBACK)"
    )]
    Aborted,
    /// A transaction-state error Postgres reports with this SQLSTATE.
    #[error("{message}")]
    State {
        sqlstate: &'static str,
        message: String,
    },
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
pub enum Outcome {
    Rows {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        /// Planning, execution and collecting the rows (not printing them).
        elapsed: std::time::Duration,
    },
    /// Rows still to be read ([`QuerySession::set_streaming`]): the
    /// statement's plan runs as the stream is polled, so memory stays
    /// bounded by the plan, not the result.
    Stream {
        schema: SchemaRef,
        stream: SendableRecordBatchStream,
    },
    /// A `SET omnigraph.branch` / `omnigraph.commit`: what is read now.
    Set(String),
    /// What a write, transaction or SET statement did.
    Tag(Command),
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Rows {
                schema, batches, ..
            } => f
                .debug_struct("Rows")
                .field("schema", schema)
                .field("batches", &batches.len())
                .finish(),
            Outcome::Stream { schema, .. } => {
                f.debug_struct("Stream").field("schema", schema).finish()
            }
            Outcome::Set(s) => f.debug_tuple("Set").field(s).finish(),
            Outcome::Tag(c) => f.debug_tuple("Tag").field(c).finish(),
        }
    }
}

/// A statement's command tag, as Postgres reports it, and what else the
/// shell prints about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Postgres's command tag: `INSERT 0 3`, `UPDATE 2`, `COMMIT`.
    pub tag: String,
    /// The commit a statement or COMMIT made.
    pub commit: Option<String>,
    /// Edges deleted with the nodes a DELETE removed.
    pub incident_edges: u64,
    /// A WARNING Postgres would raise (BEGIN inside a transaction).
    pub warning: Option<String>,
    /// Whether the statement opened or ended a transaction.
    pub txn: TxnChange,
}

/// How a statement changed the session's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnChange {
    None,
    Begin,
    End,
}

impl Command {
    fn new(tag: impl Into<String>) -> Command {
        Command {
            tag: tag.into(),
            commit: None,
            incident_edges: 0,
            warning: None,
            txn: TxnChange::None,
        }
    }

    fn txn(mut self, txn: TxnChange) -> Command {
        self.txn = txn;
        self
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(w) = &self.warning {
            return f.write_str(w);
        }
        f.write_str(&self.tag)?;
        if self.incident_edges > 0 {
            write!(f, " (and {} incident edge(s))", self.incident_edges)?;
        }
        if let Some(c) = &self.commit {
            write!(f, " (commit {c})")?;
        }
        Ok(())
    }
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
    /// The context statements plan in (the server's, with `pg_catalog`);
    /// a plain one per statement when `None`.
    base: Option<SessionContext>,
    /// Return rows as a stream instead of collected batches.
    streaming: bool,
}

struct Txn {
    write: WriteTxn,
    /// A statement failed: everything but COMMIT / ROLLBACK is refused,
    /// and COMMIT rolls back, as in Postgres.
    failed: bool,
    /// Branches created or deleted in the transaction: published after its
    /// commit at COMMIT, dropped at ROLLBACK (as the extension does).
    branch_ops: Vec<BranchOp>,
    /// A staged merge named the commit (its message, or the default merge
    /// message): COMMIT keeps it instead of `omnigraph.commit_message`.
    merge_message: bool,
    /// Open savepoints, oldest first.
    savepoints: Vec<SavepointMark>,
}

impl Txn {
    fn set_savepoint(&mut self, name: String) {
        let mark = self.write.savepoint();
        self.savepoints.push(SavepointMark {
            name,
            mark,
            branch_ops: self.branch_ops.len(),
            merge_message: self.merge_message,
        });
    }
}

/// A savepoint: the engine's mark, and how many branch operations and
/// whether a merge message were there when it was set.
struct SavepointMark {
    name: String,
    mark: omnigraph_engine::Savepoint,
    branch_ops: usize,
    merge_message: bool,
}

enum BranchOp {
    Created(omnigraph_engine::NewBranch),
    Deleted(omnigraph_engine::BranchDeletion),
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
            base: None,
            streaming: false,
        })
    }

    /// Plan every statement in `ctx` (its catalogs, functions and
    /// settings), with the graph's tables registered in its default schema
    /// at each statement's snapshot.
    pub fn set_context(&mut self, ctx: SessionContext) {
        self.base = Some(ctx);
    }

    /// Give rows as [`Outcome::Stream`] instead of [`Outcome::Rows`].
    pub fn set_streaming(&mut self, streaming: bool) {
        self.streaming = streaming;
    }

    /// The graph read.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The context statements plan in (a plain one when none was set).
    pub fn context(&self) -> SessionContext {
        self.base.clone().unwrap_or_default()
    }

    /// The context with the graph's tables as the next statement would
    /// read them (for catalog lookups about them).
    pub async fn current_context(&self) -> Result<SessionContext, QueryError> {
        Ok(self.statement_context().await?.1)
    }

    /// Mark the open transaction failed (a statement the frontend could
    /// not even parse), as Postgres does.
    pub fn fail_transaction(&mut self) {
        if let Some(t) = &mut self.txn {
            t.failed = true;
        }
    }

    /// Whether the open transaction failed (only ROLLBACK or COMMIT, which
    /// rolls back, are accepted).
    pub fn transaction_failed(&self) -> bool {
        self.txn.as_ref().is_some_and(|t| t.failed)
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
            out.push(Box::pin(self.statement(stmt, None)).await?);
        }
        Ok(out)
    }

    /// Run one parsed statement, its `$n` placeholders bound to `params`.
    pub async fn run_statement(
        &mut self,
        stmt: SqlStatement,
        params: Option<ParamValues>,
    ) -> Result<Outcome, QueryError> {
        Box::pin(self.statement(Statement::Statement(Box::new(stmt)), params)).await
    }

    /// Plan `stmt` against the branch as it is now without running it: its
    /// placeholders' types (`$1` first; `None` where nothing fixes one)
    /// and the columns it returns (none for a write or a command).
    pub async fn describe_statement(
        &mut self,
        stmt: SqlStatement,
    ) -> Result<(Vec<Option<DataType>>, Option<SchemaRef>), QueryError> {
        let text = stmt.to_string();
        if transaction_statement(&text).is_some() || set_statement(&text).is_some() {
            return Ok((Vec::new(), None));
        }
        let (_, ctx) = self.statement_context().await?;
        let plan = ctx
            .state()
            .statement_to_plan(Statement::Statement(Box::new(stmt)))
            .await?;
        let types = plan.get_parameter_types()?;
        let mut ordered: Vec<(usize, Option<DataType>)> = types
            .into_iter()
            .filter_map(|(k, v)| Some((k.trim_start_matches('$').parse().ok()?, v)))
            .collect();
        ordered.sort_by_key(|(n, _)| *n);
        let n = ordered.last().map_or(0, |(n, _)| *n);
        let mut params = vec![None; n];
        for (i, t) in ordered {
            if i >= 1 {
                params[i - 1] = t;
            }
        }
        let schema = match &plan {
            LogicalPlan::Dml(_) | LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) => None,
            p => Some(Arc::new(p.schema().as_arrow().clone())),
        };
        Ok((params, schema))
    }

    async fn statement(
        &mut self,
        stmt: Statement,
        params: Option<ParamValues>,
    ) -> Result<Outcome, QueryError> {
        let text = stmt.to_string();
        if let Some(commit) = transaction_statement(&text) {
            return match commit {
                None => self.begin().await,
                Some(commit) => self.end(commit).await,
            };
        }
        if let Some(op) = savepoint_statement(&text) {
            let result = self.savepoint(op).await;
            if result.is_err()
                && let Some(t) = &mut self.txn
            {
                t.failed = true;
            }
            return result;
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
            return Ok(Outcome::Tag(Command::new("SET")));
        }
        let result = match (&self.txn, branch_call(&text)) {
            (Some(_), Some(call)) => self.branch_call_in_transaction(call).await,
            _ => self.planned(stmt, params).await,
        };
        if result.is_err()
            && let Some(t) = &mut self.txn
        {
            t.failed = true;
        }
        result
    }

    /// The snapshot a statement reads and a context with its tables:
    /// inside a transaction, the transaction's snapshot with its own
    /// writes; otherwise the branch head now.
    async fn statement_context(&self) -> Result<(Snapshot, SessionContext), QueryError> {
        let (snap, txn) = match &self.txn {
            Some(t) => (t.write.base().clone(), Some(&t.write)),
            None => (self.graph.snapshot(&self.target).await?, None),
        };
        let ctx = context(self.base.as_ref(), &snap, txn, &self.actor).await?;
        Ok((snap, ctx))
    }

    async fn planned(
        &mut self,
        stmt: Statement,
        params: Option<ParamValues>,
    ) -> Result<Outcome, QueryError> {
        if self.transaction_failed() {
            return Err(QueryError::Aborted);
        }
        let (snap, ctx) = self.statement_context().await?;
        let started = std::time::Instant::now();
        let mut plan = ctx.state().statement_to_plan(stmt).await?;
        if let Some(params) = params {
            plan = plan.with_param_values(params)?;
        }
        if let LogicalPlan::Dml(d) = &plan {
            return self.dml(&ctx, &snap, d).await;
        }
        refuse(&plan)?;
        let df = ctx.execute_logical_plan(plan).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        if self.streaming {
            let stream = df.execute_stream().await?;
            return Ok(Outcome::Stream { schema, stream });
        }
        let batches = df.collect().await?;
        Ok(Outcome::Rows {
            schema,
            batches,
            elapsed: started.elapsed(),
        })
    }

    /// SAVEPOINT, ROLLBACK TO SAVEPOINT and RELEASE SAVEPOINT, as
    /// Postgres runs them: names may repeat (the newest is meant),
    /// ROLLBACK TO keeps the savepoint and ends a failed state, RELEASE
    /// also ends the savepoints set after it.
    async fn savepoint(&mut self, op: SavepointOp) -> Result<Outcome, QueryError> {
        let verb = match &op {
            SavepointOp::Set(_) => "SAVEPOINT",
            SavepointOp::RollbackTo(_) => "ROLLBACK TO SAVEPOINT",
            SavepointOp::Release(_) => "RELEASE SAVEPOINT",
        };
        let Some(t) = self.txn.as_mut() else {
            return Err(QueryError::State {
                sqlstate: crate::sqlstate::NO_ACTIVE_SQL_TRANSACTION,
                message: format!("{verb} can only be used in transaction blocks"),
            });
        };
        let find = |t: &Txn, name: &str| {
            t.savepoints
                .iter()
                .rposition(|s| s.name == name)
                .ok_or_else(|| QueryError::State {
                    sqlstate: crate::sqlstate::INVALID_SAVEPOINT_SPECIFICATION,
                    message: format!("savepoint \"{name}\" does not exist"),
                })
        };
        match op {
            SavepointOp::Set(name) => {
                if t.failed {
                    return Err(QueryError::Aborted);
                }
                t.set_savepoint(name);
                Ok(Outcome::Tag(Command::new("SAVEPOINT")))
            }
            SavepointOp::RollbackTo(name) => {
                let at = find(t, &name)?;
                // Undo the newer savepoints' changes, newest first, then
                // this one's; the savepoint itself stays.
                while t.savepoints.len() > at {
                    let Some(s) = t.savepoints.pop() else { break };
                    t.write.rollback_to(s.mark).await?;
                    t.branch_ops.truncate(s.branch_ops);
                    t.merge_message = s.merge_message;
                }
                t.set_savepoint(name);
                t.failed = false;
                Ok(Outcome::Tag(Command::new("ROLLBACK")))
            }
            SavepointOp::Release(name) => {
                if t.failed {
                    return Err(QueryError::Aborted);
                }
                let at = find(t, &name)?;
                while t.savepoints.len() > at {
                    let Some(s) = t.savepoints.pop() else { break };
                    t.write.release(s.mark);
                }
                Ok(Outcome::Tag(Command::new("RELEASE")))
            }
        }
    }

    /// `omnigraph_branch_create` / `_delete` / `_merge` inside a
    /// transaction: staged like the extension stages them (the merge into
    /// the transaction's branch, the others published at COMMIT).
    async fn branch_call_in_transaction(
        &mut self,
        call: BranchCall,
    ) -> Result<Outcome, QueryError> {
        if self.transaction_failed() {
            return Err(QueryError::Aborted);
        }
        let branch = self.branch()?;
        let graph = self.graph.clone();
        let Some(t) = self.txn.as_mut() else {
            return Err(QueryError::Unsupported("no transaction".into()));
        };
        let text = |name: &str, v: Option<String>| one_row(name, DataType::Utf8, v);
        match call {
            BranchCall::Create { name, from } => {
                let from = graph.snapshot(&ReadRef::parse(&from)).await?;
                let pending = graph.branch_create_pending(&name, &from).await?;
                let head = pending.snapshot().commit().id.clone();
                t.branch_ops.push(BranchOp::Created(pending));
                text("omnigraph_branch_create", Some(head))
            }
            BranchCall::Delete { name } => {
                let created = t
                    .branch_ops
                    .iter()
                    .position(|op| matches!(op, BranchOp::Created(b) if b.name() == name));
                match created {
                    // Created in this transaction: it never existed.
                    Some(i) => {
                        t.branch_ops.remove(i);
                    }
                    None if name == branch => {
                        return Err(QueryError::Unsupported(format!(
                            "cannot delete branch '{name}' inside a transaction that writes it"
                        )));
                    }
                    // Deleted already (its lock is held): gone for us.
                    None if t
                        .branch_ops
                        .iter()
                        .any(|op| matches!(op, BranchOp::Deleted(d) if d.name() == name)) =>
                    {
                        return Err(omnigraph_engine::Error::BranchNotFound { name }.into());
                    }
                    None => {
                        let deletion = graph.branch_delete_pending(&name).await?;
                        t.branch_ops.push(BranchOp::Deleted(deletion));
                    }
                }
                text("omnigraph_branch_delete", None)
            }
            BranchCall::Merge {
                source,
                target,
                policy,
                message,
            } => {
                if target != branch {
                    return Err(QueryError::Unsupported(format!(
                        "a transaction on branch '{branch}' can merge only into it, not into '{target}': merge outside the transaction or SET omnigraph.branch first"
                    )));
                }
                if source == target {
                    return Err(omnigraph_engine::Error::InvalidArgument(format!(
                        "cannot merge branch '{source}' into itself"
                    ))
                    .into());
                }
                let theirs_snap = graph.snapshot(&ReadRef::Branch(source.clone())).await?;
                let theirs = omnigraph_engine::Side::new(source.as_str(), theirs_snap, None);
                let ours = omnigraph_engine::Side::new(
                    target.as_str(),
                    t.write.base().clone(),
                    Some(&t.write),
                );
                let plan = graph.plan_merge(&theirs, &ours, policy).await?;
                if plan.stages() {
                    t.write.stage_merge(&plan).await?;
                    let m = message.unwrap_or_else(|| {
                        if self.message.is_empty() {
                            omnigraph_engine::merge_message(&source, &target)
                        } else {
                            self.message.clone()
                        }
                    });
                    t.write.set_message(m);
                    t.merge_message = true;
                }
                let r = plan.result(Some(t.write.commit_id().to_string()));
                let batch = operations::merge_batch(&r)?;
                Ok(Outcome::Rows {
                    schema: batch.schema(),
                    batches: vec![batch],
                    elapsed: std::time::Duration::ZERO,
                })
            }
        }
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
            let mut c = Command::new("BEGIN");
            c.warning = Some("WARNING: there is already a transaction in progress".into());
            return Ok(Outcome::Tag(c));
        }
        let write = self.begin_write(None).await?;
        self.txn = Some(Txn {
            write,
            failed: false,
            branch_ops: Vec::new(),
            merge_message: false,
            savepoints: Vec::new(),
        });
        Ok(Outcome::Tag(Command::new("BEGIN").txn(TxnChange::Begin)))
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
        let verb = if commit { "COMMIT" } else { "ROLLBACK" };
        let Some(t) = self.txn.take() else {
            let mut c = Command::new(verb);
            c.warning = Some("WARNING: there is no transaction in progress".into());
            return Ok(Outcome::Tag(c));
        };
        if !commit || t.failed {
            return Ok(Outcome::Tag(Command::new("ROLLBACK").txn(TxnChange::End)));
        }
        let mut write = t.write;
        if !t.merge_message {
            write.set_message(self.message.clone());
        }
        let mut c = Command::new("COMMIT").txn(TxnChange::End);
        c.commit = write.commit().await?.map(|s| s.commit.id);
        for op in t.branch_ops {
            match op {
                BranchOp::Created(b) => {
                    b.publish().await?;
                }
                BranchOp::Deleted(d) => d.publish().await?,
            }
        }
        Ok(Outcome::Tag(c))
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
        // A batch's rows are staged at once, as the FDW stages them.
        let t = info.type_name.as_str();
        let records = |b: &RecordBatch| -> Result<Vec<omnigraph_engine::Record>, QueryError> {
            let graph = gt.graph_batch(b)?;
            Ok(omnigraph_engine::value::batch_to_records(
                &graph, info.kind,
            )?)
        };
        match &op {
            Op::Insert => n = insert_by_column(write, &gt, &info, &batches).await?,
            Op::Update(cols) => {
                for b in &batches {
                    let rows = records(b)?;
                    n += rows.len() as u64;
                    // `SET a = a` changes nothing: stage nothing (no
                    // rewrite, no conflict), as the FDW does.
                    if cols.is_empty() {
                        continue;
                    }
                    let rows = rows
                        .into_iter()
                        .map(|r| {
                            let props = r.props.into_iter().filter(|(k, _)| cols.contains(k));
                            (r.id, props.collect())
                        })
                        .collect();
                    write.update_rows(t, rows).await?;
                }
            }
            Op::Delete => {
                for b in &batches {
                    let ids: Vec<String> = records(b)?.into_iter().map(|r| r.id).collect();
                    n += ids.len() as u64;
                    write.delete_ids(t, &ids).await?;
                    if info.kind == TypeKind::Node {
                        deleted.extend(ids);
                    }
                }
            }
        }
        let mut c = Command::new(format!("{tag} {n}"));
        if !deleted.is_empty() {
            // Deleting nodes deletes their edges, visible to the
            // transaction's next statements at once.
            c.incident_edges = write
                .delete_incident_edges(&info.type_name, &deleted, snap)
                .await? as u64;
        }
        if let Some(w) = autocommit {
            c.commit = w.commit().await?.map(|s| s.commit.id);
        }
        Ok(Outcome::Tag(c))
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

/// A branch function call the session stages itself inside a
/// transaction (outside one, `operations` runs it at once).
#[derive(Debug, Clone, PartialEq)]
enum BranchCall {
    Create {
        name: String,
        from: String,
    },
    Delete {
        name: String,
    },
    Merge {
        source: String,
        target: String,
        policy: omnigraph_engine::OnConflict,
        message: Option<String>,
    },
}

/// `SELECT omnigraph_branch_create('g', 'name'[, 'from'])`,
/// `SELECT omnigraph_branch_delete('g', 'name')` and `SELECT * FROM
/// omnigraph_branch_merge('g', 'source'[, 'target'[, 'policy'[,
/// 'message']]])` with constant arguments, as the statement text shows
/// them; `None` for anything else.
fn branch_call(text: &str) -> Option<BranchCall> {
    let t = text.trim().trim_end_matches(';').trim();
    let lower = t.to_ascii_lowercase();
    let (name, rest) = if let Some(r) = lower.strip_prefix("select * from ") {
        (r.split('(').next()?.trim().to_string(), &t[t.find('(')?..])
    } else if let Some(r) = lower.strip_prefix("select ") {
        (r.split('(').next()?.trim().to_string(), &t[t.find('(')?..])
    } else {
        return None;
    };
    let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
    let args = literal_args(inner)?;
    let arg = |i: usize| args.get(i).cloned().flatten();
    let star = lower.starts_with("select * from ");
    match (name.as_str(), star) {
        ("omnigraph_branch_create", false) if (2..=3).contains(&args.len()) => {
            Some(BranchCall::Create {
                name: arg(1)?,
                from: arg(2).unwrap_or_else(|| "main".into()),
            })
        }
        ("omnigraph_branch_delete", false) if args.len() == 2 => {
            Some(BranchCall::Delete { name: arg(1)? })
        }
        ("omnigraph_branch_merge", true) if (2..=5).contains(&args.len()) => {
            Some(BranchCall::Merge {
                source: arg(1)?,
                target: arg(2).unwrap_or_else(|| "main".into()),
                policy: arg(3).unwrap_or_else(|| "fail".into()).parse().ok()?,
                message: arg(4),
            })
        }
        _ => None,
    }
}

/// `'a', 'it''s', NULL` as values; `None` unless every argument is a
/// string constant or NULL.
fn literal_args(text: &str) -> Option<Vec<Option<String>>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.peek()? {
            '\'' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next()? {
                        '\'' if chars.peek() == Some(&'\'') => {
                            chars.next();
                            s.push('\'');
                        }
                        '\'' => break,
                        c => s.push(c),
                    }
                }
                out.push(Some(s));
            }
            _ => {
                let word: String = chars.by_ref().take_while(|c| *c != ',').collect();
                if !word.trim().eq_ignore_ascii_case("null") {
                    return None;
                }
                out.push(None);
                if chars.peek().is_none() {
                    return Some(out);
                }
                continue;
            }
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            None => return Some(out),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

/// One row of one column.
fn one_row(name: &str, t: DataType, value: Option<String>) -> Result<Outcome, QueryError> {
    use omnigraph_engine::deps::arrow_array::StringArray;
    use omnigraph_engine::deps::arrow_schema::{Field, Schema};
    let schema = Arc::new(Schema::new(vec![Field::new(name, t, true)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(StringArray::from(vec![value]))],
    )
    .map_err(|e| QueryError::DataFusion(e.into()))?;
    Ok(Outcome::Rows {
        schema,
        batches: vec![batch],
        elapsed: std::time::Duration::ZERO,
    })
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

/// Stage an INSERT's rows column by column, a chunk of the engine's size
/// (`INSERT_CHUNK_ROWS`) at a time; returns how many.
async fn insert_by_column(
    write: &mut WriteTxn,
    gt: &GraphTable,
    info: &TableInfo,
    batches: &[RecordBatch],
) -> Result<u64, QueryError> {
    let mut n = 0;
    let mut chunk: Vec<RecordBatch> = Vec::new();
    let mut chunk_rows = 0;
    for (i, b) in batches.iter().enumerate() {
        chunk.push(gt.graph_batch(b)?);
        chunk_rows += b.num_rows();
        if chunk_rows < omnigraph_engine::INSERT_CHUNK_ROWS && i + 1 < batches.len() {
            continue;
        }
        let schema = chunk[0].schema();
        let whole = concat_batches(&schema, &std::mem::take(&mut chunk))
            .map_err(|e| QueryError::DataFusion(e.into()))?;
        chunk_rows = 0;
        let rows = omnigraph_engine::NewRows::from_batch(&whole, info.kind);
        check_endpoints(info, &rows.endpoints)?;
        n += rows.len() as u64;
        write.insert_rows(&info.type_name, rows).await?;
    }
    Ok(n)
}

/// Every inserted edge needs both endpoints.
fn check_endpoints(info: &TableInfo, endpoints: &[(String, String)]) -> Result<(), QueryError> {
    let Some((src, _)) = endpoints
        .iter()
        .find(|(src, dst)| src.is_empty() || dst.is_empty())
    else {
        return Ok(());
    };
    let end = if src.is_empty() { "src" } else { "dst" };
    Err(QueryError::Unsupported(format!(
        "null value in column \"{end}\" of table {} violates not-null constraint: every {} edge needs a {end} node id",
        info.name, info.type_name
    )))
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
/// transaction's changes to them: `base` with its tables replaced, or a
/// new context.
async fn context(
    base: Option<&SessionContext>,
    snap: &Snapshot,
    txn: Option<&WriteTxn>,
    actor: &str,
) -> Result<SessionContext, QueryError> {
    let ctx = base.cloned().unwrap_or_default();
    for type_name in snap.graph().catalog().type_names() {
        let view = match txn {
            Some(t) => t.view(type_name, snap).await?.map(Arc::new),
            None => None,
        };
        let (name, table) = GraphTable::new(snap, type_name, view)?;
        // The previous statement's table (a base context keeps them).
        ctx.deregister_table(name.as_str())?;
        ctx.register_table(name.as_str(), Arc::new(table))?;
    }
    functions::register(&ctx, snap.graph());
    operations::register(&ctx, snap.graph(), actor, txn.is_some());
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
pub fn parse_memory(value: &str) -> Result<usize, String> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: usize = digits.parse().map_err(|_| {
        format!("invalid memory size \"{value}\": use a number and B, kB, MB, GB or TB")
    })?;
    let per: usize = match unit.trim() {
        "B" => 1,
        "" | "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        other => {
            return Err(format!(
                "invalid unit \"{other}\" in memory size \"{value}\": use B, kB, MB, GB or TB"
            ));
        }
    };
    n.checked_mul(per).filter(|b| *b > 0).ok_or_else(|| {
        format!(
            "memory size \"{value}\" must be between 1 byte and {} bytes",
            usize::MAX
        )
    })
}

/// A savepoint statement and its savepoint's name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SavepointOp {
    Set(String),
    RollbackTo(String),
    Release(String),
}

/// `SAVEPOINT a`, `ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] a`,
/// `RELEASE [SAVEPOINT] a` (an unquoted name folds to lower case).
fn savepoint_statement(text: &str) -> Option<SavepointOp> {
    let t = text.trim().trim_end_matches(';');
    let words: Vec<&str> = t.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let u: Vec<&str> = upper.iter().map(String::as_str).collect();
    // How many words are keywords; the rest is the name.
    let (op, keywords): (fn(String) -> SavepointOp, usize) = match u.as_slice() {
        ["SAVEPOINT", ..] => (SavepointOp::Set, 1),
        ["RELEASE", "SAVEPOINT", _, ..] => (SavepointOp::Release, 2),
        ["RELEASE", ..] => (SavepointOp::Release, 1),
        ["ROLLBACK", rest @ ..] => {
            let skip = usize::from(matches!(rest.first(), Some(&"WORK" | &"TRANSACTION")));
            match &rest[skip..] {
                ["TO", "SAVEPOINT", _, ..] => (SavepointOp::RollbackTo, 3 + skip),
                ["TO", ..] => (SavepointOp::RollbackTo, 2 + skip),
                _ => return None,
            }
        }
        _ => return None,
    };
    let name = words.get(keywords..)?.join(" ");
    let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None if !name.is_empty() && !name.contains(char::is_whitespace) => {
            name.to_ascii_lowercase()
        }
        None => return None,
    };
    Some(op(name))
}

/// BEGIN / START TRANSACTION (`None`), COMMIT / END (`Some(true)`),
/// ROLLBACK / ABORT (`Some(false)`).
fn transaction_statement(text: &str) -> Option<Option<bool>> {
    let upper = text
        .trim()
        .trim_end_matches(';')
        .replace(',', " ")
        .to_ascii_uppercase();
    let words: Vec<&str> = upper.split_whitespace().collect();
    let tail_ok = |rest: &[&str]| matches!(rest, [] | ["TRANSACTION"] | ["WORK"]);
    // Isolation levels and READ WRITE are accepted (drivers send them):
    // every transaction reads one snapshot and fails COMMIT on a
    // conflict, which is at least what each level promises. READ ONLY is
    // not enforced, so it is not accepted.
    let modes_ok = |rest: &[&str]| {
        let rest = match rest {
            ["TRANSACTION" | "WORK", rest @ ..] => rest,
            rest => rest,
        };
        rest.iter().all(|w| {
            matches!(
                *w,
                "ISOLATION"
                    | "LEVEL"
                    | "READ"
                    | "COMMITTED"
                    | "UNCOMMITTED"
                    | "REPEATABLE"
                    | "SERIALIZABLE"
                    | "WRITE"
                    | "NOT"
                    | "DEFERRABLE"
            )
        })
    };
    match words.as_slice() {
        ["BEGIN", rest @ ..] if modes_ok(rest) => Some(None),
        ["START", "TRANSACTION", rest @ ..] if modes_ok(rest) => Some(None),
        ["COMMIT" | "END", rest @ ..] if tail_ok(rest) => Some(Some(true)),
        ["ROLLBACK" | "ABORT", rest @ ..] if tail_ok(rest) => Some(Some(false)),
        _ => None,
    }
}

/// `SET a.b = 'v'` / `SET a.b TO v`: the name (lower case) and the value.
pub(crate) fn set_statement(text: &str) -> Option<(String, String)> {
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
    fn savepoint_statements() {
        use SavepointOp::*;
        for (text, want) in [
            ("SAVEPOINT a", Some(Set("a".into()))),
            ("savepoint \"My Point\"", Some(Set("My Point".into()))),
            ("ROLLBACK TO SAVEPOINT A", Some(RollbackTo("a".into()))),
            ("ROLLBACK WORK TO b;", Some(RollbackTo("b".into()))),
            ("RELEASE SAVEPOINT a", Some(Release("a".into()))),
            ("RELEASE a", Some(Release("a".into()))),
            ("ROLLBACK", None),
            ("SAVEPOINT", None),
        ] {
            assert_eq!(savepoint_statement(text), want, "{text}");
        }
    }

    #[test]
    fn branch_calls() {
        assert_eq!(
            branch_call("SELECT omnigraph_branch_create('g', 'it''s')"),
            Some(BranchCall::Create {
                name: "it's".into(),
                from: "main".into()
            })
        );
        assert_eq!(
            branch_call("select * from omnigraph_branch_merge('g', 'f', 'main', 'ours', NULL);"),
            Some(BranchCall::Merge {
                source: "f".into(),
                target: "main".into(),
                policy: omnigraph_engine::OnConflict::Ours,
                message: None
            })
        );
        assert_eq!(
            branch_call("SELECT omnigraph_branch_delete('g', 'x')"),
            Some(BranchCall::Delete { name: "x".into() })
        );
        // Not constant, not the whole row, not these functions.
        assert_eq!(
            branch_call("SELECT omnigraph_branch_create('g', name)"),
            None
        );
        assert_eq!(
            branch_call("SELECT status FROM omnigraph_branch_merge('g', 'f')"),
            None
        );
        assert_eq!(branch_call("SELECT * FROM person"), None);
        assert_eq!(
            branch_call("SELECT omnigraph_branch_create('g', 'a', 'b', 'c')"),
            None
        );
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
            ("BEGIN ISOLATION LEVEL SERIALIZABLE", Some(None)),
            (
                "START TRANSACTION ISOLATION LEVEL READ COMMITTED, READ WRITE",
                Some(None),
            ),
            ("BEGIN READ ONLY", None),
            ("ROLLBACK TO SAVEPOINT a", None),
            ("SELECT 1", None),
        ] {
            assert_eq!(transaction_statement(text), want, "{text}");
        }
    }
}
