//! Which reports are collected, which Secrets pruned, what the status names,
//! and the compression round trip with its inflation bound.

use std::collections::BTreeSet;

use mapchaos_api::Verdict;
use mapchaos_api::resource::{
    ExperimentPhase, MapChaosStatus, RunRecord, TargetPhase, TargetStatus,
};
use mapchaos_api::storm::StormPhase;

use super::*;

fn target(pod: &str, run: u32, phase: TargetPhase, verdict: Option<Verdict>) -> TargetStatus {
    TargetStatus {
        pod: pod.into(),
        namespace: "shop".into(),
        pod_uid: format!("uid-{pod}"),
        ip: "10.0.0.7".into(),
        run,
        storm_id: format!("0b7e5a3c-1111-{run}-{pod}"),
        phase,
        verdict,
        ..TargetStatus::default()
    }
}

fn run(run: u32) -> RunRecord {
    RunRecord {
        run,
        started_at: None,
        finished_at: None,
        phase: ExperimentPhase::Completed,
        targets: 1,
        anomalies: 0,
        verdict: Some(Verdict::Pass),
        probes: Vec::new(),
    }
}

fn status(targets: Vec<TargetStatus>, runs: &[u32]) -> MapChaosStatus {
    MapChaosStatus {
        run: runs.iter().copied().max().unwrap_or(0),
        targets,
        runs: runs.iter().map(|r| run(*r)).collect(),
        ..MapChaosStatus::default()
    }
}

fn stored(name: &str, run: Option<u32>) -> StoredReport {
    StoredReport {
        name: name.into(),
        run,
    }
}

#[test]
fn only_finished_targets_with_a_report_and_no_secret_are_collected() {
    let done = target("cart-0", 3, TargetPhase::Completed, Some(Verdict::Fail));
    let running = target("cart-1", 3, TargetPhase::Running, None);
    let lost = target("cart-2", 3, TargetPhase::PodGone, None);
    let mut failed = target(
        "cart-3",
        3,
        TargetPhase::Failed,
        Some(Verdict::Inconclusive),
    );
    failed.storm_phase = Some(StormPhase::Failed);
    let kept = target("cart-4", 3, TargetPhase::Aborted, Some(Verdict::Pass));
    let status = status(
        vec![done.clone(), running, lost, failed, kept.clone()],
        &[3],
    );
    let already = stored(&secret_name(&kept.storm_id), Some(3));

    let work = plan(&status, &[already]);
    assert_eq!(work.collect.len(), 1, "{work:?}");
    let job = &work.collect[0];
    assert_eq!(job.secret, secret_name(&done.storm_id));
    assert_eq!(job.storm_id, done.storm_id);
    assert_eq!(job.run, 3);
    assert_eq!(
        (job.endpoint.namespace.as_str(), job.endpoint.pod.as_str()),
        ("shop", "cart-0")
    );
    assert_eq!(job.endpoint.uid, "uid-cart-0");
    assert_eq!(job.endpoint.ip, "10.0.0.7");
    assert!(work.prune.is_empty());
}

#[test]
fn secrets_of_runs_the_status_no_longer_keeps_are_pruned() {
    // historyLimit 2 left runs 4 and 5; run 6 is going.
    let going = target("cart-0", 6, TargetPhase::Running, None);
    let mut status = status(vec![going], &[4, 5]);
    status.run = 6;
    let secrets = [
        stored("r2", Some(2)),
        stored("r3", Some(3)),
        stored("r4", Some(4)),
        stored("r5", Some(5)),
        stored("r6", Some(6)),
        // No run label: not ours to judge, never deleted.
        stored("unlabelled", None),
    ];
    let work = plan(&status, &secrets);
    assert_eq!(work.prune, vec!["r2".to_owned(), "r3".to_owned()]);
    assert!(work.collect.is_empty());
}

#[test]
fn the_status_names_a_targets_secret_only_once_it_exists() {
    let a = target("cart-0", 1, TargetPhase::Completed, Some(Verdict::Pass));
    let b = target("cart-1", 1, TargetPhase::Completed, Some(Verdict::Fail));
    let c = target("cart-2", 1, TargetPhase::Running, None);
    let mut status = status(vec![a.clone(), b.clone(), c.clone()], &[1]);
    status.targets[1].report_secret = Some("stale".into());
    let names: BTreeSet<String> = [secret_name(&a.storm_id), secret_name(&c.storm_id)].into();
    name_secrets(&mut status, &names);
    assert_eq!(
        status.targets[0].report_secret,
        Some(secret_name(&a.storm_id))
    );
    assert_eq!(status.targets[1].report_secret, None, "no Secret, no name");
    assert_eq!(status.targets[2].report_secret, None, "no report yet");
}

#[test]
fn secret_names_are_dns_names_within_the_limit() {
    let name = secret_name("0B7E5A3C-1111_x-3-00ab12cd34ef");
    assert_eq!(name, "mapchaos-report-0b7e5a3c-1111-x-3-00ab12cd34ef");
    let long = secret_name(&"a".repeat(400));
    assert!(long.len() <= 253, "{}", long.len());
    assert!(
        long.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    );
}

#[test]
fn compression_round_trips_and_refuses_to_inflate_past_its_bound() {
    let page = "<!DOCTYPE html><p>timeline</p>".repeat(10_000);
    let compressed = gzip(page.as_bytes());
    assert!(compressed.len() < page.len() / 10, "{}", compressed.len());
    assert_eq!(
        gunzip(&compressed, page.len() as u64).unwrap(),
        page.as_bytes()
    );
    let error = gunzip(&compressed, 1_000).unwrap_err();
    assert!(error.contains("more than 1000 bytes"), "{error}");
    let error = gunzip(b"<html>not compressed", 1_000).unwrap_err();
    assert!(error.contains("not a gzip"), "{error}");
}

#[test]
fn the_secrets_are_looked_at_only_when_there_is_report_work() {
    let running = status(vec![target("cart-0", 1, TargetPhase::Running, None)], &[]);
    assert!(!needs_look(None, &running), "nothing finished");
    let mut done = status(
        vec![target(
            "cart-0",
            1,
            TargetPhase::Completed,
            Some(Verdict::Pass),
        )],
        &[1],
    );
    assert!(needs_look(Some(&running), &done), "a report to collect");
    done.targets[0].report_secret = Some(secret_name(&done.targets[0].storm_id));
    assert!(!needs_look(Some(&done), &done), "collected, nothing pruned");
    // Run 2 finished and historyLimit 1 dropped run 1: its Secret goes.
    let mut next = done.clone();
    next.runs = vec![run(2)];
    assert!(needs_look(Some(&done), &next));
}
