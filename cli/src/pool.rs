//! `model-manager pool`: several models under one budget from the command
//! line, and the pool part of the demo.

use std::path::Path;
use std::time::Duration;

use model_manager::{
    DeviceSpec, ModelOptions, ModelPool, ModelSource, PoolEvent, PoolEventKind, PoolSnapshot,
    State, UnloadReason,
};

use crate::CliResult;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// `1GiB`, `512MiB`, `64M`, `2G`, `1000000` (bytes).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 512MiB, 2GiB, 1000000)"))?;
    let unit = unit.trim();
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1u64,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        "t" | "tib" | "tb" => 1 << 40,
        _ => return Err(format!("unknown size unit {unit:?} in {s:?}")),
    };
    let bytes = number * scale as f64;
    // `u64::MAX as f64` rounds up to 2^64, which no u64 holds.
    if bytes >= u64::MAX as f64 {
        return Err(format!("{s:?} is larger than any memory"));
    }
    Ok(bytes as u64)
}

/// How long a pool model stays resident once unused: a duration, or
/// forever (`None`). One value of `--keep-alive`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepAlive(pub Option<Duration>);

impl std::fmt::Display for KeepAlive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => f.write_str("forever"),
            Some(d) => write!(f, "{:.1}s", d.as_secs_f64()),
        }
    }
}

/// `30s`, `500ms`, `5m`, `1h`, `forever` (or `never`).
pub fn parse_keep_alive(s: &str) -> Result<KeepAlive, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("forever") || t.eq_ignore_ascii_case("never") {
        return Ok(KeepAlive(None));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (examples: 500ms, 30s, 5m, forever)"))?;
    let unit = unit.trim();
    let secs = match unit.to_ascii_lowercase().as_str() {
        "ms" => number / 1e3,
        "" | "s" => number,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(format!("unknown duration unit {unit:?} in {s:?}")),
    };
    Duration::try_from_secs_f64(secs)
        .map(|d| KeepAlive(Some(d)))
        .map_err(|_| format!("{s:?} is too long a duration (use forever)"))
}

/// The pool's table: one row per model, then the totals and counters.
pub fn print_table(s: &PoolSnapshot) {
    print!("{}", table(s));
}

/// The table [`print_table`] prints.
fn table(s: &PoolSnapshot) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = writeln!(
        out,
        "  {:<12} {:<9} {:>3} {:>10} {:>10} {:>6} {:>9} {:>10} {:>6}  last error",
        "model", "state", "ver", "charged", "resident", "leases", "idle", "keep-alive", "pinned"
    );
    for m in &s.models {
        let idle = m
            .idle_for
            .map_or("-".into(), |d| format!("{:.1}s", d.as_secs_f64()));
        let keep = KeepAlive(m.keep_alive).to_string();
        // A parked model is not resident: it waits in host memory.
        let state = match (m.parked, m.state) {
            (true, State::Idle) => "parked".to_string(),
            (_, state) => state.to_string(),
        };
        let _ = writeln!(
            out,
            "  {:<12} {:<9} {:>3} {:>6.1} MiB {:>6.1} MiB {:>6} {:>9} {:>10} {:>6}  {}",
            m.id,
            state,
            m.version.map_or("-".into(), |v| v.to_string()),
            mib(m.charged_bytes),
            mib(m.resident_bytes),
            m.leases,
            idle,
            keep,
            if m.pinned { "yes" } else { "no" },
            m.last_error
                .as_ref()
                .map_or(String::new(), |e| e.to_string()),
        );
    }
    let c = &s.counters;
    let _ = writeln!(
        out,
        "  charged {:.1} of {:.1} MiB; loads {}, hits {}, misses {}, evictions {}, expirations {}, failures {}",
        mib(s.charged),
        mib(s.budget),
        c.loads,
        c.hits,
        c.misses,
        c.evictions,
        c.expirations,
        c.failures
    );
    if s.host_budget > 0 {
        let _ = writeln!(
            out,
            "  host tier: {:.1} of {:.1} MiB parked; parks {}, resumes {}",
            mib(s.parked),
            mib(s.host_budget),
            c.parks,
            c.resumes
        );
    }
    out
}

