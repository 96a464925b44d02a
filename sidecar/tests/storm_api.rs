//! The storm control API over real HTTP: signatures (bound to the pod, used
//! once, reads included), idempotent PUT, one storm at a time, DELETE, the lease dead-man's switch, history, and restore
//! of existing keys.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use mapchaos_api::signing::{NONCE_HEADER, PodIdentity, TARGET_HEADER, hex, new_nonce};
use mapchaos_sidecar::control_api::{self, Verifier};
use mapchaos_sidecar::engine::{
    Clock, LaggingEngine, MapEngine, SetExpiry, SetOptions, ShardedEngine, Ttl,
};
use mapchaos_sidecar::metrics::SidecarMetrics;
use mapchaos_sidecar::storms::{StormBudget, Storms};
use serde_json::{Value, json};

const KEY: [u8; 32] = [7; 32];

/// The pod the sidecar under test is.
fn this_pod() -> PodIdentity {
    PodIdentity::new("shop", "cart-0", "0b7e5a3c-1111-4c8e-9c1e-2f9d3b7a0c44")
}

struct Api {
    port: u16,
    engine: Arc<dyn MapEngine>,
    _runtime: tokio::runtime::Runtime,
}

/// How a test request is signed.
struct Signing {
    key: [u8; 32],
    /// Seconds added to the clock's time.
    offset: i64,
    target: PodIdentity,
    nonce: String,
}

impl Signing {
    fn now(key: [u8; 32]) -> Signing {
        Signing {
            key,
            offset: 0,
            target: this_pod(),
            nonce: new_nonce(),
        }
    }

    /// The signature headers of `method path body`.
    fn headers(&self, method: &str, path: &str, body: &str) -> String {
        let timestamp = (common::unix_now() as i64 + self.offset) as u64;
        common::signature_headers(
            &self.key,
            &self.target,
            (method, path, body),
            timestamp,
            &self.nonce,
        )
    }
}

impl Api {
    fn start() -> Api {
        Api::start_full(Some(this_pod()), StormBudget::default())
    }

    fn start_with(budget: StormBudget) -> Api {
        Api::start_full(Some(this_pod()), budget)
    }

    /// A sidecar that is pod `identity` (`None`: it was not told).
    fn start_as(identity: Option<PodIdentity>) -> Api {
        Api::start_full(identity, StormBudget::default())
    }

    fn start_full(identity: Option<PodIdentity>, budget: StormBudget) -> Api {
        Api::start_engine(
            Arc::new(ShardedEngine::new(8, Clock::System)),
            identity,
            budget,
        )
    }

    fn start_engine(
        engine: Arc<dyn MapEngine>,
        identity: Option<PodIdentity>,
        budget: StormBudget,
    ) -> Api {
        let storms = Storms::with_budget(engine.clone(), Arc::new(SidecarMetrics::new()), budget);
        let public = hex(SigningKey::from_bytes(&KEY).verifying_key().as_bytes());
        let verifier = Verifier::new(Some(&public), identity).unwrap();
        let (runtime, listener, port) = common::runtime_with_listener(1);
        runtime.spawn(async move {
            axum::serve(listener, control_api::router(storms, verifier))
                .await
                .unwrap();
        });
        Api {
            port,
            engine,
            _runtime: runtime,
        }
    }

