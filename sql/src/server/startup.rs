//! Connection startup: authentication, then the database name picks the
//! branch, then the session is made (before AuthenticationOk, so a bad
//! name fails the connection as Postgres fails an unknown database).

use std::fmt::Debug;
use std::sync::Arc;

use futures::{Sink, SinkExt};
use omnigraph_engine::{Error as EngineError, ReadRef};
use pgwire::api::PidSecretKeyGenerator;
use pgwire::api::auth::sasl::SASLState;
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{ClientInfo, METADATA_DATABASE, METADATA_USER, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::{Authentication, PasswordMessageFamily};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::sync::Mutex;

use super::handler::{ConnState, Session};
use super::{SCRAM_ITERATIONS, Server, catalog};
use crate::query::QuerySession;
use crate::sqlstate;

/// The version clients see: `server_version` and `version()`. Drivers and
/// psql pick their catalog queries by it; the catalog emulated answers
/// PostgreSQL 15's.
pub(super) const SERVER_VERSION: &str = "15.0";

pub(super) struct Startup {
    server: Arc<Server>,
    conn: Arc<ConnState>,
    refuse: bool,
    sasl: Mutex<SASLState>,
    scram: Option<ScramAuth>,
}

impl Startup {
    pub(super) fn new(server: Arc<Server>, conn: Arc<ConnState>, refuse: bool) -> Startup {
        let scram = server.scram.clone().map(|p| {
            let mut auth = ScramAuth::new(p);
            auth.set_iterations(SCRAM_ITERATIONS);
            auth
        });
        Startup {
            server,
            conn,
            refuse,
            sasl: Mutex::new(SASLState::Initial),
            scram,
        }
    }

    /// Authenticated: open the session the database name asks for, then
    /// tell the client it is in.
    async fn finish<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let user = client
            .metadata()
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_else(|| "omnigraph".into());
        // libpq's default database is the user name.
        let database = client
            .metadata()
            .get(METADATA_DATABASE)
            .cloned()
            .unwrap_or_else(|| user.clone());
        let target = self.target(&database)?;
        let mut query = QuerySession::new(self.server.graph.clone(), target, &user)
            .await
            .map_err(|e| match e {
                crate::query::QueryError::Engine(EngineError::BranchNotFound { name }) => fatal(
                    sqlstate::INVALID_CATALOG_NAME,
                    format!("database \"{database}\" does not exist"),
                    Some(format!(
                        "branch '{name}' does not exist: `omnigraph branch list` lists the branches"
                    )),
                ),
                e => super::error::to_pgwire(e),
            })?;
        let ctx = catalog::context(&self.server.name, self.server.config.session_memory)
            .map_err(|e| fatal(sqlstate::INTERNAL_ERROR, e.to_string(), None))?;
        query.set_context(ctx);
        query.set_streaming(true);
        *self.conn.session.lock().await = Some(Session { query });

        let (pid, key) = self.server.pids.generate(client);
        client.set_pid_and_secret_key(pid, key.clone());
        self.server
            .register_cancel(pid, key, self.conn.cancel.clone());
        self.conn.set_pid(pid, self.server.clone());

        let mut params = DefaultServerParameterProvider::default();
        params.server_version =
            format!("{SERVER_VERSION} (omnigraph {})", env!("CARGO_PKG_VERSION"));
        params.is_superuser = false;
        finish_authentication(client, &params).await
    }

    /// `graph` reads main; `graph/branch` reads that branch.
    fn target(&self, database: &str) -> PgWireResult<ReadRef> {
        let (graph, branch) = match database.split_once('/') {
            Some((g, b)) => (g, b),
            None => (database, "main"),
        };
        if graph != self.server.name || branch.is_empty() {
            let name = &self.server.name;
            return Err(fatal(
                sqlstate::INVALID_CATALOG_NAME,
                format!("database \"{database}\" does not exist"),
                Some(format!(
                    "this server serves graph \"{name}\": connect to database \"{name}\" (branch main) or \"{name}/BRANCH\""
                )),
            ));
        }
        Ok(ReadRef::Branch(branch.to_string()))
    }
}

fn fatal(code: &str, message: String, hint: Option<String>) -> PgWireError {
    let mut info = ErrorInfo::new("FATAL".into(), code.into(), message);
    info.hint = hint;
    PgWireError::UserError(Box::new(info))
}

#[async_trait::async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                if self.refuse {
                    return Err(fatal(
                        sqlstate::TOO_MANY_CONNECTIONS,
                        "sorry, too many clients already".into(),
                        Some(format!(
                            "the server allows {} connections (omnigraph serve --max-connections)",
                            self.server.config.max_connections
                        )),
                    ));
                }
                save_startup_parameters_to_metadata(client, startup);
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                if self.scram.is_some() {
                    client
                        .send(PgWireBackendMessage::Authentication(Authentication::SASL(
                            vec![pgwire::api::auth::sasl::SCRAM_SHA_256_METHOD.to_string()],
                        )))
                        .await?;
                } else {
                    self.finish(client).await?;
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(msg) => {
                let Some(scram) = &self.scram else {
                    return Err(PgWireError::InvalidSASLState);
                };
                let mut state = self.sasl.lock().await;
                let msg = if matches!(*state, SASLState::Initial) {
                    let initial = msg.into_sasl_initial_response()?;
                    if initial.auth_method != pgwire::api::auth::sasl::SCRAM_SHA_256_METHOD {
                        return Err(PgWireError::UnsupportedSASLAuthMethod(
                            initial.auth_method.clone(),
                        ));
                    }
                    *state = SASLState::ScramClientFirstReceived;
                    PasswordMessageFamily::SASLInitialResponse(initial)
                } else {
                    PasswordMessageFamily::SASLResponse(msg.into_sasl_response()?)
                };
                let (response, next) = scram
                    .process_scram_message(client, msg, &state)
                    .await
                    .map_err(|e| match e {
                        PgWireError::InvalidPassword(_) => {
                            let user = client.metadata().get(METADATA_USER).cloned();
                            fatal(
                                sqlstate::INVALID_PASSWORD,
                                format!(
                                    "password authentication failed for user \"{}\"",
                                    user.unwrap_or_default()
                                ),
                                None,
                            )
                        }
                        e => e,
                    })?;
                client
                    .send(PgWireBackendMessage::Authentication(response))
                    .await?;
                *state = next;
                if matches!(*state, SASLState::Finished) {
                    drop(state);
                    self.finish(client).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}
