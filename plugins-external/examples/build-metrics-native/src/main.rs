//! The plugin as an external process: the stdio protocol.
fn main() -> std::process::ExitCode {
    build_metrics::taskrush_plugin_main()
}
