//! Named crash windows for tests. Without the `failpoints` feature every
//! call compiles to nothing. Call sites use the constants in [`names`], never
//! string literals, so a test cannot aim at a window that does not exist.

use crate::error::Result;

pub mod names {
    /// After every table of a commit has been written to Lance, before the
    /// manifest is published. A crash here must leave the commit invisible
    /// and the next commit must roll the tables back.
    pub const COMMIT_BEFORE_PUBLISH: &str = "commit.before_publish";
    /// After the first table of a commit has been written, before the rest.
    pub const COMMIT_BETWEEN_TABLES: &str = "commit.between_tables";
    /// After a chunk of an NDJSON load was staged by column, before it is
    /// kept: an error here makes the load take the chunk back and stage
    /// its lines one by one.
    pub const LOAD_CHUNK_STAGED: &str = "load.chunk_staged";
    /// Where a load takes a chunk back to stage its lines one by one: a
    /// chunk of well-formed lines never gets here.
    pub const LOAD_CHUNK_RETRIED: &str = "load.chunk_retried";
    /// After a branch's first manifest, before its ref: the branch must not exist.
    pub const BRANCH_CREATE_BEFORE_REF: &str = "branch_create.before_ref";
}

/// Returns an error when a test configured the failpoint to `return`.
#[allow(unused_variables)]
pub(crate) fn hit(name: &str) -> Result<()> {
    #[cfg(feature = "failpoints")]
    {
        fail::fail_point!(name, |_| Err(crate::error::Error::Internal(format!(
            "failpoint {name} fired"
        ))));
    }
    Ok(())
}
