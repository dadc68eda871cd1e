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

/// Parse and resolve `.pg` schema text.
pub fn parse_schema(src: &str) -> Result<Catalog, SchemaError> {
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
