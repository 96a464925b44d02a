//! Which storm reports to keep in Secrets: the pure part of collecting
//! them. Each finished target's HTML report goes into one Secret in the
//! experiment's namespace, owned by the MapChaos (so it goes with it),
//! gzip-compressed under [`MAX_COMPRESSED_BYTES`]; Secrets of runs the
//! status no longer keeps (`historyLimit`) are pruned. Reading and writing
//! the Secrets and the sidecars is in `report_store`.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};

use mapchaos_api::resource::{MapChaosStatus, TargetStatus};
use mapchaos_api::storm::StormPhase;

use crate::plan::Endpoint;

/// The label every report Secret carries: the owning MapChaos's uid (a
/// name may be longer than a label value can be).
pub const EXPERIMENT_UID_LABEL: &str = "mapchaos.io/experiment-uid";
/// The owning MapChaos's name, when it fits a label value (63 characters).
pub const EXPERIMENT_LABEL: &str = "mapchaos.io/experiment";
/// The run the report is of.
pub const RUN_LABEL: &str = "mapchaos.io/run";
/// The target pod, when its name fits a label value.
pub const TARGET_LABEL: &str = "mapchaos.io/target";
/// Marks the Secret as a storm report (`mapchaos report` lists by it).
pub const KIND_LABEL: &str = "mapchaos.io/kind";
/// [`KIND_LABEL`]'s value.
pub const KIND_REPORT: &str = "storm-report";
/// The target, namespace/pod, in full (annotation).
pub const POD_ANNOTATION: &str = "mapchaos.io/pod";
/// The storm id on the sidecar (annotation).
pub const STORM_ANNOTATION: &str = "mapchaos.io/storm-id";
/// The target's verdict and phase when it was collected (annotations).
pub const VERDICT_ANNOTATION: &str = "mapchaos.io/verdict";
pub const PHASE_ANNOTATION: &str = "mapchaos.io/phase";
/// How many timelines the page was trimmed to, when it was (annotation).
pub const TRIMMED_ANNOTATION: &str = "mapchaos.io/trimmed-to-timelines";
/// The key of the gzip-compressed page in the Secret's data.
pub const DATA_KEY: &str = "report.html.gz";

/// The most a compressed report may take: a Secret holds at most 1 MiB,
/// and its metadata and base64 framing need some of it.
pub const MAX_COMPRESSED_BYTES: usize = 900 * 1024;

/// Timeline caps tried in turn until the compressed page fits.
pub const TRIM_STEPS: [usize; 5] = [10, 5, 2, 1, 0];

/// A report Secret that exists, as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReport {
    pub name: String,
    /// From [`RUN_LABEL`]; `None` when the label is missing or garbled.
    pub run: Option<u32>,
}

/// One report to fetch and store.
#[derive(Debug, Clone, PartialEq)]
pub struct Collect {
    pub endpoint: Endpoint,
    pub storm_id: String,
    pub run: u32,
    /// The Secret to write.
    pub secret: String,
    pub target: TargetStatus,
}

/// What to do about reports this reconcile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportWork {
    pub collect: Vec<Collect>,
    /// Secrets to delete: of runs the status keeps no more.
    pub prune: Vec<String>,
}

/// The Secret that holds the report of storm `storm_id`: a DNS subdomain
/// name (lowercase, at most 253 characters).
pub fn secret_name(storm_id: &str) -> String {
    let id: String = storm_id
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(200)
        .collect();
    format!("mapchaos-report-{}", id.trim_matches(['-', '.']))
}

/// Whether a target has a report to collect: its storm ran to a final
/// report (a storm that failed to start has none).
fn has_report(target: &TargetStatus) -> bool {
    target.phase.is_final()
        && target.verdict.is_some()
        && !target.storm_id.is_empty()
        && !target.ip.is_empty()
        && target.storm_phase != Some(StormPhase::Failed)
}

/// Whether this reconcile has report work, so the Secrets are listed only
/// then: a finished target whose report is not named in the status yet, or
/// runs the status stopped keeping (their Secrets go).
pub fn needs_look(old: Option<&MapChaosStatus>, new: &MapChaosStatus) -> bool {
    let uncollected = new
        .targets
        .iter()
        .any(|t| has_report(t) && t.report_secret.is_none());
    let runs = |s: &MapChaosStatus| s.runs.iter().map(|r| r.run).collect::<BTreeSet<_>>();
    let dropped = old.is_some_and(|old| !runs(old).is_subset(&runs(new)));
    uncollected || dropped
}

/// What to collect and prune, given the status the plan arrived at and the
/// report Secrets there are.
pub fn plan(status: &MapChaosStatus, stored: &[StoredReport]) -> ReportWork {
    let names: BTreeSet<&str> = stored.iter().map(|s| s.name.as_str()).collect();
    let collect = status
        .targets
        .iter()
        .filter(|t| has_report(t))
        .filter_map(|t| {
            let secret = secret_name(&t.storm_id);
            (!names.contains(secret.as_str())).then(|| Collect {
                endpoint: Endpoint {
                    namespace: t.namespace.clone(),
                    pod: t.pod.clone(),
                    uid: t.pod_uid.clone(),
                    ip: t.ip.clone(),
                },
                storm_id: t.storm_id.clone(),
                run: if t.run == 0 { status.run } else { t.run },
                secret,
                target: t.clone(),
            })
        })
        .collect();
    let mut kept: BTreeSet<u32> = status.runs.iter().map(|r| r.run).collect();
    kept.insert(status.run);
    kept.extend(status.targets.iter().map(|t| t.run));
    let prune = stored
        .iter()
        .filter(|s| s.run.is_some_and(|run| !kept.contains(&run)))
        .map(|s| s.name.clone())
        .collect();
    ReportWork { collect, prune }
}

/// Name each target's Secret in the status, when it exists.
pub fn name_secrets(status: &mut MapChaosStatus, stored: &BTreeSet<String>) {
    for target in &mut status.targets {
        let secret = secret_name(&target.storm_id);
        target.report_secret = (has_report(target) && stored.contains(&secret)).then_some(secret);
    }
}

/// `html` gzip-compressed.
pub fn gzip(html: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(html);
    encoder.finish().unwrap_or_default()
}

/// A gzip-compressed page, at most `max` bytes once inflated (a Secret
/// anyone could write must not inflate without bound).
pub fn gunzip(compressed: &[u8], max: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(compressed)
        .take(max + 1)
        .read_to_end(&mut out)
        .map_err(|error| format!("not a gzip-compressed report: {error}"))?;
    if out.len() as u64 > max {
        return Err(format!("inflates to more than {max} bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
