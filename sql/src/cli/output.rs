//! Result sets as the command prints them: an aligned table (as psql
//! prints one), CSV (RFC 4180, with a header) or JSON (an array of objects,
//! keys in column order). The same columns as the SQL function of the same
//! name returns.

use std::fmt::Write as _;

/// One value of a result row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Text(String),
    Int(i64),
    Bool(bool),
    /// Microseconds since the Unix epoch, printed as a `timestamptz` in UTC.
    Time(i64),
    /// A `text[]`.
    List(Vec<String>),
    Json(serde_json::Value),
}

impl Cell {
    pub fn text(s: impl Into<String>) -> Cell {
        Cell::Text(s.into())
    }

    pub fn opt_text(s: Option<impl Into<String>>) -> Cell {
        s.map_or(Cell::Null, |s| Cell::Text(s.into()))
    }

    /// A count, saturating at `i64::MAX` as the SQL functions do.
    pub fn count(n: impl TryInto<i64>) -> Cell {
        Cell::Int(n.try_into().unwrap_or(i64::MAX))
    }

    pub fn opt_json(v: Option<serde_json::Value>) -> Cell {
        v.map_or(Cell::Null, Cell::Json)
    }

    /// The value as Postgres would print it (`None` for NULL).
    fn display(&self) -> Option<String> {
        Some(match self {
            Cell::Null => return None,
            Cell::Text(s) => s.clone(),
            Cell::Int(i) => i.to_string(),
            Cell::Bool(b) => if *b { "t" } else { "f" }.to_string(),
            Cell::Time(us) => timestamp(*us),
            Cell::List(items) => pg_array(items),
            Cell::Json(v) => v.to_string(),
        })
    }

    fn json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Cell::Null => J::Null,
            Cell::Text(s) => J::String(s.clone()),
            Cell::Int(i) => J::from(*i),
            Cell::Bool(b) => J::Bool(*b),
            Cell::Time(us) => J::String(iso_timestamp(*us)),
            Cell::List(items) => J::Array(items.iter().cloned().map(J::String).collect()),
            Cell::Json(v) => v.clone(),
        }
    }

    fn right_aligned(&self) -> bool {
        matches!(self, Cell::Int(_))
    }
}

/// `2026-12-04 09:53:37.123456+00`, as Postgres prints a `timestamptz` in UTC.
fn timestamp(us: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(us) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string(),
        None => us.to_string(),
    }
}

/// RFC 3339 with microseconds, for JSON.
fn iso_timestamp(us: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(us) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => us.to_string(),
    }
}

/// A `text[]` literal: `{a,"b c"}`.
fn pg_array(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| {
            let plain = !s.is_empty()
                && !s.eq_ignore_ascii_case("null")
                && !s
                    .chars()
                    .any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_whitespace());
            if plain {
                s.clone()
            } else {
                format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
            }
        })
        .collect();
    format!("{{{}}}", quoted.join(","))
}

