//! `model-manager`: a demo on an embedded default, and tools to load and
//! inspect real models.

/// Large blocks an evicted model frees serve the next load in a pool
/// (`model_manager::alloc`).
#[cfg(not(miri))]
#[global_allocator]
static ALLOC: model_manager::alloc::Allocator = model_manager::alloc::Allocator::new();

mod demo;
mod load;
mod pool;
mod pull;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use model_manager::candle_core::DType;
use model_manager::{DeviceSpec, ModelSource, PageCache};

#[derive(Parser)]
#[command(
    name = "model-manager",
    version,
    about = "Load, lease and unload ML models"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// `--page-cache`: [`PageCache`]'s policies.
#[derive(Clone, Copy, clap::ValueEnum)]
enum PageCachePolicy {
    Auto,
    Keep,
    Drop,
    Bypass,
}

impl From<PageCachePolicy> for PageCache {
    fn from(policy: PageCachePolicy) -> Self {
        match policy {
            PageCachePolicy::Auto => PageCache::Auto,
            PageCachePolicy::Keep => PageCache::Keep,
            PageCachePolicy::Drop => PageCache::Drop,
            PageCachePolicy::Bypass => PageCache::Bypass,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a small diffusers pipeline to a temp folder and run the whole
    /// lifecycle on it (no download).
    Demo,
    /// Load a model with a progress bar and report time and throughput
    /// (Ctrl-C cancels cleanly).
    Load {
        /// A .safetensors file, a model or pipeline folder, or a hub repo id
        /// (ORG/NAME[@REVISION]) in the local hub cache (see --download).
        model: String,
        /// cpu, cuda:N or metal.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Convert floating-point tensors while loading: f32, f16 or bf16.
        #[arg(long)]
        dtype: Option<String>,
        /// For a hub repo id: download what the local hub cache lacks first
        /// (HF_ENDPOINT, HF_TOKEN and HF_HUB_CACHE are honoured).
        #[arg(long)]
        download: bool,
        /// What the load does with the page cache: auto (a file read cold
        /// leaves it as it is read, a warm one stays), keep, drop, or
        /// bypass (direct I/O: read around it).
        #[arg(long, value_enum, default_value_t = PageCachePolicy::Auto)]
        page_cache: PageCachePolicy,
    },
    /// Download a hub repo (ORG/NAME[@REVISION]) into the local hub cache:
    /// the files its layout needs, resuming a cut download; prints the
    /// snapshot folder (Ctrl-C stops, keeping what came).
    Pull {
        /// ORG/NAME, with an optional @REVISION (a branch, tag or commit).
        repo: String,
    },
    /// Load several models under one memory budget, evicting as the budget
    /// requires, and print the pool's table.
    Pool {
        /// The memory budget: 512MiB, 2GiB, or bytes.
        #[arg(long, value_parser = pool::parse_bytes)]
        budget: u64,
        /// How long a model stays resident once unused: 30s, 5m, forever.
        #[arg(long, default_value = "forever", value_parser = pool::parse_keep_alive)]
        keep_alive: pool::KeepAlive,
        /// Also print the counters in the Prometheus text format.
        #[arg(long)]
        metrics: bool,
        /// Memory left to other processes: the budget less this.
        #[arg(long, default_value = "0", value_parser = pool::parse_bytes)]
        headroom: u64,
        /// Working memory each model's lease reserves beside it, as an
        /// inference would (the model is leased with it, then released).
        #[arg(long, default_value = "0", value_parser = pool::parse_bytes)]
        working: u64,
        /// The device the models load onto: cpu, cuda:N, metal.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// A host tier for a device pool: models evicted from the device
        /// are parked in this much page-locked host memory (0: none).
        #[arg(long, default_value = "0", value_parser = pool::parse_bytes)]
        host_budget: u64,
        /// Models as ID=MODEL (a .safetensors file, a folder, or a hub repo
        /// id), loaded in this order.
        #[arg(required = true)]
        models: Vec<String>,
    },
    /// Show components, tensors, dtypes, shapes, bytes and configs, read
    /// from headers only.
    Inspect {
        /// A .safetensors file, a model or pipeline folder, or a hub repo id.
        model: String,
        /// Print every tensor, not only a summary per component.
        #[arg(long)]
        all: bool,
    },
}

fn parse_dtype(s: &str) -> Result<DType, String> {
    match s.to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" | "half" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        other => Err(format!(
            "unknown dtype {other:?} (expected f32, f16 or bf16)"
        )),
    }
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

/// A message on one line: each line of `text`, trimmed, joined by `; `
/// (or by a space after a line that ends with `:`).
fn one_line<'a>(lines: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for part in lines.into_iter().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push_str(if out.ends_with(':') { " " } else { "; " });
        }
        out.push_str(part);
    }
    out
}

