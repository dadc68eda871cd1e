//! Options of the `omnigraph` foreign data wrapper: which object takes which
//! option, and the checks `CREATE/ALTER ... OPTIONS` run through the
//! validator. Errors carry the SQLSTATE the FDW reports.

use omnigraph_engine::check_branch_name;

/// Objects that can carry options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionObject {
    Wrapper,
    Server,
    UserMapping,
    Table,
    Column,
}

impl OptionObject {
    fn describe(self) -> &'static str {
        match self {
            OptionObject::Wrapper => "foreign data wrapper",
            OptionObject::Server => "server",
            OptionObject::UserMapping => "user mapping",
            OptionObject::Table => "foreign table",
            OptionObject::Column => "foreign table column",
        }
    }
}

/// `(name, object, what it means)`: the whole option table.
pub const OPTIONS: &[(&str, OptionObject, &str)] = &[
    (
        "uri",
        OptionObject::Server,
        "where the graph lives: a local directory (or file:// URI)",
    ),
    (
        "type",
        OptionObject::Table,
        "the graph's node or edge type the table shows",
    ),
    (
        "branch",
        OptionObject::Table,
        "the branch read and written (default: the omnigraph.branch setting)",
    ),
    (
        "commit",
        OptionObject::Table,
        "a commit id: read the graph as that commit left it (read-only)",
    ),
    (
        "property",
        OptionObject::Column,
        "the graph property (or id, src, dst) the column shows",
    ),
];

pub const SQLSTATE_INVALID_OPTION_NAME: &str = "HV00D";
pub const SQLSTATE_INVALID_PARAMETER_VALUE: &str = "22023";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionError {
    pub sqlstate: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

fn bad_value(message: String) -> OptionError {
    OptionError {
        sqlstate: SQLSTATE_INVALID_PARAMETER_VALUE,
        message,
        hint: None,
    }
}

pub use omnigraph_engine::is_commit_id;

/// Check options given to `object`.
pub fn validate(object: OptionObject, options: &[(String, String)]) -> Result<(), OptionError> {
    for (name, value) in options {
        if !OPTIONS.iter().any(|(n, o, _)| n == name && *o == object) {
            let valid: Vec<&str> = OPTIONS
                .iter()
                .filter(|(_, o, _)| *o == object)
                .map(|(n, _, _)| *n)
                .collect();
            let hint = if valid.is_empty() {
                format!(
                    "A {} of the omnigraph wrapper takes no options.",
                    object.describe()
                )
            } else {
                format!(
                    "Valid options for a {} are: {}.",
                    object.describe(),
                    valid.join(", ")
                )
            };
            return Err(OptionError {
                sqlstate: SQLSTATE_INVALID_OPTION_NAME,
                message: format!(
                    "invalid option \"{name}\" for a {} of the omnigraph wrapper",
                    object.describe()
                ),
                hint: Some(hint),
            });
        }
        match name.as_str() {
            "uri" | "type" | "property" if value.trim().is_empty() => {
                return Err(bad_value(format!("option \"{name}\" must not be empty")));
            }
            "branch" => {
                check_branch_name(value)
                    .map_err(|e| bad_value(format!("option \"branch\": {e}")))?;
            }
            "commit" if !is_commit_id(value) => {
                return Err(OptionError {
                    sqlstate: SQLSTATE_INVALID_PARAMETER_VALUE,
                    message: format!("option \"commit\": '{value}' is not a commit id"),
                    hint: Some(
                        "Commit ids are 26-character ULIDs, as listed by omnigraph_log().".into(),
                    ),
                });
            }
            _ => {}
        }
    }
    if object == OptionObject::Server && !options.iter().any(|(n, _)| n == "uri") {
        return Err(OptionError {
            sqlstate: SQLSTATE_INVALID_PARAMETER_VALUE,
            message: "an omnigraph server needs the option \"uri\"".into(),
            hint: Some(
                "CREATE SERVER g FOREIGN DATA WRAPPER omnigraph OPTIONS (uri '/path/to/graph');"
                    .into(),
            ),
        });
    }
    if object == OptionObject::Table
        && options.iter().any(|(n, _)| n == "branch")
        && options.iter().any(|(n, _)| n == "commit")
    {
        return Err(bad_value(
            "a foreign table reads either a branch or a commit, not both".into(),
        ));
    }
    Ok(())
}

/// The options of a foreign table, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableOptions {
    pub type_name: Option<String>,
    pub branch: Option<String>,
    pub commit: Option<String>,
}