fn describe(e: &PoolEvent) -> String {
    let what = match &e.kind {
        PoolEventKind::Queued => "queued for memory".to_string(),
        PoolEventKind::Loading { charged } => format!("loading, charged {:.1} MiB", mib(*charged)),
        PoolEventKind::Ready { bytes } => format!("ready, {:.1} MiB measured", mib(*bytes)),
        PoolEventKind::Failed { error } => format!("failed: {error}"),
        PoolEventKind::Unloading { reason } => match reason {
            UnloadReason::Evicted { for_id } => format!("evicted to make room for {for_id}"),
            UnloadReason::Expired => "keep-alive expired".into(),
            UnloadReason::Unloaded => "unloading".into(),
            UnloadReason::Replaced => "replaced by a reload; draining its leases".into(),
            UnloadReason::MadeRoomForReload => "unloaded to make room for its reload".into(),
            other => format!("unloading ({other:?})"),
        },
        PoolEventKind::Freed { bytes } => format!("freed {:.1} MiB", mib(*bytes)),
        PoolEventKind::Parked { bytes } => {
            format!("parked in host memory, {:.1} MiB", mib(*bytes))
        }
        PoolEventKind::Unparked { bytes } => {
            format!("host copy freed, {:.1} MiB", mib(*bytes))
        }
        other => format!("{other:?}"),
    };
    format!("{} v{}: {what}", e.id, e.version)
}

/// The pool command's memory settings.
pub struct Memory {
    pub budget: u64,
    /// Left to other processes.
    pub headroom: u64,
    /// Reserved with each model's lease.
    pub working: u64,
    /// The host tier's budget (0: none; a device pool's only).
    pub host_budget: u64,
}

/// `model-manager pool --budget B ID=MODEL ...`: load every model in order
/// under the budget (evicting as it must; with `--working`, leasing each
/// with that much working memory reserved, then releasing it), then print
/// the table.
pub async fn run(
    memory: Memory,
    device: DeviceSpec,
    keep_alive: KeepAlive,
    models: &[String],
    metrics: bool,
) -> CliResult {
    let pool = ModelPool::builder()
        .device(device)
        .memory_budget(memory.budget)
        .headroom(memory.headroom)
        .host_budget(memory.host_budget)
        .keep_alive(keep_alive.0)
        .build()?;
    let mut ids = Vec::new();
    for spec in models {
        let (id, model) = spec
            .split_once('=')
            .ok_or_else(|| format!("{spec:?}: expected ID=MODEL (a path or ORG/NAME)"))?;
        pool.add(id, ModelSource::guess(model))?;
        ids.push(id.to_string());
    }
    let mut events = pool.subscribe();
    // Each model that did not load, said once, in the one error line.
    let mut failures = Vec::new();
    for id in &ids {
        let loaded = match memory.working {
            0 => pool.load(id).await.map(drop),
            bytes => pool.acquire_with(id, bytes).await.map(|lease| {
                println!(
                    "  {id}: leased with {:.1} MiB of working memory",
                    mib(lease.working_bytes())
                );
            }),
        };
        if let Err(e) = loaded {
            failures.push(format!("{id}: {e}"));
        }
        while let Ok(e) = events.try_recv() {
            println!("  {}", describe(&e));
        }
    }
    // Let the last evictions finish freeing.
    tokio::time::sleep(Duration::from_millis(20)).await;
    while let Ok(e) = events.try_recv() {
        println!("  {}", describe(&e));
    }
    println!();
    print_table(&pool.snapshot());
    if metrics {
        println!();
        print!("{}", pool.metrics_text());
    }
    pool.shutdown().await;
    if !failures.is_empty() {
        return Err(failures.join("; ").into());
    }
    Ok(())
}