    /// Send a request; `sign` is (key, timestamp offset in seconds), signed
    /// for this sidecar's pod with a fresh nonce.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: &str,
        sign: Option<([u8; 32], i64)>,
    ) -> (u16, Value) {
        let headers = sign
            .map(|(key, offset)| {
                Signing {
                    offset,
                    ..Signing::now(key)
                }
                .headers(method, path, body)
            })
            .unwrap_or_default();
        self.send(method, path, body, &headers)
    }

    /// Send a request with these extra header lines.
    fn send(&self, method: &str, path: &str, body: &str, headers: &str) -> (u16, Value) {
        let (status, body) = common::http_request(self.port, method, path, headers, body);
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    fn put(&self, id: &str, body: &Value) -> (u16, Value) {
        self.call(
            "PUT",
            &format!("/v1/storms/{id}"),
            &body.to_string(),
            Some((KEY, 0)),
        )
    }

    /// A signed GET.
    fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, "", Some((KEY, 0)))
    }

    fn wait_final(&self, id: &str) -> Value {
        for _ in 0..600 {
            let (status, body) = self.get(&format!("/v1/storms/{id}"));
            assert_eq!(status, 200, "{body}");
            if ["Completed", "Aborted", "Failed"].contains(&body["phase"].as_str().unwrap()) {
                return body;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("storm {id} did not finish");
    }
}

fn error_of(answer: &(u16, Value)) -> &str {
    answer.1["error"].as_str().unwrap_or_default()
}

fn request(duration: &str, lease: &str) -> Value {
    json!({
        "storm": {"workers": 4, "keys": {"count": 50, "prefix": "api:"}, "mix": {"del": 50, "get": 30, "set": 20}},
        "duration": duration,
        "seed": 42,
        "lease": lease,
    })
}

#[test]
fn a_signed_put_runs_a_storm_to_completion_and_serves_its_history() {
    let api = Api::start();
    let (status, body) = api.put("run-1", &request("500ms", "30s"));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"], "run-1");
    // The same PUT again is a renewal, not a second storm.
    let (status, body) = api.put("run-1", &request("500ms", "30s"));
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.put("run-2", &request("500ms", "30s"));
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["running"], "run-1");

    let done = api.wait_final("run-1");
    assert_eq!(done["phase"], "Completed", "{done}");
    let report = &done["report"];
    assert!(report["ops"].as_u64().unwrap() > 0);
    assert_eq!(report["seed"], 42);
    assert_eq!(report["check"]["anomalies"]["stale_read"], 0);
    // A finished storm's elapsedMillis stays how long its workers ran.
    std::thread::sleep(Duration::from_millis(700));
    let (_, later) = api.get("/v1/storms/run-1");
    assert_eq!(later["elapsedMillis"], report["elapsedMillis"], "{later}");

    let (status, history) = api.get("/v1/storms/run-1/history");
    assert_eq!(status, 200);
    let events = history["events"].as_array().expect("a history");
    assert!(events.len() as u64 >= report["ops"].as_u64().unwrap());
    assert_eq!(api.get("/v1/storms/nope").0, 404);
}

#[test]
fn unsigned_stale_forged_and_oversized_requests_are_refused() {
    let api = Api::start();
    let body = request("1s", "30s").to_string();
    let (status, error) = api.call("PUT", "/v1/storms/x", &body, None);
    assert_eq!(status, 401);
    assert!(
        error["error"].as_str().unwrap().contains("must be signed"),
        "{error}"
    );
    let (status, error) = api.call("PUT", "/v1/storms/x", &body, Some((KEY, -120)));
    assert_eq!(status, 401);
    assert!(
        error["error"].as_str().unwrap().contains("stale"),
        "{error}"
    );
    let (status, error) = api.call("PUT", "/v1/storms/x", &body, Some(([9; 32], 0)));
    assert_eq!(status, 401);
    assert!(
        error["error"].as_str().unwrap().contains("bad signature"),
        "{error}"
    );
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(100_000));
    assert_eq!(
        api.call("PUT", "/v1/storms/x", &huge, Some((KEY, 0))).0,
        413
    );
    assert_eq!(api.call("DELETE", "/v1/storms/x", "", None).0, 401);
    // Nothing ran.
    assert_eq!(api.get("/v1/storms/x").0, 404);
}

