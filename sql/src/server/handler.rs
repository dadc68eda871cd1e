//! The simple and extended query protocols over a connection's
//! [`QuerySession`].
//!
//! Statements are parsed by `datafusion-pg-catalog`'s parser (it rewrites
//! the catalog queries psql and drivers send into forms DataFusion plans),
//! then run by the session. Client settings (`SET extra_float_digits`,
//! `SHOW transaction isolation level`) are answered by
//! `datafusion-postgres`'s hook; `SET omnigraph.*`, transactions and every
//! other statement by the session. Rows stream to the client as the plan
//! produces them; a cancel request stops the statement between batches or
//! while it waits.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::QueryHook;
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters;
use datafusion_postgres::arrow_pg::datatypes::{
    arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type,
};
use datafusion_postgres::hooks::set_show::SetShowHook;
use futures::{Sink, SinkExt, StreamExt, stream};
use omnigraph_engine::ReadRef;
use omnigraph_engine::deps::arrow_array::{RecordBatch, StringArray};
use omnigraph_engine::deps::arrow_schema::{DataType, Field, Schema, SchemaRef};
use omnigraph_engine::deps::lance::deps::datafusion::execution::SendableRecordBatchStream;
use omnigraph_engine::deps::lance::deps::datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use pgwire::api::PgWireConnectionState;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{
    ExtendedQueryHandler, SimpleQueryHandler, send_execution_response, send_query_response,
    send_ready_for_query,
};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::extendedquery::Sync as PgSync;
use pgwire::messages::response::{EmptyQueryResponse, TransactionStatus};
use pgwire::messages::simplequery::Query;
use pgwire::types::format::FormatOptions;
use tokio::sync::Mutex;

use super::error::{canceled, timed_out, to_pgwire};
use super::introspect::{self, Ask};
use super::{Cancel, Server};
use crate::query::{Outcome, QuerySession, TxnChange};
use crate::sqlstate;

/// A connection's state, shared by its handlers.
#[derive(Default)]
pub(super) struct ConnState {
    /// Made once authentication succeeds.
    pub(super) session: Mutex<Option<Session>>,
    pub(super) cancel: Arc<Cancel>,
    /// The process id cancel requests name, and where it is registered.
    registered: OnceLock<(i32, Arc<Server>)>,
    /// A result stream failed after its statement returned (an error
    /// while rows were sent): the open transaction fails before the next
    /// statement, as the statement's failure would have failed it.
    stream_failed: Arc<AtomicBool>,
}

impl ConnState {
    pub(super) fn set_pid(&self, pid: i32, server: Arc<Server>) {
        let _ = self.registered.set((pid, server));
    }
}

impl Drop for ConnState {
    fn drop(&mut self) {
        if let Some((pid, server)) = self.registered.get() {
            server.unregister_cancel(*pid);
        }
    }
}

pub(super) struct Session {
    pub(super) query: QuerySession,
}

/// A statement as Parse left it: the text, the statement (none for an
/// empty query), its placeholders' types and the columns it returns.
#[derive(Debug, Clone)]
pub(super) struct Prepared {
    stmt: Option<SqlStatement>,
    /// A client's catalog query about keys, answered from the schema.
    ask: Option<Ask>,
    params: Vec<Option<DataType>>,
    schema: Option<SchemaRef>,
}

pub(super) struct Handler {
    conn: Arc<ConnState>,
    parser: Arc<Parser>,
}

impl Handler {
    pub(super) fn new(conn: Arc<ConnState>) -> Handler {
        Handler {
            parser: Arc::new(Parser {
                conn: conn.clone(),
                sql: PostgresCompatibilityParser::new(),
            }),
            conn,
        }
    }

