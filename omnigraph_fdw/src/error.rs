//! Engine errors as Postgres errors: one mapping to SQLSTATE, message,
//! detail and hint, so every entry point reports the same way.

use omnigraph_engine::Error;
use pgrx::PgSqlErrorCode as C;

use crate::pg::raise;

/// SQLSTATE, detail and hint for an engine error: the code and detail
/// are the ones every frontend reports (`omnigraph_sql::sqlstate`); the
/// hint names the SQL function that helps.
pub fn classify(e: &Error) -> (C, Option<String>, Option<String>) {
    let (sqlstate, detail) = omnigraph_sql::sqlstate::classify(e);
    let hint = match e {
        Error::GraphNotFound { .. } => Some(
            "Create one with SELECT omnigraph_create_graph('server', 'schema text'), or fix the server's uri option.",
        ),
        Error::BranchNotFound { .. } => {
            Some("SELECT * FROM omnigraph_branch_list('server') lists the branches.")
        }
        Error::CommitNotFound { .. } => {
            Some("SELECT * FROM omnigraph_log('server', 'branch') lists commits.")
        }
        Error::Conflict { .. } => Some("Retry the transaction."),
        Error::LockTimeout { .. } => Some("Raise omnigraph.lock_timeout or retry."),
        Error::ResourceLimit(_) => Some("Raise temp_file_limit, or split the transaction."),
        Error::GraphReplaced { .. } => {
            Some("Run the statement again: the next one opens the graph anew.")
        }
        _ => None,
    };
    (code(sqlstate), detail, hint.map(String::from))
}

/// Postgres's error code for a five-character SQLSTATE (MAKE_SQLSTATE).
pub fn code(sqlstate: &str) -> C {
    let packed = sqlstate
        .bytes()
        .take(5)
        .enumerate()
        .fold(0i32, |acc, (i, b)| {
            acc | ((((b as i32) - ('0' as i32)) & 0x3F) << (6 * i))
        });
    C::from(packed)
}

/// An engine error as the ERROR [`report`] raises, kept to be raised later
/// (and again).
#[derive(Debug, Clone)]
pub struct Rendered {
    pub code: C,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl Rendered {
    pub fn new(e: &Error, context: &str) -> Rendered {
        let (code, detail, hint) = classify(e);
        let message = match e {
            // The schema error's rendering (with the caret) goes in the detail.
            Error::Schema(s) => format!(
                "{context}: schema error at line {}, column {}: {}",
                s.line, s.col, s.message
            ),
            e => format!("{context}: {e}"),
        };
        Rendered {
            code,
            message,
            detail,
            hint,
        }
    }

    pub fn raise(&self) -> ! {
        raise(
            self.code,
            self.message.clone(),
            self.detail.clone(),
            self.hint.clone(),
        )
    }
}

/// Report an engine error as an ERROR; `context` names the object acted on.
pub fn report(e: Error, context: &str) -> ! {
    Rendered::new(&e, context).raise()
}

/// Unwrap an engine result or report it.
pub trait OrReport<T> {
    fn or_report(self, context: &str) -> T;
}

impl<T> OrReport<T> for Result<T, Error> {
    fn or_report(self, context: &str) -> T {
        match self {
            Ok(v) => v,
            Err(e) => report(e, context),
        }
    }
}