#[test]
fn reads_of_status_history_and_report_need_the_signature_too() {
    let api = Api::start();
    assert_eq!(api.put("read-me", &request("300ms", "30s")).0, 201);
    let done = api.wait_final("read-me");
    assert!(done["report"].is_object(), "{done}");
    for path in [
        "/v1/storms/read-me",
        "/v1/storms/read-me/history",
        "/v1/storms/read-me/report",
        "/v1/storms/read-me/report/timelines/0",
    ] {
        let unsigned = api.call("GET", path, "", None);
        assert_eq!(unsigned.0, 401, "unsigned GET {path}: {:?}", unsigned.1);
        assert!(
            error_of(&unsigned).contains("must be signed"),
            "{:?}",
            unsigned.1
        );
        assert!(
            !unsigned.1.to_string().contains("api:"),
            "an unsigned read shows no key: {:?}",
            unsigned.1
        );
        let forged = api.call("GET", path, "", Some(([9; 32], 0)));
        assert_eq!(forged.0, 401, "GET {path} signed by another key");
        assert_eq!(api.get(path).0, 200, "signed GET {path}");
    }
    // Unknown storms and ids are not told apart from known ones unsigned.
    assert_eq!(api.call("GET", "/v1/storms/nope", "", None).0, 401);
    assert_eq!(api.call("GET", "/v1/storms/nope/history", "", None).0, 401);
    assert_eq!(api.call("GET", "/v1/storms/nope/report", "", None).0, 401);
}

/// How often `needle` occurs in `page`.
fn occurrences(page: &Value, needle: &str) -> usize {
    page.as_str().unwrap_or_default().matches(needle).count()
}

