//! The `omnigraph` command; everything is in [`omnigraph_sql::cli`].

fn main() -> std::process::ExitCode {
    omnigraph_sql::cli::main(std::env::args_os())
}
