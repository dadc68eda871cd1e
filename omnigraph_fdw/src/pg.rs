//! Small safe wrappers over the `pg_sys` calls used in several places:
//! options lists, catalog lookups and error reports.

use std::ffi::{CStr, CString};

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{PgList, PgSqlErrorCode};

/// Raise an ERROR with a SQLSTATE, message, and optional detail and hint.
/// Unwinds to the nearest `#[pg_guard]`, which turns it into `ereport`.
pub fn raise(
    code: PgSqlErrorCode,
    message: impl Into<String>,
    detail: Option<String>,
    hint: Option<String>,
) -> ! {
    let mut r = pgrx::pg_sys::panic::ErrorReport::new(code, message.into(), "omnigraph_fdw");
    if let Some(d) = detail {
        r = r.set_detail(d);
    }
    if let Some(h) = hint {
        r = r.set_hint(h);
    }
    r.report(PgLogLevel::ERROR);
    unreachable!("ERROR reports do not return")
}

/// Copy a C string owned by Postgres.
///
/// # Safety
/// `p` is null or points at a NUL-terminated string valid for this call.
pub unsafe fn cstr(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-null and NUL-terminated per the contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// A `palloc`'d copy of a Rust string, for Postgres to keep.
pub fn pstrdup(s: &str) -> *mut std::ffi::c_char {
    let c = CString::new(s.replace('\0', "")).unwrap_or_default();
    // SAFETY: `c` is a valid C string; pstrdup copies it into the current memory context.
    unsafe { pg_sys::pstrdup(c.as_ptr()) }
}

/// `(name, value)` pairs of a List of DefElem (catalog options).
///
/// # Safety
/// `list` is NIL or a valid List of `DefElem` nodes.
pub unsafe fn def_elems(list: *mut pg_sys::List) -> Vec<(String, String)> {
    // SAFETY: per the contract, every element is a DefElem.
    let list = unsafe { PgList::<pg_sys::DefElem>::from_pg(list) };
    list.iter_ptr()
        .map(|d| {
            // SAFETY: d is a valid DefElem; defGetString reads its argument.
            unsafe { (cstr((*d).defname), cstr(pg_sys::defGetString(d))) }
        })
        .collect()
}

/// A foreign server's name, owner and `uri` option (in its canonical
/// spelling, see [`omnigraph_engine::canonical_uri`]).
#[derive(Clone)]
pub struct Server {
    pub oid: pg_sys::Oid,
    pub owner: pg_sys::Oid,
    pub name: String,
    pub uri: String,
}

fn server_from(fs: *mut pg_sys::ForeignServer) -> Server {
    // SAFETY: fs comes from GetForeignServer*, which never returns a dangling pointer.
    let (oid, owner, name, options) = unsafe {
        (
            (*fs).serverid,
            (*fs).owner,
            cstr((*fs).servername),
            def_elems((*fs).options),
        )
    };
    let uri = options
        .iter()
        .find(|(k, _)| k == "uri")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if uri.is_empty() {
        raise(
            PgSqlErrorCode::ERRCODE_FDW_OPTION_NAME_NOT_FOUND,
            format!("server \"{name}\" has no \"uri\" option"),
            None,
            Some(format!(
                "ALTER SERVER {name} OPTIONS (ADD uri '/path/to/graph');"
            )),
        );
    }
    let uri = omnigraph_engine::canonical_uri(&uri).unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("server \"{name}\": {e}"),
            None,
            Some(format!(
                "ALTER SERVER {name} OPTIONS (SET uri '/absolute/path/to/graph');"
            )),
        )
    });
    Server {
        oid,
        owner,
        name,
        uri,
    }
}

/// The name of a role, or its oid when it was dropped.
pub fn role_name(role: pg_sys::Oid) -> String {
    // SAFETY: GetUserNameFromId with noerr = true returns NULL for an unknown role.
    let name = unsafe { cstr(pg_sys::GetUserNameFromId(role, true)) };
    if name.is_empty() {
        format!("role {}", role.to_u32())
    } else {
        name
    }
}

/// Look a server up by name; a clear error when it does not exist or is not
/// an omnigraph server.
pub fn server_by_name(name: &str) -> Server {
    let c = CString::new(name).unwrap_or_default();
    // SAFETY: valid C string; missing_ok = true returns NULL instead of raising.
    let fs = unsafe { pg_sys::GetForeignServerByName(c.as_ptr(), true) };
    if fs.is_null() {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("server \"{name}\" does not exist"),
            None,
            Some("CREATE SERVER name FOREIGN DATA WRAPPER omnigraph OPTIONS (uri '...');".into()),
        );
    }
    // SAFETY: fs is a valid ForeignServer; GetForeignDataWrapper looks its wrapper up.
    let fdw_name = unsafe { cstr((*pg_sys::GetForeignDataWrapper((*fs).fdwid)).fdwname) };
    if fdw_name != "omnigraph" {
        raise(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!(
                "server \"{name}\" belongs to foreign data wrapper \"{fdw_name}\", not omnigraph"
            ),
            None,
            None,
        );
    }
    server_from(fs)
}

pub fn server_by_oid(oid: pg_sys::Oid) -> Server {
    // SAFETY: GetForeignServer raises an ERROR for an unknown oid.
    server_from(unsafe { pg_sys::GetForeignServer(oid) })
}

/// The name of the role running the current statement (commit actor).
pub fn current_role() -> String {
    // SAFETY: GetUserId is always valid inside a transaction; GetUserNameFromId
    // with noerr = true returns NULL for a dropped role.
    unsafe { cstr(pg_sys::GetUserNameFromId(pg_sys::GetUserId(), true)) }
}

/// Quoted relation name for messages.
pub fn rel_name(relid: pg_sys::Oid) -> String {
    // SAFETY: get_rel_name returns NULL for an unknown oid.
    let name = unsafe { cstr(pg_sys::get_rel_name(relid)) };
    if name.is_empty() {
        format!("relation {}", relid.to_u32())
    } else {
        format!("\"{name}\"")
    }
}

/// Whether equal strings under `collation` are equal byte for byte (false
/// for ICU collations created with `deterministic = false`).
pub fn collation_is_deterministic(collation: pg_sys::Oid) -> bool {
    // 0: no collation (not text); 100: the database default, which is
    // always deterministic in PostgreSQL 15.
    if matches!(collation.to_u32(), 0 | 100) {
        return true;
    }
    // SAFETY: a collation oid taken from an expression the planner built;
    // the lookup reads the syscache and never fails for a valid oid.
    unsafe { pg_sys::get_collation_isdeterministic(collation) }
}

/// Whether text compared under `collation` orders by bytes, as Lance does.
pub fn collation_is_c(collation: pg_sys::Oid) -> bool {
    match collation.to_u32() {
        950 | 951 => true, // "C", "POSIX"
        100 => {
            // The database default: C when the database was created so.
            // SAFETY: GetConfigOption returns a pointer to the GUC's current value.
            let v = unsafe { cstr(pg_sys::GetConfigOption(c"lc_collate".as_ptr(), true, false)) };
            v == "C" || v == "POSIX"
        }
        _ => false,
    }
}
