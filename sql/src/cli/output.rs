//! Result sets as the command prints them: an aligned table (as psql
//! prints one), CSV (RFC 4180, with a header) or JSON (an array of objects,
//! keys in column order). The same columns as the SQL function of the same
//! name returns.

use std::fmt::Write as _;

use omnigraph_engine::deps::lance::deps::datafusion::arrow::array::{Array, AsArray, RecordBatch};
use omnigraph_engine::deps::lance::deps::datafusion::arrow::compute::cast;
use omnigraph_engine::deps::lance::deps::datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int64Type, Schema, TimeUnit, TimestampMicrosecondType,
};
use omnigraph_engine::deps::lance::deps::datafusion::arrow::util::display::{
    ArrayFormatter, FormatOptions,
};

/// One value of a result row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Microseconds since the Unix epoch, printed as a `timestamptz` in UTC.
    Time(i64),
    /// A `text[]`.
    List(Vec<String>),
    /// Any other list (`integer[]`, `date[]`, ...), element by element.
    Array(Vec<Cell>),
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
            Cell::Float(f) => float_text(*f),
            Cell::Bool(b) => if *b { "t" } else { "f" }.to_string(),
            Cell::Time(us) => timestamp(*us),
            Cell::List(items) => pg_array(items),
            Cell::Array(items) => {
                let parts: Vec<String> = items
                    .iter()
                    .map(|c| {
                        c.display()
                            .map_or("NULL".to_string(), |s| array_element(&s))
                    })
                    .collect();
                format!("{{{}}}", parts.join(","))
            }
            Cell::Json(v) => v.to_string(),
        })
    }

    fn json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Cell::Null => J::Null,
            Cell::Text(s) => J::String(s.clone()),
            Cell::Int(i) => J::from(*i),
            Cell::Float(f) => serde_json::Number::from_f64(*f)
                .map_or_else(|| J::String(float_text(*f)), J::Number),
            Cell::Bool(b) => J::Bool(*b),
            Cell::Time(us) => J::String(iso_timestamp(*us)),
            Cell::List(items) => J::Array(items.iter().cloned().map(J::String).collect()),
            Cell::Array(items) => J::Array(items.iter().map(Cell::json).collect()),
            Cell::Json(v) => v.clone(),
        }
    }

    fn right_aligned(&self) -> bool {
        matches!(self, Cell::Int(_) | Cell::Float(_))
    }
}

/// A float as Postgres prints one: the shortest text that reads back
/// exactly, with an exponent below 1e-4 and from 1e15 (`1e+300`,
/// `1e-05`), and `NaN`, `Infinity`, `-Infinity`.
fn float_text(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e15).contains(&a) {
        let e = format!("{f:e}");
        if let Some((mantissa, exp)) = e.split_once('e')
            && let Ok(exp) = exp.parse::<i32>()
        {
            let sign = if exp < 0 { '-' } else { '+' };
            return format!("{mantissa}e{sign}{:02}", exp.abs());
        }
    }
    f.to_string()
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
    let quoted: Vec<String> = items.iter().map(|s| array_element(s)).collect();
    format!("{{{}}}", quoted.join(","))
}

/// One element of an array literal, quoted when Postgres would quote it.
fn array_element(s: &str) -> String {
    let plain = !s.is_empty()
        && !s.eq_ignore_ascii_case("null")
        && !s
            .chars()
            .any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_whitespace());
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
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
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(columns: &[&str]) -> Table {
        Table {
            columns: columns.iter().map(|c| c.to_string()).collect(),
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
            // A multi-line value (an EXPLAIN plan) takes as many lines as
            // it has; the other cells of the row are blank below their first.
            let lines: Vec<Vec<&str>> = values.iter().map(|v| v.lines().collect()).collect();
            let height = lines.iter().map(Vec::len).max().unwrap_or(0).max(1);
            for k in 0..height {
                let line: Vec<String> = row
                    .iter()
                    .zip(&lines)
                    .zip(&widths)
                    .map(|((cell, l), w)| {
                        let v = l.get(k).copied().unwrap_or("");
                        if cell.right_aligned() {
                            format!("{v:>w$}")
                        } else {
                            format!("{v:<w$}")
                        }
                    })
                    .collect();
                let _ = writeln!(out, " {}", line.join(" | ").trim_end());
            }
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
                let key = serde_json::Value::String(col.clone());
                let _ = write!(out, "{key}: {}", cell.json());
            }
            out.push('}');
        }
        out.push_str(if self.rows.is_empty() { "]\n" } else { "\n]\n" });
        out
    }
}

