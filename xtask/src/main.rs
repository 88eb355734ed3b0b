//! Project tasks, run as `cargo xtask <task>` (the alias lives in `.cargo/config.toml`).
//!
//! `cargo xtask build-plugins [NAME...] [--debug]` builds every stack plugin crate under
//! `plugins/` (each crate whose `[lib] crate-type` includes `cdylib`; `plugins/sdk` is a
//! library, not a plugin) into a WebAssembly component at `target/plugins/<name>.wasm`:
//!
//! 1. compile the crate for `wasm32-unknown-unknown` into its own target dir, `target/wasm`,
//!    so the host build and the plugin build never invalidate each other's artefacts;
//! 2. wrap the core module (which carries wit-bindgen's `component-type` section) into a
//!    component with `wit-component`, validate it, and write it out.
//!
//! Two toolchain routes exist because the wasm32 standard library is not always at hand:
//!
//! - **rustup**: the active rustup toolchain has the `wasm32-unknown-unknown` target, or
//!   `rustup target add` can fetch it. A plain `cargo build --target wasm32-unknown-unknown`.
//! - **Debian**: where rustup cannot download targets, Debian's `rustc-web` (with
//!   `rust-web-src` for the std sources and `rust-web-llvm` + `lld-22` for the `rust-lld`
//!   linker) builds std itself via `-Zbuild-std`, unlocked with `RUSTC_BOOTSTRAP=1`. Those
//!   variables are set for that one child cargo only. The first build compiles std (a minute
//!   or two); later builds are incremental.
//!
//! `--toolchain rustup|debian` forces a route; `--workspace DIR` builds the plugins of another
//! checkout with the same layout (used to test this task).

mod demo;
mod plugins;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use plugins::{Options, ToolchainChoice};

const USAGE: &str = "\
usage: cargo xtask build-plugins [NAME...] [--debug] [--toolchain auto|rustup|debian]
       cargo xtask demo              build everything and run the example deploys (see README)
       cargo xtask test [ARGS...]    build the plugins and run every test (ARGS go to the runner)

Builds each plugin crate under plugins/ into a component at target/plugins/<name>.wasm.
  NAME        build only these plugins (package names, e.g. render-alembic)
  --debug     debug build instead of the size-optimised `plugin` profile
  --toolchain pick the wasm toolchain route instead of detecting it (default: auto)";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("build-plugins") => plugins::build_plugins(&parse_build_plugins(args)?),
        Some("demo") => demo::run(&workspace_root()?),
        Some("test") => test::run(&workspace_root()?, &args.collect::<Vec<_>>()),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown task `{other}`\n\n{USAGE}"),
        None => bail!("no task given\n\n{USAGE}"),
    }
}

fn parse_build_plugins(mut args: impl Iterator<Item = String>) -> Result<Options> {
    let mut opts = Options {
        names: Vec::new(),
        debug: false,
        toolchain: ToolchainChoice::Auto,
        root: workspace_root()?,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--debug" => opts.debug = true,
            "--toolchain" => {
                opts.toolchain = match args.next().as_deref() {
                    Some("auto") => ToolchainChoice::Auto,
                    Some("rustup") => ToolchainChoice::Rustup,
                    Some("debian") => ToolchainChoice::Debian,
                    _ => bail!("--toolchain takes auto, rustup or debian"),
                }
            }
            "--workspace" => {
                let dir = args.next().context("--workspace takes a directory")?;
                opts.root = std::fs::canonicalize(&dir)
                    .with_context(|| format!("workspace directory {dir}"))?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            flag if flag.starts_with('-') => bail!("unknown option `{flag}`\n\n{USAGE}"),
            name => opts.names.push(name.to_string()),
        }
    }
    Ok(opts)
}

/// The workspace root: xtask/ sits directly in it.
fn workspace_root() -> Result<PathBuf> {
    Ok(PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf())
}
