//! The pure probe helpers: stages, folding attempts, what stops storms.

use mapchaos_api::GoDuration;
use mapchaos_api::probe::{HttpMethod, HttpProbe, ProbeMode};

use super::*;

fn probe(name: &str, mode: ProbeMode, stop_on_failure: bool, failure_threshold: u32) -> Probe {
    Probe {
        name: name.into(),
        http: Some(HttpProbe {
            url: "http://demo:9464/healthz".into(),
            method: HttpMethod::Get,
            expected_status: vec![200],
            body_match: None,
            timeout: GoDuration::from_secs(1),
        }),
        prometheus: None,
        mode,
        interval: GoDuration::from_secs(3),
        failure_threshold,
        stop_on_failure,
    }
}

fn spec(probes: Vec<Probe>) -> MapChaosSpec {
    let mut spec: MapChaosSpec = serde_json::from_value(serde_json::json!({})).unwrap();
    spec.probes = probes;
    spec
}

fn at() -> Time {
    Time("2026-05-01T12:00:00Z".parse().unwrap())
}

#[test]
fn continuous_probes_run_in_every_stage() {
    let spec = spec(vec![
        probe("b", ProbeMode::Before, false, 1),
        probe("d", ProbeMode::During, false, 1),
        probe("a", ProbeMode::After, false, 1),
        probe("c", ProbeMode::Continuous, false, 1),
    ]);
    let names =
        |stage| -> Vec<String> { in_stage(&spec, stage).into_iter().map(|p| p.name).collect() };
    assert_eq!(names(ProbeStage::Before), ["b", "c"]);
    assert_eq!(names(ProbeStage::During), ["d", "c"]);
    assert_eq!(names(ProbeStage::After), ["a", "c"]);
    assert_eq!(during_interval(&spec), Some(Duration::from_secs(3)));
    assert_eq!(during_interval(&self::spec(vec![])), None);
}

#[test]
fn folding_counts_every_attempt_and_reports_each_probe_failing_once() {
    let spec = spec(vec![
        probe("health", ProbeMode::Continuous, true, 2),
        probe("other", ProbeMode::Continuous, false, 1),
    ]);
    let mut statuses = fresh(&spec);
    let attempts: Attempts = BTreeMap::from([
        (
            "health".to_owned(),
            vec![Err("a".into()), Err("b".into()), Err("c".into())],
        ),
        ("other".to_owned(), vec![Ok("fine".into())]),
        ("unknown".to_owned(), vec![Err("ignored".into())]),
    ]);
    let failed = fold(&mut statuses, &spec, ProbeStage::After, &attempts, &at());
    assert_eq!(failed, [("health".to_owned(), "after: b".to_owned())]);
    assert_eq!(statuses[0].attempts, 3);
    assert_eq!(statuses[0].message, "after: c");
    assert_eq!(statuses[1].phase, ProbePhase::Running);
    assert_eq!(stops_storms(&spec, &statuses), Some("health".into()));
    statuses[0].phase = ProbePhase::Passed;
    statuses[1].phase = ProbePhase::Failed;
    assert_eq!(
        stops_storms(&spec, &statuses),
        None,
        "other does not stop them"
    );
}
