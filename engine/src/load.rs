//! NDJSON load: one line per node or edge, one load = one commit.
//!
//! ```text
//! {"type": "Person", "data": {"name": "Alice"}}
//! {"edge": "Knows", "from": "Alice", "to": "Bob", "data": {"since": "2020-01-01"}}
//! ```
//! Every error names its line; a failed load commits nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use serde_json::Value as Json;

use crate::commit::CommitSummary;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::schema::{Catalog, TypeKind};
use crate::txn::{INSERT_CHUNK_ROWS, NewRows, WriteTxn};
use crate::value::{Value, from_json, unknown_type};

/// How a load treats rows that already exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// Strict insert: an id that exists is an error.
    Append,
    /// Upsert by id: existing rows are replaced, absent ones kept.
    Merge,
    /// Replace the whole content of every table the file names.
    Overwrite,
}

impl FromStr for LoadMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<LoadMode> {
        match s.to_ascii_lowercase().as_str() {
            "append" => Ok(LoadMode::Append),
            "merge" => Ok(LoadMode::Merge),
            "overwrite" => Ok(LoadMode::Overwrite),
            _ => Err(Error::InvalidArgument(format!(
                "unknown load mode '{s}'; use append, merge or overwrite"
            ))),
        }
    }
}

/// Longest accepted line, as in the reference engine.
const MAX_LINE_BYTES: usize = 32 << 20;

/// Lines staged between two yields to the runtime, so a frontend waiting on
/// a long load can answer a cancel request.
const YIELD_EVERY_LINES: usize = 1024;

/// One well-formed NDJSON line, its properties coerced to declared types.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LoadLine {
    pub type_name: String,
    pub kind: TypeKind,
    pub props: BTreeMap<String, Value>,
    pub explicit_id: Option<String>,
    /// `(from, to)` node ids of an edge line.
    pub endpoints: Option<(String, String)>,
}

/// Parse line `line` (1-based) of an NDJSON load against `catalog`; `None`
/// for a blank line. Pure: touches no storage, so any input is safe to try.
pub(crate) fn parse_line(catalog: &Catalog, line: usize, raw: &str) -> Result<Option<LoadLine>> {
    let text = raw.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let err = |message: String| Error::Load { line, message };
    if text.len() > MAX_LINE_BYTES {
        return Err(err(format!("line is longer than {MAX_LINE_BYTES} bytes")));
    }
    // serde_json refuses nesting deeper than 128 levels with an error, so
    // no line can exhaust the stack.
    let json: Json = serde_json::from_str(text).map_err(|e| err(format!("malformed JSON: {e}")))?;
    let Json::Object(obj) = json else {
        return Err(err("each line must be a JSON object".into()));
    };
    for k in obj.keys() {
        if !matches!(k.as_str(), "type" | "edge" | "from" | "to" | "data") {
            return Err(err(format!(
                "unexpected key '{k}'; a line has type/data or edge/from/to/data"
            )));
        }
    }
    let empty = serde_json::Map::new();
    let data = match obj.get("data") {
        None | Some(Json::Null) => &empty,
        Some(Json::Object(d)) => d,
        Some(_) => return Err(err("'data' must be an object".into())),
    };
    let (type_name, kind) = match (obj.get("type"), obj.get("edge")) {
        (Some(Json::String(t)), None) => {
            let kind = catalog
                .kind_of(t)
                .ok_or_else(|| err(unknown_type(catalog, t).to_string()))?;
            if kind != TypeKind::Node {
                return Err(err(format!(
                    "'{t}' is an edge type; write it as {{\"edge\": \"{t}\", \"from\": ..., \"to\": ...}}"
                )));
            }
            (t.clone(), kind)
        }
        (None, Some(Json::String(e))) => {
            let edge = catalog
                .edge_ignore_case(e)
                .ok_or_else(|| err(unknown_type(catalog, e).to_string()))?;
            (edge.name.clone(), TypeKind::Edge)
        }
        (Some(_), Some(_)) => {
            return Err(err("a line has either 'type' or 'edge', not both".into()));
        }
        _ => {
            return Err(err(
                "a line needs a string 'type' (node) or 'edge' (edge)".into()
            ));
        }
    };
    let explicit_id = match data.get("id") {
        None => None,
        Some(Json::String(s)) => Some(s.clone()),
        Some(_) => return Err(err("data.id must be a string".into())),
    };
    let props = json_props(catalog, &type_name, data).map_err(|e| e.at_line(Some(line)))?;
    let endpoints = match kind {
        TypeKind::Node => {
            if obj.contains_key("from") || obj.contains_key("to") {
                return Err(err("'from' and 'to' belong to edge lines".into()));
            }
            None
        }
        TypeKind::Edge => {
            let end = |k: &str| match obj.get(k) {
                Some(Json::String(s)) => Ok(s.clone()),
                _ => Err(err(format!("edge line needs a string '{k}' (a node id)"))),
            };
            let (from, to) = (end("from")?, end("to")?);
            if data.contains_key("src") || data.contains_key("dst") {
                return Err(err(
                    "edge endpoints go in 'from' and 'to', not in data".into()
                ));
            }
            Some((from, to))
        }
    };
    Ok(Some(LoadLine {
        type_name,
        kind,
        props,
        explicit_id,
        endpoints,
    }))
}

