//! The README's command lines are true: every `model-manager` command form
//! it documents (`cargo run ... -p model-manager-cli -- ARGS`) is expanded
//! into concrete commands (each alternative, each optional flag, each
//! value it lists) that run here on small models.

mod common;

use std::path::Path;

use common::{hub_entry, model_file, model_folder, Sandbox};

/// The README's synopses: what follows `-p model-manager-cli -- `, without
/// a trailing `# comment`.
fn synopses() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let mut all: Vec<String> = readme
        .lines()
        .filter_map(|l| l.split_once("-p model-manager-cli -- "))
        .map(|(_, rest)| rest.split(" #").next().unwrap_or(rest).trim().to_string())
        .collect();
    all.dedup();
    all
}

/// Splits a synopsis at the spaces outside brackets.
fn items(synopsis: &str) -> Vec<String> {
    let mut items = vec![String::new()];
    let mut depth = 0;
    for c in synopsis.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ => {}
        }
        if c == ' ' && depth == 0 {
            if !items.last().unwrap().is_empty() {
                items.push(String::new());
            }
        } else {
            items.last_mut().unwrap().push(c);
        }
    }
    items.retain(|i| !i.is_empty());
    items
}

/// The concrete values of `cpu|cuda:N|metal` or `PATH|ORG/NAME[@REV]`:
/// each alternative, each optional suffix with and without it, with the
/// placeholders replaced.
fn values(spec: &str, path: &Path) -> Vec<String> {
    // `ID=PATH|ORG/NAME`: the id goes with every alternative.
    let (id, spec) = match spec.strip_prefix("ID=") {
        Some(rest) => ("m=", rest),
        None => ("", spec),
    };
    let mut out = Vec::new();
    for alternative in spec.split('|') {
        let forms = match alternative.split_once('[') {
            Some((head, tail)) => {
                let optional = tail.strip_suffix(']').expect("a closed [...]");
                vec![head.to_string(), format!("{head}{optional}")]
            }
            None => vec![alternative.to_string()],
        };
        for form in forms {
            let concrete = form
                .replace("ORG/NAME", "acme/tiny")
                .replace("PATH", &path.display().to_string())
                .replace("@REV", "@v1")
                .replace("cuda:N", "cuda:0");
            out.push(format!("{id}{concrete}"));
        }
    }
    out
}

/// A synopsis's parts: required flags with their value, optional flags
/// with their values (none for a switch), positional alternatives, and
/// whether the last positional repeats (`...`).
struct Form {
    subcommand: String,
    required: Vec<(String, Vec<String>)>,
    optional: Vec<(String, Vec<String>)>,
    positional: Vec<Vec<String>>,
    repeats: bool,
}

fn parse(synopsis: &str, path: &Path) -> Form {
    let items = items(synopsis);
    let mut form = Form {
        subcommand: items[0].clone(),
        required: Vec::new(),
        optional: Vec::new(),
        positional: Vec::new(),
        repeats: false,
    };
    let mut i = 1;
    while i < items.len() {
        let item = &items[i];
        if let Some(inner) = item.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let (flag, spec) = inner.split_once(' ').unwrap_or((inner, ""));
            assert!(
                flag.starts_with("--"),
                "{synopsis}: optional {item} is no flag"
            );
            let values = if spec.is_empty() {
                Vec::new()
            } else {
                values(spec, path)
            };
            form.optional.push((flag.to_string(), values));
        } else if item.starts_with("--") {
            let value = items.get(i + 1).expect("a flag's value");
            form.required.push((item.clone(), values(value, path)));
            i += 1;
        } else if item == "..." {
            form.repeats = true;
        } else {
            form.positional.push(values(item, path));
        }
        i += 1;
    }
    form
}