/// How results are printed (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// A result set.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(columns: &[&'static str]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Table => self.aligned(),
            Format::Csv => self.csv(),
            Format::Json => self.json(),
        }
    }

    fn aligned(&self) -> String {
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(|c| c.display().unwrap_or_default()).collect())
            .collect();
        let width = |i: usize| {
            cells
                .iter()
                .flat_map(|r| r[i].lines().map(|l| l.chars().count()))
                .chain([self.columns[i].chars().count()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.columns.len()).map(width).collect();
        let mut out = String::new();
        let header: Vec<String> = self
            .columns
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:^w$}"))
            .collect();
        let _ = writeln!(out, " {}", header.join(" | ").trim_end());
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
        let _ = writeln!(out, "{}", rule.join("+"));
        for (row, values) in self.rows.iter().zip(&cells) {
            let line: Vec<String> = row
                .iter()
                .zip(values)
                .zip(&widths)
                .map(|((cell, v), w)| {
                    // Multi-line values print their first line here (psql
                    // wraps them; the CSV and JSON formats keep them whole).
                    let v = v.lines().next().unwrap_or("");
                    if cell.right_aligned() {
                        format!("{v:>w$}")
                    } else {
                        format!("{v:<w$}")
                    }
                })
                .collect();
            let _ = writeln!(out, " {}", line.join(" | ").trim_end());
        }
        let n = self.rows.len();
        let _ = writeln!(out, "({n} row{})", if n == 1 { "" } else { "s" });
        out
    }

    fn csv(&self) -> String {
        let field = |s: &str| {
            if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let mut out = String::new();
        let header: Vec<String> = self.columns.iter().map(|c| field(c)).collect();
        let _ = writeln!(out, "{}", header.join(","));
        for row in &self.rows {
            let line: Vec<String> = row
                .iter()
                .map(|c| c.display().map(|s| field(&s)).unwrap_or_default())
                .collect();
            let _ = writeln!(out, "{}", line.join(","));
        }
        out
    }

    fn json(&self) -> String {
        let mut out = String::from("[");
        for (i, row) in self.rows.iter().enumerate() {
            out.push_str(if i == 0 { "\n  {" } else { ",\n  {" });
            for (j, (col, cell)) in self.columns.iter().zip(row).enumerate() {
                if j > 0 {
                    out.push_str(", ");
                }
                let key = serde_json::Value::String(col.to_string());
                let _ = write!(out, "{key}: {}", cell.json());
            }
            out.push('}');
        }
        out.push_str(if self.rows.is_empty() { "]\n" } else { "\n]\n" });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(&["name", "n", "tags", "at", "note"]);
        t.push(vec![
            Cell::text("main"),
            Cell::Int(12),
            Cell::List(vec!["a".into(), "b c".into()]),
            Cell::Time(1_764_840_000_123_456),
            Cell::Null,
        ]);
        t.push(vec![
            Cell::text("say \"hi\", then go"),
            Cell::Int(-3),
            Cell::List(vec![]),
            Cell::Time(0),
            Cell::Json(serde_json::json!({"k": 1})),
        ]);
        t
    }

    #[test]
    fn aligned_like_psql() {
        assert_eq!(
            sample().render(Format::Table),
            concat!(
                "       name        | n  |   tags    |              at               |  note\n",
                "-------------------+----+-----------+-------------------------------+---------\n",
                " main              | 12 | {a,\"b c\"} | 2025-12-04 09:20:00.123456+00 |\n",
                " say \"hi\", then go | -3 | {}        | 1970-01-01 00:00:00.000000+00 | {\"k\":1}\n",
                "(2 rows)\n"
            )
        );
        assert!(
            Table::new(&["x"])
                .render(Format::Table)
                .ends_with("(0 rows)\n")
        );
    }

    #[test]
    fn csv_quotes_what_it_must_and_leaves_null_empty() {
        assert_eq!(
            sample().render(Format::Csv),
            concat!(
                "name,n,tags,at,note\n",
                "main,12,\"{a,\"\"b c\"\"}\",2025-12-04 09:20:00.123456+00,\n",
                "\"say \"\"hi\"\", then go\",-3,{},1970-01-01 00:00:00.000000+00,\"{\"\"k\"\":1}\"\n",
            )
        );
    }

    #[test]
    fn json_keeps_column_order_and_types() {
        let text = sample().render(Format::Json);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"name": "main", "n": 12, "tags": ["a", "b c"], "at": "2025-12-04T09:20:00.123456Z", "note": null},
                {"name": "say \"hi\", then go", "n": -3, "tags": [], "at": "1970-01-01T00:00:00.000000Z", "note": {"k": 1}}
            ])
        );
        assert!(text.find("\"name\"").unwrap() < text.find("\"tags\"").unwrap());
        assert_eq!(Table::new(&["x"]).render(Format::Json), "[]\n");
    }
}
