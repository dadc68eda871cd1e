//! `omnigraph serve`: the graph over the PostgreSQL wire protocol.
//!
//! Protocol handling (startup, simple and extended queries, portals,
//! cancel requests) is pgwire's; statements run in a [`QuerySession`] per
//! connection, exactly as in `omnigraph sql`, so reads, writes,
//! transactions and errors match the shell's. What a Postgres client needs
//! beyond the graph's tables comes from `datafusion-pg-catalog` (a
//! `pg_catalog` emulation and the functions psql and drivers call) and
//! [`catalog`] (`version()`, keys).
//!
//! - [`startup`]: authentication (trust on loopback, SCRAM-SHA-256 with a
//!   password) and the database name: `graph` or `graph/branch`.
//! - [`handler`]: the simple and extended query protocols over a session.
//! - [`catalog`]: the per-connection DataFusion context.
//! - [`pg_tables`]: `pg_class` and `pg_attribute` with the graph's keys
//!   and column types (`timestamptz`, arrays).
//! - [`introspect`]: keys (`id`, edges' `src`/`dst`) for clients' catalog
//!   queries.
//! - [`error`]: errors as SQLSTATEs.
//!
//! [`QuerySession`]: crate::query::QuerySession

mod catalog;
mod error;
mod handler;
mod introspect;
mod pg_tables;
mod startup;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use omnigraph_engine::Graph;
use pgwire::api::PgWireServerHandlers;
use pgwire::api::auth::sasl::scram::gen_salted_password;
use pgwire::api::auth::{AuthSource, LoginInfo, Password};
use pgwire::api::cancel::CancelHandler;
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::SecretKey;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

use crate::sqlstate;

pub use error::ServeError;

/// How `omnigraph serve` runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// `host:port` to listen on.
    pub listen: String,
    /// Connections beyond this many are refused with 53300.
    pub max_connections: usize,
    /// The only user name accepted when a password is set (any if `None`).
    pub user: Option<String>,
    /// Clients must authenticate with SCRAM-SHA-256 using this password.
    /// Required unless the address is loopback.
    pub password: Option<String>,
    /// Memory one session's query may hold (sorts, joins, aggregates).
    pub session_memory: usize,
}

/// SCRAM's iteration count (Postgres's default).
const SCRAM_ITERATIONS: usize = 4096;

/// What every connection shares.
struct Server {
    graph: Graph,
    /// The database name that selects this graph (its directory's name).
    name: String,
    config: ServeConfig,
    /// The password, salted once (SCRAM compares proofs against it).
    scram: Option<Arc<SaltedPassword>>,
    /// Running connections by process id, for cancel requests.
    cancels: Mutex<HashMap<i32, (SecretKey, Arc<Cancel>)>>,
    pids: pgwire::api::RandomPidSecretKeyGenerator,
}

/// Serve `graph` (opened from `uri`) until the process is stopped (open
/// transactions then roll back: nothing is published before COMMIT).
/// `ready` is called once the socket listens, with its address and the
/// database name.
pub async fn serve(
    graph: Graph,
    uri: &str,
    config: ServeConfig,
    ready: impl FnOnce(SocketAddr, &str),
) -> Result<(), ServeError> {
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen.clone(),
        source,
    })?;
    if config.password.is_none() && !addr.ip().is_loopback() {
        return Err(ServeError::PasswordRequired { addr });
    }
    let name = database_name(uri);
    let scram = config.password.as_deref().map(|p| {
        let salt: [u8; 16] = rand_salt();
        Arc::new(SaltedPassword {
            salt: salt.to_vec(),
            salted: gen_salted_password(p, &salt, SCRAM_ITERATIONS),
            user: config.user.clone(),
        })
    });
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let server = Arc::new(Server {
        graph,
        name: name.clone(),
        config,
        scram,
        cancels: Mutex::new(HashMap::new()),
        pids: Default::default(),
    });
    ready(addr, &name);

    loop {
        let Ok((socket, _)) = listener.accept().await else {
            // A client that went away before accept; keep serving.
            continue;
        };
        let _ = socket.set_nodelay(true);
        let permit = limit.clone().try_acquire_owned().ok();
        let handlers = Connection::new(server.clone(), permit.is_none());
        tokio::spawn(async move {
            let _permit = permit;
            // A protocol error ends this connection only.
            let _ = pgwire::tokio::process_socket(socket, None, handlers).await;
        });
    }
}