    /// Run one statement; rows come back as a stream in `format`.
    async fn execute<C>(
        &self,
        client: &mut C,
        stmt: SqlStatement,
        params: Option<ParamValues>,
        format: &Format,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let kind = Kind::of(&stmt);
        let mut guard = self.conn.session.lock().await;
        let Some(session) = guard.as_mut() else {
            return Err(PgWireError::NotReadyForQuery);
        };
        match kind {
            Kind::ClientSetting => {
                // Accepted in a failed transaction only as Postgres does:
                // not at all.
                if session.query.transaction_failed() {
                    return Err(to_pgwire(crate::query::QueryError::Aborted));
                }
                let ctx = session.query.context();
                return match SetShowHook.handle_simple_query(&stmt, &ctx, client).await {
                    Some(r) => r,
                    None => Ok(Response::Execution(Tag::new("SET"))),
                };
            }
            Kind::ShowTarget => {
                let value = match session.query.target() {
                    ReadRef::Branch(b) => b.clone(),
                    ReadRef::Commit(c) => c.clone(),
                };
                return one_text_row(&show_name(&stmt), value, format, client);
            }
            Kind::Session => {}
        }
        if self.conn.stream_failed.swap(false, Ordering::SeqCst) {
            session.query.fail_transaction();
        }
        self.conn.cancel.reset();
        let deadline = statement_timeout(&*client).map(|t| tokio::time::Instant::now() + t);
        let run = session.query.run_statement(stmt, params);
        let stopped = tokio::select! {
            r = run => Ok(r),
            _ = self.conn.cancel.requested() => Err(canceled()),
            _ = until(deadline) => Err(timed_out()),
        };
        let outcome = match stopped {
            Ok(r) => r.map_err(to_pgwire)?,
            // The statement stopped part way (rows half staged): like any
            // failed statement, it fails the open transaction.
            Err(e) => {
                session.query.fail_transaction();
                return Err(e);
            }
        };
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        Ok(match outcome {
            Outcome::Stream { schema, stream } => {
                Response::Query(self.rows(&schema, stream, format, options, deadline)?)
            }
            Outcome::Rows {
                schema, batches, ..
            } => {
                let stream = batches_stream(schema.clone(), batches);
                Response::Query(self.rows(&schema, stream, format, options, deadline)?)
            }
            Outcome::Set(_) => Response::Execution(Tag::new("SET")),
            Outcome::Tag(c) => {
                if let Some(w) = &c.warning {
                    let notice = ErrorInfo::new(
                        "WARNING".into(),
                        "25001".into(),
                        w.trim_start_matches("WARNING: ").to_string(),
                    );
                    client
                        .send(PgWireBackendMessage::NoticeResponse(notice.into()))
                        .await?;
                }
                let tag = Tag::new(&c.tag);
                match c.txn {
                    TxnChange::Begin => Response::TransactionStart(tag),
                    TxnChange::End => Response::TransactionEnd(tag),
                    TxnChange::None => Response::Execution(tag),
                }
            }
        })
    }

    /// Answer a client's catalog query about keys from the graph's schema.
    async fn introspect<C: ClientInfo>(
        &self,
        client: &C,
        ask: &Ask,
        format: &Format,
    ) -> PgWireResult<Response> {
        let mut guard = self.conn.session.lock().await;
        let Some(session) = guard.as_mut() else {
            return Err(PgWireError::NotReadyForQuery);
        };
        let oid = match ask {
            Ask::PrimaryKeyColumns(o)
            | Ask::PrimaryKeyName(o)
            | Ask::ForeignKeys(o)
            | Ask::PsqlIndexes(o)
            | Ask::PsqlForeignKeys(o)
            | Ask::PsqlReferencedBy(o) => Some(*o),
            Ask::Indexes
            | Ask::Uniques
            | Ask::Checks
            | Ask::PsqlTriggers
            | Ask::Setting(_)
            | Ask::JdbcPrimaryKeys(_)
            | Ask::JdbcIndexes(_)
            | Ask::JdbcForeignKeys { .. } => None,
        };
        let mut table = None;
        if let Some(oid) = oid {
            let ctx = session.query.current_context().await.map_err(to_pgwire)?;
            let rows = ctx
                .sql(&format!(
                    "SELECT relname FROM pg_catalog.pg_class WHERE oid = {oid}"
                ))
                .await
                .map_err(|e| to_pgwire(e.into()))?
                .collect()
                .await
                .map_err(|e| to_pgwire(e.into()))?;
            table = rows.iter().find(|b| b.num_rows() > 0).and_then(|b| {
                omnigraph_engine::deps::lance::deps::datafusion::arrow::compute::cast(
                    b.column(0),
                    &DataType::Utf8,
                )
                .ok()
                .and_then(|a| {
                    a.as_any()
                        .downcast_ref::<StringArray>()
                        .map(|s| s.value(0).to_string())
                })
            });
        }
        let keys = introspect::keys(session.query.graph().catalog());
        let batch = introspect::answer(ask, table.as_deref(), &keys)
            .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let schema = batch.schema();
        let stream = batches_stream(schema.clone(), vec![batch]);
        Ok(Response::Query(
            self.rows(&schema, stream, format, options, None)?,
        ))
    }

