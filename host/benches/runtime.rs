//! What the Wasm runtime costs the host, measured on the real `render-alembic` component:
//! compiling it, loading it from the on-disk cache, a lifecycle call's fixed overhead (a fresh
//! store and instance per call), pure guest compute, and a plugin -> host capability round trip.
//!
//!     cargo xtask build-plugins                 # builds target/plugins/render-alembic.wasm
//!     cargo bench -p host --bench runtime       # prints a table, writes target/bench/runtime.json
//!
//! A plain `harness = false` bench: medians and 90th percentiles over N runs, no extra crates.
//! `BENCH_QUICK=1` divides the iteration counts by ten (a smoke run, not a measurement).

use host::capabilities::{CapabilityContext, CapabilityHost};
use host::runtime::{CallError, CallLimits, Context, LoadedPlugin, PluginCalls, Runtime};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PLUGIN: &str = "render-alembic";

/// One measured quantity.
struct Row {
    name: &'static str,
    what: String,
    samples: Vec<Duration>,
}

impl Row {
    fn sorted(&self) -> Vec<Duration> {
        let mut s = self.samples.clone();
        s.sort();
        s
    }
    fn median(&self) -> Duration {
        percentile(&self.sorted(), 50)
    }
    fn p90(&self) -> Duration {
        percentile(&self.sorted(), 90)
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn iterations(n: usize) -> usize {
    if std::env::var_os("BENCH_QUICK").is_some() {
        (n / 10).max(3)
    } else {
        n
    }
}

/// Times `f` `n` times after `warmup` untimed runs.
fn measure(n: usize, warmup: usize, mut f: impl FnMut() -> Duration) -> Vec<Duration> {
    for _ in 0..warmup {
        f();
    }
    (0..iterations(n)).map(|_| f()).collect()
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let out = f();
    (out, started.elapsed())
}

fn main() {
    let target = testkit::target_dir();
    let wasm = target.join("plugins").join(format!("{PLUGIN}.wasm"));
    if !wasm.exists() {
        eprintln!(
            "{} is missing: run `cargo xtask build-plugins` first",
            wasm.display()
        );
        std::process::exit(1);
    }
    let wasm_bytes = std::fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0);
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();

    // 1. Engine + linker: what every host process pays before it can load anything.
    rows.push(Row {
        name: "runtime_new",
        what: "Runtime::new: wasmtime engine, linker with the host imports, epoch ticker thread"
            .into(),
        samples: measure(50, 2, || time(|| Runtime::new(None).unwrap()).1),
    });

    // 2. Cold load: no cache, so the component is compiled by Cranelift.
    rows.push(Row {
        name: "load_cold",
        what: format!(
            "Runtime::load without cache: read + sha256 + Cranelift compile of the {} KiB component + link",
            wasm_bytes / 1024
        ),
        samples: measure(5, 0, || {
            let runtime = Runtime::new(None).unwrap();
            let (plugin, took) = time(|| runtime.load(&wasm).unwrap());
            assert!(!plugin.from_cache);
            took
        }),
    });

    // 3. Cached load: a fresh Runtime (as a new `host` process has) over a warm cache dir.
    let cache_dir = scratch.path().join("cache");
    let first = Runtime::new(Some(cache_dir.clone()))
        .unwrap()
        .load(&wasm)
        .unwrap();
    assert!(
        !first.from_cache,
        "the first load into an empty cache compiles"
    );
    rows.push(Row {
        name: "load_cached",
        what: "Runtime::load from the on-disk cache: read + sha256 + deserialize (mmap) + link; from_cache == true"
            .into(),
        samples: measure(50, 2, || {
            let runtime = Runtime::new(Some(cache_dir.clone())).unwrap();
            let (plugin, took) = time(|| runtime.load(&wasm).unwrap());
            assert!(plugin.from_cache, "the second load must come from the cache");
            took
        }),
    });

    // The calls share one runtime and one loaded plugin, as a deploy does.
    let runtime = Runtime::new(Some(cache_dir.clone())).unwrap();
    let plugin = runtime.load(&wasm).unwrap();
    let root = scratch.path().canonicalize().unwrap();
    let deny_all = bench_calls(
        &runtime,
        &plugin,
        CapabilityContext::deny_all(PLUGIN, root.clone()),
    );

    // 4. The fixed cost of every lifecycle call.
    rows.push(Row {
        name: "describe",
        what: "fresh store + instantiate + `describe` (returns a record, no host call): the fixed cost of every plugin call"
            .into(),
        samples: measure(1000, 20, || time(|| tokio.block_on(deny_all.describe()).unwrap()).1),
    });

    // 5. Pure guest compute: the example app's five migration scripts.
    let sources = migration_sources();
    let findings = tokio.block_on(deny_all.check_migrations(&sources)).unwrap();
    let total_bytes: usize = sources.iter().map(|(_, c)| c.len()).sum();
    rows.push(Row {
        name: "check_migrations",
        what: format!(
            "fresh store + instantiate + `check-migrations` on examples/alembic-app's migrations plus one \
             destructive script ({} files, {total_bytes} bytes, {} findings): Python + SQL parsing in the guest",
            sources.len(),
            findings.len()
        ),
        samples: measure(200, 5, || {
            time(|| tokio.block_on(deny_all.check_migrations(&sources)).unwrap()).1
        }),
    });

    // 6. One capability round trip. `preflight` parses the settings, then resolves the target
    // with `git rev-parse`: without a target revision it fails before any host call, with one
    // under deny_all the first host call (`run git`) is refused at the grant check and the
    // error comes back. Same instantiate, same settings parsing; the difference is one
    // guest -> host -> guest round trip through the capability gate, spawning nothing.
    let no_call = ctx("");
    let one_call = ctx("v2");
    rows.push(Row {
        name: "preflight_no_host_call",
        what: "fresh store + instantiate + `preflight` without a target revision: fails in the guest before any host call"
            .into(),
        samples: measure(1000, 20, || {
            let (r, took) = time(|| tokio.block_on(deny_all.preflight(&no_call)));
            expect_plugin_error(r, "no target revision");
            took
        }),
    });
    rows.push(Row {
        name: "preflight_one_denied_run",
        what: "same, with target `v2` under deny_all: exactly one host call (`run git rev-parse`), refused by the grant check"
            .into(),
        samples: measure(1000, 20, || {
            let (r, took) = time(|| tokio.block_on(deny_all.preflight(&one_call)));
            expect_plugin_error(r, "not granted");
            took
        }),
    });

    // 7. Granted capability calls: `verify` (local mode) lists the migrations directory and
    // reads every `.py` in it through the host, then asks `run git rev-parse HEAD`, refused
    // under deny_all. With K empty scripts that is 1 list-dir + K read-file + 1 denied run;
    // the slope between K = 0 and K = 64 is the cost of one granted read-file round trip.
    const K: usize = 64;
    let empty_root = project_with_scripts(scratch.path(), "k0", 0);
    let full_root = project_with_scripts(scratch.path(), "k64", K);
    let verify_empty = bench_calls(
        &runtime,
        &plugin,
        CapabilityContext::deny_all(PLUGIN, empty_root),
    );
    let verify_full = bench_calls(
        &runtime,
        &plugin,
        CapabilityContext::deny_all(PLUGIN, full_root),
    );
    let local = ctx("v2");
    rows.push(Row {
        name: "verify_0_reads",
        what: "fresh store + instantiate + `verify`: list-dir (0 scripts) + one denied run".into(),
        samples: measure(500, 20, || {
            let (r, took) = time(|| tokio.block_on(verify_empty.verify(&local)));
            expect_plugin_error(r, "not granted");
            took
        }),
    });
    rows.push(Row {
        name: "verify_64_reads",
        what: format!(
            "same with {K} empty scripts: list-dir + {K} granted read-file calls + one denied run"
        ),
        samples: measure(500, 20, || {
            let (r, took) = time(|| tokio.block_on(verify_full.verify(&local)));
            expect_plugin_error(r, "not granted");
            took
        }),
    });

    // 10. Vetting, the sandbox's cost on a normal deploy before anything runs: read the file,
    //     sha256 it against host.lock, check its ed25519 signature against the trusted key.
    let bytes = std::fs::read(&wasm).unwrap();
    let key = host::trust::KeyPair::generate().unwrap();
    let signed = scratch.path().join("signed.wasm");
    std::fs::write(&signed, &bytes).unwrap();
    host::trust::sign(&key, &bytes).write(&host::trust::signature_path(&signed)).unwrap();
    let mut lock = host::trust::LockFile::read_or_new(scratch.path()).unwrap();
    lock.plugins.insert(PLUGIN.into(), host::trust::LockEntry { sha256: host::trust::digest(&bytes), contract: "1.0.0".into() });
    let policy = host::trust::Policy { locked: Some(lock), trusted_keys: vec![key.public_hex()], require_signature: true };
    rows.push(Row {
        name: "vet_pinned_and_signed",
        what: format!("trust::vet of the {} KiB component: read + sha256 + host.lock pin + ed25519 signature", wasm_bytes / 1024),
        samples: measure(200, 5, || {
            time(|| {
                let bytes = std::fs::read(&signed).unwrap();
                host::trust::vet(PLUGIN, &signed, &bytes, &policy).unwrap()
            })
            .1
        }),
    });

    let by_name = |name: &str| rows.iter().find(|r| r.name == name).unwrap().median();
    let diff_us = |a: Duration, b: Duration| a.as_secs_f64() * 1e6 - b.as_secs_f64() * 1e6;
    let derived = [
        (
            "capability_round_trip_denied_us",
            diff_us(
                by_name("preflight_one_denied_run"),
                by_name("preflight_no_host_call"),
            ),
            "median(preflight_one_denied_run) - median(preflight_no_host_call): one host import call \
             (lower the command record, grant check, denial message, lift the error) plus the guest's error wrapping",
        ),
        (
            "capability_round_trip_read_file_us",
            diff_us(by_name("verify_64_reads"), by_name("verify_0_reads")) / K as f64,
            "(median(verify_64_reads) - median(verify_0_reads)) / 64: one granted read-file call, \
             path resolved under the root (canonicalize) and an empty file read, plus one more entry in list-dir",
        ),
        (
            "call_overhead_us",
            by_name("describe").as_secs_f64() * 1e6,
            "median(describe): store + instance + call, paid by every lifecycle call",
        ),
        (
            "cache_speedup",
            by_name("load_cold").as_secs_f64() / by_name("load_cached").as_secs_f64(),
            "median(load_cold) / median(load_cached)",
        ),
    ];

    print_table(&wasm, &rows, &derived);
    write_json(
        &target.join("bench/runtime.json"),
        &wasm,
        wasm_bytes,
        &rows,
        &derived,
    );
}

fn bench_calls<'a>(
    runtime: &'a Runtime,
    plugin: &'a LoadedPlugin,
    ctx: Arc<CapabilityContext>,
) -> PluginCalls<'a> {
    PluginCalls::new(
        runtime,
        plugin,
        PLUGIN,
        CallLimits::default(),
        Arc::new(move || CapabilityHost::new(ctx.clone())),
    )
}

