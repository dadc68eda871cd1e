//! The `omnigraph` command end to end: every verb against a real graph
//! directory, its output formats, its errors and exit statuses; the SQL
//! shell in batch mode.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn example(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/social")
        .join(file)
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn omnigraph(args: &[&str]) -> Run {
    omnigraph_with_stdin(args, None)
}

fn omnigraph_with_stdin(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_omnigraph"))
        .args(args)
        .env("OMNIGRAPH_ACTOR", "ci-bot")
        .env_remove("OMNIGRAPH_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the omnigraph binary runs");
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Run {
        code: status.code().expect("exited, not killed"),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

/// Run and expect success; the rows of `--format json` output.
fn rows(args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let r = omnigraph(&all);
    assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    match serde_json::from_str(&r.stdout) {
        Ok(serde_json::Value::Array(rows)) => rows,
        other => panic!("{args:?} printed {other:?}: {}", r.stdout),
    }
}

/// Alice as the example data has her, at another age (a load in merge
/// mode replaces whole rows).
fn alice(age: i64) -> String {
    format!(
        r#"{{"type": "Person", "data": {{"slug": "alice", "name": "Alice", "age": {age}, "email": "alice@example.com", "status": "active", "tags": ["rust", "postgres"], "joinedOn": "2021-03-04", "score": 9.5}}}}"#
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn every_verb_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("social").to_string_lossy().into_owned();
    let g = g.as_str();
    let schema = example("schema.pg").to_string_lossy().into_owned();
    let data = example("data.ndjson").to_string_lossy().into_owned();

    // init prints the first commit; load prints what changed per type.
    let init = rows(&["init", g, "--schema", &schema]);
    assert_eq!(init.len(), 1);
    let first = init[0]["commit_id"].as_str().unwrap().to_string();
    let load = rows(&["load", g, &data]);
    let per_type: Vec<(String, i64)> = load
        .iter()
        .map(|r| {
            (
                r["type_name"].as_str().unwrap().to_string(),
                r["inserted"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        per_type,
        [
            ("Company".to_string(), 2),
            ("Knows".to_string(), 3),
            ("Person".to_string(), 4),
            ("WorksAt".to_string(), 2)
        ]
    );
    let loaded = load[0]["commit_id"].as_str().unwrap().to_string();

    // The log names the actor and the parents, newest first; --limit.
    let log = rows(&["log", g]);
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["commit_id"], loaded.as_str());
    assert_eq!(log[0]["parents"], serde_json::json!([first]));
    assert_eq!(log[0]["actor"], "ci-bot");
    assert_eq!(log[0]["message"], "load (append)");
    assert_eq!(rows(&["log", g, "-n", "1"]).len(), 1);

    // A branch made by `load --from`, read from standard input.
    let r = omnigraph_with_stdin(
        &[
            "load",
            g,
            "-",
            "--branch",
            "feature",
            "--from",
            "main",
            "--mode",
            "merge",
            "-m",
            "older alice",
        ],
        Some(&alice(31)),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("| Person    |        0 |       1 |       0"),
        "{}",
        r.stdout
    );
    let branches = rows(&["branch", "list", g]);
    let names: Vec<&str> = branches
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["feature", "main"]);
    assert_eq!(
        rows(&["log", g, "--branch", "feature"])[0]["message"],
        "older alice"
    );

    // diff shows the update, cell by cell.
    let diff = rows(&["diff", g, "main", "feature"]);
    assert_eq!(diff.len(), 1, "{diff:?}");
    assert_eq!(diff[0]["type_name"], "Person");
    assert_eq!(diff[0]["id"], "alice");
    assert_eq!(diff[0]["change"], "update");
    assert_eq!(diff[0]["properties"], serde_json::json!(["age"]));
    assert_eq!(diff[0]["before"]["age"], 30);
    assert_eq!(diff[0]["after"]["age"], 31);
    // A commit id reads as a ref too.
    assert_eq!(rows(&["diff", g, &first, "main"]).len(), 11);

    // A conflicting change on main: merge stops with exit status 3.
    let newer = write(dir.path(), "newer.ndjson", &alice(40));
    rows(&["load", g, &newer, "--mode", "merge"]);
    let r = omnigraph(&["merge", g, "feature"]);
    assert_eq!(r.code, 3, "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("conflicts"), "{}", r.stdout);
    assert!(
        r.stderr.contains("1 conflict(s), nothing merged"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--conflicts"), "{}", r.stderr);
    let conflicts = rows(&["merge", g, "feature", "--conflicts"]);
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0]["id"], "alice");
    assert_eq!(conflicts[0]["property"], "age");
    assert_eq!(conflicts[0]["ours"], 40);
    assert_eq!(conflicts[0]["theirs"], 31);
    // Resolved by side, and the source deleted.
    let r = omnigraph(&[
        "merge",
        g,
        "feature",
        "--on-conflict",
        "theirs",
        "--delete-branch",
        "--format",
        "csv",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut lines = r.stdout.lines();
    assert_eq!(
        lines.next(),
        Some("status,commit_id,inserted,updated,deleted,conflicts")
    );
    assert!(lines.next().unwrap().starts_with("merged,"), "{}", r.stdout);
    assert!(r.stderr.contains("deleted branch feature"), "{}", r.stderr);
    assert_eq!(rows(&["branch", "list", g]).len(), 1);
    let merged = rows(&["log", g, "-n", "1"]);
    assert_eq!(merged[0]["parents"].as_array().unwrap().len(), 2);

    // branch create from a commit, and delete.
    let created = rows(&["branch", "create", g, "old", "--from", &first]);
    assert_eq!(created[0]["head_commit"], first.as_str());
    let r = omnigraph(&["branch", "delete", g, "old"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{}", r.stderr);

    // optimize: one row per type, indexes listed, one commit.
    let r = omnigraph(&["optimize", g, "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let opt: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(opt.len(), 4);
    let person_row = opt.iter().find(|r| r["type_name"] == "Person").unwrap();
    assert_eq!(person_row["rows"], 4);
    assert!(
        person_row["indexes"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("slug (btree)")),
        "{person_row}"
    );
    assert!(r.stderr.contains("published as commit"), "{}", r.stderr);
    assert_eq!(rows(&["log", g, "-n", "1"])[0]["message"], "optimize");

    // cleanup: a dry run lists, changes nothing; the real one removes.
    let files = |p: &str| {
        let mut n = 0;
        let mut stack = vec![PathBuf::from(p)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    n += 1;
                }
            }
        }
        n
    };
    let before = files(g);
    let dry = rows(&["cleanup", g, "--older-than", "0", "--dry-run"]);
    assert_eq!(files(g), before);
    assert!(dry.iter().any(|r| r["action"] == "remove"), "{dry:?}");
    assert!(
        dry.iter()
            .any(|r| r["action"] == "keep" && r["reason"] == "head of branch main"),
        "{dry:?}"
    );
    let done = rows(&["cleanup", g, "--older-than", "0"]);
    let strip = |rows: &[serde_json::Value]| -> Vec<serde_json::Value> {
        rows.iter()
            .map(|r| {
                let mut r = r.clone();
                r["bytes"] = serde_json::Value::Null;
                r
            })
            .collect()
    };
    assert_eq!(strip(&done), strip(&dry));
    assert!(files(g) < before);
    // An old commit was reclaimed: reading it fails with a hint.
    let r = omnigraph(&["diff", g, &first, "main"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("reclaimed by cleanup"), "{}", r.stderr);
    assert!(r.stderr.contains("hint: `omnigraph log"), "{}", r.stderr);

    // recover: nothing to do, every table clean, an empty log.
    assert!(rows(&["recover", g]).is_empty());
    let status = rows(&["recover", g, "--status"]);
    assert_eq!(status.len(), 4);
    assert!(status.iter().all(|r| r["state"] == "clean"), "{status:?}");
    assert!(rows(&["recover", g, "--log"]).is_empty());

    // The aligned table is what a terminal user sees.
    let r = omnigraph(&["branch", "list", g]);
    assert!(r.stdout.starts_with(" name |"), "{}", r.stdout);
    assert!(r.stdout.ends_with("(1 row)\n"), "{}", r.stdout);
}

#[test]
fn errors_say_what_to_fix_and_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g").to_string_lossy().into_owned();
    let g = g.as_str();
    let schema = example("schema.pg").to_string_lossy().into_owned();
    let fail = |args: &[&str], code: i32, needles: &[&str]| {
        let r = omnigraph(args);
        assert_eq!(r.code, code, "{args:?}: {} {}", r.stdout, r.stderr);
        for n in needles {
            assert!(r.stderr.contains(n), "{args:?}: {n:?} not in {}", r.stderr);
        }
        assert!(r.stdout.is_empty() || code == 2, "{args:?}: {}", r.stdout);
    };

    fail(
        &["log", g],
        1,
        &["no graph at", "hint: create one with `omnigraph init"],
    );
    fail(
        &["init", g, "--schema", "/nonexistent/schema.pg"],
        1,
        &["cannot read /nonexistent/schema.pg", "hint: check the path"],
    );
    let bad = write(
        dir.path(),
        "bad.pg",
        "node Person {\n  slug: Strin @key\n}\n",
    );
    fail(&["init", g, "--schema", &bad], 1, &["line 2"]);
    assert!(rows(&["init", g, "--schema", &schema]).len() == 1);
    fail(&["init", g, "--schema", &schema], 1, &["already exists"]);

    let ndjson = write(dir.path(), "d.ndjson", r#"{"type": "Robot", "data": {}}"#);
    fail(&["load", g, &ndjson], 1, &["line 1", "Robot"]);
    fail(
        &["log", g, "--branch", "nope"],
        1,
        &["branch 'nope' does not exist", "`omnigraph branch list"],
    );
    fail(&["branch", "delete", g, "main"], 1, &["cannot be deleted"]);
    fail(&["branch", "create", g, "main"], 1, &["already exists"]);
    fail(&["merge", g, "main"], 1, &["into itself"]);
    fail(
        &["diff", g, "main", "01ARZ3NDEKTSV4RRFFQ69G5FAV"],
        1,
        &["does not exist"],
    );
    // serve: refuses a public address without a password, a bad size, an
    // address it cannot use (tests/test_server.py runs it with clients).
    fail(
        &["serve", g, "--listen", "0.0.0.0:0"],
        1,
        &["without a password", "OMNIGRAPH_PASSWORD"],
    );
    fail(
        &["serve", g, "--session-memory", "1 parsec"],
        1,
        &["invalid unit"],
    );
    fail(
        &["serve", g, "--listen", "256.1.1.1:5433"],
        1,
        &["cannot listen on 256.1.1.1:5433", "--listen"],
    );

    // Usage errors: exit status 2, clap's message.
    fail(&["load", g], 2, &["FILE"]);
    fail(&["load", g, &ndjson, "--mode", "upsert"], 2, &["upsert"]);
    fail(
        &["cleanup", g, "--older-than", "7 fortnights"],
        2,
        &["unknown unit"],
    );
    fail(&["frobnicate"], 2, &["frobnicate"]);
    fail(
        &["recover", g, "--status", "--log"],
        2,
        &["cannot be used with"],
    );

    // --help works for every verb.
    for verb in [
        "init", "load", "branch", "log", "diff", "merge", "optimize", "cleanup", "recover", "sql",
        "serve",
    ] {
        let r = omnigraph(&[verb, "--help"]);
        assert_eq!(r.code, 0, "{verb}: {}", r.stderr);
        assert!(
            r.stdout.contains("Usage: omnigraph"),
            "{verb}: {}",
            r.stdout
        );
    }

    // Nothing above changed the graph.
    assert_eq!(rows(&["log", g]).len(), 1);

    // A relative path is relative to the working directory.
    let out = Command::new(env!("CARGO_BIN_EXE_omnigraph"))
        .args(["log", "g", "--format", "csv"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
}

#[test]
fn sql_reads_branches_and_commits_pushes_filters_writes_and_refuses_ddl() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g").to_string_lossy().into_owned();
    let g = g.as_str();
    let schema = example("schema.pg").to_string_lossy().into_owned();
    let data = example("data.ndjson").to_string_lossy().into_owned();
    rows(&["init", g, "--schema", &schema]);
    let loaded = rows(&["load", g, &data])[0]["commit_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = omnigraph_with_stdin(
        &[
            "load", g, "-", "--branch", "feature", "--from", "main", "--mode", "merge",
        ],
        Some(&alice(31)),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);

    // Tables and columns as IMPORT FOREIGN SCHEMA names them; NULLs, lists,
    // dates and timestamps as JSON.
    let people = rows(&[
        "sql",
        g,
        "-c",
        "SELECT id, age, tags, joined_on FROM person ORDER BY id",
    ]);
    assert_eq!(people.len(), 4);
    assert_eq!(
        people[0],
        serde_json::json!({"id": "alice", "age": 30, "tags": ["rust", "postgres"], "joined_on": "2021-03-04"})
    );
    assert_eq!(people[3]["age"], serde_json::Value::Null);
    let works = rows(&[
        "sql",
        g,
        "-c",
        "SELECT src, started_at FROM works_at ORDER BY src",
    ]);
    assert_eq!(works[0]["started_at"], "2021-03-04T09:00:00.000000Z");

    // Several statements, a join, a branch, a commit.
    let r = omnigraph(&[
        "sql",
        g,
        "--format",
        "csv",
        "-c",
        "SELECT count(*) AS n FROM knows; SELECT p.name FROM works_at w JOIN person p ON p.id = w.src ORDER BY 1",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "n\n3\nname\nAlice\nBob\n");
    let age = |args: &[&str]| {
        let mut all = vec!["sql", g];
        all.extend(args);
        all.extend(["-c", "SELECT age FROM person WHERE id = 'alice'"]);
        rows(&all)[0]["age"].clone()
    };
    assert_eq!(age(&[]), 30);
    assert_eq!(age(&["--branch", "feature"]), 31);
    assert_eq!(age(&["--commit", &loaded]), 30);
    let r = omnigraph(&[
        "sql",
        g,
        "--format",
        "csv",
        "-c",
        "SET omnigraph.branch = 'feature'",
        "-c",
        "SELECT age FROM person WHERE id = 'alice'",
    ]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "age\n31\n"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("reading branch feature"), "{}", r.stderr);

    // --timing: one line per query on stderr, the rows on stdout.
    let r = omnigraph(&[
        "sql",
        g,
        "--timing",
        "--format",
        "csv",
        "-c",
        "SELECT count(*) AS n FROM knows",
        "-c",
        "SELECT 1 AS one",
    ]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "n\n3\none\n1\n"),
        "{}",
        r.stderr
    );
    let times: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("Time: "))
        .collect();
    assert_eq!(times.len(), 2, "{}", r.stderr);
    assert!(times.iter().all(|t| t.ends_with(" ms")), "{times:?}");

    // A file, and standard input.
    let script = write(dir.path(), "q.sql", "SELECT count(*) AS n FROM person;\n");
    let r = omnigraph(&["sql", g, "-f", &script, "--format", "csv"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "n\n4\n"), "{}", r.stderr);
    let r = omnigraph_with_stdin(
        &["sql", g, "--format", "csv"],
        Some("SELECT count(*) AS n FROM company;"),
    );
    assert_eq!((r.code, r.stdout.as_str()), (0, "n\n2\n"), "{}", r.stderr);

    // What the FDW's rules push reaches Lance (graph names); the rest stays
    // in DataFusion.
    let plan = |sql: &str| {
        let r = omnigraph(&["sql", g, "-c", &format!("EXPLAIN {sql}")]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.stdout
    };
    let p = plan("SELECT name FROM person WHERE age > 26 AND joined_on IS NULL LIMIT 5");
    assert!(
        p.contains("OmnigraphScan: type=Person, branch=main, commit="),
        "{p}"
    );
    assert!(
        p.contains(", filter=age > 26 AND joinedOn IS NULL, columns=[name], limit=5"),
        "{p}"
    );
    // count(*) of a whole table comes from Lance's metadata: no scan.
    let p = plan("SELECT count(*) FROM person");
    assert!(p.contains("ProjectionExec: expr=[4 as count(*)]"), "{p}");
    assert!(!p.contains("OmnigraphScan"), "{p}");
    let p = plan("SELECT name FROM person WHERE age + 1 = 31");
    assert!(!p.contains(", filter="), "{p}");
    assert!(p.contains("columns=[name, age]"), "{p}");
    assert!(p.contains("FilterExec"), "{p}");
    assert_eq!(
        rows(&["sql", g, "-c", "SELECT name FROM person WHERE age + 1 = 31"]),
        [serde_json::json!({"name": "Alice"})]
    );

    // A filter of thousands of ORs plans and runs (no stack overflow).
    let ors: Vec<String> = (0..3000).map(|i| format!("age = {i}")).collect();
    let many = format!(
        "SELECT count(*) AS n FROM person WHERE {}",
        ors.join(" OR ")
    );
    assert_eq!(
        rows(&["sql", g, "-c", &many]),
        [serde_json::json!({"n": 3})]
    );

    // The extension's functions.
    let log = rows(&[
        "sql",
        g,
        "-c",
        "SELECT message FROM omnigraph_log('any', 'feature') LIMIT 1",
    ]);
    assert_eq!(log, [serde_json::json!({"message": "load (merge)"})]);

    // Errors name the construct, exit 1, and stop the script.
    let fail = |sql: &str, needle: &str| {
        let r = omnigraph(&["sql", g, "-c", sql]);
        assert_eq!(r.code, 1, "{sql}: {}", r.stdout);
        assert!(r.stderr.contains(needle), "{sql}: {}", r.stderr);
    };
    fail(
        "SELECT * FROM nope",
        "table 'datafusion.public.nope' not found",
    );
    fail("SELEC 1", "SELEC");
    fail(
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
        "CREATE EXTERNAL TABLE is not supported",
    );
    let copy_to = dir.path().join("out.csv");
    fail(
        &format!("COPY person TO '{}'", copy_to.display()),
        "COPY is not supported",
    );
    assert!(!copy_to.exists());
    fail("CREATE TABLE t (a int)", "is not supported");
    fail(
        "INSERT INTO person (name, slug, status) VALUES ('Bob', 'bob', 'active')",
        "bob",
    );
    fail(
        "SET omnigraph.branch = 'nope'",
        "branch 'nope' does not exist",
    );
    fail(
        "SET work_mem = '1GB'",
        "unrecognized configuration parameter \"work_mem\"",
    );
    fail("SELECT 1; SELECT * FROM nope; SELECT 2", "not found");

    // Writes: command tags on stderr, one commit per statement or per
    // transaction; a transaction left open is rolled back.
    let commits = || rows(&["log", g]).len();
    let before = commits();
    let r = omnigraph(&[
        "sql",
        g,
        "-c",
        "INSERT INTO person (slug, name, status) VALUES ('zed', 'Zed', 'active')",
        "-c",
        "BEGIN; UPDATE person SET age = 50 WHERE id = 'zed'; DELETE FROM knows WHERE src = 'bob'; COMMIT",
    ]);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{}", r.stderr);
    assert!(r.stderr.contains("INSERT 0 1 (commit "), "{}", r.stderr);
    assert!(
        r.stderr.contains("UPDATE 1\nDELETE 1\nCOMMIT (commit "),
        "{}",
        r.stderr
    );
    assert_eq!(commits(), before + 2);
    let r = omnigraph(&["sql", g, "-c", "BEGIN; DELETE FROM person"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("not committed: rolled back"),
        "{}",
        r.stderr
    );
    assert_eq!(commits(), before + 2);
    assert_eq!(
        rows(&["sql", g, "-c", "SELECT age FROM person WHERE id = 'zed'"]),
        [serde_json::json!({"age": 50})]
    );
    let r = omnigraph(&["sql", g, "--commit", &loaded, "-c", "DELETE FROM person"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("read-only"), "{}", r.stderr);

    let r = omnigraph(&["sql", g, "--branch", "nope", "-c", "SELECT 1"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("hint: `omnigraph branch list"),
        "{}",
        r.stderr
    );
}
