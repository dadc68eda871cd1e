//! The command line: verbs, their arguments, and the `--older-than`
//! duration syntax.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use super::output::Format;

/// A versioned property graph stored in Lance: create, load, branch,
/// merge and maintain graphs without a PostgreSQL server.
///
/// Every verb takes the graph's location first (a directory, or a
/// `file://` URI). Each runs the engine operation the SQL function of the
/// same name runs in the Postgres extension, and prints the same columns.
#[derive(Debug, Parser)]
#[command(name = "omnigraph", version, propagate_version = true)]
#[command(
    after_help = "Exit status: 0 on success, 1 when the operation failed, \
    2 on a usage error, 3 when a merge stopped on conflicts."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub verb: Verb,
}

#[derive(Debug, Args)]
pub struct Global {
    /// How to print results.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Who the commit log and the recovery log name as the actor
    /// [default: $OMNIGRAPH_ACTOR, else $USER].
    #[arg(long, global = true, value_name = "NAME")]
    pub actor: Option<String>,
    /// How long a write waits for another writer of the same branch, e.g.
    /// `30s`, `2min`.
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub lock_timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Create an empty graph from a `.pg` schema file; prints its first commit.
    Init {
        uri: String,
        /// The schema (`node` and `edge` types), as the reference engine writes it.
        #[arg(long, value_name = "FILE")]
        schema: PathBuf,
    },
    /// Load NDJSON into a branch as one commit; prints what changed per type.
    Load {
        uri: String,
        /// NDJSON, one node or edge per line; `-` reads standard input.
        file: PathBuf,
        #[arg(long, default_value = "main")]
        branch: String,
        /// Create `--branch` from this branch or commit first.
        #[arg(long, value_name = "REF")]
        from: Option<String>,
        /// append: only new ids; merge: insert or update by id; overwrite:
        /// replace the tables the file has rows for.
        #[arg(long, default_value = "append", value_parser = ["append", "merge", "overwrite"])]
        mode: String,
        /// The commit message [default: `load (<mode>)`].
        #[arg(long, short)]
        message: Option<String>,
    },
    /// Create, list or delete branches.
    Branch {
        #[command(subcommand)]
        action: BranchAction,
    },
    /// The commits reachable from a branch head, newest first.
    Log {
        uri: String,
        #[arg(long, default_value = "main")]
        branch: String,
        /// At most this many commits.
        #[arg(long, short = 'n')]
        limit: Option<usize>,
    },
    /// The rows that differ between two refs (branch names or commit ids).
    Diff {
        uri: String,
        from: String,
        to: String,
    },
    /// Merge a branch into another (three-way, cell by cell) as one commit.
    Merge {
        uri: String,
        /// The branch to merge.
        source: String,
        /// The branch to merge into.
        #[arg(long, default_value = "main")]
        into: String,
        /// On conflicts: `fail` merges nothing (exit status 3); `ours` or
        /// `theirs` resolves every conflict by side.
        #[arg(long, default_value = "fail", value_parser = ["fail", "ours", "theirs"])]
        on_conflict: String,
        #[arg(long, short)]
        message: Option<String>,
        /// List the conflicts the merge would meet, and merge nothing.
        #[arg(long, conflicts_with_all = ["message", "delete_branch"])]
        conflicts: bool,
        /// Delete the source branch once merged.
        #[arg(long)]
        delete_branch: bool,
    },
    /// Compact a branch's tables and build the indexes its schema asks for,
    /// as one commit with no data change.
    Optimize {
        uri: String,
        #[arg(long, default_value = "main")]
        branch: String,
    },
    /// Remove table versions no branch head or recent commit needs, and
    /// what failed writes left; every version kept says why.
    Cleanup {
        uri: String,
        /// Keep versions of commits younger than this, e.g. `7d`, `12h`, `0`.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "7d")]
        older_than: Duration,
        /// List what would be removed and kept; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Roll back what interrupted commits left on a branch; or show the
    /// recovery state of every table, or the recovery log.
    Recover {
        uri: String,
        #[arg(long, default_value = "main", conflicts_with_all = ["status", "log"])]
        branch: String,
        /// Show clean / interrupted / in_progress per table of every branch.
        #[arg(long, conflicts_with = "log")]
        status: bool,
        /// Show every rollback recovery has made, oldest first.
        #[arg(long)]
        log: bool,
    },
    /// SQL over the graph's tables (reads, writes, transactions): an
    /// interactive shell, or the statements of `-c` / `-f`.
    Sql {
        uri: String,
        /// The branch to read [default: main].
        #[arg(long, conflicts_with = "commit")]
        branch: Option<String>,
        /// A commit to read instead of a branch head.
        #[arg(long, value_name = "ID")]
        commit: Option<String>,
        /// Run these statements and exit (repeatable; `;` separates
        /// statements within one).
        #[arg(short = 'c', long = "command", value_name = "SQL")]
        command: Vec<String>,
        /// Run the statements in this file (`-`: standard input) and exit.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
        /// After each query, print the time it took (planning, execution
        /// and collecting its rows; not printing them) to standard error.
        #[arg(long)]
        timing: bool,
    },
    /// Serve the graph over the PostgreSQL wire protocol: psql, drivers
    /// and BI tools connect to database `NAME` (the graph directory's name)
    /// or `NAME/BRANCH`.
    ///
    /// A password is required on any address but loopback: set
    /// $OMNIGRAPH_PASSWORD or --password-file, then clients authenticate
    /// with SCRAM-SHA-256. Runs until stopped (Ctrl-C, SIGTERM); open
    /// transactions then roll back.
    Serve {
        uri: String,
        /// Address and port to listen on (port 0 picks a free one; the
        /// address chosen is printed).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5434")]
        listen: String,
        /// Refuse connections beyond this many (53300, as Postgres).
        #[arg(long, value_name = "N", default_value_t = 64)]
        max_connections: usize,
        /// The user name clients log in as when a password is set
        /// [default: any].
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// A file whose first line is the password (else
        /// $OMNIGRAPH_PASSWORD).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Memory one session's query may use for sorts, joins and
        /// aggregates before it fails (53200), e.g. `512MB`.
        #[arg(long, value_name = "SIZE", default_value = "512MB")]
        session_memory: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum BranchAction {
    /// Create a branch from a branch head or a commit (no data is copied).
    Create {
        uri: String,
        name: String,
        #[arg(long, value_name = "REF", default_value = "main")]
        from: String,
    },
    /// Every branch, with its head commit.
    List { uri: String },
    /// Delete a branch (not `main`); its commits stay readable by id until cleanup.
    Delete { uri: String, name: String },
}

/// `0`, `90s`, `15min`, `12h`, `7d`, `2w`, `1 day`, `3 hours`: a whole
/// number and a unit (seconds when none is given).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("'{s}' is not a duration: give a whole number and a unit, such as 7d, 12h or 30s")
    })?;
    let per = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3_600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 604_800,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{s}': use s, min, h, d or w"
            ));
        }
    };
    n.checked_mul(per)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("'{s}' is too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let secs = |s: &str| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(secs("0"), Ok(0));
        assert_eq!(secs("90"), Ok(90));
        assert_eq!(secs("15min"), Ok(900));
        assert_eq!(secs("12h"), Ok(43_200));
        assert_eq!(secs("7d"), Ok(604_800));
        assert_eq!(secs("1 day"), Ok(86_400));
        assert_eq!(secs(" 2w "), Ok(1_209_600));
        assert!(
            parse_duration("-1d")
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(
            parse_duration("7 fortnights")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_duration("d").is_err());
        assert!(
            parse_duration("99999999999999999w")
                .unwrap_err()
                .contains("too long")
        );
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
