//! The plugin's program: serves the plugin protocol on stdin and stdout
//! (`taskrush_plugin_main`, made by `export_plugin!` in src/lib.rs).

fn main() -> std::process::ExitCode {
    @IDENT@::taskrush_plugin_main()
}
