//! The storm report as people read it: a few aligned tables and the first
//! witnesses, with the verdict and what it means last.

use std::fmt::Write as _;

use mapchaos_api::storm::{LatencySummary, MemorySnapshot, StopReason, StormReport};
use mapchaos_api::{CheckReport, Verdict};

/// How many witnesses the text report prints in full.
const WITNESSES_SHOWN: usize = 3;

/// The whole report as text.
pub fn render(report: &StormReport) -> String {
    let mut out = String::new();
    let stop = match &report.stop_reason {
        StopReason::DurationElapsed => "duration elapsed".to_owned(),
        StopReason::AbortCondition(why) => format!("ABORTED: {why}"),
        StopReason::Stopped => "stopped on request".to_owned(),
        StopReason::LeaseExpired => "lease expired (no renewal from the controller)".to_owned(),
    };
    let _ = writeln!(out, "mapchaos storm report");
    let _ = writeln!(out, "  target   {}", report.target);
    let _ = writeln!(
        out,
        "  storm    {} workers, {:.1}s, seed {} ({stop})",
        report.workers,
        report.elapsed_millis as f64 / 1000.0,
        report.seed
    );
    let _ = writeln!(
        out,
        "  ops      {} ({:.0} ops/s), {} errors ({:.3}%)",
        report.ops,
        report.ops_per_second,
        report.errors,
        percent(report.errors, report.ops)
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  {:<8} {:>12} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "op", "ops", "errors", "p50", "p90", "p99", "p99.9", "max"
    );
    for (name, stats) in &report.by_op {
        latency_row(&mut out, name, stats.ops, stats.errors, &stats.latency);
    }
    latency_row(&mut out, "all", report.ops, report.errors, &report.latency);
    if let Some(client) = &report.client_latency {
        latency_row(&mut out, "app", client.count, 0, client);
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "  memory   {:<34} {:<34}", "before", "after");
    let _ = writeln!(
        out,
        "           {:<34} {:<34}",
        memory_text(&report.memory_before),
        memory_text(&report.memory_after)
    );
    if let Some(deletes) = &report.deletes {
        let outcomes: Vec<String> = deletes
            .outcomes
            .iter()
            .map(|(outcome, n)| format!("{} {n}", outcome.as_str()))
            .collect();
        let _ = writeln!(
            out,
            "  deleted {} existing keys ({})",
            deletes.deleted,
            if outcomes.is_empty() {
                "none".to_owned()
            } else {
                outcomes.join(", ")
            }
        );
    }
    match &report.restore {
        Some(restore) => {
            let outcomes: Vec<String> = restore
                .outcomes
                .iter()
                .map(|(outcome, n)| format!("{outcome} {n}"))
                .collect();
            let _ = writeln!(
                out,
                "  restore: {} ({})",
                if outcomes.is_empty() {
                    "no keys".to_owned()
                } else {
                    outcomes.join(", ")
                },
                restore.guarantee
            );
        }
        None if report.restored_keys > 0 => {
            let _ = writeln!(out, "  restored {} keys", report.restored_keys);
        }
        None => {}
    }
    if report.keys_excluded > 0 {
        let _ = writeln!(
            out,
            "  excluded {} keys from the check: the application changed them in ways the history \
             does not hold (see check.includeClients)",
            report.keys_excluded
        );
    }
    let _ = writeln!(out);
    match &report.check {
        Some(check) => out.push_str(&render_check(check)),
        None => {
            let _ = writeln!(out, "  race check: off (spec.check.history: false)");
        }
    }
    let _ = writeln!(out);
    let reason = if report.verdict_reason.is_empty() {
        // A report from before verdicts carried their reason.
        report
            .check
            .as_ref()
            .map(|c| crate::verdict::check_verdict(c).1)
            .unwrap_or_default()
    } else {
        report.verdict_reason.clone()
    };
    let _ = writeln!(out, "{}", verdict_line(report.verdict, &reason));
    out
}

/// The check part alone (what `mapchaos check` prints).
pub fn render_check(check: &CheckReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  race exposures (truly concurrent pairs on one key): {} total, at most {} ops overlapping on one key",
        check.total_exposures(),
        check.max_overlap
    );
    let exposures: Vec<String> = check
        .exposures
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    let _ = writeln!(out, "    {}", exposures.join("  "));
    let _ = writeln!(
        out,
        "  keys     {} ok, {} illegal, {} unknown; {} ops checked{}",
        check.keys.ok,
        check.keys.illegal,
        check.keys.unknown,
        check.ops_checked,
        if check.truncated {
            " (history truncated at check.maxOps: a prefix only)"
        } else {
            ""
        }
    );
    if check.scan_duplicates > 0 {
        let _ = writeln!(
            out,
            "  scan     {} duplicate keys returned (allowed by Redis)",
            check.scan_duplicates
        );
    }
    let total = check.total_anomalies();
    if total == 0 {
        let _ = writeln!(out, "  anomalies: none");
    } else {
        let kinds: Vec<String> = check
            .anomalies
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        let _ = writeln!(out, "  anomalies: {total} keys — {}", kinds.join(", "));
        for witness in check.witnesses.iter().take(WITNESSES_SHOWN) {
            let _ = writeln!(out);
            for line in witness.to_string().lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
        if check.witnesses.len() > WITNESSES_SHOWN {
            let _ = writeln!(
                out,
                "\n  … {} more witnesses in the JSON report (--output json)",
                check.witnesses.len() - WITNESSES_SHOWN
            );
        }
    }
    out
}

/// The last line: the verdict word (what CI greps for) and why.
pub fn verdict_line(verdict: Verdict, reason: &str) -> String {
    if reason.is_empty() {
        format!("{}.", verdict.word())
    } else {
        format!("{}: {reason}", verdict.word())
    }
}

fn latency_row(out: &mut String, name: &str, ops: u64, errors: u64, latency: &LatencySummary) {
    let _ = writeln!(
        out,
        "  {:<8} {:>12} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}",
        name,
        ops,
        errors,
        micros(latency.p50_micros),
        micros(latency.p90_micros),
        micros(latency.p99_micros),
        micros(latency.p999_micros),
        micros(latency.max_micros)
    );
}

fn micros(value: u64) -> String {
    match value {
        0..1_000 => format!("{value}µs"),
        1_000..1_000_000 => format!("{:.2}ms", value as f64 / 1e3),
        _ => format!("{:.2}s", value as f64 / 1e6),
    }
}

fn bytes(value: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut scaled = value as f64;
    let mut unit = 0;
    while scaled >= 1024.0 && unit < UNITS.len() - 1 {
        scaled /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value}B")
    } else {
        format!("{scaled:.1}{}", UNITS[unit])
    }
}

fn memory_text(memory: &MemorySnapshot) -> String {
    let mut parts = vec![format!("{} keys", memory.keys)];
    if let Some(live) = memory.live_bytes {
        parts.push(format!("live {}", bytes(live)));
    }
    if let Some(held) = memory.held_bytes {
        parts.push(format!("held {}", bytes(held)));
    }
    if let Some(rss) = memory.rss_bytes {
        parts.push(format!("rss {}", bytes(rss)));
    }
    parts.join(", ")
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_read_naturally() {
        assert_eq!(micros(850), "850µs");
        assert_eq!(micros(1_500), "1.50ms");
        assert_eq!(micros(2_500_000), "2.50s");
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0MiB");
    }
}
