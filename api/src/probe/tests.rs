//! Unit tests of the probe judges, the attempt tally and the validation.

use super::*;

fn http(url: &str) -> HttpProbe {
    HttpProbe {
        url: url.into(),
        method: HttpMethod::Get,
        expected_status: vec![200],
        body_match: None,
        timeout: GoDuration::from_secs(5),
    }
}

fn prom(op: CompareOp, value: f64) -> PrometheusProbe {
    PrometheusProbe {
        url: "http://prometheus:9090".into(),
        query: "sum(mapchaos_demo_surprises_total)".into(),
        comparison: Comparison { op, value },
        timeout: GoDuration::from_secs(5),
    }
}

fn probe(name: &str) -> Probe {
    Probe {
        name: name.into(),
        http: Some(http("http://app:8080/healthz")),
        prometheus: None,
        mode: ProbeMode::Continuous,
        interval: GoDuration::from_secs(5),
        failure_threshold: 1,
        stop_on_failure: false,
    }
}

fn fields(probes: &[Probe]) -> Vec<String> {
    problems(probes).into_iter().map(|(f, _)| f).collect()
}

#[test]
fn http_answers_are_judged_by_status_and_substring() {
    let mut p = http("http://x/");
    assert_eq!(judge_http(&p, 200, b"ok"), Ok("HTTP 200".into()));
    assert_eq!(
        judge_http(&p, 503, b"ok"),
        Err("HTTP 503, expected 200".into())
    );
    p.expected_status = vec![200, 204];
    assert!(judge_http(&p, 204, b"").is_ok());
    assert_eq!(
        judge_http(&p, 500, b"").unwrap_err(),
        "HTTP 500, expected 200 or 204"
    );
    p.body_match = Some("\"healthy\"".into());
    assert!(judge_http(&p, 200, br#"{"state":"healthy"}"#).is_ok());
    // Plain text, not a regular expression.
    p.body_match = Some("heal.hy".into());
    let why = judge_http(&p, 200, b"healthy").unwrap_err();
    assert!(why.contains("does not contain \"heal.hy\""), "{why}");
}

#[test]
fn comparisons_hold_as_written_and_nan_fails_them() {
    let cases = [
        (CompareOp::Less, 1.0, 2.0, true),
        (CompareOp::Less, 2.0, 2.0, false),
        (CompareOp::LessOrEqual, 2.0, 2.0, true),
        (CompareOp::Equal, 0.0, 0.0, true),
        (CompareOp::Equal, 1.0, 0.0, false),
        (CompareOp::NotEqual, 1.0, 0.0, true),
        (CompareOp::GreaterOrEqual, 2.0, 2.0, true),
        (CompareOp::Greater, 2.0, 2.0, false),
        (CompareOp::Greater, 3.0, 2.0, true),
    ];
    for (op, sample, value, holds) in cases {
        assert_eq!(
            Comparison { op, value }.holds(sample),
            holds,
            "{sample} {op:?} {value}"
        );
    }
    let eq = Comparison {
        op: CompareOp::Equal,
        value: 0.0,
    };
    assert!(!eq.holds(f64::NAN));
}

#[test]
fn operators_are_written_as_symbols() {
    let c: Comparison = serde_json::from_str(r#"{"op": "<=", "value": 3}"#).unwrap();
    assert_eq!(c.op, CompareOp::LessOrEqual);
    assert!(serde_json::from_str::<Comparison>(r#"{"op": "le", "value": 3}"#).is_err());
}

#[test]
fn a_prometheus_vector_passes_only_when_every_sample_holds() {
    let p = prom(CompareOp::Equal, 0.0);
    let body = br#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{"kind":"lost_cart"},"value":[1700000000.1,"0"]},
        {"metric":{"kind":"stale_cart"},"value":[1700000000.1,"0"]}]}}"#;
    let ok = judge_prometheus(&p, 200, body).unwrap();
    assert!(ok.starts_with("2 sample(s) == 0"), "{ok}");
    let body = br#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{"kind":"lost_cart"},"value":[1700000000.1,"0"]},
        {"metric":{"kind":"stale_cart"},"value":[1700000000.1,"3"]}]}}"#;
    let why = judge_prometheus(&p, 200, body).unwrap_err();
    assert_eq!(why, "{kind=stale_cart} = 3, not == 0 (2 sample(s))");
}

