//! Writes a test guest module (see `wasm_guest.rs`) for the benchmarks:
//! `wasm-guest NAME VERSION OUT.wasm` writes a no-op plugin `NAME` that
//! shakes hands as `VERSION` (also in its `taskrush_version` section) and
//! answers `before_task` and `after_task` with `{}`.

use taskrush_tests::wasm_guest::Guest;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name, version, out] = args.as_slice() else {
        eprintln!("usage: wasm-guest NAME VERSION OUT.wasm");
        std::process::exit(2);
    };
    let bytes = Guest::plugin(name, version, &["before_task", "after_task"])
        .version_section(version)
        .wasm();
    if let Err(e) = std::fs::write(out, bytes) {
        eprintln!("error: cannot write `{out}`: {e}");
        std::process::exit(1);
    }
}
