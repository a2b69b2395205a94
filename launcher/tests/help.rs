//! The launcher's own integration test. Besides checking `--help`, its presence makes cargo
//! build the `launcher` binary during `cargo test --workspace`, which the tests in the
//! `tests/` crate run (see tests/lib.rs).

use std::process::Command;

#[test]
fn help_lists_the_verbs_and_the_config_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_launcher")).arg("--help").output().expect("launcher starts");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in
        ["plan", "presets", "train", "--preset", "--config", "--queue-size", "--no-amp", "--bn-mode"]
    {
        assert!(text.contains(needle), "{needle} missing from --help:\n{text}");
    }
}
