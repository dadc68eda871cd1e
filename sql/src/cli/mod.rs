//! The `omnigraph` command: admin verbs over the engine, for graphs kept
//! without a PostgreSQL server (a data engineer's laptop, a CI job).
//!
//! Each verb runs the engine operation the SQL function of the same name
//! runs in the extension (`init` = `omnigraph_create_graph`, `load` =
//! `omnigraph_load` committed at once, `merge` = `omnigraph_branch_merge`,
//! ...) and prints the same columns ([`output`]). Long operations show a
//! spinner on a terminal and nothing when stderr is not one. Errors print
//! as `omnigraph: error: ...` with a hint naming the verb that helps, and
//! exit with status 1; usage errors exit with 2, a merge stopped by
//! conflicts with 3.

mod args;
pub mod output;
mod shell;

use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use omnigraph_engine::{
    Error as EngineError, Graph, GraphOptions, LoadMode, MergeStatus, OnConflict, ReadRef, Side,
};

pub use args::parse_duration;
use args::{BranchAction, Cli, Global, Verb};
use output::{Cell, Table};

/// Stack of the command's threads.
const STACK_BYTES: usize = 256 << 20;

/// Exit status of a merge that stopped on conflicts.
pub const EXIT_CONFLICTS: u8 = 3;

/// Why a verb failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Query(#[from] crate::query::QueryError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Serve(#[from] crate::server::ServeError),
}

impl CliError {
    /// What to do about it, naming the verb that helps.
    fn hint(&self, uri: &str) -> Option<String> {
        Some(match self {
            CliError::Engine(e) | CliError::Query(crate::query::QueryError::Engine(e)) => {
                return engine_hint(e, uri);
            }
            CliError::Query(_) => return None,
            CliError::Read { .. } => "check the path and its permissions".into(),
            CliError::Runtime(_) | CliError::Usage(_) => return None,
            CliError::Serve(e) => return e.hint(),
        })
    }
}

/// What to do about an engine error, naming the verb that helps.
fn engine_hint(e: &EngineError, uri: &str) -> Option<String> {
    Some(match e {
        EngineError::GraphNotFound { .. } => {
            "create one with `omnigraph init URI --schema FILE`, or check the path".into()
        }
        EngineError::BranchNotFound { .. } => {
            format!("`omnigraph branch list {uri}` lists the branches")
        }
        EngineError::CommitNotFound { .. } | EngineError::VersionReclaimed { .. } => {
            format!("`omnigraph log {uri}` lists the commits you can read")
        }
        EngineError::LockTimeout { .. } => {
            "another writer holds the branch: retry, or raise --lock-timeout".into()
        }
        EngineError::Conflict { .. } => "run the command again".into(),
        _ => return None,
    })
}

/// What a verb printed and how it ended.
struct Outcome {
    table: Option<Table>,
    /// Lines for stderr (what the extension says with a NOTICE).
    notes: Vec<String>,
    code: u8,
}

impl Outcome {
    fn table(table: Table) -> Outcome {
        Outcome {
            table: Some(table),
            notes: Vec::new(),
            code: 0,
        }
    }
}

