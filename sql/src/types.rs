//! Property types as SQL types.

use omnigraph_engine::schema::{PropType, ScalarType};

/// A SQL type name for a property type, as used in `CREATE FOREIGN TABLE`.
pub fn sql_type(ty: &PropType) -> String {
    match ty {
        PropType::Scalar(s) => scalar_sql_type(*s).to_string(),
        PropType::Enum(_) => "text".to_string(),
        PropType::List(s) => format!("{}[]", scalar_sql_type(*s)),
        PropType::Vector(_) => "real[]".to_string(),
    }
}

/// The SQL type of a scalar. Unsigned types widen so every value fits:
/// U32 to bigint, U64 to numeric.
pub fn scalar_sql_type(s: ScalarType) -> &'static str {
    match s {
        ScalarType::String => "text",
        ScalarType::Blob => "bytea",
        ScalarType::Bool => "boolean",
        ScalarType::I32 => "integer",
        ScalarType::I64 => "bigint",
        ScalarType::U32 => "bigint",
        ScalarType::U64 => "numeric",
        ScalarType::F32 => "real",
        ScalarType::F64 => "double precision",
        ScalarType::Date => "date",
        ScalarType::DateTime => "timestamp with time zone",
    }
}

/// Arrow integer types whose every value fits in an `i64` (all but `UInt64`).
pub fn fits_int64(t: &omnigraph_engine::deps::arrow_schema::DataType) -> bool {
    use omnigraph_engine::deps::arrow_schema::DataType as D;
    matches!(
        t,
        D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping() {
        assert_eq!(sql_type(&PropType::Scalar(ScalarType::I32)), "integer");
        assert_eq!(
            sql_type(&PropType::Scalar(ScalarType::DateTime)),
            "timestamp with time zone"
        );
        assert_eq!(sql_type(&PropType::Enum(vec!["a".into()])), "text");
        assert_eq!(sql_type(&PropType::List(ScalarType::String)), "text[]");
        assert_eq!(
            sql_type(&PropType::List(ScalarType::F64)),
            "double precision[]"
        );
        assert_eq!(sql_type(&PropType::Vector(3)), "real[]");
    }
}