#[test]
fn an_empty_prometheus_result_fails_with_that_reason() {
    let p = prom(CompareOp::Equal, 0.0);
    let body = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
    let why = judge_prometheus(&p, 200, body).unwrap_err();
    assert!(why.contains("returned no samples"), "{why}");
}

#[test]
fn a_prometheus_error_or_junk_answer_fails_with_its_text() {
    let p = prom(CompareOp::Less, 1.0);
    let body = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
    assert_eq!(
        judge_prometheus(&p, 400, body).unwrap_err(),
        "Prometheus answered HTTP 400: parse error at char 4"
    );
    let why = judge_prometheus(&p, 502, b"<html>bad gateway</html>").unwrap_err();
    assert!(
        why.contains("not JSON") && why.contains("bad gateway"),
        "{why}"
    );
    let body = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
    assert!(
        judge_prometheus(&p, 200, body)
            .unwrap_err()
            .contains("matrix")
    );
    let body = br#"{"status":"success","data":{"resultType":"scalar","result":[1.0,"0.5"]}}"#;
    assert!(judge_prometheus(&p, 200, body).is_ok());
    let body = br#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{},"value":[1.0,"NaN"]}]}}"#;
    assert!(judge_prometheus(&p, 200, body).is_err(), "NaN is no pass");
}

#[test]
fn attempts_add_up_and_the_threshold_counts_failures_in_a_row() {
    let at = || Time(jiff::Timestamp::UNIX_EPOCH);
    let mut s = ProbeStatus::new("health");
    assert!(!s.record(&Err("down".into()), ProbeStage::During, at(), 2));
    assert_eq!(s.phase, ProbePhase::Running);
    assert!(!s.record(&Ok("HTTP 200".into()), ProbeStage::During, at(), 2));
    assert_eq!(s.consecutive_failures, 0);
    assert!(!s.record(&Err("down".into()), ProbeStage::During, at(), 2));
    assert!(s.record(&Err("still down".into()), ProbeStage::During, at(), 2));
    assert_eq!(s.phase, ProbePhase::Failed);
    assert_eq!((s.attempts, s.successes, s.success_percent), (4, 1, 25));
    assert_eq!(s.message, "during: still down");
    // Failed stays failed, and fails only once.
    assert!(!s.record(&Ok("HTTP 200".into()), ProbeStage::After, at(), 2));
    s.finish();
    assert_eq!(s.phase, ProbePhase::Failed);

    let mut fine = ProbeStatus::new("fine");
    fine.finish();
    assert_eq!(fine.phase, ProbePhase::NotRun, "never ran, never passed");
    fine.record(&Ok("HTTP 200".into()), ProbeStage::Before, at(), 1);
    fine.finish();
    assert_eq!(
        (fine.phase, fine.success_percent),
        (ProbePhase::Passed, 100)
    );
}

#[test]
fn the_run_passes_only_when_the_map_and_every_probe_pass() {
    let with = |phase| ProbeStatus {
        phase,
        ..ProbeStatus::new("p")
    };
    use ProbePhase::*;
    assert_eq!(
        combined_verdict(Some(Verdict::Pass), &[]),
        Some(Verdict::Pass)
    );
    assert_eq!(
        combined_verdict(Some(Verdict::Pass), &[with(Passed), with(Passed)]),
        Some(Verdict::Pass)
    );
    assert_eq!(
        combined_verdict(Some(Verdict::Pass), &[with(Passed), with(Failed)]),
        Some(Verdict::Fail)
    );
    assert_eq!(
        combined_verdict(Some(Verdict::Pass), &[with(NotRun)]),
        Some(Verdict::Inconclusive)
    );
    assert_eq!(
        combined_verdict(Some(Verdict::Aborted), &[with(Passed)]),
        Some(Verdict::Aborted)
    );
    assert_eq!(combined_verdict(None, &[with(Failed)]), Some(Verdict::Fail));
    assert_eq!(combined_verdict(None, &[with(Running)]), None);
    assert_eq!(
        combined_verdict(Some(Verdict::Fail), &[with(Passed)]),
        Some(Verdict::Fail)
    );
}

