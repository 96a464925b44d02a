//! The HTTP prober against real local HTTP servers: a tiny application and
//! a fake Prometheus that answers `/api/v1/query` from the query it got.

use std::time::Instant;

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::get;
use mapchaos_api::GoDuration;
use mapchaos_api::probe::{CompareOp, Comparison, HttpProbe, ProbeMode, PrometheusProbe};

use super::*;

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn app() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok: healthy" }))
        .route(
            "/down",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route("/huge", get(|| async { vec![b'x'; MAX_PROBE_BODY + 1] }))
}

fn http_probe(url: String) -> Probe {
    Probe {
        name: "health".into(),
        http: Some(HttpProbe {
            url,
            method: HttpMethod::Get,
            expected_status: vec![200],
            body_match: None,
            timeout: GoDuration::from_secs(2),
        }),
        prometheus: None,
        mode: ProbeMode::Continuous,
        interval: GoDuration::from_millis(100),
        failure_threshold: 1,
        stop_on_failure: false,
    }
}

#[tokio::test]
async fn an_http_probe_passes_on_the_expected_status_and_body() {
    let base = serve(app()).await;
    let prober = HttpProber::new();
    let mut probe = http_probe(format!("{base}/healthz"));
    probe.http.as_mut().unwrap().body_match = Some("healthy".into());
    assert_eq!(prober.attempt(&probe).await, Ok("HTTP 200".into()));
    probe.http.as_mut().unwrap().body_match = Some("sick".into());
    let why = prober.attempt(&probe).await.unwrap_err();
    assert!(why.contains("does not contain \"sick\""), "{why}");
    probe.http.as_mut().unwrap().method = HttpMethod::Head;
    probe.http.as_mut().unwrap().body_match = None;
    assert!(prober.attempt(&probe).await.is_ok(), "HEAD works");
}

#[tokio::test]
async fn an_http_probe_fails_on_status_timeout_refusal_and_a_huge_body() {
    let base = serve(app()).await;
    let prober = HttpProber::new();
    let down = prober.attempt(&http_probe(format!("{base}/down"))).await;
    assert_eq!(down, Err("HTTP 503, expected 200".into()));

    let mut slow = http_probe(format!("{base}/slow"));
    slow.http.as_mut().unwrap().timeout = GoDuration::from_millis(300);
    let started = Instant::now();
    let why = prober.attempt(&slow).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the timeout holds"
    );
    assert!(why.contains("no answer within 300ms"), "{why}");

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let why = prober
        .attempt(&http_probe(format!("http://{closed}/healthz")))
        .await
        .unwrap_err();
    assert!(
        why.contains(&format!("GET http://{closed}/healthz")),
        "{why}"
    );
    assert!(
        why.to_lowercase().contains("refused"),
        "the cause is named: {why}"
    );

    let why = prober
        .attempt(&http_probe(format!("{base}/huge")))
        .await
        .unwrap_err();
    assert!(why.contains("reading the body"), "{why}");
}

#[tokio::test]
async fn an_https_probe_fails_against_a_plain_server_with_the_tls_cause() {
    let base = serve(app()).await;
    let url = base.replace("http://", "https://") + "/healthz";
    let why = HttpProber::new()
        .attempt(&http_probe(url))
        .await
        .unwrap_err();
    assert!(why.starts_with("GET https://"), "{why}");
}

#[derive(serde::Deserialize)]
struct Params {
    query: String,
}

/// A fake Prometheus: `surprises` has two series, `flat` is 0, `absent` is
/// empty, anything else is a bad query.
async fn prometheus() -> String {
    let answer = |Query(params): Query<Params>| async move {
        let series = |kind: &str, value: &str| serde_json::json!({"metric": {"kind": kind}, "value": [1700000000.0, value]});
        let vector = |result: Vec<serde_json::Value>| serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": result}});
        match params.query.as_str() {
            "sum by (kind) (mapchaos_demo_surprises_total{kind!=\"\"})" => (
                StatusCode::OK,
                vector(vec![series("lost_cart", "0"), series("stale_cart", "4")]).to_string(),
            ),
            "flat" => (StatusCode::OK, vector(vec![series("x", "0")]).to_string()),
            "absent" => (StatusCode::OK, vector(vec![]).to_string()),
            _ => (
                StatusCode::BAD_REQUEST,
                serde_json::json!({"status": "error", "errorType": "bad_data", "error": "parse error"})
                    .to_string(),
            ),
        }
    };
    serve(Router::new().route("/api/v1/query", get(answer))).await
}

fn prom_probe(base: &str, query: &str, op: CompareOp, value: f64) -> Probe {
    Probe {
        http: None,
        prometheus: Some(PrometheusProbe {
            url: format!("{base}/"),
            query: query.into(),
            comparison: Comparison { op, value },
            timeout: GoDuration::from_secs(2),
        }),
        ..http_probe(String::new())
    }
}

#[tokio::test]
async fn a_prometheus_probe_compares_every_sample_of_the_live_answer() {
    let base = prometheus().await;
    let prober = HttpProber::new();
    let query = "sum by (kind) (mapchaos_demo_surprises_total{kind!=\"\"})";
    let why = prober
        .attempt(&prom_probe(&base, query, CompareOp::Equal, 0.0))
        .await
        .unwrap_err();
    assert_eq!(why, "{kind=stale_cart} = 4, not == 0 (2 sample(s))");
    assert!(
        prober
            .attempt(&prom_probe(&base, query, CompareOp::LessOrEqual, 4.0))
            .await
            .is_ok(),
        "the query reached Prometheus intact"
    );
    assert!(
        prober
            .attempt(&prom_probe(&base, "flat", CompareOp::Equal, 0.0))
            .await
            .is_ok()
    );
    let why = prober
        .attempt(&prom_probe(&base, "absent", CompareOp::Equal, 0.0))
        .await
        .unwrap_err();
    assert!(why.contains("returned no samples"), "{why}");
    let why = prober
        .attempt(&prom_probe(&base, "rate(", CompareOp::Equal, 0.0))
        .await
        .unwrap_err();
    assert_eq!(why, "Prometheus answered HTTP 400: parse error");
}

struct Scripted(parking_lot::Mutex<Vec<ProbeAttempt>>);

impl ProbeRunner for Scripted {
    fn attempt<'a>(&'a self, _: &'a Probe) -> BoxFuture<'a, ProbeAttempt> {
        let next = self.0.lock().remove(0);
        Box::pin(async move { next })
    }
}

#[tokio::test]
async fn a_once_stage_tries_up_to_the_threshold_and_stops_at_a_pass() {
    let mut probe = http_probe("http://unused/".into());
    probe.failure_threshold = 3;
    let runner = Scripted(parking_lot::Mutex::new(vec![
        Err("a".into()),
        Ok("b".into()),
        Err("never asked".into()),
    ]));
    assert_eq!(
        until_pass(&runner, &probe).await,
        [Err("a".into()), Ok("b".into())]
    );
    let runner = Scripted(parking_lot::Mutex::new(vec![Err("x".into()); 3]));
    let started = Instant::now();
    assert_eq!(until_pass(&runner, &probe).await.len(), 3);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "interval apart"
    );
}

#[test]
fn queries_are_percent_encoded() {
    assert_eq!(
        query_url("http://p:9090/", "sum(x{a=\"b c\"}) > 0"),
        "http://p:9090/api/v1/query?query=sum%28x%7Ba%3D%22b%20c%22%7D%29%20%3E%200"
    );
}