/// The database name of the graph at `uri`: its last path segment.
fn database_name(uri: &str) -> String {
    let path = uri.split_once("://").map_or(uri, |(_, p)| p);
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("omnigraph")
        .to_string()
}

fn rand_salt() -> [u8; 16] {
    // Randomness from the ULID generator the engine already uses.
    ulid::Ulid::new().0.to_le_bytes()
}

/// The password SCRAM checks proofs against, and the user it belongs to.
#[derive(Debug)]
struct SaltedPassword {
    salt: Vec<u8>,
    salted: Vec<u8>,
    user: Option<String>,
}

#[async_trait::async_trait]
impl AuthSource for SaltedPassword {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        if let Some(user) = &self.user
            && login.user() != Some(user.as_str())
        {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                sqlstate::INVALID_PASSWORD.into(),
                format!(
                    "password authentication failed for user \"{}\"",
                    login.user().unwrap_or_default()
                ),
            ))));
        }
        Ok(Password::new(Some(self.salt.clone()), self.salted.clone()))
    }
}

/// A connection's cancel signal: set by a cancel request, read by the
/// statement running (between batches, and while it waits).
#[derive(Default)]
struct Cancel {
    requested: AtomicBool,
    notify: Notify,
}

impl Cancel {
    fn reset(&self) {
        self.requested.store(false, Ordering::SeqCst);
    }

    fn fire(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Resolves once a cancel is requested.
    async fn requested(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_requested() {
                return;
            }
            notified.await;
        }
    }
}

/// One client connection: its handlers and its session (made at startup).
struct Connection {
    server: Arc<Server>,
    state: Arc<handler::ConnState>,
    /// Over the connection limit: startup answers 53300 and closes.
    refuse: bool,
}

impl Connection {
    fn new(server: Arc<Server>, refuse: bool) -> Connection {
        Connection {
            server,
            state: Arc::new(handler::ConnState::default()),
            refuse,
        }
    }
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        Arc::new(handler::Handler::new(self.state.clone()))
    }

    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        Arc::new(handler::Handler::new(self.state.clone()))
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::new(startup::Startup::new(
            self.server.clone(),
            self.state.clone(),
            self.refuse,
        ))
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::new(CancelRequests(self.server.clone()))
    }
}

/// Cancel requests arrive on a connection of their own, naming the
/// process id and secret key the target got at startup.
struct CancelRequests(Arc<Server>);

#[async_trait::async_trait]
impl CancelHandler for CancelRequests {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let target = match self.0.cancels.lock() {
            Ok(map) => map.get(&request.pid).and_then(|(key, cancel)| {
                (key.to_bytes() == request.secret_key.to_bytes()).then(|| cancel.clone())
            }),
            Err(_) => None,
        };
        if let Some(cancel) = target {
            cancel.fire();
        }
    }
}

impl Server {
    fn register_cancel(&self, pid: i32, key: SecretKey, cancel: Arc<Cancel>) {
        if let Ok(mut map) = self.cancels.lock() {
            map.insert(pid, (key, cancel));
        }
    }

    fn unregister_cancel(&self, pid: i32) {
        if let Ok(mut map) = self.cancels.lock() {
            map.remove(&pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names() {
        assert_eq!(database_name("/data/social"), "social");
        assert_eq!(database_name("/data/social/"), "social");
        assert_eq!(database_name("file:///data/g1"), "g1");
        assert_eq!(database_name("/"), "omnigraph");
    }
}
