//! Helpers shared by the engine test binaries.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use omnigraph_engine::{Error, Graph, LoadMode, ReadRef, Value};

pub const TEST_SCHEMA: &str = include_str!("../fixtures/test.pg");
pub const TEST_DATA: &str = include_str!("../fixtures/test.jsonl");
pub const SOCIAL_SCHEMA: &str = include_str!("../../../examples/social/schema.pg");
pub const SOCIAL_DATA: &str = include_str!("../../../examples/social/data.ndjson");

pub fn props(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

pub fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

pub async fn loaded_graph(dir: &Path) -> Graph {
    let uri = dir.join("g").to_string_lossy().into_owned();
    let g = Graph::create(&uri, TEST_SCHEMA, "tester").await.unwrap();
    g.load("main", TEST_DATA, LoadMode::Append, "tester", "seed")
        .await
        .unwrap();
    g
}

pub async fn ids(g: &Graph, at: &ReadRef, ty: &str) -> Vec<String> {
    g.snapshot(at)
        .await
        .unwrap()
        .read_all(ty)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect()
}

/// Row counts of every table, plus the head commit: "the graph is unchanged".
pub async fn fingerprint(g: &Graph, branch: &str) -> (String, Vec<u64>) {
    let snap = g.snapshot(&ReadRef::Branch(branch.into())).await.unwrap();
    let mut counts = Vec::new();
    for t in g.catalog().type_names() {
        counts.push(snap.count(t).await.unwrap());
    }
    (snap.commit().id.clone(), counts)
}

pub fn spawn_child(role: &str, uri: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_entry",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env("OMNIGRAPH_CHILD_ROLE", role)
        .env("OMNIGRAPH_CHILD_URI", uri)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Reads lines until one of the protocol words appears (the test harness
/// prints its own lines around ours).
pub fn read_word(out: &mut impl BufRead) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child exited early");
        let w = line.trim();
        if ["STAGED", "OK", "CONFLICT", "AT-FAILPOINT"].contains(&w) || w.starts_with("ERROR") {
            return w.to_string();
        }
    }
}

/// Two processes stage writes from the same base, then commit at once.
pub async fn two_processes(roles: [&str; 2]) -> (Graph, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let g = loaded_graph(dir.path()).await;
    let mut children: Vec<Child> = roles.iter().map(|r| spawn_child(r, g.uri())).collect();
    let mut outs: Vec<_> = children
        .iter_mut()
        .map(|c| BufReader::new(c.stdout.take().unwrap()))
        .collect();
    for o in &mut outs {
        assert_eq!(read_word(o), "STAGED");
    }
    for c in &mut children {
        writeln!(c.stdin.as_mut().unwrap(), "GO").unwrap();
    }
    let mut results: Vec<String> = outs.iter_mut().map(read_word).collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    results.sort();
    std::mem::forget(dir); // keep the graph for the caller's checks
    (g, results)
}

/// The child side of the multi-process tests, run by `child_process_entry`
/// in each test binary; does nothing when run directly.
pub async fn run_child() {
    let (Ok(role), Ok(uri)) = (
        std::env::var("OMNIGRAPH_CHILD_ROLE"),
        std::env::var("OMNIGRAPH_CHILD_URI"),
    ) else {
        return;
    };
    let g = Graph::open(&uri).await.unwrap();
    if role == "crash-before-publish" || role == "merge-crash-before-publish" {
        #[cfg(feature = "failpoints")]
        {
            let _scenario = fail::FailScenario::setup();
            fail::cfg_callback(
                omnigraph_engine::failpoints::names::COMMIT_BEFORE_PUBLISH,
                || {
                    println!("AT-FAILPOINT");
                    std::io::stdout().flush().ok();
                    // Wait here until the parent kills this process.
                    loop {
                        std::thread::park();
                    }
                },
            )
            .unwrap();
            if role.starts_with("merge") {
                let _ = g
                    .merge(
                        "feature",
                        "main",
                        omnigraph_engine::OnConflict::Fail,
                        None,
                        "child",
                    )
                    .await;
                return;
            }
            let _ = g
                .load(
                    "main",
                    r#"{"type": "Person", "data": {"name": "Ghost1"}}
{"type": "Company", "data": {"name": "GhostCo"}}"#,
                    LoadMode::Append,
                    "child",
                    "",
                )
                .await;
        }
        return;
    }
    let mut txn = g.begin("main", &role).await.unwrap();
    match role.as_str() {
        "append-a" => drop(
            txn.insert_node("Person", props(&[("name", s("ProcA"))]))
                .await
                .unwrap(),
        ),
        "append-b" => drop(
            txn.insert_node("Person", props(&[("name", s("ProcB"))]))
                .await
                .unwrap(),
        ),
        r if r.starts_with("update-") => {
            let age: i64 = r["update-".len()..].parse().unwrap();
            txn.update("Person", "Alice", props(&[("age", Value::Int(age))]))
                .await
                .unwrap();
        }
        other => panic!("unknown role {other}"),
    }
    println!("STAGED");
    std::io::stdout().flush().unwrap();
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    match txn.commit().await {
        Ok(_) => println!("OK"),
        Err(Error::Conflict { .. }) => println!("CONFLICT"),
        Err(e) => println!("ERROR {e}"),
    }
    std::io::stdout().flush().unwrap();
}

/// A transaction on main that inserts one Person, not yet committed.
pub async fn staged_person(g: &Graph, name: &str) -> omnigraph_engine::WriteTxn {
    let mut t = g.begin("main", "t").await.unwrap();
    t.insert_node("Person", props(&[("name", s(name))]))
        .await
        .unwrap();
    t
}

/// Commit one Person on main through a load.
pub async fn load_person(g: &Graph, name: &str) {
    let line = format!(r#"{{"type": "Person", "data": {{"name": "{name}"}}}}"#);
    g.load("main", &line, LoadMode::Append, "t", "")
        .await
        .unwrap();
}

/// Whether main's head has a Person with this id.
pub async fn has_person(g: &Graph, id: &str) -> bool {
    ids(g, &ReadRef::main(), "Person")
        .await
        .iter()
        .any(|p| p == id)
}

/// The files under `dir` (any depth) that `keep` accepts, by path.
pub fn files_under(
    dir: &std::path::Path,
    keep: &dyn Fn(&std::path::Path) -> bool,
) -> std::collections::BTreeSet<std::path::PathBuf> {
    let mut out = std::collections::BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(files_under(&path, keep));
        } else if keep(&path) {
            out.insert(path);
        }
    }
    out
}

/// The Lance data and deletion files under `dir` (any depth), by path.
pub fn table_files(dir: &std::path::Path) -> std::collections::BTreeSet<std::path::PathBuf> {
    files_under(dir, &|path| {
        path.parent()
            .is_some_and(|p| p.ends_with("data") || p.ends_with("_deletions"))
    })
}
