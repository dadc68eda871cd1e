//! Graph names as SQL identifiers users can type without quotes.

/// `WorksAt` -> `works_at`, `createdAt` -> `created_at`, `HTTPServer` ->
/// `http_server`, `name` -> `name`. Digits stay attached to the word before.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1).copied();
            let boundary = match prev {
                None | Some('_') => false,
                Some(p) if p.is_lowercase() || p.is_ascii_digit() => true,
                // The last capital of an acronym starts a new word: HTTPServer.
                Some(p) if p.is_uppercase() => next.is_some_and(|n| n.is_lowercase()),
                _ => false,
            };
            if boundary {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `ident` needs quoting in SQL (not a plain lower-case identifier).
/// Longest identifier Postgres keeps (NAMEDATALEN - 1 bytes); longer ones
/// are truncated silently, which would lose the mapping to the graph name.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// The Postgres name of a graph type or property: its snake_case form, and
/// when that is longer than Postgres keeps, a prefix of it plus a hash of
/// the whole graph name, so distinct long names stay distinct and stable.
pub fn pg_name(graph_name: &str) -> String {
    let snake = snake_case(graph_name);
    if snake.len() <= MAX_IDENTIFIER_BYTES {
        return snake;
    }
    // FNV-1a: stable across builds and platforms (unlike std's hasher).
    let hash = graph_name.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let mut cut = MAX_IDENTIFIER_BYTES - 9;
    while !snake.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hash:08x}", &snake[..cut])
}

pub fn needs_quotes(ident: &str) -> bool {
    let mut chars = ident.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    !(first_ok
        && ident
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        || RESERVED.binary_search(&ident).is_ok()
}

/// An identifier, quoted when needed.
pub fn quote_ident(ident: &str) -> String {
    if needs_quotes(ident) {
        format!("\"{}\"", ident.replace('"', "\"\""))
    } else {
        ident.to_string()
    }
}

/// A string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Postgres reserved key words (sorted) that cannot be bare column names.
const RESERVED: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "current_catalog",
    "current_date",
    "current_role",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "grant",
    "group",
    "having",
    "in",
    "initially",
    "intersect",
    "into",
    "lateral",
    "leading",
    "limit",
    "localtime",
    "localtimestamp",
    "not",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "placing",
    "primary",
    "references",
    "returning",
    "select",
    "session_user",
    "some",
    "symmetric",
    "table",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "when",
    "where",
    "window",
    "with",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_examples() {
        for (input, want) in [
            ("WorksAt", "works_at"),
            ("createdAt", "created_at"),
            ("Person", "person"),
            ("name", "name"),
            ("HTTPServer", "http_server"),
            ("decided_at", "decided_at"),
            ("Correlates", "correlates"),
            ("ownedBy2", "owned_by2"),
            ("V2Item", "v2_item"),
            ("ID", "id"),
        ] {
            assert_eq!(snake_case(input), want, "{input}");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("works_at"), "works_at");
        assert_eq!(quote_ident("order"), "\"order\"");
        assert_eq!(quote_ident("Weird Name"), "\"Weird Name\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert!(
            RESERVED.windows(2).all(|w| w[0] < w[1]),
            "RESERVED must stay sorted"
        );
    }
}
