//! The typestate binds the runtime machine: compile-fail cases that compile
//! the crate's own typed states and dispatcher (`src/state/machine/`) beside
//! a handler that tries an illegal move. Their control, the same code with
//! every handler legal, is the `ui_control` test (tests/ui/pass/): a test
//! of its own, so that trybuild only checks the cases (a `pass` case would
//! make it build every dependency, codegen included, a second time).

// rustc's errors list every trait of the visible crates that has a method
// of the name tried (`finish`), so the expected errors hold for one set of
// dependencies: the workspace's, where the CLI turns the `download` feature
// on (its HTTP stack adds a candidate). CI runs them there.
#[test]
#[cfg_attr(
    not(feature = "download"),
    ignore = "the expected errors are the workspace's: run `cargo test --workspace` or add `--features download`"
)]
fn illegal_transitions_do_not_compile() {
    // The expected errors are rustc's own: clippy-driver, which
    // scripts/test.sh wraps around the workspace's crates to lint them
    // while they build, turns off rustc's shortened paths in errors
    // (`machine::typed::Ready` for `typed::Ready`). The cases are compiled
    // by rustc alone. (One test in this binary: no other thread reads the
    // environment.)
    std::env::remove_var("RUSTC_WORKSPACE_WRAPPER");
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