    /// Rows encoded for the wire as the plan yields them; a cancel request
    /// or the statement timeout ends the stream with 57014.
    fn rows(
        &self,
        schema: &SchemaRef,
        batches: SendableRecordBatchStream,
        format: &Format,
        options: Arc<FormatOptions>,
        deadline: Option<tokio::time::Instant>,
    ) -> PgWireResult<QueryResponse> {
        let fields = Arc::new(arrow_schema_to_pg_fields(schema, format, Some(options))?);
        let cancel = self.conn.cancel.clone();
        let failed = self.conn.stream_failed.clone();
        let batches = cancellable(batches, cancel, deadline).inspect(move |b| {
            if b.is_err() {
                failed.store(true, Ordering::SeqCst);
            }
        });
        let f = fields.clone();
        let rows = batches
            .map(
                move |b| -> Box<dyn Iterator<Item = PgWireResult<_>> + Send> {
                    match b {
                        Ok(b) => encode_recordbatch(f.clone(), b),
                        Err(e) => Box::new(std::iter::once(Err(e))),
                    }
                },
            )
            .flat_map(stream::iter);
        Ok(QueryResponse::new(fields, rows))
    }
}

/// `SET statement_timeout` (kept by the settings hook in milliseconds;
/// 0 or unset: none).
fn statement_timeout<C: ClientInfo>(client: &C) -> Option<std::time::Duration> {
    client
        .metadata()
        .get("statement_timeout_ms")
        .and_then(|ms| ms.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(std::time::Duration::from_millis)
}

/// Resolves at `deadline`; never without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The batches of `inner`, stopped with 57014 once a cancel is requested
/// or the deadline passes.
fn cancellable(
    inner: SendableRecordBatchStream,
    cancel: Arc<Cancel>,
    deadline: Option<tokio::time::Instant>,
) -> impl futures::Stream<Item = PgWireResult<RecordBatch>> + Send + 'static {
    stream::unfold(Some(inner), move |state| {
        let cancel = cancel.clone();
        async move {
            let mut inner = state?;
            tokio::select! {
                next = inner.next() => match next? {
                    Ok(b) => Some((Ok(b), Some(inner))),
                    Err(e) => Some((Err(to_pgwire(e.into())), None)),
                },
                // Dropping the plan's stream stops its work.
                _ = cancel.requested() => Some((Err(canceled()), None)),
                _ = until(deadline) => Some((Err(timed_out()), None)),
            }
        }
    })
}

fn batches_stream(schema: SchemaRef, batches: Vec<RecordBatch>) -> SendableRecordBatchStream {
    use omnigraph_engine::deps::lance::deps::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    Box::pin(RecordBatchStreamAdapter::new(
        schema,
        stream::iter(batches.into_iter().map(Ok)),
    ))
}

/// `SHOW omnigraph.branch`: one row, one text column.
fn one_text_row<C: ClientInfo>(
    name: &str,
    value: String,
    format: &Format,
    client: &C,
) -> PgWireResult<Response> {
    let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, false)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(StringArray::from(vec![value]))],
    )
    .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
    let fields = Arc::new(arrow_schema_to_pg_fields(&schema, format, Some(options))?);
    let rows = encode_recordbatch(fields.clone(), batch).collect::<Vec<_>>();
    Ok(Response::Query(QueryResponse::new(
        fields,
        stream::iter(rows),
    )))
}