fn expect_plugin_error<T>(r: Result<T, CallError>, containing: &str) {
    match r {
        Err(CallError::Plugin(e)) if e.message.contains(containing) => {}
        Err(e) => panic!("expected a plugin error containing {containing:?}, got: {e}"),
        Ok(_) => panic!("expected a plugin error containing {containing:?}, the call succeeded"),
    }
}

fn ctx(target: &str) -> Context {
    Context {
        deployment_id: "bench".into(),
        environment: "bench".into(),
        project_root: "/".into(),
        settings: r#"{"mode":"local","restart":["python","bin/restart"]}"#.into(),
        target_revision: (!target.is_empty()).then(|| target.to_string()),
        current_revision: None,
        last_validated_revision: None,
        dry_run: true,
    }
}

/// A project root whose `migrations/versions` holds `n` empty `.py` files.
fn project_with_scripts(base: &Path, name: &str, n: usize) -> PathBuf {
    let root = base.join(name);
    let dir = root.join("migrations/versions");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..n {
        std::fs::write(dir.join(format!("{i:04}_empty.py")), "").unwrap();
    }
    root.canonicalize().unwrap()
}

const DESTRUCTIVE: &str = r#""""drop legacy table"""
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade():
    op.drop_table("legacy_events")
    op.execute("DELETE FROM sessions")