pub fn table_options(options: &[(String, String)]) -> Result<TableOptions, OptionError> {
    validate(OptionObject::Table, options)?;
    let get = |n: &str| options.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    Ok(TableOptions {
        type_name: get("type"),
        branch: get("branch"),
        commit: get("commit"),
    })
}

/// Options of `IMPORT FOREIGN SCHEMA ... OPTIONS (...)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Pin the imported tables to this commit (read-only tables).
    pub commit: Option<String>,
    /// Leave the `branch` option off, so the tables follow `omnigraph.branch`.
    pub session_branch: bool,
}

pub fn import_options(options: &[(String, String)]) -> Result<ImportOptions, OptionError> {
    let mut out = ImportOptions::default();
    for (name, value) in options {
        match name.as_str() {
            "commit" if is_commit_id(value) => out.commit = Some(value.clone()),
            "commit" => {
                return Err(bad_value(format!(
                    "option \"commit\": '{value}' is not a commit id"
                )));
            }
            "session_branch" => {
                out.session_branch = match value.to_ascii_lowercase().as_str() {
                    "true" | "on" | "yes" | "1" => true,
                    "false" | "off" | "no" | "0" => false,
                    _ => {
                        return Err(bad_value(format!(
                            "option \"session_branch\" must be true or false, not '{value}'"
                        )));
                    }
                }
            }
            _ => {
                return Err(OptionError {
                    sqlstate: SQLSTATE_INVALID_OPTION_NAME,
                    message: format!("invalid IMPORT FOREIGN SCHEMA option \"{name}\""),
                    hint: Some("Valid options are: commit, session_branch.".into()),
                });
            }
        }
    }
    if out.commit.is_some() && out.session_branch {
        return Err(bad_value(
            "IMPORT options \"commit\" and \"session_branch\" exclude each other".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn unknown_options_name_the_valid_ones() {
        let e = validate(OptionObject::Server, &o(&[("url", "/x")])).unwrap_err();
        assert_eq!(e.sqlstate, "HV00D");
        assert!(e.message.contains("\"url\""));
        assert_eq!(
            e.hint.as_deref(),
            Some("Valid options for a server are: uri.")
        );
        let e = validate(OptionObject::UserMapping, &o(&[("user", "x")])).unwrap_err();
        assert!(e.hint.unwrap().contains("takes no options"));
        let e = validate(OptionObject::Table, &o(&[("uri", "/x")])).unwrap_err();
        assert!(e.hint.unwrap().contains("type, branch, commit"));
    }

    #[test]
    fn values_are_checked() {
        assert!(validate(OptionObject::Server, &o(&[("uri", "/var/lib/g")])).is_ok());
        assert_eq!(
            validate(OptionObject::Server, &o(&[]))
                .unwrap_err()
                .sqlstate,
            "22023"
        );
        assert_eq!(
            validate(OptionObject::Server, &o(&[("uri", " ")]))
                .unwrap_err()
                .sqlstate,
            "22023"
        );
        assert_eq!(
            validate(OptionObject::Table, &o(&[("branch", "a b")]))
                .unwrap_err()
                .sqlstate,
            "22023"
        );
        assert!(validate(OptionObject::Table, &o(&[("branch", "feature/x")])).is_ok());
        assert_eq!(
            validate(OptionObject::Table, &o(&[("commit", "nope")]))
                .unwrap_err()
                .sqlstate,
            "22023"
        );
        let id = "01JABCDEFGHJKMNPQRSTVWXYZ0";
        assert!(validate(OptionObject::Table, &o(&[("commit", id)])).is_ok());
        assert!(
            validate(
                OptionObject::Table,
                &o(&[("commit", id), ("branch", "main")])
            )
            .is_err()
        );
        assert_eq!(
            table_options(&o(&[("type", "Person")]))
                .unwrap()
                .type_name
                .as_deref(),
            Some("Person")
        );
    }

    #[test]
    fn import_options_parse() {
        assert!(
            import_options(&o(&[("session_branch", "true")]))
                .unwrap()
                .session_branch
        );
        assert!(import_options(&o(&[("session_branch", "maybe")])).is_err());
        assert_eq!(
            import_options(&o(&[("limit_to", "x")]))
                .unwrap_err()
                .sqlstate,
            "HV00D"
        );
    }
}