/// Who answers a statement.
enum Kind {
    /// `SET` / `SHOW` of a client setting (`DateStyle`,
    /// `extra_float_digits`, `transaction isolation level`).
    ClientSetting,
    /// `SHOW omnigraph.branch` / `omnigraph.commit`.
    ShowTarget,
    /// Everything else, `SET omnigraph.*` included.
    Session,
}

impl Kind {
    fn of(stmt: &SqlStatement) -> Kind {
        match stmt {
            SqlStatement::Set(_) => match crate::query::set_statement(&stmt.to_string()) {
                Some((name, _)) if name.starts_with("omnigraph.") => Kind::Session,
                _ => Kind::ClientSetting,
            },
            SqlStatement::ShowVariable { .. } if show_name(stmt).starts_with("omnigraph.") => {
                Kind::ShowTarget
            }
            SqlStatement::ShowVariable { .. } => Kind::ClientSetting,
            SqlStatement::ShowStatus { .. } => Kind::ClientSetting,
            _ => Kind::Session,
        }
    }
}

/// The variable a SHOW names (lower case, dotted).
fn show_name(stmt: &SqlStatement) -> String {
    match stmt {
        SqlStatement::ShowVariable { variable } => variable
            .iter()
            .map(|i| i.value.to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join("."),
        _ => "setting".into(),
    }
}

type ParamValues = omnigraph_engine::deps::lance::deps::datafusion::common::ParamValues;

fn syntax_error(e: impl std::fmt::Display) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        sqlstate::SYNTAX_ERROR.into(),
        e.to_string(),
    )))
}

impl Handler {
    /// The transaction status Postgres would report: the session's own
    /// (pgwire infers one from the responses, which cannot leave the
    /// failed state after ROLLBACK TO SAVEPOINT).
    async fn status(&self) -> TransactionStatus {
        match self.conn.session.lock().await.as_ref() {
            Some(s) if s.query.transaction_failed() => TransactionStatus::Error,
            Some(s) if s.query.in_transaction() => TransactionStatus::Transaction,
            _ => TransactionStatus::Idle,
        }
    }
}

#[async_trait::async_trait]
impl SimpleQueryHandler for Handler {
    /// pgwire's `_on_query`, with the ReadyForQuery status taken from the
    /// session.
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let responses = SimpleQueryHandler::do_query(self, client, &query.query).await;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        for r in responses? {
            match r {
                Response::EmptyQuery => {
                    client
                        .feed(PgWireBackendMessage::EmptyQueryResponse(
                            EmptyQueryResponse::new(),
                        ))
                        .await?;
                }
                Response::Query(rows) => send_query_response(client, rows, true).await?,
                Response::Execution(tag)
                | Response::TransactionStart(tag)
                | Response::TransactionEnd(tag) => send_execution_response(client, tag).await?,
                Response::Error(e) => {
                    client
                        .feed(PgWireBackendMessage::ErrorResponse((*e).into()))
                        .await?;
                }
                // Never produced here (COPY is refused).
                Response::CopyIn(_) | Response::CopyOut(_) | Response::CopyBoth(_) => {
                    return Err(PgWireError::ApiError(
                        "COPY is not supported by omnigraph serve".into(),
                    ));
                }
            }
        }
        let status = self.status().await;
        client.set_transaction_status(status);
        send_ready_for_query(client, status).await
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(ask) = introspect::recognise(query) {
            return Ok(vec![
                self.introspect(client, &ask, &Format::UnifiedText).await?,
            ]);
        }
        let query = introspect::rewrite(query);
        let statements = match self.parser.sql.parse(&query) {
            Ok(s) => s,
            Err(e) => {
                // A syntax error aborts an open transaction too.
                if let Some(s) = self.conn.session.lock().await.as_mut() {
                    s.query.fail_transaction();
                }
                return Err(syntax_error(e));
            }
        };
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        // Several statements in one query string: pgwire sends the
        // responses after the last one ran, so each one's rows are
        // collected before the next runs (a later statement must not run
        // before an earlier one's rows are read, nor after it failed).
        let streaming = statements.len() == 1;
        if let Some(s) = self.conn.session.lock().await.as_mut() {
            s.query.set_streaming(streaming);
        }
        let mut out = Vec::with_capacity(statements.len());
        for stmt in statements {
            match self.execute(client, stmt, None, &Format::UnifiedText).await {
                Ok(r) => out.push(r),
                // Postgres stops at the first error of a query string.
                Err(e) => {
                    out.push(Response::Error(Box::new(e.into())));
                    break;
                }
            }
        }
        Ok(out)
    }
}

