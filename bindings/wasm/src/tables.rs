//! The JavaScript package's tables (error codes, states, commands, pool
//! event kinds, unload reasons), rendered from the core's own tables. The
//! committed `js/tables.js` and the marked block of `js/types/tables.d.ts` are
//! these renderings: a test fails when either differs from the core, and
//! `MM_BLESS=1 cargo test -p model-manager-wasm tables` writes them anew.

use std::fmt::Write as _;

use model_manager::{Command, ErrorCode, PoolEventKind, State, UnloadReason};

use crate::convert::command_name;

/// The line that opens and closes the generated block of `js/types/tables.d.ts`.
const DTS_BEGIN: &str = "// <tables: generated from the core, do not edit>";
const DTS_END: &str = "// </tables>";

const HEADER: &str = "// Generated from model-manager's own tables (ErrorCode::ALL, State::ALL,\n\
// Command::ALL, PoolEventKind::NAMES, UnloadReason::NAMES) by\n\
// `MM_BLESS=1 cargo test -p model-manager-wasm tables`. Do not edit: a test\n\
// fails when this file differs from the core.\n";

fn states() -> Vec<&'static str> {
    State::ALL.iter().map(|s| s.name()).collect()
}

fn commands() -> Vec<&'static str> {
    Command::ALL.iter().map(|c| command_name(*c)).collect()
}

fn js_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    format!("[{}]", quoted.join(", "))
}

fn ts_union(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    quoted.join(" | ")
}

/// `js/tables.js`.
fn tables_js() -> String {
    let mut out = String::from(HEADER);
    out.push_str(
        "\n/**\n * Stable numeric error codes, the same values as the C API's `mm_result`.\n \
         * Values are never reused.\n */\nexport const ErrorCode = Object.freeze({\n",
    );
    for code in ErrorCode::ALL {
        let _ = writeln!(out, "  {}: {},", code.name(), *code as u32);
    }
    out.push_str("});\n");
    let lists = [
        ("The lifecycle's states.", "STATES", states()),
        ("The commands a state may refuse.", "COMMANDS", commands()),
        (
            "What a pool event reports.",
            "POOL_EVENT_KINDS",
            PoolEventKind::NAMES.to_vec(),
        ),
        (
            "Why a pool unloads a model.",
            "UNLOAD_REASONS",
            UnloadReason::NAMES.to_vec(),
        ),
    ];
    for (doc, name, names) in lists {
        let _ = write!(
            out,
            "\n/** {doc} */\nexport const {name} = Object.freeze({});\n",
            js_list(&names)
        );
    }
    out
}

/// The generated block of `js/types/tables.d.ts`, markers included.
fn index_dts_block() -> String {
    let mut out = format!("{DTS_BEGIN}\n");
    out.push_str(
        "/** Stable numeric error codes, the same values as the C API's `mm_result`. */\n\
         export declare const ErrorCode: Readonly<{\n",
    );
    for code in ErrorCode::ALL {
        let _ = writeln!(out, "  {}: {};", code.name(), *code as u32);
    }
    out.push_str("}>;\n");
    let _ = writeln!(out, "export type State = {};", ts_union(&states()));
    let _ = writeln!(out, "export type Command = {};", ts_union(&commands()));
    let _ = writeln!(
        out,
        "export type PoolEventKind = {};",
        ts_union(PoolEventKind::NAMES)
    );
    let _ = writeln!(
        out,
        "export type UnloadReason = {};",
        ts_union(UnloadReason::NAMES)
    );
    out.push_str(DTS_END);
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn js_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js")
    }

    fn bless() -> bool {
        std::env::var_os("MM_BLESS").is_some_and(|v| v == "1")
    }

    /// `js/tables.js` is the core's tables, rendered.
    #[test]
    fn tables_js_is_the_cores() {
        let path = js_dir().join("tables.js");
        let want = tables_js();
        if bless() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} differs from the core's tables; run `MM_BLESS=1 cargo test -p \
             model-manager-wasm tables` and review the diff.\n--- want ---\n{want}",
            path.display()
        );
    }

    /// The declarations of `js/types/tables.d.ts` are the core's tables, rendered.
    #[test]
    fn tables_in_index_dts_are_the_cores() {
        let path = js_dir().join("types").join("tables.d.ts");
        let text = std::fs::read_to_string(&path).unwrap();
        let (Some(begin), Some(end)) = (text.find(DTS_BEGIN), text.find(DTS_END)) else {
            panic!("{} lacks the generated block's markers", path.display());
        };
        let have = &text[begin..end + DTS_END.len()];
        let want = index_dts_block();
        if bless() && have != want {
            let mut blessed = text.clone();
            blessed.replace_range(begin..end + DTS_END.len(), &want);
            std::fs::write(&path, blessed).unwrap();
            return;
        }
        assert!(
            have == want,
            "{}'s generated block differs from the core's tables; run `MM_BLESS=1 cargo \
             test -p model-manager-wasm tables` and review the diff.\n--- want ---\n{want}",
            path.display()
        );
    }
}