/// Query results as a table: integers, floats, booleans and text keep
/// their kind (for alignment and JSON); other values print as Arrow
/// displays them (dates, timestamps, lists).
pub fn from_batches(schema: &Schema, batches: &[RecordBatch]) -> Table {
    let mut t = Table {
        columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
        rows: Vec::new(),
    };
    let options = FormatOptions::default().with_null("");
    for b in batches {
        let columns: Vec<Vec<Cell>> = b
            .columns()
            .iter()
            .map(|a| cells(a.as_ref(), &options))
            .collect();
        for r in 0..b.num_rows() {
            t.rows.push(columns.iter().map(|c| c[r].clone()).collect());
        }
    }
    t
}

fn cells(a: &dyn Array, options: &FormatOptions) -> Vec<Cell> {
    let n = a.len();
    let each = |f: &dyn Fn(usize) -> Cell| -> Vec<Cell> {
        (0..n)
            .map(|i| if a.is_null(i) { Cell::Null } else { f(i) })
            .collect()
    };
    match a.data_type() {
        t if crate::types::fits_int64(t) => match cast(a, &DataType::Int64) {
            Ok(ints) => {
                let ints = ints.as_primitive::<Int64Type>().clone();
                each(&|i| Cell::Int(ints.value(i)))
            }
            Err(_) => formatted(a, options),
        },
        DataType::Null => vec![Cell::Null; n],
        DataType::Float32 => match cast(a, &DataType::Float32) {
            Ok(fs) => {
                let fs = fs.as_primitive::<Float32Type>().clone();
                // Through the f32's own shortest text: 0.1, not 0.10000000149011612.
                each(&|i| {
                    let v = fs.value(i);
                    Cell::Float(v.to_string().parse().unwrap_or(f64::from(v)))
                })
            }
            Err(_) => formatted(a, options),
        },
        DataType::Float64 => match cast(a, &DataType::Float64) {
            Ok(fs) => {
                let fs = fs.as_primitive::<Float64Type>().clone();
                each(&|i| Cell::Float(fs.value(i)))
            }
            Err(_) => formatted(a, options),
        },
        DataType::Boolean => {
            let bs = a.as_boolean().clone();
            each(&|i| Cell::Bool(bs.value(i)))
        }
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => {
            let ts = a.as_primitive::<TimestampMicrosecondType>().clone();
            each(&|i| Cell::Time(ts.value(i)))
        }
        DataType::List(_) => {
            let list = a.as_list::<i32>().clone();
            each(&|i| {
                let items = list.value(i);
                let items = cells(items.as_ref(), options);
                if items.iter().all(|c| matches!(c, Cell::Text(_))) {
                    Cell::List(
                        items
                            .into_iter()
                            .filter_map(|c| match c {
                                Cell::Text(t) => Some(t),
                                _ => None,
                            })
                            .collect(),
                    )
                } else {
                    Cell::Array(items)
                }
            })
        }
        DataType::FixedSizeList(_, _) => {
            let list = a.as_fixed_size_list().clone();
            each(&|i| Cell::Array(cells(list.value(i).as_ref(), options)))
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            match cast(a, &DataType::Utf8) {
                Ok(text) => {
                    let text = text.as_string::<i32>().clone();
                    each(&|i| Cell::Text(text.value(i).to_string()))
                }
                Err(_) => formatted(a, options),
            }
        }
        _ => formatted(a, options),
    }
}

fn formatted(a: &dyn Array, options: &FormatOptions) -> Vec<Cell> {
    match ArrayFormatter::try_new(a, options) {
        Ok(f) => (0..a.len())
            .map(|i| {
                if a.is_null(i) {
                    Cell::Null
                } else {
                    Cell::Text(f.value(i).to_string())
                }
            })
            .collect(),
        Err(e) => vec![Cell::Text(format!("<{e}>")); a.len()],
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

    #[test]
    fn floats_print_as_postgres_prints_them() {
        for (f, want) in [
            (9.5, "9.5"),
            (1e300, "1e+300"),
            (-2.5e-5, "-2.5e-05"),
            (123456789012345.0, "123456789012345"),
            (1e15, "1e+15"),
            (0.0001, "0.0001"),
            (0.0, "0"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ] {
            assert_eq!(float_text(f), want);
        }
    }
}
