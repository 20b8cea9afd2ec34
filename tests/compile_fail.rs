//! The typestate binds the runtime machine: compile-fail cases that compile
//! the crate's own typed states and dispatcher (`src/state/machine/`) beside
//! a handler that tries an illegal move, plus a control that compiles.

#[test]
fn illegal_transitions_do_not_compile() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/*.rs");
}
