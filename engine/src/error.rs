//! Engine errors.
//!
//! Variants are grouped by who must act:
//! - the caller's input (`Schema`, `Validation`, `Load`, `UnknownType`, ...):
//!   fix the input and try again;
//! - a state the caller can retry out of (`Conflict`, `LockTimeout`);
//! - missing objects (`GraphNotFound`, `BranchNotFound`, `CommitNotFound`,
//!   `VersionReclaimed`);
//! - the environment (`Storage`, `Io`) and broken invariants (`Internal`, a bug).
//!
//! Fields are structured so that frontends (the FDW maps them to SQLSTATEs)
//! can name the object without parsing messages.

use crate::schema::SchemaError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of rule a value broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    /// A value of the wrong type or out of the type's range.
    InvalidValue,
    /// A value outside the property's enum.
    InvalidEnum,
    /// A required (non-`?`) property without a value.
    MissingRequired,
    /// A property the type does not declare.
    UnknownProperty,
    /// `@key` already taken (in the batch or on the branch).
    DuplicateKey,
    /// `@unique` tuple already taken.
    UniqueViolation,
    /// An edge endpoint that does not exist on the branch.
    DanglingEdge,
    /// `@range` or `@check`.
    ConstraintViolation,
    /// An attempt to change a node's `@key` or `id`.
    KeyUpdate,
    /// Update or delete of an id that does not exist.
    NotFound,
    /// An edge type's `@card(min..max)` broken by a source's out-degree.
    Cardinality,
}

/// One broken rule, naming the type, the property and the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub kind: ViolationKind,
    pub type_name: String,
    pub property: String,
    pub value: String,
    pub message: String,
    /// NDJSON line the row came from, when it came from a load.
    pub line: Option<usize>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Schema(#[from] SchemaError),

    #[error("{0}")]
    Validation(Box<Violation>),

    /// A malformed NDJSON line (not a rule violation of a well-formed row).
    #[error("line {line}: {message}")]
    Load { line: usize, message: String },

    #[error("unknown type '{name}'{hint}")]
    UnknownType { name: String, hint: String },

    #[error("no graph at '{uri}'")]
    GraphNotFound { uri: String },

    #[error("a graph already exists at '{uri}'")]
    GraphExists { uri: String },

    /// The graph this handle opened was deleted and another created at its
    /// location: the handle's schema and cached tables are the old graph's.
    #[error("the graph at '{uri}' was deleted and created again since it was opened")]
    GraphReplaced { uri: String },

    #[error("branch '{name}' does not exist")]
    BranchNotFound { name: String },

    #[error("branch '{name}' already exists")]
    BranchExists { name: String },

    #[error("invalid branch name '{name}': {reason}")]
    InvalidBranchName { name: String, reason: String },

    #[error("branch 'main' cannot be deleted")]
    CannotDeleteMain,

    #[error("commit '{id}' does not exist")]
    CommitNotFound { id: String },

    /// The data of an old version was removed by cleanup.
    #[error("table {type_name} at version {version} has been reclaimed by cleanup")]
    VersionReclaimed { type_name: String, version: u64 },

    /// Another transaction changed what this one read or wrote; retry it.
    #[error("commit conflict on branch '{branch}': {message}; retry the transaction")]
    Conflict { branch: String, message: String },

    #[error("timed out after {waited_ms} ms waiting for the write lock of branch '{branch}'")]
    LockTimeout { branch: String, waited_ms: u64 },

    #[error("the operation was cancelled")]
    Cancelled,

    /// A configured resource limit was reached (spill space, ...).
    #[error("{0}")]
    ResourceLimit(String),

    #[error("{0}")]
    Unsupported(String),

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error("storage error: {0}")]
    Storage(String),

    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// A broken invariant: a bug in the engine.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn violation(
        kind: ViolationKind,
        type_name: &str,
        property: &str,
        value: impl Into<String>,
        message: impl Into<String>,
    ) -> Error {
        Error::Validation(Box::new(Violation {
            kind,
            type_name: type_name.to_string(),
            property: property.to_string(),
            value: value.into(),
            message: message.into(),
            line: None,
        }))
    }

    /// Attach the NDJSON line a validation error came from.
    pub(crate) fn at_line(self, line: Option<usize>) -> Error {
        match (self, line) {
            (Error::Validation(mut v), Some(l)) if v.line.is_none() => {
                v.line = Some(l);
                Error::Validation(v)
            }
            (e, _) => e,
        }
    }

    /// True for errors a caller may resolve by running the transaction again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Conflict { .. } | Error::LockTimeout { .. })
    }
}

impl From<lance::Error> for Error {
    fn from(e: lance::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<object_store::Error> for Error {
    fn from(e: object_store::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<arrow_schema::ArrowError> for Error {
    fn from(e: arrow_schema::ArrowError) -> Self {
        Error::Internal(format!("arrow: {e}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Storage(format!("malformed metadata: {e}"))
    }
}