pub(super) struct Parser {
    conn: Arc<ConnState>,
    sql: PostgresCompatibilityParser,
}

#[async_trait::async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Prepared>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if let Some(ask) = introspect::recognise(sql) {
            let schema = introspect::answer(&ask, None, &[])
                .map_err(|e| PgWireError::ApiError(Box::new(e)))?
                .schema();
            return Ok(Prepared {
                stmt: None,
                ask: Some(ask),
                params: Vec::new(),
                schema: Some(schema),
            });
        }
        let mut statements = self
            .sql
            .parse(&introspect::rewrite(sql))
            .map_err(syntax_error)?;
        if statements.len() > 1 {
            return Err(syntax_error(
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        let Some(stmt) = statements.pop() else {
            return Ok(Prepared {
                stmt: None,
                ask: None,
                params: Vec::new(),
                schema: None,
            });
        };
        let (params, schema) = match Kind::of(&stmt) {
            Kind::ClientSetting | Kind::ShowTarget => {
                let schema = matches!(
                    stmt,
                    SqlStatement::ShowVariable { .. } | SqlStatement::ShowStatus { .. }
                )
                .then(|| {
                    Arc::new(Schema::new(vec![Field::new(
                        show_name(&stmt),
                        DataType::Utf8,
                        false,
                    )]))
                });
                (Vec::new(), schema)
            }
            Kind::Session => {
                let mut guard = self.conn.session.lock().await;
                let Some(session) = guard.as_mut() else {
                    return Err(PgWireError::NotReadyForQuery);
                };
                session
                    .query
                    .describe_statement(stmt.clone())
                    .await
                    .map_err(to_pgwire)?
            }
        };
        Ok(Prepared {
            stmt: Some(stmt),
            ask: None,
            params,
            schema,
        })
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        stmt.params
            .iter()
            .map(|t| match t {
                Some(t) => into_pg_type(t),
                None => Ok(Type::UNKNOWN),
            })
            .collect()
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match &stmt.schema {
            Some(schema) => arrow_schema_to_pg_fields(
                schema,
                column_format.unwrap_or(&Format::UnifiedText),
                None,
            ),
            None => Ok(Vec::new()),
        }
    }
}

#[async_trait::async_trait]
impl ExtendedQueryHandler for Handler {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    /// pgwire's `on_sync`, with the status taken from the session.
    async fn on_sync<C>(&self, client: &mut C, _message: PgSync) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        client.portal_store().rm_portal(pgwire::api::DEFAULT_NAME);
        let status = self.status().await;
        client.set_transaction_status(status);
        send_ready_for_query(client, status).await?;
        client.flush().await?;
        Ok(())
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        if let Some(ask) = &prepared.ask {
            return self
                .introspect(client, ask, &portal.result_column_format)
                .await;
        }
        let Some(stmt) = prepared.stmt.clone() else {
            return Ok(Response::EmptyQuery);
        };
        let types: Vec<Option<&DataType>> = prepared.params.iter().map(|t| t.as_ref()).collect();
        let params = if portal.parameter_len() > 0 {
            Some(deserialize_parameters(portal, &types)?)
        } else {
            None
        };
        // pgwire keeps the rows and hands out `max_rows` per Execute
        // (PortalSuspended), so the whole stream is returned.
        if let Some(s) = self.conn.session.lock().await.as_mut() {
            s.query.set_streaming(true);
        }
        self.execute(client, stmt, params, &portal.result_column_format)
            .await
    }
}