/// Run the command line `args` (the program name first).
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let mut cli = cli;
    let uri = {
        let uri = cli.verb.uri_mut();
        *uri = absolute(uri);
        uri.clone()
    };
    let format = cli.global.format;
    // Planning recurses over expressions as deep as a query nests them
    // (a WHERE of thousands of ORs): run on threads with room for it.
    let result = std::thread::Builder::new()
        .name("omnigraph".into())
        .stack_size(STACK_BYTES)
        .spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_stack_size(STACK_BYTES)
                .enable_all()
                .build()
                .map_err(CliError::Runtime)
                .and_then(|rt| rt.block_on(run(cli)))
        })
        .map_err(CliError::Runtime)
        .and_then(|t| {
            t.join().unwrap_or_else(|_| {
                Err(CliError::Runtime(std::io::Error::other(
                    "the command panicked",
                )))
            })
        });
    match result {
        Ok(out) => {
            let mut stderr = std::io::stderr().lock();
            for n in &out.notes {
                let _ = writeln!(stderr, "omnigraph: {n}");
            }
            if let Some(t) = out.table {
                let mut stdout = std::io::stdout().lock();
                // A closed pipe (`| head`) is not an error of ours.
                let _ = stdout.write_all(t.render(format).as_bytes());
            }
            ExitCode::from(out.code)
        }
        Err(e) => {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "omnigraph: error: {e}");
            if let Some(h) = e.hint(&uri) {
                let _ = writeln!(stderr, "hint: {h}");
            }
            ExitCode::from(1)
        }
    }
}

impl Verb {
    /// The graph location every verb takes.
    fn uri_mut(&mut self) -> &mut String {
        match self {
            Verb::Init { uri, .. }
            | Verb::Load { uri, .. }
            | Verb::Log { uri, .. }
            | Verb::Diff { uri, .. }
            | Verb::Merge { uri, .. }
            | Verb::Optimize { uri, .. }
            | Verb::Cleanup { uri, .. }
            | Verb::Recover { uri, .. }
            | Verb::Sql { uri, .. }
            | Verb::Serve { uri, .. } => uri,
            Verb::Branch { action } => match action {
                BranchAction::Create { uri, .. }
                | BranchAction::List { uri }
                | BranchAction::Delete { uri, .. } => uri,
            },
        }
    }
}

/// A relative path is relative to the working directory (the engine takes
/// absolute paths and URIs only).
fn absolute(uri: &str) -> String {
    if uri.contains("://") || std::path::Path::new(uri).is_absolute() {
        return uri.to_string();
    }
    match std::env::current_dir() {
        Ok(dir) => dir.join(uri).to_string_lossy().into_owned(),
        Err(_) => uri.to_string(), // the engine's error says what is wrong
    }
}

fn actor(global: &Global) -> String {
    global
        .actor
        .clone()
        .or_else(|| std::env::var("OMNIGRAPH_ACTOR").ok())
        .or_else(|| std::env::var("USER").ok())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "omnigraph".to_string())
}

/// A file's text, or standard input's for `-`.
fn read_text(path: &std::path::Path) -> Result<String, CliError> {
    let err = |source| CliError::Read {
        path: path.display().to_string(),
        source,
    };
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(err)?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).map_err(err)
    }
}