/// The commands a form stands for: the required parts alone (each
/// positional alternative in turn), each value of each optional flag added
/// alone, and every optional flag at once.
fn commands(form: &Form, extra_model: &str) -> Vec<Vec<String>> {
    let base = |positional_choice: usize| -> Vec<String> {
        let mut args = vec![form.subcommand.clone()];
        for (flag, values) in &form.required {
            args.push(flag.clone());
            args.push(values[0].clone());
        }
        for alternatives in &form.positional {
            args.push(alternatives[positional_choice.min(alternatives.len() - 1)].clone());
        }
        if form.repeats {
            args.push(extra_model.to_string());
        }
        args
    };
    let widest = form.positional.iter().map(Vec::len).max().unwrap_or(1);
    let mut all: Vec<Vec<String>> = (0..widest).map(base).collect();
    for (flag, values) in &form.optional {
        if values.is_empty() {
            all.push([base(0), vec![flag.clone()]].concat());
        }
        for value in values {
            all.push([base(0), vec![flag.clone(), value.clone()]].concat());
        }
    }
    let mut everything = base(0);
    for (flag, values) in &form.optional {
        everything.push(flag.clone());
        if let Some(value) = values.first() {
            everything.push(value.clone());
        }
    }
    all.push(everything);
    all.dedup();
    all
}

/// A device this build does not have (a CPU build: no `cuda`, no `metal`
/// feature).
fn needs_a_gpu_build(args: &[String]) -> Option<&String> {
    args.iter()
        .find(|a| a.starts_with("cuda") || a.as_str() == "metal")
}

#[test]
fn every_documented_command_form_runs() {
    let synopses = synopses();
    let subcommands: Vec<&str> = synopses
        .iter()
        .map(|s| s.split(' ').next().unwrap())
        .collect();
    for subcommand in ["demo", "load", "inspect", "pool"] {
        assert!(
            subcommands.contains(&subcommand),
            "README.md documents no `{subcommand}` command line: {synopses:#?}"
        );
    }

    let s = Sandbox::new();
    let folder = model_folder(s.path(), "tiny", 32);
    let file = model_file(s.path());
    hub_entry(&s.hub(), "acme/tiny");
    let extra = format!("n={}", file.display());
    let mut ran = 0;
    for synopsis in &synopses {
        let form = parse(synopsis, &folder);
        for args in commands(&form, &extra) {
            let run = s.run(&args);
            ran += 1;
            match needs_a_gpu_build(&args) {
                Some(device) => {
                    // Documented, and refused on this CPU build in one line
                    // that names the device.
                    let line = run.error_line();
                    let name = device.split(':').next().unwrap();
                    assert!(line.contains(name), "{}: {line}", run.what);
                }
                None => {
                    run.success();
                }
            }
        }
    }
    eprintln!("{ran} commands from {} README lines", synopses.len());
}

#[test]
fn the_pool_line_expands_as_documented() {
    let dir = Path::new("/m");
    let form = parse(
        "pool --budget 8GiB [--keep-alive 5m] [--metrics] ID=PATH|ORG/NAME ...",
        dir,
    );
    let commands = commands(&form, "n=x");
    assert!(commands.contains(&vec![
        "pool".to_string(),
        "--budget".into(),
        "8GiB".into(),
        "m=/m".into(),
        "n=x".into()
    ]));
    assert!(commands.contains(&vec![
        "pool".to_string(),
        "--budget".into(),
        "8GiB".into(),
        "m=acme/tiny".into(),
        "n=x".into()
    ]));
    assert!(commands
        .iter()
        .any(|c| c.contains(&"--metrics".to_string()) && c.contains(&"5m".to_string())));
    let load = parse(
        "load PATH|ORG/NAME[@REV] [--device cpu|cuda:N|metal] [--dtype f32|f16|bf16]",
        dir,
    );
    assert_eq!(
        load.positional,
        vec![vec!["/m", "acme/tiny", "acme/tiny@v1"]]
    );
    assert_eq!(load.optional[0].1, vec!["cpu", "cuda:0", "metal"]);
}
