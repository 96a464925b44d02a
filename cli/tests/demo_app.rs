//! `mapchaos demo-app` against a real `mapchaos sidecar`: alone it sees its
//! own writes and nothing else; under a delete storm on its carts it reports
//! the carts it lost (and the storm, which cannot see the app's writes, does
//! not blame the map for them); with no map it counts errors and is not
//! ready.

mod common;

use std::time::{Duration, Instant};

use common::{Service, Sidecar, free_port, http_get};

fn demo_app(map: &str, extra: &[&str]) -> Service {
    let mut args = vec![
        "demo-app",
        "--map",
        map,
        "--metrics-addr",
        "127.0.0.1:0",
        "--carts",
        "200",
        "--rate",
        "2000",
    ];
    args.extend_from_slice(extra);
    Service::start(&args, "demo app started")
}

/// The value of the sample `name{labels}` in a Prometheus text body.
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{body}"))
}

fn metrics(app: &Service) -> String {
    let (status, body) = http_get(app.port("metrics"), "/metrics");
    assert_eq!(status, 200);
    body
}

/// Wait until `check` holds on the app's metrics (up to 20 s).
fn eventually(app: &Service, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = metrics(app);
        if check(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{what} within 20 s:\n{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ok_requests(body: &str) -> f64 {
    ["add_item", "view", "checkout"]
        .iter()
        .map(|op| {
            sample(
                body,
                &format!("mapchaos_demo_requests_total{{op=\"{op}\",result=\"ok\"}}"),
            )
        })
        .sum()
}

fn surprises(body: &str, kind: &str) -> f64 {
    sample(
        body,
        &format!("mapchaos_demo_surprises_total{{kind=\"{kind}\"}}"),
    )
}

#[test]
fn alone_with_its_map_the_app_sees_only_its_own_writes() {
    let sidecar = Sidecar::start(&[]);
    let map = format!("redis://127.0.0.1:{}", sidecar.resp_port);
    let app = demo_app(&map, &[]);
    let body = eventually(&app, "2,000 requests", |body| ok_requests(body) >= 2000.0);
    for op in ["add_item", "view", "checkout"] {
        assert_eq!(
            sample(
                &body,
                &format!("mapchaos_demo_requests_total{{op=\"{op}\",result=\"error\"}}")
            ),
            0.0
        );
    }
    for kind in ["lost_cart", "stale_cart", "foreign_value"] {
        assert_eq!(surprises(&body, kind), 0.0, "{kind}");
    }
    assert_eq!(http_get(app.port("metrics"), "/readyz").0, 200);
    assert!(app.terminate().success(), "SIGTERM ends it cleanly");
}

#[test]
fn a_delete_storm_on_its_carts_shows_up_as_lost_carts() {
    let sidecar = Sidecar::start(&[]);
    let map = format!("redis://127.0.0.1:{}", sidecar.resp_port);
    let app = demo_app(&map, &[]);
    eventually(&app, "the app wrote carts", |body| {
        ok_requests(body) >= 500.0
    });
    let manifest = std::env::temp_dir().join(format!("demo-storm-{}.yaml", std::process::id()));
    std::fs::write(
        &manifest,
        "apiVersion: mapchaos.io/v1alpha1\nkind: MapChaos\nmetadata: {name: hurt}\nspec:\n  \
         duration: 2s\n  storm:\n    workers: 4\n    mix: {del: 70, get: 20, set: 0, exists: 10, scan: 0}\n    \
         keys: {source: existing, pattern: \"cart:*\"}\n",
    )
    .unwrap();
    let storm = std::process::Command::new(env!("CARGO_BIN_EXE_mapchaos"))
        .args([
            "run",
            manifest.to_str().unwrap(),
            "--target",
            &map,
            "--quiet",
        ])
        .output()
        .expect("run the storm");
    std::fs::remove_file(&manifest).ok();
    // The storm cannot see the app's writes over the network, so what they
    // did to its history proves nothing about the map: never a FAIL, but
    // INCONCLUSIVE (exit 3) with the reason when it looks anomalous.
    let report = String::from_utf8_lossy(&storm.stdout);
    match storm.status.code() {
        Some(0) => assert!(report.contains("PASS"), "{report}"),
        Some(3) => assert!(
            report.contains("other clients of the target may have written them"),
            "{report}"
        ),
        code => panic!("exit {code:?}: {report}"),
    }
    let body = eventually(&app, "lost carts reported", |body| {
        surprises(body, "lost_cart") > 0.0
    });
    assert_eq!(
        surprises(&body, "foreign_value"),
        0.0,
        "the storm wrote nothing"
    );
}

#[test]
fn an_unreachable_map_is_counted_as_errors_and_keeps_it_unready() {
    let port = free_port();
    let app = demo_app(
        &format!("redis://127.0.0.1:{port}"),
        &["--timeout", "200ms"],
    );
    let body = eventually(&app, "errors counted", |body| {
        ["add_item", "view", "checkout"].iter().any(|op| {
            sample(
                body,
                &format!("mapchaos_demo_requests_total{{op=\"{op}\",result=\"error\"}}"),
            ) > 0.0
        })
    });
    assert_eq!(ok_requests(&body), 0.0);
    assert_eq!(http_get(app.port("metrics"), "/readyz").0, 503);
}

#[test]
fn a_map_that_is_not_a_redis_url_is_refused_with_the_flag_named() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mapchaos"))
        .args([
            "demo-app",
            "--map",
            "http://nope",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--map"), "{stderr}");
}
