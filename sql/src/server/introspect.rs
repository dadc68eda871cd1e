//! Keys for the catalog queries of client libraries.
//!
//! The `pg_catalog` emulation holds a static `pg_constraint` and
//! `pg_index` (no rows for the graph's tables), and some of the queries
//! clients send over them (`unnest(ix.indkey)` with `generate_subscripts`)
//! do not plan in DataFusion. Those queries are recognised by their text,
//! as `datafusion-pg-catalog` recognises the ones it answers empty, and
//! answered from the graph's schema: every table's primary key is `id`,
//! and an edge table's `src` and `dst` are foreign keys to the `id` of
//! its endpoint types, which is how BI tools and ORMs infer joins (a
//! PostgreSQL 15 foreign table cannot declare either).
//!
//! Answered: SQLAlchemy's (1.4 and 2.0 `get_pk_constraint`,
//! `get_foreign_keys`, `get_indexes`, `get_unique_constraints`,
//! `get_check_constraints`) single-table queries.

use std::sync::Arc;

use omnigraph_engine::deps::arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use omnigraph_engine::deps::arrow_schema::{Field, Schema};
use omnigraph_engine::schema::Catalog;

use crate::names::pg_name;

/// A key of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The constraint's name, as Postgres would make it.
    pub name: String,
    pub table: String,
    pub column: String,
    /// For a foreign key: the table and column referred to.
    pub references: Option<(String, String)>,
}

impl Key {
    /// `pg_get_constraintdef`'s text.
    pub fn definition(&self) -> String {
        match &self.references {
            None => format!("PRIMARY KEY ({})", self.column),
            Some((t, c)) => format!("FOREIGN KEY ({}) REFERENCES {t}({c})", self.column),
        }
    }
}

/// Every table's primary key (`id`) and every edge table's foreign keys
/// (`src`, `dst`), in schema order.
pub fn keys(catalog: &Catalog) -> Vec<Key> {
    let mut out = Vec::new();
    for t in catalog.type_names() {
        let table = pg_name(t);
        out.push(Key {
            name: format!("{table}_pkey"),
            table: table.clone(),
            column: "id".into(),
            references: None,
        });
        if let Some(e) = catalog.edge(t) {
            for (column, target) in [("src", &e.from), ("dst", &e.to)] {
                out.push(Key {
                    name: format!("{table}_{column}_fkey"),
                    table: table.clone(),
                    column: column.into(),
                    references: Some((pg_name(target), "id".into())),
                });
            }
        }
    }
    out
}

/// What a recognised query asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// The primary key's columns (`attname`), through `pg_index`.
    PrimaryKeyColumns(i64),
    /// The primary key constraint's name (`conname`).
    PrimaryKeyName(i64),
    /// Foreign keys: `conname`, `condef`, `conschema`.
    ForeignKeys(i64),
    /// Secondary indexes (none are reported).
    Indexes,
    /// Unique constraints (none are reported).
    Uniques,
    /// Check constraints (none are reported).
    Checks,
}

/// Recognise a client's catalog query; `None` for anything else (which
/// runs as usual).
pub fn recognise(sql: &str) -> Option<Ask> {
    let text = sql
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase();
    if !text.contains("pg_constraint") && !text.contains("pg_index") {
        return None;
    }
    let oid = || table_oid(&text);
    if text.contains("generate_subscripts(ix.indkey") && text.contains("ix.indisprimary") {
        return Some(Ask::PrimaryKeyColumns(oid()?));
    }
    if text.contains("ix.indisprimary = 'f'") {
        return Some(Ask::Indexes);
    }
    if text.contains("r.contype = 'p'") && text.starts_with("select conname") {
        return Some(Ask::PrimaryKeyName(oid()?));
    }
    if text.contains("r.contype = 'f'")
        && text.contains("pg_get_constraintdef(r.oid, true) as condef")
    {
        return Some(Ask::ForeignKeys(oid()?));
    }
    if text.contains("cons.contype = 'u'") {
        return Some(Ask::Uniques);
    }
    if text.contains("cons.contype = 'c'") {
        return Some(Ask::Checks);
    }
    None
}