#[test]
fn a_lagging_storm_serves_its_fail_report_page_signed_and_trimmed_on_request() {
    let engine = LaggingEngine::new(
        Arc::new(ShardedEngine::new(8, Clock::System)),
        Duration::from_millis(3),
    );
    let api = Api::start_engine(engine, Some(this_pod()), StormBudget::default());
    let storm = json!({
        "storm": {"workers": 16, "keys": {"count": 8, "prefix": "lag:"}, "mix": {"del": 40, "get": 40, "set": 20}},
        "duration": "1s",
        "seed": 7,
        "lease": "30s",
    });
    assert_eq!(api.put("lag-1", &storm).0, 201);
    // A running storm has no report yet.
    let (status, running) = api.get("/v1/storms/lag-1/report");
    assert_eq!(status, 409, "{running}");
    let done = api.wait_final("lag-1");
    assert_eq!(done["report"]["verdict"], "Fail", "{done}");

    let unsigned = api.call("GET", "/v1/storms/lag-1/report", "", None);
    assert_eq!(unsigned.0, 401);
    assert!(!unsigned.1.to_string().contains("lag:"), "{:?}", unsigned.1);

    let (status, page) = api.get("/v1/storms/lag-1/report");
    assert_eq!(status, 200, "{page}");
    assert!(occurrences(&page, r#"<span class="word">FAIL</span>"#) == 1);
    assert!(
        occurrences(&page, "storm lag-1") > 0,
        "titled with the storm"
    );
    let witnesses = done["report"]["check"]["witnesses"].as_array().unwrap();
    let drawn = witnesses.len().min(mapchaos_storm::html::MAX_TIMELINES);
    assert!(drawn > 0);
    assert_eq!(
        occurrences(&page, r#"<section class="card witness""#),
        drawn
    );
    assert_eq!(occurrences(&page, r#"<g class="op role-culprit"#), drawn);
    assert_eq!(occurrences(&page, r#"id="trimmed""#), 0);
    // The request it ran is on the page.
    assert!(occurrences(&page, "&quot;seed&quot;: 7") == 1, "{page}");

    let (status, trimmed) = api.get("/v1/storms/lag-1/report/timelines/0");
    assert_eq!(status, 200);
    assert_eq!(occurrences(&trimmed, r#"<section class="card witness""#), 0);
    assert_eq!(occurrences(&trimmed, r#"id="trimmed""#), 1);
    assert!(
        occurrences(&trimmed, &format!("it draws 0 of its {drawn} timelines")) == 1,
        "{trimmed}"
    );
    let (status, bad) = api.get("/v1/storms/lag-1/report/timelines/many");
    assert_eq!(status, 400);
    assert!(
        error_of(&(status, bad.clone())).contains("timelines"),
        "{bad}"
    );
    assert_eq!(api.get("/v1/storms/nope/report").0, 404);
}

#[test]
fn a_signed_request_is_accepted_once() {
    let api = Api::start();
    let body = request("60s", "30s").to_string();
    let signing = Signing::now(KEY);
    let headers = signing.headers("PUT", "/v1/storms/once", &body);
    assert_eq!(api.send("PUT", "/v1/storms/once", &body, &headers).0, 201);
    let replay = api.send("PUT", "/v1/storms/once", &body, &headers);
    assert_eq!(replay.0, 401, "{:?}", replay.1);
    assert!(error_of(&replay).contains("replayed"), "{:?}", replay.1);

    // A read, replayed, too; and a DELETE replayed after the storm stopped.
    let read = Signing::now(KEY).headers("GET", "/v1/storms/once", "");
    assert_eq!(api.send("GET", "/v1/storms/once", "", &read).0, 200);
    assert_eq!(api.send("GET", "/v1/storms/once", "", &read).0, 401);
    let stop = Signing::now(KEY).headers("DELETE", "/v1/storms/once", "");
    assert!(matches!(
        api.send("DELETE", "/v1/storms/once", "", &stop).0,
        200 | 202
    ));
    api.wait_final("once");
    let again = api.send("DELETE", "/v1/storms/once", "", &stop);
    assert_eq!(again.0, 401, "{:?}", again.1);
    assert!(error_of(&again).contains("replayed"));
}

#[test]
fn a_request_signed_for_another_pod_is_refused_with_both_names() {
    let api = Api::start();
    let body = request("1s", "30s").to_string();
    let for_pod = |target: PodIdentity| {
        let signing = Signing {
            target,
            ..Signing::now(KEY)
        };
        let headers = signing.headers("PUT", "/v1/storms/elsewhere", &body);
        api.send("PUT", "/v1/storms/elsewhere", &body, &headers)
    };
    let mine = this_pod();
    let other_name = for_pod(PodIdentity::new("shop", "cart-1", &mine.uid));
    assert_eq!(other_name.0, 401);
    assert!(
        error_of(&other_name).contains("signed for pod shop/cart-1")
            && error_of(&other_name).contains("this sidecar is pod shop/cart-0"),
        "{:?}",
        other_name.1
    );
    let other_namespace = for_pod(PodIdentity::new("billing", "cart-0", &mine.uid));
    assert_eq!(other_namespace.0, 401);
    assert!(error_of(&other_namespace).contains("billing/cart-0"));
    // Same name, another uid: the pod this one replaced.
    let replaced = for_pod(PodIdentity::new("shop", "cart-0", "11111111-old-pod"));
    assert_eq!(replaced.0, 401);
    assert!(error_of(&replaced).contains("uid"), "{:?}", replaced.1);
    let no_uid = for_pod(PodIdentity::new("shop", "cart-0", ""));
    assert_eq!(no_uid.0, 401);
    // A signature made for pod B, with the headers changed to say pod A.
    let signed_for_b = Signing {
        target: PodIdentity::new("shop", "cart-1", &mine.uid),
        ..Signing::now(KEY)
    }
    .headers("PUT", "/v1/storms/elsewhere", &body)
    .replace("shop/cart-1", "shop/cart-0");
    let relabelled = api.send("PUT", "/v1/storms/elsewhere", &body, &signed_for_b);
    assert_eq!(relabelled.0, 401);
    assert!(
        error_of(&relabelled).contains("bad signature"),
        "{:?}",
        relabelled.1
    );
    // Nothing started; the right pod's request does.
    assert_eq!(api.get("/v1/storms/elsewhere").0, 404);
    assert_eq!(for_pod(mine).0, 201);
}

#[test]
fn stale_future_and_malformed_signatures_are_refused() {
    let api = Api::start();
    let body = request("1s", "30s").to_string();
    for offset in [-31, -3600, 31, 3600] {
        let answer = api.call("PUT", "/v1/storms/t", &body, Some((KEY, offset)));
        assert_eq!(answer.0, 401, "offset {offset}");
        assert!(error_of(&answer).contains("stale"), "{:?}", answer.1);
    }
    for nonce in ["abc", "not-hex-not-hex-not-hex", &"a".repeat(65)] {
        let headers = Signing {
            nonce: nonce.to_owned(),
            ..Signing::now(KEY)
        }
        .headers("PUT", "/v1/storms/t", &body);
        let answer = api.send("PUT", "/v1/storms/t", &body, &headers);
        assert_eq!(answer.0, 401, "nonce {nonce:?}");
        assert!(error_of(&answer).contains(NONCE_HEADER), "{:?}", answer.1);
    }
    let no_target = Signing::now(KEY)
        .headers("PUT", "/v1/storms/t", &body)
        .lines()
        .filter(|line| !line.starts_with(TARGET_HEADER))
        .map(|line| format!("{line}\r\n"))
        .collect::<String>();
    let answer = api.send("PUT", "/v1/storms/t", &body, &no_target);
    assert_eq!(answer.0, 401);
    assert!(error_of(&answer).contains(TARGET_HEADER), "{:?}", answer.1);
    assert_eq!(api.get("/v1/storms/t").0, 404, "nothing started");
}

#[test]
fn a_sidecar_that_does_not_know_its_pod_refuses_every_signed_call() {
    let api = Api::start_as(None);
    let answer = api.put("x", &request("1s", "30s"));
    assert_eq!(answer.0, 401);
    assert!(
        error_of(&answer).contains("does not know which pod it is")
            && error_of(&answer).contains("MAPCHAOS_POD_NAME"),
        "{:?}",
        answer.1
    );
    assert_eq!(api.get("/v1/storms/x").0, 401);

    // One that knows its name but not its uid checks the name only.
    let api = Api::start_as(Some(PodIdentity::new("shop", "cart-0", "")));
    assert_eq!(api.put("x", &request("300ms", "30s")).0, 201);
    let wrong = Signing {
        target: PodIdentity::new("shop", "cart-9", ""),
        ..Signing::now(KEY)
    }
    .headers("GET", "/v1/storms/x", "");
    assert_eq!(api.send("GET", "/v1/storms/x", "", &wrong).0, 401);
}

#[test]
fn bad_storm_requests_get_precise_errors() {
    let api = Api::start();
    let mut bad = request("1s", "30s");
    bad["storm"]["workers"] = json!("many");
    let (status, error) = api.put("bad", &bad);
    assert_eq!(status, 400);
    assert!(
        error["error"].as_str().unwrap().contains("storm.workers"),
        "{error}"
    );
    let mut bad = request("1s", "30s");
    bad["storm"]["workers"] = json!(0);
    let (status, error) = api.put("bad", &bad);
    assert_eq!(status, 422);
    assert!(
        error["error"].as_str().unwrap().contains("storm.workers"),
        "{error}"
    );
    let (status, _) = api.put("bad id!", &request("1s", "30s"));
    assert_eq!(status, 400);
}

#[test]
fn delete_stops_a_storm_and_a_missed_lease_stops_it_too() {
    let api = Api::start();
    assert_eq!(api.put("long", &request("60s", "30s")).0, 201);
    std::thread::sleep(Duration::from_millis(300));
    let (status, _) = api.call("DELETE", "/v1/storms/long", "", Some((KEY, 0)));
    assert!(status == 202 || status == 200);
    let done = api.wait_final("long");
    assert_eq!(done["phase"], "Aborted");
    assert_eq!(done["report"]["stopReason"], "stopped");

    assert_eq!(api.put("orphan", &request("60s", "1s")).0, 201);
    let done = api.wait_final("orphan");
    assert_eq!(done["phase"], "Aborted", "{done}");
    assert_eq!(done["report"]["stopReason"], "leaseExpired");
    assert!(done["report"]["elapsedMillis"].as_u64().unwrap() < 10_000);
}

#[test]
fn restore_puts_back_deleted_keys_but_never_over_the_apps_writes() {
    let api = Api::start();
    let engine = &api.engine;
    let deadline = engine.clock().now() + 600_000;
    for i in 0..40 {
        let expiry = if i % 2 == 0 {
            SetExpiry::At(deadline)
        } else {
            SetExpiry::Persist
        };
        engine.set(
            Bytes::from(format!("session:{i}")),
            Bytes::from(format!("app-value-{i}")),
            SetOptions {
                expiry,
                ..SetOptions::default()
            },
        );
    }
    let body = json!({
        "storm": {"workers": 4, "mix": {"del": 80, "get": 20},
                  "keys": {"source": "existing", "pattern": "session:*", "count": 100}, "restore": true},
        "duration": "60s", "seed": 1, "lease": "30s",
    });
    assert_eq!(api.put("restore", &body).0, 201);
    // Let the storm delete keys, then the app rewrites a few of them.
    std::thread::sleep(Duration::from_millis(400));
    for i in 0..5 {
        engine.set(
            Bytes::from(format!("session:{i}")),
            Bytes::from(format!("rewritten-{i}")),
            SetOptions::default(),
        );
    }
    assert!(matches!(
        api.call("DELETE", "/v1/storms/restore", "", Some((KEY, 0)))
            .0,
        200 | 202
    ));
    let done = api.wait_final("restore");
    assert!(
        done["report"]["restoredKeys"].as_u64().unwrap() > 0,
        "{done}"
    );
    for i in 0..40 {
        let key = format!("session:{i}");
        let value = engine
            .get(key.as_bytes())
            .unwrap_or_else(|| panic!("{key} was not restored"));
        if i < 5 {
            // The storm may have deleted the app's rewrite again before it
            // stopped; then the original comes back. Never a storm value.
            assert!(
                value == format!("rewritten-{i}").as_bytes()
                    || value == format!("app-value-{i}").as_bytes(),
                "{key} = {value:?}"
            );
        } else {
            assert_eq!(value, format!("app-value-{i}").as_bytes(), "{key}");
            match engine.ttl(key.as_bytes()) {
                Ttl::Remaining(ms) if i % 2 == 0 => assert!(ms > 500_000, "{key} TTL {ms}"),
                Ttl::Persistent if i % 2 == 1 => {}
                other => panic!("{key}: TTL {other:?}"),
            }
        }
    }
}

/// A sidecar whose storms may use at most `budget`.
fn budgeted(budget: &str) -> Api {
    Api::start_with(StormBudget {
        ceiling: Some(budget.parse().unwrap()),
        ..StormBudget::default()
    })
}

/// A signed PUT of `request` changed by `change` is refused with 422, names
/// `field`, says `needle`, starts nothing and leaves the map's keys alone.
fn refused(api: &Api, change: impl FnOnce(&mut Value), field: &str, needle: &str) {
    for i in 0..100u32 {
        api.engine.set(
            Bytes::from(format!("app:{i}")),
            Bytes::from_static(b"the application's"),
            SetOptions::default(),
        );
    }
    let mut body = request("1s", "30s");
    body["check"] = json!({"maxOps": 20_000});
    change(&mut body);
    let (status, error) = api.put("too-big", &body);
    let message = error["error"].as_str().unwrap_or_default().to_owned();
    assert_eq!(status, 422, "{error}");
    assert!(
        message.contains(&format!("{field}: ")),
        "{field} not named: {message}"
    );
    assert!(message.contains(needle), "no {needle:?} in: {message}");
    assert_eq!(api.get("/v1/storms/too-big").0, 404, "nothing started");
    assert_eq!(
        api.engine.len(),
        100,
        "the application's keys are all there"
    );
}

#[test]
fn a_billion_keys_in_a_signed_put_are_refused_and_the_map_keeps_its_keys() {
    let api = Api::start();
    refused(
        &api,
        |b| b["storm"]["keys"]["count"] = json!(1_000_000_000u64),
        "storm.keys.count",
        "1000000000 is over the limit of ",
    );
}

#[test]
fn big_values_in_a_put_are_refused_by_the_budget() {
    refused(
        &budgeted("256Mi"),
        |b| {
            b["storm"]["keys"]["count"] = json!(10_000);
            b["storm"]["keys"]["valueSize"] = json!(1 << 20);
        },
        "storm.keys.valueSize",
        "1048576 is over the limit of ",
    );
}

#[test]
fn many_workers_in_a_put_are_refused_by_the_budget() {
    refused(
        &budgeted("256Mi"),
        |b| b["storm"]["workers"] = json!(1024),
        "storm.workers",
        "1024 is over the limit of ",
    );
}

#[test]
fn a_deep_pipeline_in_a_put_is_refused_by_the_budget() {
    refused(
        &budgeted("256Mi"),
        |b| {
            b["storm"]["pipeline"] = json!(1024);
            b["storm"]["keys"]["valueSize"] = json!(1 << 20);
        },
        "storm.pipeline",
        "1024 is over the limit of ",
    );
}

#[test]
fn a_long_history_in_a_put_is_refused_by_the_budget() {
    refused(
        &budgeted("256Mi"),
        |b| b["check"] = json!({"maxOps": 100_000_000u64}),
        "check.maxOps",
        "100000000 is over the limit of ",
    );
}

#[test]
fn a_rate_that_records_too_much_in_a_put_is_refused() {
    refused(
        &budgeted("256Mi"),
        |b| {
            b["storm"]["rate"] = json!(5_000_000);
            b["duration"] = json!("10m");
            b["check"] = json!({"maxOps": 100_000_000_000u64});
        },
        "storm.rate",
        "5000000 is over the limit of ",
    );
}

#[test]
fn a_long_prefix_in_a_put_is_refused() {
    refused(
        &Api::start(),
        |b| b["storm"]["keys"]["prefix"] = json!("p".repeat(5000)),
        "storm.keys.prefix",
        "over the limit of 1024 bytes",
    );
}

#[test]
fn a_long_lease_or_search_budget_in_a_put_is_refused() {
    let api = Api::start();
    refused(
        &api,
        |b| b["lease"] = json!("1h"),
        "lease",
        "over the limit of 10m",
    );
    refused(
        &api,
        |b| b["check"] = json!({"timeoutPerKey": "5h"}),
        "check.timeoutPerKey",
        "over the limit of 1h",
    );
}

#[test]
fn a_seed_json_cannot_carry_is_refused() {
    refused(
        &Api::start(),
        |b| b["seed"] = json!(u64::MAX),
        "seed",
        "over the limit of 9007199254740991",
    );
}

#[test]
fn a_request_may_lower_the_sidecar_budget_but_never_raise_it() {
    refused(
        &Api::start(),
        |b| b["storm"]["memoryBudget"] = json!("8Mi"),
        "storm.memoryBudget",
        "over the memory budget of 8 MiB (storm.memoryBudget)",
    );
    refused(
        &budgeted("64Mi"),
        |b| {
            b["storm"]["memoryBudget"] = json!("64Gi");
            b["check"] = json!({"maxOps": 10_000_000});
        },
        "check.maxOps",
        "over the memory budget of 64 MiB (--storm-memory-budget 64 MiB)",
    );
}

#[test]
fn the_data_already_in_the_map_shrinks_what_a_storm_may_use() {
    use mapchaos_sidecar::memory_limit::MemorySources;
    // A container limit of what the sidecar holds now plus 400 MiB.
    let dir = std::env::temp_dir().join(format!("mapchaos-cgroup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sources = MemorySources {
        cgroup_root: dir.clone(),
        self_cgroup: dir.join("none"),
        ..MemorySources::default()
    };
    let api = Api::start_with(StormBudget {
        ceiling: None,
        sources: sources.clone(),
    });
    let resident = sources.resident().unwrap();
    std::fs::write(dir.join("memory.max"), (resident + (400 << 20)).to_string()).unwrap();
    // About 150 MiB of history: fits while the map is small...
    let mut storm = request("200ms", "30s");
    storm["check"] = json!({"maxOps": 600_000});
    let (status, body) = api.put("fits", &storm);
    assert_eq!(status, 201, "{body}");
    api.wait_final("fits");
    // ...and not once the application has put 200 MiB in the map.
    let value = Bytes::from(vec![b'v'; 1 << 20]);
    for i in 0..200 {
        api.engine.set(
            Bytes::from(format!("big:{i}")),
            value.clone(),
            SetOptions::default(),
        );
    }
    let (status, error) = api.put("no-room", &storm);
    assert_eq!(status, 422, "{error}");
    let message = error["error"].as_str().unwrap();
    assert!(
        message.contains("check.maxOps: 600000 is over the limit of "),
        "{message}"
    );
    assert!(
        message.contains("the container's memory limit of"),
        "{message}"
    );
    assert!((0..200).all(|i| api.engine.get(format!("big:{i}").as_bytes()).is_some()));
    std::fs::remove_dir_all(&dir).unwrap();
}
