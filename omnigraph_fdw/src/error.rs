//! Engine errors as Postgres errors: one mapping to SQLSTATE, message,
//! detail and hint, so every entry point reports the same way.

use omnigraph_engine::{Error, ViolationKind};
use pgrx::PgSqlErrorCode as C;

use crate::pg::raise;

/// SQLSTATE, detail and hint for an engine error.
pub fn classify(e: &Error) -> (C, Option<String>, Option<String>) {
    match e {
        // The detail is the excerpt with the caret (the message has the rest).
        Error::Schema(s) => (C::ERRCODE_SYNTAX_ERROR, Some(s.to_string().lines().skip(1).collect::<Vec<_>>().join("\n")), None),
        Error::Validation(v) => {
            let code = match v.kind {
                ViolationKind::DuplicateKey | ViolationKind::UniqueViolation => C::ERRCODE_UNIQUE_VIOLATION,
                ViolationKind::DanglingEdge => C::ERRCODE_FOREIGN_KEY_VIOLATION,
                ViolationKind::MissingRequired => C::ERRCODE_NOT_NULL_VIOLATION,
                ViolationKind::InvalidEnum => C::ERRCODE_INVALID_TEXT_REPRESENTATION,
                ViolationKind::InvalidValue => C::ERRCODE_INVALID_PARAMETER_VALUE,
                ViolationKind::ConstraintViolation | ViolationKind::Cardinality => C::ERRCODE_CHECK_VIOLATION,
                ViolationKind::UnknownProperty => C::ERRCODE_UNDEFINED_COLUMN,
                ViolationKind::KeyUpdate => C::ERRCODE_FEATURE_NOT_SUPPORTED,
                ViolationKind::NotFound => C::ERRCODE_NO_DATA_FOUND,
            };
            let detail = format!("type {}, property {}, value {}", v.type_name, v.property, v.value);
            (code, Some(detail), None)
        }
        Error::Load { .. } => (C::ERRCODE_INVALID_TEXT_REPRESENTATION, None, None),
        Error::UnknownType { .. } => (C::ERRCODE_UNDEFINED_OBJECT, None, None),
        Error::GraphNotFound { .. } => (
            C::ERRCODE_UNDEFINED_OBJECT,
            None,
            Some("Create one with SELECT omnigraph_create_graph('server', 'schema text'), or fix the server's uri option.".into()),
        ),
        Error::GraphExists { .. } => (C::ERRCODE_DUPLICATE_OBJECT, None, None),
        Error::BranchNotFound { .. } => {
            (C::ERRCODE_UNDEFINED_OBJECT, None, Some("SELECT * FROM omnigraph_branch_list('server') lists the branches.".into()))
        }
        Error::BranchExists { .. } => (C::ERRCODE_DUPLICATE_OBJECT, None, None),
        Error::InvalidBranchName { .. } => (C::ERRCODE_INVALID_PARAMETER_VALUE, None, None),
        Error::CannotDeleteMain => (C::ERRCODE_FEATURE_NOT_SUPPORTED, None, None),
        Error::CommitNotFound { .. } => {
            (C::ERRCODE_UNDEFINED_OBJECT, None, Some("SELECT * FROM omnigraph_log('server', 'branch') lists commits.".into()))
        }
        Error::VersionReclaimed { .. } => (C::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, None, None),
        Error::Conflict { .. } => (C::ERRCODE_T_R_SERIALIZATION_FAILURE, None, Some("Retry the transaction.".into())),
        Error::LockTimeout { .. } => (C::ERRCODE_LOCK_NOT_AVAILABLE, None, Some("Raise omnigraph.lock_timeout or retry.".into())),
        Error::Cancelled => (C::ERRCODE_QUERY_CANCELED, None, None),
        Error::ResourceLimit(_) => (
            C::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            None,
            Some("Raise temp_file_limit, or split the transaction.".into()),
        ),
        Error::Unsupported(_) => (C::ERRCODE_FEATURE_NOT_SUPPORTED, None, None),
        Error::InvalidArgument(_) => (C::ERRCODE_INVALID_PARAMETER_VALUE, None, None),
        Error::Storage(_) | Error::Io(_) => (C::ERRCODE_IO_ERROR, None, None),
        Error::Internal(_) => (C::ERRCODE_INTERNAL_ERROR, None, None),
    }
}

/// Report an engine error as an ERROR; `context` names the object acted on.
pub fn report(e: Error, context: &str) -> ! {
    let (code, detail, hint) = classify(&e);
    let message = match &e {
        // The schema error's rendering (with the caret) goes in the detail.
        Error::Schema(s) => format!(
            "{context}: schema error at line {}, column {}: {}",
            s.line, s.col, s.message
        ),
        e => format!("{context}: {e}"),
    };
    raise(code, message, detail, hint)
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
