//! The `gil-trace` command line: a thin binary over the library (`gil_trace::cli`).
fn main() -> std::process::ExitCode {
    gil_trace::cli::main()
}