/// A command-line mistake as one line, `error: ...`: clap's message and
/// its tips, without the usage and the pointer to `--help` it adds below.
fn usage_error(e: &clap::Error) -> String {
    let text = e.render().to_string();
    one_line(
        text.lines()
            .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information")),
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    // A reader that goes away (`model-manager inspect --all ... | head`)
    // ends the command quietly, as it does any Unix tool, instead of
    // making the next print panic.
    #[cfg(unix)]
    // SAFETY: restores the default disposition of SIGPIPE before any
    // output; no handler is involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help, --version, and the help for `model-manager` alone.
        Err(e)
            if !e.use_stderr()
                || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            e.exit()
        }
        Err(e) => {
            eprintln!("{}", usage_error(&e));
            return ExitCode::from(e.exit_code().clamp(1, 255) as u8);
        }
    };
    let result: CliResult = match cli.command {
        Cmd::Demo => demo::run().await,
        Cmd::Load {
            model,
            device,
            dtype,
            download,
            page_cache,
        } => {
            async {
                let device: DeviceSpec = device.parse()?;
                let dtype = dtype.as_deref().map(parse_dtype).transpose()?;
                let mut source = ModelSource::guess(&model);
                if download {
                    if !matches!(source, ModelSource::Hub { .. }) {
                        return Err(format!(
                            "--download takes a hub repo id (ORG/NAME[@REV]); {model:?} is a path"
                        )
                        .into());
                    }
                    source = source.download();
                }
                load::load(source, device, dtype, page_cache.into()).await
            }
            .await
        }
        Cmd::Pull { repo } => pull::pull(pull::repo_source(&repo)).await,
        Cmd::Pool {
            budget,
            keep_alive,
            metrics,
            headroom,
            working,
            device,
            host_budget,
            models,
        } => {
            let memory = pool::Memory {
                budget,
                headroom,
                working,
                host_budget,
            };
            match device.parse::<DeviceSpec>() {
                Ok(device) => pool::run(memory, device, keep_alive, &models, metrics).await,
                Err(e) => Err(e.into()),
            }
        }
        Cmd::Inspect { model, all } => load::inspect(&ModelSource::guess(&model), all),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<load::Interrupted>().is_some() => {
            eprintln!("cancelled");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {}", one_line(e.to_string().lines()));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn keep_alive(args: &[&str]) -> pool::KeepAlive {
        let mut argv = vec!["model-manager", "pool", "--budget", "1GiB"];
        argv.extend_from_slice(args);
        argv.push("a=model.safetensors");
        match Cli::try_parse_from(argv)
            .expect("the arguments parse")
            .command
        {
            Cmd::Pool { keep_alive, .. } => keep_alive,
            _ => unreachable!("a pool command"),
        }
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn usage_errors_are_one_line() {
        let error = |argv: &[&str]| match Cli::try_parse_from(argv) {
            Ok(_) => panic!("{argv:?} parsed"),
            Err(e) => usage_error(&e),
        };
        assert_eq!(
            error(&["model-manager", "pool", "--budget", "1GiB"]),
            "error: the following required arguments were not provided: <MODELS>..."
        );
        let line = error(&["model-manager", "pool", "--budget", "12XB", "a=b"]);
        assert!(line.starts_with("error: invalid value '12XB' for '--budget <BUDGET>'"));
        assert!(line.contains(r#"unknown size unit "XB""#), "{line}");
        let line = error(&["model-manager", "lod"]);
        assert!(
            line.starts_with("error: unrecognized subcommand 'lod'"),
            "{line}"
        );
        for argv in [
            &["model-manager", "frobnicate"][..],
            &["model-manager", "load"],
            &["model-manager", "load", "m", "--dtype"],
            &[
                "model-manager",
                "pool",
                "--keep-alive",
                "soon",
                "--budget",
                "1G",
                "a=b",
            ],
        ] {
            let line = error(argv);
            assert!(
                line.starts_with("error: ") && !line.contains('\n'),
                "{argv:?}: {line:?}"
            );
        }
    }

    #[test]
    fn keep_alive_parses_with_and_without_the_flag() {
        assert_eq!(keep_alive(&[]), pool::KeepAlive(None));
        assert_eq!(
            keep_alive(&["--keep-alive", "forever"]),
            pool::KeepAlive(None)
        );
        assert_eq!(
            keep_alive(&["--keep-alive", "30s"]),
            pool::KeepAlive(Some(Duration::from_secs(30)))
        );
        assert_eq!(
            keep_alive(&["--keep-alive", "5m"]),
            pool::KeepAlive(Some(Duration::from_secs(300)))
        );
    }
}
