//! The layering `src/lib.rs` documents holds: a module of the core names
//! (imports, paths in code) only modules below it in the map, never one
//! above it and never the crate root's re-exports.

use std::path::{Path, PathBuf};

/// From the ground up, as `src/lib.rs`'s map lists them.
const LAYERS: &[&str] = &[
    "alloc",
    "lifecycle",
    "error",
    "resource",
    "io",
    "pipeline",
    "state",
    "loader",
    "manager",
    "builder",
    "pool",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `crate::name` paths in a line of code (comments stripped).
fn crate_paths(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // `model_manager_c::crate::`, `$crate::`: not ours
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '{')
            .collect();
        out.push(name);
    }
    out
}

#[test]
fn no_module_names_a_module_above_it_or_the_crate_roots_re_exports() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        let top = top.trim_end_matches(".rs");
        let Some(own) = LAYERS.iter().position(|l| *l == top) else {
            continue; // lib.rs: the root, which re-exports
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for name in crate_paths(line) {
                let ok = match LAYERS.iter().position(|l| *l == name) {
                    Some(layer) => layer <= own,
                    // candle_core is a crate the root re-exports for users.
                    None => false,
                };
                if !ok {
                    wrong.push(format!("{}:{}: crate::{name}", rel.display(), n + 1));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that go up the layers or through the crate root:\n{}",
        wrong.join("\n")
    );
}
