//! What the sidecar test suites share: the judgement that a storm on a correct
//! map came out clean, and a runtime with a loopback listener to serve on.

// Each test crate uses a different part of this module.
#![allow(dead_code)]

use mapchaos_api::Verdict;
use mapchaos_storm::runner::StormOutcome;

/// A correct map: checked, no anomaly, not failed, no storm operation failed.
pub fn assert_clean(outcome: &StormOutcome, what: &str) {
    let check = outcome.report.check.as_ref().expect("history was checked");
    assert_eq!(
        check.total_anomalies(),
        0,
        "{what}: a correct map was reported anomalous:\n{}",
        mapchaos_storm::report::render(&outcome.report)
    );
    assert_ne!(outcome.report.verdict, Verdict::Fail, "{what}");
    assert_eq!(outcome.report.errors, 0, "{what}: storm operations failed");
}

/// A multi-threaded runtime with `workers` threads and a listener on an
/// ephemeral loopback port (returned with it), for a server under test.
pub fn runtime_with_listener(
    workers: usize,
) -> (tokio::runtime::Runtime, tokio::net::TcpListener, u16) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    (runtime, listener, port)
}
