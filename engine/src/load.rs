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
use crate::schema::TypeKind;
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
            format!("load ({mode:?})").to_lowercase()
        } else {
            message.to_string()
        });
        let upsert = mode == LoadMode::Merge;
        let mut overwritten = BTreeSet::new();
        for (idx, raw) in ndjson.lines().enumerate() {
            let line = idx + 1;
            let text = raw.trim();
            if text.is_empty() {
                continue;
            }
            let err = |message: String| Error::Load { line, message };
            if text.len() > MAX_LINE_BYTES {
                return Err(err(format!("line is longer than {MAX_LINE_BYTES} bytes")));
            }
            let json: Json =
                serde_json::from_str(text).map_err(|e| err(format!("malformed JSON: {e}")))?;
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
            let data = match obj.get("data") {
                None | Some(Json::Null) => serde_json::Map::new(),
                Some(Json::Object(d)) => d.clone(),
                Some(_) => return Err(err("'data' must be an object".into())),
            };
            let (type_name, kind) = match (obj.get("type"), obj.get("edge")) {
                (Some(Json::String(t)), None) => {
                    let kind = self
                        .catalog()
                        .kind_of(t)
                        .ok_or_else(|| err(unknown_type(self.catalog(), t).to_string()))?;
                    if kind != TypeKind::Node {
                        return Err(err(format!(
                            "'{t}' is an edge type; write it as {{\"edge\": \"{t}\", \"from\": ..., \"to\": ...}}"
                        )));
                    }
                    (t.clone(), kind)
                }
                (None, Some(Json::String(e))) => {
                    let edge = self
                        .catalog()
                        .edge_ignore_case(e)
                        .ok_or_else(|| err(unknown_type(self.catalog(), e).to_string()))?;
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
            if mode == LoadMode::Overwrite && overwritten.insert(type_name.clone()) {
                txn.overwrite(&type_name)?;
            }
            let explicit_id = match data.get("id") {
                None => None,
                Some(Json::String(s)) => Some(s.clone()),
                Some(_) => return Err(err("data.id must be a string".into())),
            };
            let props = self
                .json_props(&type_name, &data)
                .map_err(|e| e.at_line(Some(line)))?;
            match kind {
                TypeKind::Node => {
                    if obj.contains_key("from") || obj.contains_key("to") {
                        return Err(err("'from' and 'to' belong to edge lines".into()));
                    }
                    txn.add_node(&type_name, props, explicit_id, upsert, Some(line))
                        .await?;
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
                    txn.add_edge(
                        &type_name,
                        &from,
                        &to,
                        props,
                        explicit_id,
                        upsert,
                        Some(line),
                    )
                    .await?;
                }
            }
        }
        if txn.is_empty() {
            return Err(Error::InvalidArgument(
                "the NDJSON input holds no rows".into(),
            ));
        }
        txn.commit()
            .await?
            .ok_or_else(|| Error::Internal("a non-empty load made no commit".into()))
    }

    fn json_props(
        &self,
        type_name: &str,
        data: &serde_json::Map<String, Json>,
    ) -> Result<BTreeMap<String, Value>> {
        let declared = self.catalog().properties(type_name).unwrap_or_default();
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
}
