//! Every subcommand and every flag `--help` shows, run through the built
//! `model-manager` binary on small models written here, with the lines users
//! read checked.

mod common;

use common::{hub_entry, model_file, model_folder, pipeline, pipeline_bytes, sharded_folder};
use common::{Run, Sandbox};

/// The value after `label` on a `load` summary line such as
/// `  tensors     52`.
fn field<'a>(run: &'a Run, label: &str) -> &'a str {
    run.line(label)
        .trim_start()
        .strip_prefix(label)
        .expect("the label")
        .trim()
}

#[test]
fn version_and_help() {
    let s = Sandbox::new();
    let run = s.run(["--version"]);
    run.success();
    assert_eq!(
        run.stdout,
        format!("model-manager {}\n", env!("CARGO_PKG_VERSION"))
    );

    let run = s.run(["--help"]);
    run.success();
    for word in ["demo", "load", "pool", "inspect", "--version", "--help"] {
        run.says(word);
    }
    for (command, flags) in [
        ("load", &["--device", "--dtype", "--page-cache"][..]),
        ("inspect", &["--all"][..]),
        (
            "pool",
            &[
                "--budget",
                "--keep-alive",
                "--metrics",
                "--device",
                "--host-budget",
                "[default: forever]",
            ][..],
        ),
        ("demo", &[][..]),
    ] {
        let run = s.run([command, "--help"]);
        run.success();
        for flag in flags {
            run.says(flag);
        }
    }
}

#[test]
fn demo_runs_the_whole_lifecycle_and_cleans_up() {
    let s = Sandbox::new();
    let run = s.run(["demo"]);
    run.success();
    for line in [
        "model-manager demo: two small diffusers pipelines in",
        "1. load tiny-sd",
        "sample_size = Some(64)",
        "3. start loading tiny-sd-xl and cancel it half-way",
        "5. unload and show the memory returned",
        "model memory: ",
        "shut down: every task and thread the manager started is joined",
        "6. a pool: three pipelines under a budget",
        "event: sd v1: evicted to make room for sd-2",
        "version 2 serves new leases",
        "the old lease still reads version 1",
        "the pool shut down: every model freed, every task joined",
    ] {
        run.says(line);
    }
    // Its pipelines went to the temp folder and are gone.
    let left: Vec<_> = std::fs::read_dir(s.tmp()).unwrap().collect();
    assert!(left.is_empty(), "the demo left {left:?} in its temp folder");
}

#[test]
fn inspect_a_file() {
    let s = Sandbox::new();
    let file = model_file(s.path());
    let run = s.run(["inspect".as_ref(), file.as_os_str()]);
    run.success();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], file.display().to_string());
    assert_eq!(
        lines[1], "  3 tensors, 208 B (208 bytes); sample_size none",
        "{}",
        run.stdout
    );
    for (name, shape) in [
        ("embed.weight", "[8, 4]"),
        ("layers.0.weight", "[4, 4]"),
        ("layers.0.bias", "[4]"),
    ] {
        let line = run.line(name);
        assert!(line.contains("F32") && line.contains(shape), "{line}");
    }
}

