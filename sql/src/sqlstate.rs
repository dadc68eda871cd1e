//! Engine errors as SQLSTATEs: one mapping, so the extension and the
//! `omnigraph serve` wire protocol report the same code for the same
//! failure. Each frontend adds its own hint (an SQL function in one, a
//! command in the other).

use omnigraph_engine::{Error, ViolationKind};

pub const SYNTAX_ERROR: &str = "42601";
pub const UNIQUE_VIOLATION: &str = "23505";
pub const FOREIGN_KEY_VIOLATION: &str = "23503";
pub const NOT_NULL_VIOLATION: &str = "23502";
pub const CHECK_VIOLATION: &str = "23514";
pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
pub const INVALID_PARAMETER_VALUE: &str = "22023";
pub const UNDEFINED_COLUMN: &str = "42703";
pub const UNDEFINED_TABLE: &str = "42P01";
pub const UNDEFINED_FUNCTION: &str = "42883";
pub const UNDEFINED_OBJECT: &str = "42704";
pub const DUPLICATE_OBJECT: &str = "42710";
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
pub const NO_DATA_FOUND: &str = "P0002";
pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
pub const SERIALIZATION_FAILURE: &str = "40001";
pub const LOCK_NOT_AVAILABLE: &str = "55P03";
pub const QUERY_CANCELED: &str = "57014";
pub const CONFIGURATION_LIMIT_EXCEEDED: &str = "53400";
pub const IO_ERROR: &str = "58030";
pub const INTERNAL_ERROR: &str = "XX000";
pub const IN_FAILED_SQL_TRANSACTION: &str = "25P02";
pub const NO_ACTIVE_SQL_TRANSACTION: &str = "25P01";
pub const INVALID_SAVEPOINT_SPECIFICATION: &str = "3B001";
pub const INVALID_CATALOG_NAME: &str = "3D000";
pub const TOO_MANY_CONNECTIONS: &str = "53300";
pub const OUT_OF_MEMORY: &str = "53200";
pub const INVALID_PASSWORD: &str = "28P01";
pub const DATA_EXCEPTION: &str = "22000";

/// The SQLSTATE of an engine error, and its detail (a schema error's
/// excerpt with the caret; a violation's type, property and value).
pub fn classify(e: &Error) -> (&'static str, Option<String>) {
    match e {
        Error::Schema(s) => (
            SYNTAX_ERROR,
            Some(s.to_string().lines().skip(1).collect::<Vec<_>>().join("\n")),
        ),
        Error::Validation(v) => {
            let code = match v.kind {
                ViolationKind::DuplicateKey | ViolationKind::UniqueViolation => UNIQUE_VIOLATION,
                ViolationKind::DanglingEdge => FOREIGN_KEY_VIOLATION,
                ViolationKind::MissingRequired => NOT_NULL_VIOLATION,
                ViolationKind::InvalidEnum => INVALID_TEXT_REPRESENTATION,
                ViolationKind::InvalidValue => INVALID_PARAMETER_VALUE,
                ViolationKind::ConstraintViolation | ViolationKind::Cardinality => CHECK_VIOLATION,
                ViolationKind::UnknownProperty => UNDEFINED_COLUMN,
                ViolationKind::KeyUpdate => FEATURE_NOT_SUPPORTED,
                ViolationKind::NotFound => NO_DATA_FOUND,
            };
            let detail = format!(
                "type {}, property {}, value {}",
                v.type_name, v.property, v.value
            );
            (code, Some(detail))
        }
        Error::Load { .. } => (INVALID_TEXT_REPRESENTATION, None),
        Error::UnknownType { .. }
        | Error::GraphNotFound { .. }
        | Error::BranchNotFound { .. }
        | Error::CommitNotFound { .. } => (UNDEFINED_OBJECT, None),
        Error::GraphExists { .. } | Error::BranchExists { .. } => (DUPLICATE_OBJECT, None),
        Error::InvalidBranchName { .. } | Error::InvalidArgument(_) => {
            (INVALID_PARAMETER_VALUE, None)
        }
        Error::CannotDeleteMain | Error::Unsupported(_) => (FEATURE_NOT_SUPPORTED, None),
        Error::VersionReclaimed { .. } | Error::GraphReplaced { .. } => {
            (OBJECT_NOT_IN_PREREQUISITE_STATE, None)
        }
        Error::Conflict { .. } => (SERIALIZATION_FAILURE, None),
        Error::LockTimeout { .. } => (LOCK_NOT_AVAILABLE, None),
        Error::Cancelled => (QUERY_CANCELED, None),
        Error::ResourceLimit(_) => (CONFIGURATION_LIMIT_EXCEEDED, None),
        Error::Storage(_) | Error::Io(_) => (IO_ERROR, None),
        Error::Internal(_) => (INTERNAL_ERROR, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_are_serialization_failures() {
        let e = Error::Conflict {
            branch: "main".into(),
            message: "row changed".into(),
        };
        assert_eq!(classify(&e).0, "40001");
        assert_eq!(classify(&Error::Cancelled).0, "57014");
        assert_eq!(
            classify(&Error::BranchNotFound { name: "x".into() }).0,
            "42704"
        );
    }
}
