//! `omnigraph sql`: statements from `-c` / `-f` / a pipe, or an interactive
//! shell on a terminal (statements end with `;`; `\d`, `\d TABLE`,
//! `\timing`, `\q`).

use std::io::{IsTerminal, Write};

use omnigraph_engine::schema::TypeKind;
use omnigraph_engine::{Graph, ReadRef};

use super::output::{self, Cell, Format, Table};
use super::{CliError, Outcome};
use crate::query::{self, QuerySession};

pub(super) async fn sql(
    graph: Graph,
    target: ReadRef,
    commands: Vec<String>,
    script: Option<String>,
    format: Format,
    actor: &str,
    timing: bool,
) -> Result<Outcome, CliError> {
    let mut session = QuerySession::new(graph, target, actor).await?;
    let mut scripts = commands;
    scripts.extend(script);
    if scripts.is_empty() {
        if std::io::stdin().is_terminal() {
            return interactive(&mut session, format, timing).await;
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|source| {
            CliError::Read {
                path: "standard input".into(),
                source,
            }
        })?;
        scripts.push(text);
    }
    for text in scripts {
        for outcome in session.run(&text).await? {
            print(outcome, format, timing);
        }
    }
    Ok(finish(&session))
}

/// The end of a session: a transaction left open is rolled back (it is
/// dropped with the session), and says so.
fn finish(session: &QuerySession) -> Outcome {
    if session.in_transaction() {
        eprintln!("WARNING: the transaction was not committed: rolled back");
    }
    Outcome {
        table: None,
        notes: Vec::new(),
        code: 0,
    }
}

fn print(outcome: query::Outcome, format: Format, timing: bool) {
    match outcome {
        query::Outcome::Rows {
            schema,
            batches,
            elapsed,
        } => {
            let text = output::from_batches(&schema, &batches).render(format);
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            if timing {
                eprintln!("Time: {:.3} ms", elapsed.as_secs_f64() * 1000.0);
            }
        }
        // The shell never asks for a stream.
        query::Outcome::Stream { .. } => {}
        query::Outcome::Set(what) => eprintln!("omnigraph: {what}"),
        query::Outcome::Tag(tag) => eprintln!("{tag}"),
    }
}

/// The history file of the interactive shell.
fn history_file() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".omnigraph_history"))
}

async fn interactive(
    session: &mut QuerySession,
    format: Format,
    mut timing: bool,
) -> Result<Outcome, CliError> {
    use rustyline::error::ReadlineError;
    let terminal = |e: ReadlineError| CliError::Read {
        path: "the terminal".into(),
        source: std::io::Error::other(e),
    };
    let mut editor = rustyline::DefaultEditor::new().map_err(terminal)?;
    let history = history_file();
    if let Some(h) = &history {
        let _ = editor.load_history(h); // none yet is fine
    }
    eprintln!(
        "omnigraph sql: \\d lists the tables, \\d TABLE its columns, \\q quits; statements end with ;"
    );
    let mut buf = String::new();
    loop {
        let name = match session.target() {
            ReadRef::Branch(b) => b.clone(),
            ReadRef::Commit(c) => c.clone(),
        };
        let prompt = format!("{name}{} ", if buf.is_empty() { "=>" } else { "->" });
        let line = match editor.readline(&prompt) {
            Ok(line) => line,
            // Ctrl-C drops the statement being typed, as in psql.
            Err(ReadlineError::Interrupted) => {
                buf.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(terminal(e)),
        };
        let trimmed = line.trim();
        if buf.is_empty() && trimmed.starts_with('\\') {
            let _ = editor.add_history_entry(trimmed);
            if trimmed == "\\timing" {
                timing = !timing;
                eprintln!("Timing is {}.", if timing { "on" } else { "off" });
                continue;
            }
            match meta(session, trimmed, format).await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    eprintln!("ERROR: {e}");
                    continue;
                }
            }
        }
        if trimmed.is_empty() && buf.is_empty() {
            continue;
        }
        buf.push_str(&line);
        buf.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let _ = editor.add_history_entry(buf.trim_end());
        match session.run(&buf).await {
            Ok(outcomes) => outcomes.into_iter().for_each(|o| print(o, format, timing)),
            Err(e) => eprintln!("ERROR: {e}"),
        }
        buf.clear();
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(finish(session))
}

/// A backslash command; `Ok(false)` quits.
async fn meta(
    session: &QuerySession,
    command: &str,
    format: Format,
) -> Result<bool, query::QueryError> {
    let mut words = command.split_whitespace();
    let table = match (words.next(), words.next()) {
        (Some("\\q"), _) => return Ok(false),
        (Some("\\d"), None) => {
            let mut t = Table::new(&["name", "type", "kind"]);
            for info in session.tables() {
                t.push(vec![
                    Cell::Text(info.name),
                    Cell::Text(info.type_name),
                    Cell::text(match info.kind {
                        TypeKind::Node => "node",
                        TypeKind::Edge => "edge",
                    }),
                ]);
            }
            t
        }
        (Some("\\d"), Some(name)) => match session.describe(name).await? {
            Some(schema) => {
                let mut t = Table::new(&["column", "type", "nullable"]);
                for f in schema.fields() {
                    t.push(vec![
                        Cell::text(f.name().clone()),
                        Cell::Text(f.data_type().to_string()),
                        Cell::Bool(f.is_nullable()),
                    ]);
                }
                t
            }
            None => {
                return Err(query::QueryError::Unsupported(format!(
                    "no table named \"{name}\" (\\d lists them)"
                )));
            }
        },
        _ => {
            return Err(query::QueryError::Unsupported(format!(
                "unknown command {command}: \\d, \\d TABLE and \\q are known"
            )));
        }
    };
    let _ = std::io::stdout()
        .lock()
        .write_all(table.render(format).as_bytes());
    Ok(true)
}