/// The demo's pool part: two models resident, an eviction under a budget
/// for two, a keep-alive expiry, and a hot reload with a lease held
/// across it.
pub async fn demo(sd: &Path, xl: &Path, sd2: &Path) -> CliResult {
    let size = |p: &Path| -> Result<u64, model_manager::Error> {
        Ok(model_manager::inspect(&p.into())?.bytes)
    };
    let budget = size(sd)? + size(xl)? + (1 << 20);
    let pool = ModelPool::builder().memory_budget(budget).build()?;
    pool.add("sd", sd)?;
    pool.add("xl", xl)?;
    pool.add_with(
        "sd-2",
        sd2,
        ModelOptions::new().keep_alive(Some(Duration::from_millis(300))),
    )?;
    let mut events = pool.subscribe();
    let printer = tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            println!("  event: {}", describe(&e));
        }
    });
    let settle = || tokio::time::sleep(Duration::from_millis(20));

    println!(
        "\n6. a pool: three pipelines under a budget of {:.1} MiB (room for sd and xl)",
        mib(budget)
    );
    drop(pool.acquire("sd").await?);
    drop(pool.acquire("xl").await?);
    settle().await;
    print_table(&pool.snapshot());

    println!("\n7. acquire sd-2: the least recently used model (sd) is evicted");
    drop(pool.acquire("sd-2").await?);
    settle().await;
    print_table(&pool.snapshot());

    println!("\n8. sd-2's keep-alive (300 ms) runs out once its lease is gone");
    tokio::time::sleep(Duration::from_millis(400)).await;
    print_table(&pool.snapshot());

    println!("\n9. hot reload of xl (to sd's weights) with a lease held across it");
    let old = pool.acquire("xl").await?;
    // The new version loads beside the old one (both fit the budget), so
    // the lease held here does not stand in its way.
    let version = pool.reload("xl", sd).await?;
    println!("  version {version} serves new leases");
    println!(
        "  the old lease still reads version {} ({} tensors)",
        old.version(),
        old.tensor_count()
    );
    drop(old);
    let new = pool.acquire("xl").await?;
    println!("  new leases get version {}", new.version());
    drop(new);
    settle().await;
    print_table(&pool.snapshot());
    assert_eq!(pool.status("xl").map(|s| s.state), Some(State::Ready));

    pool.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), printer).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse_as_written() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert_eq!(parse_bytes("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5 parsecs").is_err());
        assert!(parse_bytes("99999999999999999999TiB").is_err());
        assert_eq!(parse_keep_alive("forever"), Ok(KeepAlive(None)));
        assert_eq!(
            parse_keep_alive("500ms"),
            Ok(KeepAlive(Some(Duration::from_millis(500))))
        );
        assert_eq!(
            parse_keep_alive("5m"),
            Ok(KeepAlive(Some(Duration::from_secs(300))))
        );
        assert_eq!(
            parse_keep_alive("5 m"),
            Ok(KeepAlive(Some(Duration::from_secs(300))))
        );
        assert!(parse_keep_alive("soon").is_err());
        assert!(parse_keep_alive("5 parsecs").is_err());
        // Beyond what a Duration holds: an error, not a panic.
        assert!(parse_keep_alive("99999999999999999999999h").is_err());
    }

    #[tokio::test]
    async fn the_pool_command_loads_under_its_budget() {
        let dir = std::env::temp_dir().join(format!("mm-cli-pool-{}", std::process::id()));
        let sd = crate::demo::write_pipeline(&dir.join("a"), 256, 8).unwrap();
        let xl = crate::demo::write_pipeline(&dir.join("b"), 512, 8).unwrap();
        let a = format!("a={}", sd.display());
        let b = format!("b={}", xl.display());
        let fits_b = model_manager::inspect(&xl.as_path().into()).unwrap().bytes;
        // A budget for the larger alone: loading b evicts a.
        let budget = |budget| Memory {
            budget,
            headroom: 0,
            working: 0,
            host_budget: 0,
        };
        run(
            budget(fits_b + 1024),
            DeviceSpec::Cpu,
            KeepAlive(None),
            &[a.clone(), b.clone()],
            true,
        )
        .await
        .unwrap();
        // A budget for neither: refused, and said so.
        assert!(run(
            budget(1024),
            DeviceSpec::Cpu,
            KeepAlive(None),
            &[a, b],
            false
        )
        .await
        .is_err());
        assert!(run(
            budget(1 << 30),
            DeviceSpec::Cpu,
            KeepAlive(None),
            &["no-equals-sign".into()],
            false
        )
        .await
        .is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The table names a parked model's state and the host tier's line
    /// (the tier simulated on the CPU: a real one is a device pool's).
    #[tokio::test]
    async fn the_table_shows_parked_models() {
        let dir = std::env::temp_dir().join(format!("mm-cli-parked-{}", std::process::id()));
        let a = crate::demo::write_pipeline(&dir.join("a"), 256, 8).unwrap();
        let b = crate::demo::write_pipeline(&dir.join("b"), 256, 8).unwrap();
        let bytes = model_manager::inspect(&a.as_path().into()).unwrap().bytes;
        let pool = ModelPool::builder()
            .memory_budget(bytes + bytes / 2)
            .host_budget(4 * bytes)
            .simulate_host_tier(true)
            .build()
            .unwrap();
        pool.add("a", a.as_path()).unwrap();
        pool.add("b", b.as_path()).unwrap();
        pool.load("a").await.unwrap();
        pool.load("b").await.unwrap();
        let table = table(&pool.snapshot());
        let row = table
            .lines()
            .find(|l| l.trim_start().starts_with("a "))
            .unwrap();
        assert!(row.contains("parked"), "{table}");
        assert!(
            table.contains("host tier:") && table.contains("parks 1"),
            "{table}"
        );
        pool.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