fn json_props(
    catalog: &Catalog,
    type_name: &str,
    data: &serde_json::Map<String, Json>,
) -> Result<BTreeMap<String, Value>> {
    let declared = catalog.properties(type_name).unwrap_or_default();
    let mut out = BTreeMap::new();
    for (k, v) in data {
        if k == "id" {
            continue;
        }
        match declared.iter().find(|p| &p.name == k) {
            Some(p) => {
                out.insert(k.clone(), from_json(type_name, p, v)?);
            }
            None => {
                let known: Vec<&str> = declared.iter().map(|p| p.name.as_str()).collect();
                return Err(Error::violation(
                    crate::error::ViolationKind::UnknownProperty,
                    type_name,
                    k,
                    v.to_string(),
                    format!(
                        "{type_name} has no property '{k}' (properties: {})",
                        known.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(out)
}

impl WriteTxn {
    /// Stage NDJSON rows into this transaction; returns how many rows were
    /// staged. `Overwrite` replaces each named table with the rows this
    /// transaction stages for it. On an error the transaction may hold part
    /// of the input: roll back to a savepoint or drop the transaction.
    ///
    /// Rows are staged by column: runs of lines of one type,
    /// [`INSERT_CHUNK_ROWS`] at a time, go through
    /// [`WriteTxn::insert_rows`] with their line numbers, which a spilled
    /// row keeps for the errors the commit finds. A chunk that fails is
    /// taken back and staged row by row, so its error names its line. A
    /// `Merge` load is staged row by row (an upsert merges with what it
    /// finds).
    pub async fn load_ndjson(&mut self, ndjson: &str, mode: LoadMode) -> Result<u64> {
        let upsert = mode == LoadMode::Merge;
        let mut overwritten = BTreeSet::new();
        let mut chunk: Option<Chunk<'_>> = None;
        let mut rows = 0u64;
        for (idx, raw) in ndjson.lines().enumerate() {
            if idx % YIELD_EVERY_LINES == YIELD_EVERY_LINES - 1 {
                tokio::task::yield_now().await;
            }
            let line = idx + 1;
            let Some(l) = parse_line(self.catalog(), line, raw)? else {
                continue;
            };
            rows += 1;
            // A chunk of another type is staged before this type is
            // overwritten.
            if chunk.as_ref().is_some_and(|c| c.type_name != l.type_name)
                && let Some(c) = chunk.take()
            {
                self.load_chunk(c, mode).await?;
            }
            if mode == LoadMode::Overwrite && overwritten.insert(l.type_name.clone()) {
                self.overwrite(&l.type_name)?;
            }
            if upsert {
                self.load_line(l, line, upsert).await?;
                continue;
            }
            let c = chunk.get_or_insert_with(|| Chunk::new(&l));
            c.push(l, line, raw);
            if c.len() >= INSERT_CHUNK_ROWS
                && let Some(c) = chunk.take()
            {
                self.load_chunk(c, mode).await?;
            }
        }
        if let Some(c) = chunk.take() {
            self.load_chunk(c, mode).await?;
        }
        if rows == 0 {
            return Err(Error::InvalidArgument(
                "the NDJSON input holds no rows".into(),
            ));
        }
        Ok(rows)
    }

    /// Stage one parsed line.
    async fn load_line(&mut self, l: LoadLine, line: usize, upsert: bool) -> Result<()> {
        match l.endpoints {
            None => {
                self.add_node(&l.type_name, l.props, l.explicit_id, upsert, Some(line))
                    .await?;
            }
            Some((from, to)) => {
                self.add_edge(
                    &l.type_name,
                    &from,
                    &to,
                    l.props,
                    l.explicit_id,
                    upsert,
                    Some(line),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Stage a chunk of lines by column; if that fails a check, take it
    /// back and stage its lines one by one, whose error names its line.
    async fn load_chunk(&mut self, chunk: Chunk<'_>, mode: LoadMode) -> Result<()> {
        let Chunk {
            type_name,
            rows,
            lines,
        } = chunk;
        let sp = self.savepoint();
        let staged = match self.insert_rows(&type_name, rows).await {
            Ok(_) => crate::failpoints::hit(crate::failpoints::names::LOAD_CHUNK_STAGED),
            Err(e) => Err(e),
        };
        let Err(e) = staged else {
            self.release(sp);
            return Ok(());
        };
        self.rollback_to(sp).await?;
        // A cancel, a full spill or a failed read or write would only come
        // again line by line.
        if matches!(
            e,
            Error::Cancelled | Error::ResourceLimit(_) | Error::Io(_) | Error::Storage(_)
        ) {
            return Err(e);
        }
        crate::failpoints::hit(crate::failpoints::names::LOAD_CHUNK_RETRIED)?;
        for (line, raw) in lines {
            if let Some(l) = parse_line(self.catalog(), line, raw)? {
                self.load_line(l, line, mode == LoadMode::Merge).await?;
            }
        }
        Ok(())
    }
}

/// Consecutive lines of one type, as columns for [`WriteTxn::insert_rows`],
/// with their text and line numbers for staging them one by one.
struct Chunk<'a> {
    type_name: String,
    rows: NewRows,
    lines: Vec<(usize, &'a str)>,
}

impl<'a> Chunk<'a> {
    fn new(first: &LoadLine) -> Chunk<'a> {
        Chunk {
            type_name: first.type_name.clone(),
            rows: NewRows::default(),
            lines: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.lines.len()
    }

    /// Add a parsed line: a property it lacks is NULL in its row, as an
    /// absent property is for a row staged alone.
    fn push(&mut self, l: LoadLine, line: usize, raw: &'a str) {
        let n = self.lines.len();
        self.rows.ids.push(l.explicit_id);
        if let Some(ends) = l.endpoints {
            self.rows.endpoints.push(ends);
        }
        for (name, value) in l.props {
            match self.rows.props.iter_mut().find(|(p, _)| *p == name) {
                Some((_, values)) => values.push(value),
                None => {
                    let mut values = vec![Value::Null; n];
                    values.push(value);
                    self.rows.props.push((name, values));
                }
            }
        }
        for (_, values) in self.rows.props.iter_mut() {
            if values.len() == n {
                values.push(Value::Null);
            }
        }
        self.rows.lines.push(line);
        self.lines.push((line, raw));
    }
}

impl Graph {
    /// Load NDJSON into a branch as one commit.
    pub async fn load(
        &self,
        branch: &str,
        ndjson: &str,
        mode: LoadMode,
        actor: &str,
        message: &str,
    ) -> Result<CommitSummary> {
        let mut txn = self.begin(branch, actor).await?;
        txn.set_message(if message.is_empty() {
            load_message(mode)
        } else {
            message.to_string()
        });
        txn.load_ndjson(ndjson, mode).await?;
        txn.commit()
            .await?
            .ok_or_else(|| Error::Internal("a non-empty load made no commit".into()))
    }
}

/// The commit message of a load that was given none.
pub fn load_message(mode: LoadMode) -> String {
    format!("load ({mode:?})").to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::parse_schema;
    use proptest::prelude::*;

    const SCHEMA: &str = r#"
node Person { name: String @key  age: I32?  score: F64?  born: Date?  seen: DateTime?
              tags: [String]?  v: Vector(3)?  blob: Blob?  big: U64?  ok: Bool?
              status: enum(active, in-active)? }
edge Knows: Person -> Person { since: Date? }
"#;

    /// JSON values at type edges, nested a few levels.
    fn json() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::Bool),
            any::<i64>().prop_map(Json::from),
            any::<u64>().prop_map(Json::from),
            any::<f64>().prop_map(Json::from),
            prop::sample::select(vec![
                "",
                "Alice",
                "2020-02-30",
                "1969-12-31",
                "+275760-09-13",
                "-000001-01-01",
                "2024-01-01T00:00:00Z",
                "2024-01-01T25:00:00",
                "infinity",
                "NaN",
                "\u{0}",
                "aGVsbG8=",
                "not base64!",
                "active",
                "in-active",
                "99999999999999999999999",
            ])
            .prop_map(|s| Json::String(s.to_string())),
            "\\PC{0,12}".prop_map(Json::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
                prop::collection::btree_map("[a-z]{1,4}", inner, 0..3)
                    .prop_map(|m| Json::Object(m.into_iter().collect())),
            ]
        })
    }

    fn key() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "type", "edge", "from", "to", "data", "id", "name", "age", "score", "born", "seen",
            "tags", "v", "blob", "big", "ok", "status", "since", "src", "dst", "extra",
        ])
    }

    fn data() -> impl Strategy<Value = Json> {
        prop::collection::btree_map(key(), json(), 0..6)
            .prop_map(|m| Json::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
    }

    fn line() -> impl Strategy<Value = String> {
        let type_value = prop_oneof![
            prop::sample::select(vec!["Person", "Knows", "knows", "Nope", ""])
                .prop_map(|s| Json::String(s.to_string())),
            json(),
        ];
        prop_oneof![
            // Well-shaped lines with arbitrary values.
            (
                type_value,
                data(),
                prop::collection::btree_map(key(), json(), 0..3)
            )
                .prop_map(|(t, d, extra)| {
                    let mut o: serde_json::Map<String, Json> =
                        extra.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                    o.insert("type".into(), t);
                    o.insert("data".into(), d);
                    Json::Object(o).to_string()
                }),
            (data(), json(), json()).prop_map(|(d, f, t)| {
                serde_json::json!({"edge": "Knows", "from": f, "to": t, "data": d}).to_string()
            }),
            // Anything at all.
            "\\PC{0,60}",
        ]
    }

    fn check(catalog: &Catalog, text: &str) {
        match parse_line(catalog, 7, text) {
            Ok(None) => assert!(text.trim().is_empty()),
            Ok(Some(l)) => {
                let declared = catalog.properties(&l.type_name).unwrap();
                for (k, v) in l.props {
                    let prop = declared.iter().find(|p| p.name == k).unwrap();
                    // Staging coerces every value again; that must not panic either.
                    let _ = crate::value::coerce(&l.type_name, prop, v);
                }
                assert_eq!(l.endpoints.is_some(), l.kind == TypeKind::Edge);
            }
            Err(Error::Load { line, .. }) => assert_eq!(line, 7),
            Err(Error::Validation(v)) => assert_eq!(v.line, Some(7)),
            Err(e) => panic!("unexpected error kind for {text:?}: {e:?}"),
        }
    }

    proptest! {
        #![proptest_config(crate::testing::fuzz_config())]

        #[test]
        fn any_line_parses_or_names_its_line(text in line()) {
            let catalog = parse_schema(SCHEMA).unwrap();
            check(&catalog, &text);
        }
    }

    #[test]
    fn deep_json_is_an_error_not_a_crash() {
        let catalog = parse_schema(SCHEMA).unwrap();
        let deep = format!(
            "{{\"type\": \"Person\", \"data\": {{\"name\": {}1{}}}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let e = parse_line(&catalog, 3, &deep).unwrap_err();
        assert!(matches!(e, Error::Load { line: 3, .. }), "{e:?}");
        assert!(e.to_string().contains("recursion limit"), "{e}");
    }
}
