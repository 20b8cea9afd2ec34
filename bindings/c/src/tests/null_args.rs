//! NULL arguments: one source of truth, the C suite `tests/null_args.h`.
//!
//! That file passes NULL for every pointer argument of every exported
//! function (and invalid UTF-8 for every string), checks the code returned,
//! that no out-param was written and that the manager stays usable. It runs
//! in the C11 and the C++17 lifecycle tests under AddressSanitizer and UBSan
//! and under valgrind (`bindings/c/test.sh`): as C calls them, with the
//! sanitizers watching. A Rust copy of the same calls would only be a second
//! list to keep in step, so there is none. What stays here is the check that
//! keeps the C list complete: every pointer parameter of every function in
//! the generated header is passed NULL somewhere in `null_args.h`, so a new
//! function or parameter without its NULL case fails `cargo test`.

use std::collections::BTreeSet;

/// Parameters that may be NULL by design, so the C suite does not refuse
/// them: a load callback is optional; user data is passed back verbatim.
fn nullable(function: &str, param: &str) -> bool {
    param == "userdata" || (function, param) == ("mm_manager_load", "on_done")
}

/// Pointer fields of structs that a function reads, and the assignment by
/// which `null_args.h` sets each one to NULL.
const NULL_FIELDS: &[&str] = &["options.device = NULL;", "pool_options.device = NULL;"];

/// The functions of a C header, each with its parameter names and whether
/// each is a pointer (a `*` or a callback type).
fn functions(header: &str) -> Vec<(String, Vec<(String, bool)>)> {
    let mut out = Vec::new();
    let mut declaration = String::new();
    for line in header.lines() {
        // A declaration starts in the first column, and is not a typedef.
        let starts = !line.starts_with([' ', '#', '/', '*', '}'])
            && !line.starts_with("typedef")
            && line.contains("mm_")
            && line.contains('(');
        if declaration.is_empty() && !starts {
            continue;
        }
        declaration.push_str(line);
        if !declaration.trim_end().ends_with(");") {
            continue;
        }
        let (head, rest) = declaration.split_once('(').expect("a declaration has '('");
        let name = head.split_whitespace().last().expect("a function name");
        let params = rest.trim_end().trim_end_matches(");");
        let params = params
            .split(',')
            .map(str::trim)
            .filter(|p| *p != "void")
            .map(|p| {
                let name = p.rsplit([' ', '*']).next().expect("a parameter name");
                let pointer = p.contains('*') || p.contains("_callback ");
                (name.to_owned(), pointer)
            })
            .collect();
        out.push((name.trim_start_matches('*').to_owned(), params));
        declaration.clear();
    }
    out
}

/// Every `(function, argument index)` that `source` passes NULL to.
fn null_calls(source: &str, names: &[&str]) -> BTreeSet<(String, usize)> {
    let mut found = BTreeSet::new();
    for name in names {
        let call = format!("{name}(");
        let mut rest = source;
        while let Some(at) = rest.find(&call) {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + call.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // a longer name ending in this one
            }
            // The arguments, up to the matching parenthesis.
            let mut depth = 0;
            let mut args = vec![String::new()];
            for c in rest.chars() {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 0 => break,
                    ')' => depth -= 1,
                    ',' if depth == 0 => {
                        args.push(String::new());
                        continue;
                    }
                    _ => {}
                }
                args.last_mut().expect("not empty").push(c);
            }
            for (index, arg) in args.iter().enumerate() {
                if arg.trim() == "NULL" {
                    found.insert((name.to_string(), index));
                }
            }
        }
    }
    found
}

/// How many `#[no_mangle]` functions the Rust sources under `dir` define.
fn no_mangle_count(dir: &std::path::Path) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            count += no_mangle_count(&path);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            count += text.lines().filter(|l| l.trim() == "#[no_mangle]").count();
        }
    }
    count
}

#[test]
fn the_c_suite_passes_null_for_every_pointer_argument() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let header = std::fs::read_to_string(format!("{root}/include/model_manager.h")).unwrap();
    let suite = std::fs::read_to_string(format!("{root}/bindings/c/tests/null_args.h")).unwrap();
    let functions = functions(&header);
    let exported = no_mangle_count(concat!(env!("CARGO_MANIFEST_DIR"), "/src").as_ref());
    assert_eq!(functions.len(), exported, "every exported function parsed");
    let names: Vec<&str> = functions.iter().map(|(name, _)| name.as_str()).collect();
    let tested = null_calls(&suite, &names);
    let mut missing = Vec::new();
    for (function, params) in &functions {
        for (index, (param, pointer)) in params.iter().enumerate() {
            if *pointer
                && !nullable(function, param)
                && !tested.contains(&(function.clone(), index))
            {
                missing.push(format!("{function}({param} = NULL)"));
            }
        }
    }
    for field in NULL_FIELDS {
        if !suite.contains(field) {
            missing.push((*field).to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "bindings/c/tests/null_args.h lacks: {}",
        missing.join(", ")
    );
}

#[test]
fn the_check_sees_a_missing_case() {
    let header = "mm_result mm_f(const struct mm_x *x,\n               mm_cb_callback cb,\n               void *userdata,\n               size_t *n_out);\n";
    let functions = functions(header);
    assert_eq!(
        functions,
        vec![(
            "mm_f".to_owned(),
            vec![
                ("x".to_owned(), true),
                ("cb".to_owned(), true),
                ("userdata".to_owned(), true),
                ("n_out".to_owned(), true),
            ]
        )]
    );
    let tested = null_calls(
        "CHECK_RC(mm_f(NULL, cb, NULL, &n), NUL);\nmm_f(x, f(a, b), NULL, NULL);",
        &["mm_f"],
    );
    let expected: BTreeSet<_> = [0, 2, 3].map(|i| ("mm_f".to_owned(), i)).into();
    assert_eq!(tested, expected, "the callback is not tested");
}