#[test]
fn a_valid_probe_list_has_no_problems() {
    let mut p2 = probe("surprises");
    p2.http = None;
    p2.prometheus = Some(prom(CompareOp::Equal, 0.0));
    p2.mode = ProbeMode::During;
    p2.stop_on_failure = true;
    assert!(problems(&[probe("health"), p2]).is_empty());
}

#[test]
fn every_probe_bound_is_named_by_its_field() {
    let mut both = probe("both");
    both.prometheus = Some(prom(CompareOp::Less, 1.0));
    let mut neither = probe("neither");
    neither.http = None;
    let mut bad = probe("Bad_Name");
    bad.http.as_mut().unwrap().url = "ftp://x/".into();
    bad.http.as_mut().unwrap().timeout = GoDuration::from_secs(61);
    bad.interval = GoDuration::from_millis(500);
    bad.failure_threshold = 0;
    let mut statuses = probe("statuses");
    statuses.http.as_mut().unwrap().expected_status = vec![99, 200];
    statuses.http.as_mut().unwrap().body_match = Some(String::new());
    let mut stop = probe("stop");
    stop.mode = ProbeMode::After;
    stop.stop_on_failure = true;
    let mut query = probe("query");
    query.http = None;
    let mut q = prom(CompareOp::Less, f64::INFINITY);
    q.query = " ".into();
    q.url = "http://:9090".into();
    q.timeout = GoDuration::from_secs(0);
    query.prometheus = Some(q);
    let dup = probe("stop");
    assert_eq!(
        fields(&[both, neither, bad, statuses, stop, query, dup]),
        [
            "probes[0].http",
            "probes[1].http",
            "probes[2].name",
            "probes[2].http.url",
            "probes[2].http.timeout",
            "probes[2].interval",
            "probes[2].failureThreshold",
            "probes[3].http.expectedStatus",
            "probes[3].http.bodyMatch",
            "probes[4].stopOnFailure",
            "probes[5].prometheus.url",
            "probes[5].prometheus.query",
            "probes[5].prometheus.comparison.value",
            "probes[5].prometheus.timeout",
            "probes[6].name",
        ]
    );
}

#[test]
fn at_most_sixteen_probes_and_intervals_up_to_ten_minutes() {
    let many: Vec<Probe> = (0..17).map(|i| probe(&format!("p{i}"))).collect();
    assert_eq!(fields(&many), ["probes"]);
    assert!(problems(&many[..16]).is_empty());
    let mut slow = probe("slow");
    slow.interval = GoDuration::from_secs(600);
    assert!(problems(std::slice::from_ref(&slow)).is_empty());
    slow.interval = GoDuration::from_secs(601);
    assert_eq!(fields(&[slow]), ["probes[0].interval"]);
}

#[test]
fn urls_must_be_http_or_https_with_a_host() {
    assert_eq!(url_problem("http://demo.shop:9464/healthz"), None);
    assert_eq!(url_problem("https://10.0.0.1"), None);
    for bad in [
        "file:///etc/passwd",
        "demo:9464",
        "http://",
        "http:///x",
        "http://a b/",
    ] {
        assert!(url_problem(bad).is_some(), "{bad}");
    }
    assert!(url_problem(&format!("http://h/{}", "a".repeat(MAX_PROBE_TEXT))).is_some());
}

#[test]
fn a_probe_reads_from_yaml_with_its_defaults() {
    let p: Probe =
        serde_saphyr::from_str("name: health\nhttp: {url: 'http://demo:9464/healthz'}\n").unwrap();
    assert_eq!(p.mode, ProbeMode::Continuous);
    assert_eq!(p.interval, GoDuration::from_secs(5));
    assert_eq!(p.failure_threshold, 1);
    let h = p.http.unwrap();
    assert_eq!((h.method, h.expected_status), (HttpMethod::Get, vec![200]));
    assert_eq!(h.timeout, GoDuration::from_secs(5));
    assert!(
        serde_saphyr::from_str::<Probe>("name: x\nhttp: {url: 'http://a/', methd: GET}\n").is_err(),
        "unknown fields are refused"
    );
}
