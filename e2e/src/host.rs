//! The host tools the agent drives instead of raw syscalls (`unsafe` is denied): running
//! `ip`, `kill` and friends and turning a failure into an error that says what failed.

use anyhow::{Context as _, bail};
use tokio::process::Command;

/// Runs a tool to completion; fails with its stderr when it exits non-zero.
pub async fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Sends `signal` (e.g. `TERM`, `KILL`) to a process, or to a process group when `pid` is
/// negative. A target that is already gone is not an error.
pub async fn kill(signal: &str, pid: i64) {
    let target = pid.to_string();
    if let Err(e) = run("kill", &[&format!("-{signal}"), "--", &target]).await {
        tracing::debug!(signal, pid, error = %e, "kill had nothing to signal");
    }
}