/// A spinner on stderr while `what` runs, when stderr is a terminal.
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn start(what: String) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::new_spinner().with_message(what);
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress(Some(bar))
    }

    fn set(&self, what: String) {
        if let Some(b) = &self.0 {
            b.set_message(what);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

async fn open(uri: &str, global: &Global) -> Result<Graph, CliError> {
    let options = GraphOptions {
        lock_timeout: global.lock_timeout,
        ..GraphOptions::default()
    };
    Ok(Graph::open_with(uri, options).await?)
}

async fn run(cli: Cli) -> Result<Outcome, CliError> {
    let global = &cli.global;
    let actor = actor(global);
    match cli.verb {
        Verb::Init { uri, schema } => {
            let text = read_text(&schema)?;
            let g = Graph::create(&uri, &text, &actor).await?;
            let head = g.snapshot(&ReadRef::main()).await?.commit().id.clone();
            let mut t = Table::new(&["commit_id"]);
            t.push(vec![Cell::Text(head)]);
            Ok(Outcome::table(t))
        }
        Verb::Load {
            uri,
            file,
            branch,
            from,
            mode,
            message,
        } => {
            let mode: LoadMode = mode.parse()?;
            let text = read_text(&file)?;
            let g = open(&uri, global).await?;
            if let Some(from) = from {
                g.branch_create(&branch, &ReadRef::parse(&from)).await?;
            }
            let _p = Progress::start(format!("loading {} into {branch}", file.display()));
            let summary = g
                .load(
                    &branch,
                    &text,
                    mode,
                    &actor,
                    message.as_deref().unwrap_or(""),
                )
                .await?;
            let mut t = Table::new(&["commit_id", "type_name", "inserted", "updated", "deleted"]);
            for (type_name, s) in summary.tables {
                t.push(vec![
                    Cell::text(summary.commit.id.clone()),
                    Cell::Text(type_name),
                    Cell::count(s.inserted),
                    Cell::count(s.updated),
                    Cell::count(s.deleted),
                ]);
            }
            let mut out = Outcome::table(t);
            if summary.cascaded_edges > 0 {
                out.notes.push(format!(
                    "{} edge(s) deleted with the nodes they touched",
                    summary.cascaded_edges
                ));
            }
            Ok(out)
        }
        Verb::Branch { action } => branch(action, global).await,
        Verb::Log { uri, branch, limit } => {
            let g = open(&uri, global).await?;
            let mut t = Table::new(&[
                "commit_id",
                "parents",
                "branch",
                "actor",
                "message",
                "committed_at",
            ]);
            for c in g.log(&branch, limit.unwrap_or(usize::MAX)).await? {
                t.push(vec![
                    Cell::Text(c.id),
                    Cell::List(c.parents),
                    Cell::Text(c.branch),
                    Cell::Text(c.actor),
                    Cell::Text(c.message),
                    Cell::Time(c.committed_at_us),
                ]);
            }
            Ok(Outcome::table(t))
        }
        Verb::Diff { uri, from, to } => {
            let g = open(&uri, global).await?;
            let a = Side::new(
                from.clone(),
                g.snapshot(&ReadRef::parse(&from)).await?,
                None,
            );
            let b = Side::new(to.clone(), g.snapshot(&ReadRef::parse(&to)).await?, None);
            let _p = Progress::start(format!("comparing {from} and {to}"));
            let diff = g.diff(&a, &b).await?;
            let mut t = Table::new(&["type_name", "id", "change", "properties", "before", "after"]);
            for c in diff.changes {
                t.push(vec![
                    Cell::Text(c.type_name),
                    Cell::Text(c.id),
                    Cell::text(c.change.as_str()),
                    Cell::List(c.properties),
                    Cell::opt_json(c.before),
                    Cell::opt_json(c.after),
                ]);
            }
            let mut out = Outcome::table(t);
            out.notes.extend(full_compare_note(&diff.full_compare));
            Ok(out)
        }
        Verb::Merge {
            uri,
            source,
            into,
            on_conflict,
            message,
            conflicts,
            delete_branch,
        } => {
            let policy: OnConflict = on_conflict.parse()?;
            let g = open(&uri, global).await?;
            if conflicts {
                return merge_conflicts(&g, &source, &into).await;
            }
            let _p = Progress::start(format!("merging {source} into {into}"));
            let r = g
                .merge(&source, &into, policy, message.as_deref(), &actor)
                .await?;
            let mut t = Table::new(&[
                "status",
                "commit_id",
                "inserted",
                "updated",
                "deleted",
                "conflicts",
            ]);
            t.push(vec![
                Cell::text(r.status.as_str()),
                Cell::opt_text(r.commit_id.clone()),
                Cell::count(r.inserted),
                Cell::count(r.updated),
                Cell::count(r.deleted),
                Cell::count(r.conflicts),
            ]);
            let mut out = Outcome::table(t);
            out.notes.extend(full_compare_note(&r.full_compare));
            if r.status == MergeStatus::Conflicts {
                out.notes.push(format!(
                    "{} conflict(s), nothing merged; `omnigraph merge {uri} {source} --into {into} --conflicts` \
                     lists them, --on-conflict ours or theirs resolves them by side",
                    r.conflicts
                ));
                out.code = EXIT_CONFLICTS;
            } else if delete_branch {
                // The merge is published; a failed delete only warns.
                match g.branch_delete(&source).await {
                    Ok(()) => out.notes.push(format!("deleted branch {source}")),
                    Err(e) => out.notes.push(format!(
                        "warning: merged, but branch {source} was not deleted: {e}"
                    )),
                }
            }
            Ok(out)
        }
        Verb::Optimize { uri, branch } => {
            let g = open(&uri, global).await?;
            let p = Progress::start(format!("optimizing {branch}"));
            let mut o = g.optimize_begin(&branch, &actor).await?;
            let mut t = Table::new(&[
                "type_name",
                "fragments_before",
                "fragments_after",
                "rows",
                "indexes",
            ]);
            for type_name in o.type_names() {
                p.set(format!("optimizing {branch}: {type_name}"));
                match o.optimize_table(&type_name).await {
                    Ok(r) => t.push(vec![
                        Cell::Text(r.type_name),
                        Cell::count(r.fragments_before),
                        Cell::count(r.fragments_after),
                        Cell::count(r.rows),
                        Cell::List(r.indexes),
                    ]),
                    Err(e) => {
                        o.abandon().await;
                        return Err(e.into());
                    }
                }
            }
            let commit = o.finish().await?;
            let mut out = Outcome::table(t);
            out.notes.push(match commit {
                Some(c) => format!("published as commit {}", c.id),
                None => "nothing to do: no commit".to_string(),
            });
            Ok(out)
        }
        Verb::Cleanup {
            uri,
            older_than,
            dry_run,
        } => {
            let g = open(&uri, global).await?;
            let _p = Progress::start("cleaning up".to_string());
            let rows = g.cleanup(older_than, dry_run, &actor).await?;
            let mut t = Table::new(&[
                "type_name",
                "lance_branch",
                "version",
                "action",
                "reason",
                "bytes",
            ]);
            for r in rows {
                t.push(vec![
                    Cell::opt_text(r.type_name),
                    Cell::opt_text(r.lance_branch),
                    r.version.map_or(Cell::Null, Cell::count),
                    Cell::text(r.action.as_str()),
                    Cell::Text(r.reason),
                    Cell::count(r.bytes),
                ]);
            }
            Ok(Outcome::table(t))
        }
        Verb::Recover {
            uri,
            branch,
            status,
            log,
        } => recover(&uri, &branch, status, log, global, &actor).await,
        Verb::Sql {
            uri,
            branch,
            commit,
            command,
            file,
            timing,
        } => {
            let target = match (commit, branch) {
                (Some(c), _) => ReadRef::Commit(c),
                (None, b) => ReadRef::Branch(b.unwrap_or_else(|| "main".to_string())),
            };
            let g = open(&uri, global).await?;
            let script = match file {
                Some(f) => Some(read_text(&f)?),
                None => None,
            };
            Box::pin(shell::sql(
                g,
                target,
                command,
                script,
                global.format,
                &actor,
                timing,
            ))
            .await
        }
        Verb::Serve {
            uri,
            listen,
            max_connections,
            user,
            password_file,
            session_memory,
        } => {
            let password = match password_file {
                Some(f) => Some(
                    read_text(&f)?
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                ),
                None => std::env::var("OMNIGRAPH_PASSWORD")
                    .ok()
                    .filter(|p| !p.is_empty()),
            };
            let config = crate::server::ServeConfig {
                listen,
                max_connections,
                user,
                password,
                session_memory: crate::query::parse_memory(&session_memory)
                    .map_err(CliError::Usage)?,
            };
            let g = open(&uri, global).await?;
            crate::server::serve(g, &uri, config, |addr, name| {
                eprintln!("omnigraph: serving {uri} on {addr}: connect to database \"{name}\" or \"{name}/BRANCH\"");
                eprintln!("omnigraph: listening on {addr}");
            })
            .await?;
            Ok(Outcome {
                table: None,
                notes: vec!["stopped".into()],
                code: 0,
            })
        }
    }
}

fn full_compare_note(types: &[String]) -> Option<String> {
    (!types.is_empty()).then(|| {
        format!(
            "compared {} whole, because part of their history was written before change records existed",
            types.join(", ")
        )
    })
}

async fn branch(action: BranchAction, global: &Global) -> Result<Outcome, CliError> {
    let mut t = Table::new(&["name", "head_commit", "created_at"]);
    match action {
        BranchAction::Create { uri, name, from } => {
            let g = open(&uri, global).await?;
            let b = g.branch_create(&name, &ReadRef::parse(&from)).await?;
            t.push(vec![
                Cell::Text(b.name),
                Cell::Text(b.head_commit),
                Cell::Time(b.created_at_us),
            ]);
        }
        BranchAction::List { uri } => {
            let g = open(&uri, global).await?;
            for b in g.branch_list().await? {
                t.push(vec![
                    Cell::Text(b.name),
                    Cell::Text(b.head_commit),
                    Cell::Time(b.created_at_us),
                ]);
            }
        }
        BranchAction::Delete { uri, name } => {
            let g = open(&uri, global).await?;
            g.branch_delete(&name).await?;
            return Ok(Outcome {
                table: None,
                notes: vec![format!("deleted branch {name}")],
                code: 0,
            });
        }
    }
    Ok(Outcome::table(t))
}

async fn merge_conflicts(g: &Graph, source: &str, target: &str) -> Result<Outcome, CliError> {
    let theirs = Side::new(source, g.snapshot(&ReadRef::parse(source)).await?, None);
    let ours = Side::new(target, g.snapshot(&ReadRef::parse(target)).await?, None);
    let plan = g.plan_merge(&theirs, &ours, OnConflict::Fail).await?;
    let mut t = Table::new(&[
        "type_name",
        "id",
        "kind",
        "property",
        "base",
        "ours",
        "theirs",
        "detail",
    ]);
    for c in plan.conflicts {
        t.push(vec![
            Cell::Text(c.type_name),
            Cell::Text(c.id),
            Cell::text(c.kind.as_str()),
            Cell::opt_text(c.property),
            Cell::opt_json(c.base),
            Cell::opt_json(c.ours),
            Cell::opt_json(c.theirs),
            Cell::Text(c.detail),
        ]);
    }
    Ok(Outcome::table(t))
}

async fn recover(
    uri: &str,
    branch: &str,
    status: bool,
    log: bool,
    global: &Global,
    actor: &str,
) -> Result<Outcome, CliError> {
    let g = open(uri, global).await?;
    if status {
        let mut t = Table::new(&[
            "branch",
            "type_name",
            "pinned_version",
            "latest_version",
            "state",
        ]);
        for r in g.recovery_status().await? {
            t.push(vec![
                Cell::Text(r.branch),
                Cell::Text(r.type_name),
                Cell::count(r.pinned_version),
                Cell::count(r.latest_version),
                Cell::text(r.state.as_str()),
            ]);
        }
        return Ok(Outcome::table(t));
    }
    if log {
        let mut t = Table::new(&[
            "recovered_at",
            "actor",
            "branch",
            "type_name",
            "from_version",
            "to_version",
        ]);
        for r in g.recovery_log().await? {
            t.push(vec![
                Cell::Time(r.recovered_at_us),
                Cell::Text(r.actor),
                Cell::Text(r.branch),
                Cell::Text(r.type_name),
                Cell::count(r.from_version),
                Cell::count(r.to_version),
            ]);
        }
        return Ok(Outcome::table(t));
    }
    let mut t = Table::new(&["type_name"]);
    for type_name in g.recover(branch, actor).await? {
        t.push(vec![Cell::Text(type_name)]);
    }
    Ok(Outcome::table(t))
}