/// The table oid a query names (`conrelid = 16390`, `indrelid = ...`).
fn table_oid(text: &str) -> Option<i64> {
    for marker in ["conrelid = ", "indrelid = ", "attrelid = "] {
        if let Some(at) = text.find(marker) {
            let digits: String = text[at + marker.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            if let Ok(n) = digits.parse() {
                return Some(n);
            }
        }
    }
    None
}

/// The answer to `ask`, given the table `oid` names (`None`: no such
/// table, so no rows).
pub fn answer(
    ask: Ask,
    table: Option<&str>,
    keys: &[Key],
) -> Result<RecordBatch, omnigraph_engine::deps::arrow_schema::ArrowError> {
    let of_table = |k: &&Key| Some(k.table.as_str()) == table;
    let text = |v: Vec<String>| Arc::new(StringArray::from(v)) as ArrayRef;
    let (names, columns): (Vec<&str>, Vec<ArrayRef>) = match ask {
        Ask::PrimaryKeyColumns(_) => {
            let cols: Vec<String> = keys
                .iter()
                .filter(of_table)
                .filter(|k| k.references.is_none())
                .map(|k| k.column.clone())
                .collect();
            (vec!["attname"], vec![text(cols)])
        }
        Ask::PrimaryKeyName(_) => {
            let names: Vec<String> = keys
                .iter()
                .filter(of_table)
                .filter(|k| k.references.is_none())
                .map(|k| k.name.clone())
                .collect();
            (vec!["conname"], vec![text(names)])
        }
        Ask::ForeignKeys(_) => {
            let fks: Vec<&Key> = keys
                .iter()
                .filter(of_table)
                .filter(|k| k.references.is_some())
                .collect();
            (
                vec!["conname", "condef", "conschema"],
                vec![
                    text(fks.iter().map(|k| k.name.clone()).collect()),
                    text(fks.iter().map(|k| k.definition()).collect()),
                    text(fks.iter().map(|_| "public".to_string()).collect()),
                ],
            )
        }
        Ask::Indexes => {
            let names = vec![
                "relname",
                "indisunique",
                "indexprs",
                "attname",
                "attnum",
                "conrelid",
                "indkey",
                "indoption",
                "reloptions",
                "amname",
                "pg_get_expr",
                "indnkeyatts",
            ];
            let cols = names.iter().map(|_| text(Vec::new())).collect();
            (names, cols)
        }
        Ask::Uniques => (
            vec!["name", "key", "col_num", "col_name"],
            vec![
                text(Vec::new()),
                text(Vec::new()),
                Arc::new(Int64Array::from(Vec::<i64>::new())) as ArrayRef,
                text(Vec::new()),
            ],
        ),
        Ask::Checks => (
            vec!["name", "src"],
            vec![text(Vec::new()), text(Vec::new())],
        ),
    };
    let schema = Schema::new(
        names
            .iter()
            .zip(&columns)
            .map(|(n, c)| Field::new(*n, c.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(Arc::new(schema), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FK: &str = "
          SELECT r.conname,
                pg_catalog.pg_get_constraintdef(r.oid, true) as condef,
                n.nspname as conschema
          FROM  pg_catalog.pg_constraint r,
                pg_namespace n,
                pg_class c

          WHERE r.conrelid = 16397 AND
                r.contype = 'f' AND
                c.oid = confrelid AND
                n.oid = c.relnamespace
          ORDER BY 1";

    const PK: &str = "
                SELECT a.attname
                FROM pg_attribute a JOIN (
                    SELECT unnest(ix.indkey) attnum,
                           generate_subscripts(ix.indkey, 1) ord
                    FROM pg_index ix
                    WHERE ix.indrelid = 42 AND ix.indisprimary
                    ) k ON a.attnum=k.attnum
                WHERE a.attrelid = 42
                ORDER BY k.ord";

    #[test]
    fn recognises_sqlalchemy_key_queries() {
        assert_eq!(recognise(FK), Some(Ask::ForeignKeys(16397)));
        assert_eq!(recognise(PK), Some(Ask::PrimaryKeyColumns(42)));
        assert_eq!(
            recognise(
                "SELECT conname FROM pg_catalog.pg_constraint r WHERE r.conrelid = 7 AND r.contype = 'p' ORDER BY 1"
            ),
            Some(Ask::PrimaryKeyName(7))
        );
        assert_eq!(recognise("SELECT * FROM person"), None);
        assert_eq!(recognise("SELECT * FROM pg_catalog.pg_constraint"), None);
    }

    #[test]
    fn foreign_keys_name_the_endpoint_tables() {
        let catalog = omnigraph_engine::schema::parse_schema(
            "node Person { name: String @key }\nnode Company { name: String @key }\nedge WorksAt: Person -> Company {}",
        )
        .unwrap();
        let keys = keys(&catalog);
        let b = answer(Ask::ForeignKeys(1), Some("works_at"), &keys).unwrap();
        assert_eq!(b.num_rows(), 2);
        let defs = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(defs.value(0), "FOREIGN KEY (src) REFERENCES person(id)");
        assert_eq!(defs.value(1), "FOREIGN KEY (dst) REFERENCES company(id)");
        let pk = answer(Ask::PrimaryKeyColumns(1), Some("person"), &keys).unwrap();
        assert_eq!(pk.num_rows(), 1);
        assert_eq!(
            answer(Ask::ForeignKeys(1), None, &keys).unwrap().num_rows(),
            0
        );
    }
}
