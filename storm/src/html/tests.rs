//! The page from known checks: a pass has no timeline, a failure draws one
//! bar per timeline operation with the witness's own ones marked, keys are
//! escaped, and nothing is loaded from outside the file.

use std::time::Duration;

use mapchaos_api::timeline::OpRole;
use mapchaos_api::{AnomalyKind, Verdict};

use super::{Page, render};
use crate::history::{Event, History, Op, ValueId};
use crate::{CheckOptions, check};

fn ev(client: u32, call: u64, ret: u64, op: Op) -> Event {
    Event {
        client,
        call,
        ret,
        op,
    }
}

fn options() -> CheckOptions {
    CheckOptions {
        per_key_budget: Duration::from_secs(10),
        threads: 1,
        max_witnesses: 10,
        cancel: None,
        memory: None,
    }
}

/// A stale read on a key named like markup, with context operations on it
/// and a clean second key that races.
fn stale_history() -> History {
    let v = |n| ValueId::new(1, n);
    let mut events = vec![
        ev(
            1,
            1_000,
            2_000,
            Op::Set {
                key: 0,
                value: v(1),
            },
        ),
        ev(
            2,
            3_000,
            4_000,
            Op::Del {
                key: 0,
                removed: true,
            },
        ),
        ev(
            3,
            5_000,
            6_000,
            Op::Get {
                key: 0,
                read: Some(v(1)),
            },
        ),
    ];
    for i in 0..60u64 {
        let t = 10_000 + i * 1_000;
        events.push(ev(4, t, t + 500, Op::Get { key: 0, read: None }));
    }
    let w = |n| ValueId::new(5, n);
    events.push(ev(
        5,
        1_000,
        9_000,
        Op::Set {
            key: 1,
            value: w(1),
        },
    ));
    events.push(ev(6, 2_000, 3_000, Op::Get { key: 1, read: None }));
    History::new(vec![b"<k&0>".to_vec(), b"k1".to_vec()], 0, false, events).unwrap()
}

fn count(html: &str, needle: &str) -> usize {
    html.matches(needle).count()
}

#[test]
fn a_failure_draws_one_bar_per_timeline_operation_and_marks_the_witness() {
    let history = stale_history();
    let report = check(&history, &options());
    assert_eq!(report.verdict, Verdict::Fail);
    let witness = &report.witnesses[0];
    assert_eq!(witness.kind, AnomalyKind::StaleRead);
    let timeline = witness
        .timeline
        .as_ref()
        .expect("a witness carries its timeline");
    // Bounded: the key has 63 operations, the timeline holds the cap.
    assert_eq!(timeline.ops.len(), crate::checker::TIMELINE_OPS);
    assert_eq!(timeline.omitted, 63 - timeline.ops.len() as u64);
    let involved = timeline
        .ops
        .iter()
        .filter(|o| o.role != OpRole::Context)
        .count();
    assert_eq!(involved, witness.operations.len());
    let culprit: Vec<_> = timeline
        .ops
        .iter()
        .filter(|o| o.role == OpRole::Culprit)
        .collect();
    assert_eq!(culprit.len(), 1);
    assert_eq!(culprit[0].op.result.as_deref(), Some("c1#1"));
    assert_eq!(
        (culprit[0].before.as_str(), culprit[0].after.as_str()),
        ("c1#1", "c1#1")
    );

    let html = render(&Page::check("stale.json", &report));
    assert!(html.contains(r#"<span class="word">FAIL</span>"#));
    assert_eq!(count(&html, r#"<g class="op "#), timeline.ops.len());
    assert_eq!(
        count(&html, r#"<g class="op role-witness"#) + count(&html, r#"<g class="op role-culprit"#),
        witness.operations.len()
    );
    assert_eq!(count(&html, r#"<g class="op role-culprit"#), 1);
    // The key is escaped wherever it appears; no raw markup from the data.
    assert!(html.contains("&lt;k&amp;0&gt;"));
    assert!(!html.contains("<k&0>"));
    assert!(html.contains("more operations of this key are not drawn"));
}

#[test]
fn a_pass_has_no_timeline_and_the_page_loads_nothing_from_outside() {
    let v = |n| ValueId::new(1, n);
    let events = vec![
        ev(
            1,
            1_000,
            5_000,
            Op::Set {
                key: 0,
                value: v(1),
            },
        ),
        ev(2, 2_000, 3_000, Op::Get { key: 0, read: None }),
        ev(
            3,
            6_000,
            7_000,
            Op::Get {
                key: 0,
                read: Some(v(1)),
            },
        ),
    ];
    let history = History::new(vec![b"k".to_vec()], 0, false, events).unwrap();
    let report = check(&history, &options());
    assert_eq!(report.verdict, Verdict::Pass);
    let html = render(&Page::check("pass.json", &report));
    assert!(html.contains(r#"<span class="word">PASS</span>"#));
    assert!(!html.contains("svg class=\"timeline\""));
    for external in ["src=", "href=\"http", "url(http", "@import", "<link"] {
        assert!(!html.contains(external), "the page references {external}");
    }
}

#[test]
fn a_scan_anomaly_draws_the_scan_window_and_the_keys_presence() {
    let v = |n| ValueId::new(1, n);
    let events = vec![
        ev(
            1,
            1_000,
            2_000,
            Op::Set {
                key: 0,
                value: v(1),
            },
        ),
        ev(
            2,
            3_000,
            9_000,
            Op::Scan {
                found: Box::new([]),
            },
        ),
        ev(
            3,
            10_000,
            11_000,
            Op::Get {
                key: 0,
                read: Some(v(1)),
            },
        ),
    ];
    let history = History::new(vec![b"k".to_vec()], 0, false, events).unwrap();
    let report = check(&history, &options());
    let witness = report
        .witnesses
        .iter()
        .find(|w| w.kind == AnomalyKind::ScanMiss)
        .expect("a scan miss");
    let timeline = witness.timeline.as_ref().unwrap();
    assert!(!timeline.presence.is_empty());
    let html = render(&Page::check("scan.json", &report));
    assert_eq!(count(&html, r#"<rect class="scan-window""#), 1);
    assert!(count(&html, r#"<g class="span present""#) >= 1);
}

#[test]
fn a_trimmed_page_draws_fewer_timelines_and_says_why() {
    let history = stale_history();
    let report = check(&history, &options());
    assert_eq!(report.witnesses.len(), 1);

    let mut page = Page::check("stale.json", &report);
    page.trim = Some(super::Trim {
        max_timelines: 0,
        why: "to fit a Kubernetes Secret".into(),
    });
    let html = render(&page);
    assert!(html.contains(r#"id="trimmed""#));
    assert!(html.contains("trimmed to fit a Kubernetes Secret: it draws 0 of its 1 timelines"));
    assert_eq!(count(&html, r#"<g class="op "#), 0);
    assert!(
        !html.contains(r##"href="#w0""##),
        "no link to a timeline not drawn"
    );
    // The witness sentence still names the key.
    assert!(html.contains(&super::svg::esc(&report.witnesses[0].explanation)));

    // A cap the page does not reach trims nothing and says nothing.
    page.trim = Some(super::Trim {
        max_timelines: 1,
        why: "to fit a Kubernetes Secret".into(),
    });
    let html = render(&page);
    assert!(!html.contains(r#"id="trimmed""#));
    assert!(html.contains(r##"href="#w0""##));
    assert!(count(&html, r#"<g class="op "#) > 0);
}
