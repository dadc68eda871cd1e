//! The `.pg` schema language: lexer, parser and the resolved catalog.
//!
//! ```text
//! source --tokenize--> tokens --parse--> ast::SchemaFile --resolve--> Catalog
//! ```
//! Every error carries the line and column of the offending text and renders
//! a caret under it (see [`SchemaError`]).

mod ast;
mod catalog;
mod lexer;
mod parser;

pub use catalog::{
    Annotation, AnnotationArg, Catalog, EdgeType, NodeType, PropType, Property, RangeBound,
    RangeConstraint, ScalarType, TypeKind,
};
pub use lexer::Pos;

use std::fmt;

/// Bounds on schema input. Parsing is iterative and linear in the input, so
/// these bound memory and time, and what a schema can make later steps do
/// (a `Vector(n)` column allocates `4 * n` bytes per row).
pub mod limits {
    /// Longest schema source accepted.
    pub const MAX_SCHEMA_BYTES: usize = 4 << 20;
    /// Longest type, property, annotation or enum-value name.
    pub const MAX_NAME_BYTES: usize = 256;
    /// Largest `Vector(n)` dimension (pgvector allows 16,000; embedding
    /// models use up to a few thousand).
    pub const MAX_VECTOR_DIM: u32 = 65_536;
    /// Properties of all types together, counting an interface's once for
    /// every type that implements it (what the catalog holds).
    pub const MAX_PROPERTIES: usize = 250_000;
}

/// Parse and resolve `.pg` schema text.
pub fn parse_schema(src: &str) -> Result<Catalog, SchemaError> {
    if src.len() > limits::MAX_SCHEMA_BYTES {
        return Err(SchemaError {
            line: 1,
            col: 1,
            message: format!(
                "the schema is {} bytes long; schemas may be at most {} bytes",
                src.len(),
                limits::MAX_SCHEMA_BYTES
            ),
            source_line: src.lines().next().unwrap_or("").chars().take(80).collect(),
            width: 1,
        });
    }
    let tokens = lexer::tokenize(src)?;
    let file = parser::Parser::new(src, tokens).parse_file()?;
    catalog::resolve(src, file)
}

/// A schema error positioned at the text that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    pub line: usize,
    pub col: usize,
    pub message: String,
    /// The source line the error points into.
    pub source_line: String,
    /// How many characters the caret underlines.
    pub width: usize,
}

impl SchemaError {
    pub(crate) fn at(src: &str, pos: Pos, width: usize, message: impl Into<String>) -> Self {
        let source_line = src
            .lines()
            .nth(pos.line.saturating_sub(1))
            .unwrap_or("")
            .to_string();
        SchemaError {
            line: pos.line,
            col: pos.col,
            message: message.into(),
            source_line,
            width: width.max(1),
        }
    }
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gutter = self.line.to_string().len();
        writeln!(
            f,
            "schema error at line {}, column {}: {}",
            self.line, self.col, self.message
        )?;
        writeln!(f, "{:gutter$} |", "")?;
        writeln!(f, "{} | {}", self.line, self.source_line)?;
        // Tabs before the caret keep their width so the caret lines up.
        let pad: String = self
            .source_line
            .chars()
            .take(self.col.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(f, "{:gutter$} | {}{}", "", pad, "^".repeat(self.width))
    }
}

impl std::error::Error for SchemaError {}

#[cfg(test)]
mod tests;
