//! omnigraph-engine: a versioned property graph stored in Lance.
//!
//! ```text
//!  frontends (Postgres FDW, SQL shell)
//!        |  Graph / Snapshot / WriteTxn
//!  +-----v------------------------------------------------------+
//!  | graph     open/create, snapshots, branches, log, recover    |
//!  | txn       write transactions: staging, savepoints, own view |
//!  | commit    resolve, validate and publish a transaction       |
//!  | spill     large transactions' inserts in local Lance files  |
//!  | load      NDJSON -> one commit                              |
//!  | manifest  refs, per-branch manifest chain (put-if-absent)   |  ours (L2)
//!  | lock      per-branch cross-process write lock               |
//!  | schema    .pg language -> Catalog;  value: Arrow <-> values |
//!  +-----+------------------------------------------------------+
//!        |  storage: the only caller of Lance
//!  +-----v------------------------------------------------------+
//!  | Lance datasets (one per type), branches, versions, restore  |  Lance (L1)
//!  +------------------------------------------------------------+
//! ```
//! A commit becomes visible by publishing the next manifest of its branch
//! with put-if-absent; readers pin table versions from one manifest, so
//! they see all of a commit or none of it. See docs/dev/architecture.md.

#![forbid(unsafe_code)]

mod changes;
mod cleanup;
mod commit;
mod diff;
mod error;
pub mod failpoints;
mod graph;
mod history;
mod load;
mod lock;
mod maintenance;
mod manifest;
mod merge;
mod recovery;
pub mod schema;
mod spill;
mod storage;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod txn;
pub mod value;

pub use cleanup::{CleanupAction, CleanupRow};
pub use commit::{CommitSummary, PreparedCommit, TableStats};
pub use diff::{ChangeKind, Diff, RowChange, Side};
pub use error::{Error, Result, Violation, ViolationKind};
pub use graph::{BranchDeletion, BranchInfo, Graph, GraphOptions, NewBranch, ReadRef, Snapshot};
pub use load::{LoadMode, load_message};
pub use maintenance::{OPTIMIZE_MESSAGE, Optimizer, TableOptimize, wanted_indexes};
pub use manifest::{CommitInfo, MAIN, check_branch_name, is_commit_id, now_us};
pub use merge::{
    ConflictKind, MergeConflict, MergePlan, MergeResult, MergeStatus, OnConflict, merge_message,
};
pub use recovery::{RecoveryRecord, RecoveryState, TableRecovery};
pub use storage::{
    FilterShape, IndexKind, LOOKUP_ROWS, SCAN_IO_BUFFER_BYTES, TableEntry, TableIndex,
    canonical_uri, durable_write_params, index_lookup, scanner, take_range,
};
pub use txn::{
    COLUMNAR_MIN_ROWS, CancelCheck, DEFAULT_STAGING_MEMORY, INSERT_CHUNK_ROWS, MAX_MESSAGE_BYTES,
    NewRows, Savepoint, StagedView, WriteTxn,
};
pub use value::{Record, Value};

/// Re-exports for frontends that scan tables themselves.
pub mod deps {
    pub use arrow_array;
    pub use arrow_schema;
    pub use lance;
}
