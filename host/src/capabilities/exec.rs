//! Running programs: argv only (never a shell), granted programs only, a clean environment,
//! a timeout that kills the whole process group, and capped output capture.

use super::CapabilityContext;
use crate::events::Event;
use crate::runtime::{CapabilityError, Command, CommandOutput};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Variables every command gets from the host's environment so programs behave normally.
const BASE_ENV: &[&str] = &["PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/// Used when a command has no timeout and no phase deadline is set.
const FALLBACK_TIMEOUT: Duration = Duration::from_secs(15 * 60);

pub async fn run(ctx: &CapabilityContext, cmd: Command) -> Result<CommandOutput, CapabilityError> {
    let argv: Vec<String> =
        std::iter::once(cmd.program.clone()).chain(cmd.args.iter().cloned()).collect();
    let shown: Vec<String> = argv.iter().map(|a| ctx.redactor.redact(a)).collect();

    let program = check_program(ctx, &cmd.program)?;
    let cwd = match &cmd.cwd {
        Some(dir) => super::fs::resolve_under_root(&ctx.root, dir)
            .map_err(|e| super::fs::path_error(ctx, "run a command in", dir, e))?,
        None => ctx.root.clone(),
    };
    for (key, _) in &cmd.env {
        if key.starts_with("LD_") || key.starts_with("DYLD_") || key == "PATH" {
            return Err(CapabilityError::Denied(format!(
                "plugin `{}` may not set `{key}` for a command",
                ctx.plugin
            )));
        }
    }

    if cmd.mutates && ctx.dry_run {
        ctx.events.emit(Event::Planned { step: shown.join(" "), purpose: cmd.purpose.clone() });
        return Ok(CommandOutput {
            status: 0,
            stdout: String::new(),
            stderr: String::new(),
            duration_ms: 0,
            timed_out: false,
            planned: true,
        });
    }

    let timeout = cmd.timeout_ms.map(Duration::from_millis).unwrap_or_else(|| {
        let deadline = *ctx.phase_deadline.lock().unwrap();
        deadline.map(|d| d.saturating_duration_since(Instant::now())).unwrap_or(FALLBACK_TIMEOUT)
    });

    ctx.events.emit(Event::CommandStarted {
        argv: shown.clone(),
        purpose: cmd.purpose.clone(),
        mutates: cmd.mutates,
    });
    let mut command = tokio::process::Command::new(&program);
    command
        .args(&cmd.args)
        .current_dir(&cwd)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills the children it started too.
        .process_group(0)
        .kill_on_drop(true);
    for key in BASE_ENV.iter().copied().chain(ctx.grants.env.iter().map(String::as_str)) {
        if let Some(value) = std::env::var_os(key) {
            command.env(key, value);
        }
    }
    for (key, value) in &cmd.env {
        command.env(key, value);
    }

    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| {
        CapabilityError::Failed(format!("cannot run `{}`: {e}", cmd.program))
    })?;
    let pid = child.id();
    let limit = ctx.output_limit;
    let stdout = tokio::spawn(read_capped(child.stdout.take().expect("piped"), limit));
    let stderr = tokio::spawn(read_capped(child.stderr.take().expect("piped"), limit));

    // Also kill the group if this future is dropped (a phase timeout cancels the plugin call).
    let guard = GroupKiller(pid);
    let (status, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => (status.ok().and_then(|s| s.code()).unwrap_or(-1), false),
        Err(_) => {
            guard.kill();
            let _ = child.wait().await;
            (-1, true)
        }
    };
    std::mem::forget(guard);
    // A daemon the command started may keep our pipes open: don't wait on it forever.
    let stdout = collect(stdout).await;
    let stderr = collect(stderr).await;
    let duration = started.elapsed();
    ctx.events.emit(Event::CommandFinished { argv: shown, status, duration, timed_out });
    Ok(CommandOutput {
        status,
        stdout,
        stderr,
        duration_ms: duration.as_millis() as u64,
        timed_out,
        planned: false,
    })
}

/// Granted programs only: by name (found on PATH) or by a path under the project root.
fn check_program(ctx: &CapabilityContext, program: &str) -> Result<std::path::PathBuf, CapabilityError> {
    if !ctx.grants.programs.iter().any(|g| g == program) {
        return Err(ctx.denied("run", program, "grants.programs"));
    }
    if program.contains('/') {
        super::fs::resolve_under_root(&ctx.root, program).map_err(|e| super::fs::path_error(ctx, "run", program, e))
    } else {
        Ok(Path::new(program).to_path_buf())
    }
}

/// Read a stream to its end, keeping at most `limit` bytes (the rest is drained and counted,
/// so a chatty program never blocks on a full pipe).
async fn read_capped(mut stream: impl AsyncRead + Unpin, limit: usize) -> String {
    let mut kept = Vec::new();
    let mut total = 0usize;
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n;
                let room = limit.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    let text = String::from_utf8_lossy(&kept).into_owned();
    if total > kept.len() {
        format!("{text}\n[... {} bytes truncated]", total - kept.len())
    } else {
        text
    }
}

async fn collect(reader: tokio::task::JoinHandle<String>) -> String {
    let abort = reader.abort_handle();
    match tokio::time::timeout(Duration::from_secs(2), reader).await {
        Ok(text) => text.unwrap_or_default(),
        Err(_) => {
            abort.abort();
            String::from("[output not closed by a background process]")
        }
    }
}

struct GroupKiller(Option<u32>);

impl GroupKiller {
    fn kill(&self) {
        if let Some(pid) = self.0 {
            // SAFETY: plain syscall; a negative pid targets the process group we created.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}
