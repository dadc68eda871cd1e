//! `CREATE FOREIGN TABLE` statements for a graph's types, as
//! IMPORT FOREIGN SCHEMA generates them.

use std::collections::HashMap;

use omnigraph_engine::schema::{Catalog, TypeKind};

use crate::names::{pg_name, quote_ident, quote_literal};
use crate::types::sql_type;

/// `(table name, statement)` per type of the graph; `table_options` is
/// appended to each table's OPTIONS list (e.g. `, branch 'main'`).
pub fn create_statements(
    catalog: &Catalog,
    server: &str,
    local_schema: &str,
    table_options: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut taken: HashMap<String, String> = HashMap::new();
    for type_name in catalog.type_names() {
        let table = pg_name(type_name);
        if let Some(other) = taken.insert(table.clone(), type_name.to_string()) {
            return Err(format!(
                "types {other} and {type_name} would both become table {table}"
            ));
        }
        let kind = catalog.kind_of(type_name).unwrap_or(TypeKind::Node);
        let mut cols: Vec<String> = Vec::new();
        let mut col_names: HashMap<String, String> = HashMap::new();
        let system: &[&str] = if kind == TypeKind::Edge {
            &["id", "src", "dst"]
        } else {
            &["id"]
        };
        for s in system {
            cols.push(format!("{s} text NOT NULL"));
            col_names.insert(s.to_string(), s.to_string());
        }
        for p in catalog.properties(type_name).unwrap_or_default() {
            let col = pg_name(&p.name);
            if let Some(other) = col_names.insert(col.clone(), p.name.clone()) {
                return Err(format!(
                    "properties {other} and {} of {type_name} would both become column {col}",
                    p.name
                ));
            }
            // Column options come before constraints in CREATE FOREIGN TABLE.
            let mut def = format!("{} {}", quote_ident(&col), sql_type(&p.ty));
            if col != p.name {
                def.push_str(&format!(" OPTIONS (property {})", quote_literal(&p.name)));
            }
            if !p.nullable {
                def.push_str(" NOT NULL");
            }
            cols.push(def);
        }
        let sql = format!(
            "CREATE FOREIGN TABLE {}.{} (\n  {}\n) SERVER {} OPTIONS (type {}{table_options})",
            quote_ident(local_schema),
            quote_ident(&table),
            cols.join(",\n  "),
            quote_ident(server),
            quote_literal(type_name),
        );
        out.push((table, sql));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnigraph_engine::schema::parse_schema;

    #[test]
    fn statements_use_snake_case_and_map_back() {
        let c = parse_schema(include_str!("../../examples/social/schema.pg")).unwrap();
        let stmts = create_statements(&c, "social", "g", ", branch 'main'").unwrap();
        let names: Vec<&str> = stmts.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(names, ["person", "company", "knows", "works_at"]);
        let person = &stmts[0].1;
        assert!(
            person.starts_with(
                "CREATE FOREIGN TABLE g.person (\n  id text NOT NULL,\n  name text NOT NULL,"
            ),
            "{person}"
        );
        assert!(
            person.contains("joined_on date OPTIONS (property 'joinedOn')"),
            "{person}"
        );
        assert!(person.contains("tags text[]"), "{person}");
        assert!(person.contains("age integer,"), "{person}");
        assert!(
            person.ends_with("SERVER social OPTIONS (type 'Person', branch 'main')"),
            "{person}"
        );
        let works_at = &stmts[3].1;
        assert!(
            works_at.contains("src text NOT NULL,\n  dst text NOT NULL"),
            "{works_at}"
        );
        assert!(
            works_at.contains("started_at timestamp with time zone OPTIONS (property 'startedAt')"),
            "{works_at}"
        );
        assert!(works_at.contains("OPTIONS (type 'WorksAt'"), "{works_at}");
    }

    #[test]
    fn required_renamed_and_long_properties_import() {
        let long = format!("a{}", "VeryLongPropertyName".repeat(5));
        let c = parse_schema(&format!(
            "node Event {{ createdAt: DateTime
 {long}: String?
 {long}X: String? }}"
        ))
        .unwrap();
        let stmts = create_statements(&c, "s", "g", "").unwrap();
        let event = &stmts[0].1;
        assert!(
            event.contains(
                "created_at timestamp with time zone OPTIONS (property 'createdAt') NOT NULL"
            ),
            "{event}"
        );
        // Two long names sharing a 54-byte prefix stay distinct, each with
        // its property option, and fit Postgres's 63 bytes.
        let cols: Vec<&str> = event
            .lines()
            .filter(|l| l.contains(&format!("(property '{long}")))
            .collect();
        assert_eq!(cols.len(), 2, "{event}");
        let names: Vec<&str> = cols
            .iter()
            .map(|l| l.trim().split(' ').next().unwrap())
            .collect();
        assert!(names.iter().all(|n| n.len() <= 63), "{names:?}");
        assert_ne!(names[0], names[1]);
        assert_eq!(crate::names::pg_name(&long), crate::names::pg_name(&long));
    }

    #[test]
    fn colliding_names_are_refused() {
        let c = parse_schema("node WorksAt { x: I32 }\nnode Works_At { y: I32 }").unwrap();
        assert!(
            create_statements(&c, "s", "g", "")
                .unwrap_err()
                .contains("both become table works_at")
        );
        let c = parse_schema("node A { fooBar: I32\n foo_bar: I32 }").unwrap();
        assert!(
            create_statements(&c, "s", "g", "")
                .unwrap_err()
                .contains("both become column foo_bar")
        );
    }
}
