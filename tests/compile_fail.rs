//! The lifecycle's type-level rules: each case under tests/ui must fail to
//! compile with the error recorded beside it.
#[test]
fn illegal_transitions_do_not_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