def downgrade():
    pass
"#;

/// Every migration of the example app (v1..v4) plus a destructive one, as `check-migrations`
/// receives them.
fn migration_sources() -> Vec<(String, String)> {
    let revisions = testkit::workspace_root().join("examples/alembic-app/revisions");
    let mut sources = Vec::new();
    for rev in ["v1", "v2", "v3", "v4"] {
        let dir = revisions.join(rev).join("migrations/versions");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for path in files
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "py"))
        {
            let name = format!(
                "migrations/versions/{}",
                path.file_name().unwrap().to_string_lossy()
            );
            sources.push((name, std::fs::read_to_string(&path).unwrap()));
        }
    }
    assert!(
        !sources.is_empty(),
        "no migrations under {}",
        revisions.display()
    );
    // The example's migrations are all safe; one destructive script exercises the findings path.
    sources.push((
        "migrations/versions/0005_drop_legacy.py".into(),
        DESTRUCTIVE.into(),
    ));
    sources
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

fn print_table(wasm: &Path, rows: &[Row], derived: &[(&str, f64, &str)]) {
    println!(
        "\nruntime benchmark: {} ({} host, wasmtime 48, load average {})\n",
        wasm.display(),
        std::env::consts::ARCH,
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_string))
            .unwrap_or_default()
    );
    println!(
        "{:<26} {:>6} {:>12} {:>12}",
        "name", "iters", "median", "p90"
    );
    println!("{}", "-".repeat(59));
    for r in rows {
        println!(
            "{:<26} {:>6} {:>12} {:>12}",
            r.name,
            r.samples.len(),
            fmt(r.median()),
            fmt(r.p90())
        );
    }
    println!();
    for (name, value, _) in derived {
        let shown = if name.ends_with("_us") {
            format!("{value:.1} µs")
        } else {
            format!("{value:.0}x")
        };
        println!("{name:<36} {shown:>12}");
    }
    println!("\nwhat each line measures:");
    for r in rows {
        println!("  {:<36} {}", r.name, r.what);
    }
    for (name, _, what) in derived {
        println!("  {name:<36} {what}");
    }
}

fn write_json(
    path: &Path,
    wasm: &Path,
    wasm_bytes: u64,
    rows: &[Row],
    derived: &[(&str, f64, &str)],
) {
    let us = |d: Duration| (d.as_secs_f64() * 1e7).round() / 10.0;
    let results: Vec<_> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "iterations": r.samples.len(),
                "median_us": us(r.median()),
                "p90_us": us(r.p90()),
                "min_us": us(*r.sorted().first().unwrap()),
                "what": r.what,
            })
        })
        .collect();
    let derived: Vec<_> = derived
        .iter()
        .map(|(name, value, what)| serde_json::json!({ "name": name, "value": (value * 10.0).round() / 10.0, "what": what }))
        .collect();
    let doc = serde_json::json!({
        "benchmark": "runtime",
        "plugin": wasm.display().to_string(),
        "plugin_bytes": wasm_bytes,
        "load_average_at_end": std::fs::read_to_string("/proc/loadavg").ok().and_then(|l| l.split_whitespace().next().map(str::to_string)),
        "results": results,
        "derived": derived,
    });
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
    println!("\nwritten to {}", path.display());
}