#[test]
fn inspect_a_folder_and_a_sharded_folder() {
    let s = Sandbox::new();
    let folder = model_folder(s.path(), "tiny", 32);
    let run = s.run(["inspect".as_ref(), folder.as_os_str()]);
    run.success();
    // 52 F32 values and 8 F16 ones.
    run.says("  4 tensors, 224 B (224 bytes); sample_size 32");
    run.says("F16,F32");
    run.says(r#""sample_size":32"#);

    let sharded = sharded_folder(s.path(), "sharded");
    let run = s.run(["inspect".as_ref(), sharded.as_os_str()]);
    run.success();
    run.says("  4 tensors, 160 B (160 bytes); sample_size none");
    for name in ["a.weight", "a.bias", "b.weight", "b.bias"] {
        run.line(name);
    }
}

#[test]
fn inspect_a_pipeline_with_and_without_all() {
    let s = Sandbox::new();
    let root = pipeline(s.path(), "tiny-sd", 16, 64);
    let bytes = pipeline_bytes(16);
    let run = s.run(["inspect".as_ref(), root.as_os_str()]);
    run.success();
    run.says(&format!(
        "  8 tensors, 6.5 KiB ({bytes} bytes); sample_size 64"
    ));
    run.says("  pipeline    StableDiffusionPipeline");
    assert!(run.line("unet").contains("5 tensors"), "{}", run.stdout);
    assert!(run.line("vae").contains("1 tensors"), "{}", run.stdout);
    assert!(
        run.line("text_encoder").contains("2 tensors"),
        "{}",
        run.stdout
    );
    assert!(
        run.line("scheduler").contains("no weights"),
        "{}",
        run.stdout
    );
    assert!(
        run.line("tokenizer").contains("no weights"),
        "{}",
        run.stdout
    );

    // Without --all, 5 tensors of a component at most; the unet has 5.
    // A wider component shows the rest under --all only.
    let big = s.path().join("big.safetensors");
    let tensors: Vec<_> = (0..8)
        .map(|i| common::f32_tensor(&format!("w{i}"), &[2]))
        .collect();
    common::write(&big, common::safetensors(&tensors));
    let run = s.run(["inspect".as_ref(), big.as_os_str()]);
    run.success();
    run.says("... 3 more (--all to list them)");
    assert!(!run.stdout.contains("w7"), "{}", run.stdout);
    let run = s.run(["inspect".as_ref(), big.as_os_str(), "--all".as_ref()]);
    run.success();
    assert!(!run.stdout.contains("more (--all"), "{}", run.stdout);
    for i in 0..8 {
        run.line(&format!("w{i} "));
    }
}

#[test]
fn inspect_a_hub_cache_entry_at_a_revision() {
    let s = Sandbox::new();
    hub_entry(&s.hub(), "acme/tiny");
    for arg in ["acme/tiny", "acme/tiny@main", "acme/tiny@v1"] {
        let run = s.run(["inspect", arg]);
        run.success();
        run.says("  4 tensors, 224 B (224 bytes); sample_size 16");
    }
}

#[test]
fn load_a_file_prints_the_summary() {
    let s = Sandbox::new();
    let file = model_file(s.path());
    let run = s.run(["load".as_ref(), file.as_os_str()]);
    run.success();
    assert_eq!(
        run.stdout.lines().next(),
        Some(format!("loaded {} on cpu", file.display()).as_str()),
        "{}",
        run.stdout
    );
    assert_eq!(field(&run, "tensors"), "3");
    assert_eq!(field(&run, "bytes"), "208 read, 208 resident");
    assert_eq!(field(&run, "sample_size"), "(none in the config)");
    assert!(field(&run, "time").ends_with(" s"));
    assert!(field(&run, "throughput").ends_with(" GB/s"));
    assert_eq!(run.stdout.lines().count(), 6, "{}", run.stdout);
}

#[test]
fn load_with_each_page_cache_policy() {
    let s = Sandbox::new();
    let file = model_file(s.path());
    for policy in ["auto", "keep", "drop", "bypass"] {
        let run = s.run([
            "load".as_ref(),
            file.as_os_str(),
            "--page-cache".as_ref(),
            policy.as_ref(),
        ]);
        run.success();
        assert_eq!(field(&run, "tensors"), "3", "--page-cache {policy}");
        assert_eq!(
            field(&run, "bytes"),
            "208 read, 208 resident",
            "--page-cache {policy}"
        );
    }
    let run = s.run([
        "load".as_ref(),
        file.as_os_str(),
        "--page-cache".as_ref(),
        "sometimes".as_ref(),
    ]);
    assert_eq!(run.code(), Some(2), "clap's usage error");
    for word in ["sometimes", "auto", "keep", "drop", "bypass"] {
        assert!(run.stderr.contains(word), "{word}: {}", run.stderr);
    }
}

#[test]
fn load_a_folder_a_pipeline_and_a_hub_entry() {
    let s = Sandbox::new();
    let folder = model_folder(s.path(), "tiny", 32);
    let run = s.run(["load".as_ref(), folder.as_os_str()]);
    run.success();
    assert_eq!(field(&run, "tensors"), "4");
    assert_eq!(field(&run, "bytes"), "224 read, 224 resident");
    assert_eq!(field(&run, "sample_size"), "32");

    let root = pipeline(s.path(), "tiny-sd", 16, 64);
    let run = s.run(["load".as_ref(), root.as_os_str()]);
    run.success();
    assert_eq!(field(&run, "tensors"), "8");
    let bytes = pipeline_bytes(16);
    assert_eq!(
        field(&run, "bytes"),
        format!("{bytes} read, {bytes} resident")
    );
    assert_eq!(field(&run, "sample_size"), "64");

    hub_entry(&s.hub(), "acme/tiny");
    let run = s.run(["load", "acme/tiny@v1"]);
    run.success();
    run.says("loaded ");
    assert_eq!(field(&run, "sample_size"), "16");
}

#[test]
fn load_download_takes_a_hub_repo_id_only() {
    let s = Sandbox::new();
    let file = model_file(s.path());
    // A path is read from disk: --download has nothing to fetch, and says so
    // rather than being ignored.
    let run = s.run(["load".as_ref(), file.as_os_str(), "--download".as_ref()]);
    let line = run.error_line();
    assert!(line.contains("--download takes a hub repo id"), "{line}");
}

#[test]
fn pool_host_budget_is_a_device_pools() {
    let s = Sandbox::new();
    let file = model_file(s.path());
    let model = format!("a={}", file.display());
    let run = s.run([
        "pool",
        "--budget",
        "1MiB",
        "--host-budget",
        "1MiB",
        model.as_str(),
    ]);
    let line = run.error_line();
    assert!(line.contains("host tier"), "{line}");
    let run = s.run([
        "pool",
        "--budget",
        "1MiB",
        "--device",
        "tpu",
        model.as_str(),
    ]);
    let line = run.error_line();
    assert!(line.contains("unknown device"), "{line}");
    // The defaults: the CPU, no tier, no tier line in the table.
    let run = s.run(["pool", "--budget", "1MiB", model.as_str()]);
    run.success();
    assert!(!run.stdout.contains("host tier"), "{}", run.stdout);
}

#[test]
fn load_with_device_and_dtype() {
    let s = Sandbox::new();
    let folder = model_folder(s.path(), "tiny", 32);
    let run = s.run([
        "load".as_ref(),
        folder.as_os_str(),
        "--device".as_ref(),
        "cpu".as_ref(),
    ]);
    run.success();
    run.says(" on cpu");

    // 52 F32 values and 8 F16 ones: 224 bytes read; as f16 or bf16, 120
    // bytes resident; as f32, 240.
    for (dtype, resident) in [
        ("f16", 120),
        ("F16", 120),
        ("bf16", 120),
        ("bfloat16", 120),
        ("f32", 240),
    ] {
        let run = s.run([
            "load".as_ref(),
            folder.as_os_str(),
            "--dtype".as_ref(),
            dtype.as_ref(),
        ]);
        run.success();
        assert_eq!(
            field(&run, "bytes"),
            format!("224 read, {resident} resident"),
            "--dtype {dtype}"
        );
    }
}

/// One row of the pool's table.
#[derive(Debug)]
struct Row {
    state: String,
    version: String,
    charged_mib: f64,
    resident_mib: f64,
    leases: String,
    keep_alive: String,
    pinned: String,
    last_error: String,
}

/// The pool's table: the rows under its header (`model state ver ...`),
/// by id, and its last line (`charged X of Y MiB; loads ...`).
fn table(run: &Run) -> (std::collections::BTreeMap<String, Row>, String) {
    let lines: Vec<&str> = run.stdout.lines().collect();
    let header = lines
        .iter()
        .rposition(|l| l.split_whitespace().take(3).eq(["model", "state", "ver"]))
        .unwrap_or_else(|| panic!("{}: no table\n{}", run.what, run.stdout));
    let columns: Vec<&str> = lines[header].split_whitespace().collect();
    assert_eq!(
        columns,
        [
            "model",
            "state",
            "ver",
            "charged",
            "resident",
            "leases",
            "idle",
            "keep-alive",
            "pinned",
            "last",
            "error"
        ]
    );
    let mut rows = std::collections::BTreeMap::new();
    let mut end = header + 1;
    while let Some(line) = lines.get(end) {
        if line.trim_start().starts_with("charged ") {
            break;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(f.len() >= 10, "{}: a short row {line:?}", run.what);
        assert_eq!((f[4], f[6]), ("MiB", "MiB"), "{line}");
        rows.insert(
            f[0].to_string(),
            Row {
                state: f[1].into(),
                version: f[2].into(),
                charged_mib: f[3].parse().unwrap(),
                resident_mib: f[5].parse().unwrap(),
                leases: f[7].into(),
                keep_alive: f[9].into(),
                pinned: f[10].into(),
                last_error: f[11..].join(" "),
            },
        );
        end += 1;
    }
    let totals = lines
        .get(end)
        .unwrap_or_else(|| panic!("{}: no totals line\n{}", run.what, run.stdout));
    (rows, totals.trim().to_string())
}

#[test]
fn pool_loads_under_its_budget_and_prints_its_table() {
    let s = Sandbox::new();
    let a = pipeline(s.path(), "a", 256, 64); // 1.5 MiB
    let b = pipeline(s.path(), "b", 512, 128); // 6.0 MiB
    let run = s.run([
        "pool",
        "--budget",
        "64MiB",
        &format!("a={}", a.display()),
        &format!("b={}", b.display()),
    ]);
    run.success();
    // Every event, in order, then the table.
    let events: Vec<&str> = run
        .stdout
        .lines()
        .take_while(|l| !l.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(
        events,
        [
            "a v1: queued for memory",
            "a v1: loading, charged 1.5 MiB",
            "a v1: ready, 1.5 MiB measured",
            "b v1: queued for memory",
            "b v1: loading, charged 6.0 MiB",
            "b v1: ready, 6.0 MiB measured",
        ],
        "{}",
        run.stdout
    );
    let (rows, totals) = table(&run);
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (id, mib) in [("a", 1.5), ("b", 6.0)] {
        let row = &rows[id];
        assert_eq!(row.state, "ready", "{id}: {row:?}");
        assert_eq!(row.version, "1", "{id}: {row:?}");
        assert_eq!(
            (row.charged_mib, row.resident_mib),
            (mib, mib),
            "{id}: {row:?}"
        );
        assert_eq!(row.leases, "0");
        assert_eq!(row.keep_alive, "forever");
        assert_eq!(row.pinned, "no");
        assert_eq!(row.last_error, "");
    }
    assert_eq!(
        totals,
        "charged 7.5 of 64.0 MiB; loads 2, hits 0, misses 0, evictions 0, expirations 0, failures 0"
    );
    assert!(!run.stdout.contains("Some("), "{}", run.stdout);
    assert!(!run.stdout.contains("# TYPE"), "metrics without --metrics");
}

#[test]
fn pool_evicts_as_the_budget_requires() {
    let s = Sandbox::new();
    let a = pipeline(s.path(), "a", 256, 64); // 1.5 MiB
    let b = pipeline(s.path(), "b", 512, 128); // 6.0 MiB
                                               // Room for b alone (and for a alone): loading b evicts a.
    let budget = (pipeline_bytes(512) + (1 << 20)).to_string();
    let run = s.run([
        "pool",
        "--budget",
        &budget,
        &format!("a={}", a.display()),
        &format!("b={}", b.display()),
    ]);
    run.success();
    run.says("  a v1: evicted to make room for b\n");
    run.says("  a v1: freed 1.5 MiB\n");
    run.says("  b v1: ready, 6.0 MiB measured\n");
    let (rows, totals) = table(&run);
    assert_eq!(rows["a"].state, "idle", "{rows:?}");
    assert_eq!(rows["a"].version, "-", "{rows:?}");
    assert_eq!(rows["a"].charged_mib, 0.0, "{rows:?}");
    assert_eq!(rows["b"].state, "ready", "{rows:?}");
    assert_eq!(rows["b"].charged_mib, 6.0, "{rows:?}");
    assert!(totals.contains("evictions 1,"), "{totals}");
    assert!(totals.starts_with("charged 6.0 of 7.0 MiB;"), "{totals}");

    // Room for neither: refused, said on one line, and the table still
    // shows why.
    let run = s.run([
        "pool",
        "--budget",
        "1MiB",
        &format!("a={}", a.display()),
        &format!("b={}", b.display()),
    ]);
    let line = run.error_line();
    assert!(line.starts_with("error: a: "), "{line}");
    assert!(line.contains("; b: "), "{line}");
    let (rows, totals) = table(&run);
    assert_eq!(rows["a"].state, "failed", "{rows:?}");
    assert_eq!(rows["b"].state, "failed", "{rows:?}");
    assert!(!rows["a"].last_error.is_empty(), "{rows:?}");
    assert!(totals.ends_with("failures 2"), "{totals}");
}

#[test]
fn pool_reserves_working_memory_and_leaves_headroom() {
    let s = Sandbox::new();
    // Two models of 1.5 MiB. 8 MiB less 4 of headroom: room for both, not
    // for one with 2 MiB of working memory beside the other.
    let a = pipeline(s.path(), "a", 256, 64);
    let b = pipeline(s.path(), "b", 256, 64);
    let run = s.run([
        "pool",
        "--budget",
        "8MiB",
        "--headroom",
        "4MiB",
        "--working",
        "2MiB",
        &format!("a={}", a.display()),
        &format!("b={}", b.display()),
    ]);
    run.success();
    run.says(
        "  a: leased with 2.0 MiB of working memory
",
    );
    run.says(
        "  a v1: evicted to make room for b
",
    );
    run.says(
        "  b: leased with 2.0 MiB of working memory
",
    );
    let (rows, totals) = table(&run);
    assert_eq!(rows["a"].state, "idle", "{rows:?}");
    // The reserve went with its lease.
    assert_eq!(rows["b"].charged_mib, 1.5, "{rows:?}");
    assert!(totals.starts_with("charged 1.5 of 4.0 MiB;"), "{totals}");
    assert!(totals.contains("evictions 1,"), "{totals}");

    // More working memory than could ever fit beside a model: refused.
    let run = s.run([
        "pool",
        "--budget",
        "4MiB",
        "--working",
        "3MiB",
        &format!("a={}", a.display()),
    ]);
    let line = run.error_line();
    assert!(line.starts_with("error: a: "), "{line}");
}

#[test]
fn pool_keep_alive_and_metrics() {
    let s = Sandbox::new();
    let folder = model_folder(s.path(), "tiny", 32);
    let file = model_file(s.path());
    let models = [
        format!("m={}", folder.display()),
        format!("f={}", file.display()),
    ];
    let pool = |flags: &[&str]| {
        s.run(
            ["pool", "--budget", "8GiB"]
                .iter()
                .chain(flags)
                .map(|a| a.to_string())
                .chain(models.iter().cloned()),
        )
    };
    for (keep_alive, shown) in [
        (None, "forever"),
        (Some("forever"), "forever"),
        (Some("30s"), "30.0s"),
        (Some("5m"), "300.0s"),
        (Some("500ms"), "0.5s"),
        (Some("1h"), "3600.0s"),
    ] {
        let run = match keep_alive {
            Some(k) => pool(&["--keep-alive", k]),
            None => pool(&[]),
        };
        run.success();
        let (rows, _) = table(&run);
        for id in ["m", "f"] {
            assert_eq!(rows[id].keep_alive, shown, "--keep-alive {keep_alive:?}");
            assert_eq!(rows[id].state, "ready", "--keep-alive {keep_alive:?}");
        }
    }

    let run = pool(&["--metrics"]);
    run.success();
    // The metrics follow the table after a blank line, in the Prometheus
    // text format, ending with `# EOF`.
    let (_, totals) = table(&run);
    let metrics = run
        .stdout
        .split_once(&format!("{totals}\n\n"))
        .map(|(_, m)| m)
        .unwrap_or_else(|| panic!("no metrics after the table\n{}", run.stdout));
    assert!(metrics.starts_with("# HELP "), "{metrics}");
    assert!(metrics.contains("# TYPE "), "{metrics}");
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "not a sample: {line:?}");
    }
}

#[test]
fn pool_takes_a_hub_repo_id() {
    let s = Sandbox::new();
    hub_entry(&s.hub(), "acme/tiny");
    let file = model_file(s.path());
    let run = s.run([
        "pool",
        "--budget",
        "8GiB",
        "t=acme/tiny",
        "v=acme/tiny@v1",
        &format!("f={}", file.display()),
    ]);
    run.success();
    let (rows, _) = table(&run);
    for id in ["t", "v", "f"] {
        assert_eq!(rows[id].state, "ready", "{rows:?}");
    }
}
