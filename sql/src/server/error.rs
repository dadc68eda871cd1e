//! Errors over the wire: every failure a statement reports carries the
//! SQLSTATE the extension would raise for it.

use std::net::SocketAddr;

use omnigraph_engine::Error as EngineError;
use omnigraph_engine::deps::lance::deps::datafusion::common::DataFusionError;
use pgwire::error::{ErrorInfo, PgWireError};

use crate::query::QueryError;
use crate::sqlstate;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing to serve on {addr} without a password")]
    PasswordRequired { addr: SocketAddr },
}

impl ServeError {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            ServeError::Bind { .. } => {
                "choose another --listen address or port (port 0 picks a free one)".into()
            }
            ServeError::PasswordRequired { .. } => {
                "set $OMNIGRAPH_PASSWORD or --password-file (clients then log in with SCRAM-SHA-256), or listen on 127.0.0.1".into()
            }
        })
    }
}

/// 57014, as Postgres reports a cancelled statement.
pub(super) fn canceled() -> PgWireError {
    error(
        sqlstate::QUERY_CANCELED,
        "canceling statement due to user request".into(),
        None,
        None,
    )
}

/// 57014 for `SET statement_timeout`, as Postgres words it.
pub(super) fn timed_out() -> PgWireError {
    error(
        sqlstate::QUERY_CANCELED,
        "canceling statement due to statement timeout".into(),
        None,
        None,
    )
}

fn error(code: &str, message: String, detail: Option<String>, hint: Option<String>) -> PgWireError {
    let mut info = ErrorInfo::new("ERROR".into(), code.into(), message);
    info.detail = detail;
    info.hint = hint;
    PgWireError::UserError(Box::new(info))
}

/// A statement's error as an ErrorResponse.
pub(super) fn to_pgwire(e: QueryError) -> PgWireError {
    match e {
        QueryError::Engine(e) => {
            let (code, detail) = sqlstate::classify(&e);
            let hint = match &e {
                EngineError::BranchNotFound { .. } => {
                    Some("SELECT * FROM omnigraph_branch_list('graph') lists the branches".into())
                }
                EngineError::CommitNotFound { .. } | EngineError::VersionReclaimed { .. } => {
                    Some("SELECT * FROM omnigraph_log('graph', 'main') lists the commits".into())
                }
                EngineError::Conflict { .. } => Some("Retry the transaction.".into()),
                EngineError::LockTimeout { .. } => {
                    Some("Another writer holds the branch: retry.".into())
                }
                _ => None,
            };
            error(code, e.to_string(), detail, hint)
        }
        QueryError::DataFusion(e) => {
            let code = datafusion_sqlstate(&e);
            error(code, e.to_string(), None, None)
        }
        QueryError::Unsupported(m) => error(sqlstate::FEATURE_NOT_SUPPORTED, m, None, None),
        QueryError::State { sqlstate, message } => error(sqlstate, message, None, None),
        QueryError::Aborted => error(
            sqlstate::IN_FAILED_SQL_TRANSACTION,
            QueryError::Aborted.to_string(),
            None,
            None,
        ),
    }
}

/// The SQLSTATE of a planning or execution error: an unknown table,
/// column or function as Postgres names them; a memory limit as 53200.
fn datafusion_sqlstate(e: &DataFusionError) -> &'static str {
    match e {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            datafusion_sqlstate(inner)
        }
        DataFusionError::SQL(..) => sqlstate::SYNTAX_ERROR,
        DataFusionError::NotImplemented(_) => sqlstate::FEATURE_NOT_SUPPORTED,
        DataFusionError::ResourcesExhausted(_) => sqlstate::OUT_OF_MEMORY,
        DataFusionError::SchemaError(s, _) => {
            let text = s.to_string();
            if text.contains("No field named") || text.contains("not found") {
                sqlstate::UNDEFINED_COLUMN
            } else {
                sqlstate::SYNTAX_ERROR
            }
        }
        DataFusionError::Plan(m) => {
            if m.contains("table") && m.contains("not found") {
                sqlstate::UNDEFINED_TABLE
            } else if m.contains("Invalid function")
                || m.contains("function") && m.contains("not found")
            {
                sqlstate::UNDEFINED_FUNCTION
            } else {
                sqlstate::SYNTAX_ERROR
            }
        }
        DataFusionError::ArrowError(..) | DataFusionError::Execution(_) => sqlstate::DATA_EXCEPTION,
        _ => sqlstate::INTERNAL_ERROR,
    }
}
