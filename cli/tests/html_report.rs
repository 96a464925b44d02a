//! The HTML report as a person sees it. Reports from known storms and
//! histories — the correct engine (PASS, no timeline), the lagging engine
//! (FAIL, one timeline per witness), one hand-written history per anomaly
//! kind, a truncated history — are opened in Debian's headless chromium
//! (driven by playwright-core, which `scripts/test.sh` installs into
//! `target/browser-test`; no browser is ever downloaded) and checked: no
//! console error or outside request, the verdict, the lanes and bars of each
//! timeline against the JSON report, a tooltip on hover, zoom. Screenshots
//! land in `target/tmp/html-report/`. A missing chromium or playwright-core
//! fails the test: it never skips.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

fn mapchaos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mapchaos"))
        .args(args)
        .current_dir(workspace())
        .output()
        .expect("run mapchaos")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the cli crate sits in the workspace")
        .to_path_buf()
}

fn out_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("html-report");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn value(client: u64) -> u64 {
    (client << 32) | 1
}

fn set(client: u64, call: u64, ret: u64, key: u32) -> Value {
    json!({"client": client, "call": call * 1000, "ret": ret * 1000, "op": "set", "key": key, "value": value(client)})
}

fn get(client: u64, call: u64, ret: u64, key: u32, read: Option<u64>) -> Value {
    json!({"client": client, "call": call * 1000, "ret": ret * 1000, "op": "get", "key": key, "read": read})
}

fn del(client: u64, call: u64, ret: u64, key: u32, removed: bool) -> Value {
    json!({"client": client, "call": call * 1000, "ret": ret * 1000, "op": "del", "key": key, "removed": removed})
}

fn scan(client: u64, call: u64, ret: u64, found: &[u32]) -> Value {
    json!({"client": client, "call": call * 1000, "ret": ret * 1000, "op": "scan", "found": found})
}

/// One history per anomaly kind (times in µs), the same shapes the
/// checker's own tests prove, plus a truncated one.
fn histories() -> Vec<(&'static str, bool, Vec<Value>)> {
    let unwritten = u64::MAX;
    vec![
        (
            "stale_read",
            false,
            vec![
                set(1, 0, 10, 0),
                get(2, 2, 4, 0, None),
                del(3, 20, 30, 0, true),
                get(4, 40, 50, 0, Some(value(1))),
            ],
        ),
        (
            "resurrection",
            false,
            vec![
                set(1, 0, 10, 0),
                del(2, 5, 100, 0, true),
                get(3, 20, 30, 0, None),
                get(4, 40, 50, 0, Some(value(1))),
            ],
        ),
        (
            "lost_delete",
            false,
            vec![
                set(1, 0, 10, 0),
                get(2, 5, 8, 0, Some(value(1))),
                del(3, 20, 30, 0, false),
            ],
        ),
        (
            "lost_write",
            false,
            vec![
                set(1, 0, 10, 0),
                get(2, 2, 4, 0, None),
                get(3, 20, 30, 0, None),
            ],
        ),
        (
            "phantom_read",
            false,
            vec![
                set(1, 0, 10, 0),
                get(2, 2, 4, 0, None),
                get(3, 20, 30, 0, Some(unwritten)),
            ],
        ),
        (
            "scan_miss",
            false,
            vec![
                set(1, 0, 10, 0),
                get(2, 2, 4, 0, None),
                scan(3, 20, 30, &[]),
            ],
        ),
        (
            "scan_phantom",
            false,
            vec![
                set(1, 0, 10, 1),
                get(2, 2, 4, 1, None),
                set(4, 0, 5, 0),
                del(5, 6, 8, 0, true),
                scan(3, 20, 30, &[1, 0]),
            ],
        ),
        (
            "nonlinearizable",
            false,
            vec![
                get(1, 0, 5, 0, Some(value(2))),
                set(2, 10, 20, 0),
                get(3, 12, 14, 0, None),
            ],
        ),
        (
            "truncated",
            true,
            vec![
                set(1, 0, 10, 0),
                get(2, 5, 8, 0, None),
                get(3, 20, 30, 0, Some(value(1))),
            ],
        ),
    ]
}

/// What the page must show, from the JSON report of the same run.
fn expectations(name: &str, file: &Path, report: &Value, check: &Value, charts: bool) -> Value {
    let word = report["verdict"].as_str().unwrap().to_uppercase();
    let timelines: Vec<Value> = check["witnesses"]
        .as_array()
        .map(|w| w.iter().take(20).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|w| {
            let ops = w["timeline"]["ops"].as_array().expect("a witness timeline");
            let lanes: BTreeSet<u64> = ops.iter().map(|o| o["client"].as_u64().unwrap()).collect();
            json!({
                "ops": ops.len(),
                "operations": w["operations"].as_array().unwrap().len(),
                "lanes": lanes.len(),
                "kind": w["kind"],
            })
        })
        .collect();
    json!({
        "name": name,
        "file": file,
        "verdict": word,
        "truncated": check["truncated"].as_bool().unwrap_or(false),
        "timelines": timelines,
        "charts": charts,
    })
}

fn storm_case(name: &str, engine: &str, exit: i32) -> Value {
    let file = out_dir().join(format!("{name}.html"));
    let out = mapchaos(&[
        "run",
        "manifests/examples/delete-storm.yaml",
        "--engine",
        engine,
        "--duration",
        "2s",
        "--seed",
        "7",
        "--report",
        file.to_str().unwrap(),
        "--output",
        "json",
        "-q",
    ]);
    assert_eq!(
        out.status.code(),
        Some(exit),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    expectations(name, &file, &report, &report["check"], true)
}

fn history_case(name: &str, truncated: bool, events: Vec<Value>) -> Value {
    let dir = out_dir();
    let history = dir.join(format!("{name}.history.json"));
    let body = json!({"keys": ["k0", "k1"], "start": 0, "truncated": truncated, "events": events});
    std::fs::write(&history, body.to_string()).unwrap();
    let file = dir.join(format!("{name}.html"));
    let out = mapchaos(&[
        "check",
        history.to_str().unwrap(),
        "--report",
        file.to_str().unwrap(),
        "--output",
        "json",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{name}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    if !truncated {
        assert_eq!(out.status.code(), Some(1), "{name} must fail");
        let kinds: Vec<&str> = report["witnesses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["kind"].as_str().unwrap())
            .collect();
        assert!(kinds.contains(&name), "{name}: witnesses are {kinds:?}");
    }
    expectations(name, &file, &report, &report, false)
}

#[test]
fn reports_read_right_in_a_real_headless_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (bash scripts/test.sh does)"
    );
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the tmp dir sits in the target dir")
        .to_path_buf();
    let playwright = target.join("browser-test/node_modules/playwright-core");
    assert!(
        playwright.join("package.json").exists(),
        "{} is missing: bash scripts/test.sh installs playwright-core from npm there",
        playwright.display()
    );

    let mut cases = vec![
        storm_case("correct-engine", "sharded", 0),
        storm_case("lagging-engine", "lagging", 1),
    ];
    for (name, truncated, events) in histories() {
        cases.push(history_case(name, truncated, events));
    }
    // The expectations themselves must be worth checking.
    assert_eq!(cases[0]["verdict"], "PASS");
    assert!(cases[0]["timelines"].as_array().unwrap().is_empty());
    assert_eq!(cases[1]["verdict"], "FAIL");
    assert!(!cases[1]["timelines"].as_array().unwrap().is_empty());
    assert!(cases.iter().any(|c| c["truncated"] == true));

    let cases_file = out_dir().join("cases.json");
    std::fs::write(&cases_file, serde_json::to_string_pretty(&cases).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/check-reports.mjs");
    let out = Command::new("node")
        .arg(&script)
        .arg(&cases_file)
        .arg(out_dir())
        .env("PLAYWRIGHT_CORE_DIR", &playwright)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node (install nodejs)");
    assert!(
        out.status.success(),
        "the browser check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let checked = String::from_utf8_lossy(&out.stdout)
        .matches("checked ")
        .count();
    assert_eq!(
        checked,
        cases.len(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        assert!(
            out_dir().join(format!("{name}.png")).exists(),
            "no screenshot of {name}"
        );
    }
}

#[test]
fn an_unwritable_report_path_is_bad_input_before_the_storm() {
    let missing = out_dir().join("no-such-dir/r.html");
    let out = mapchaos(&[
        "run",
        "manifests/examples/delete-storm.yaml",
        "--duration",
        "30s",
        "--report",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--report") && stderr.contains("no-such-dir"),
        "{stderr}"
    );
    // Checked before the storm: no storm of 30 s ran.
    assert!(!stderr.contains("phase: storming"), "{stderr}");

    let history = out_dir().join("empty.history.json");
    std::fs::write(
        &history,
        r#"{"keys": [], "start": 0, "truncated": false, "events": []}"#,
    )
    .unwrap();
    let out = mapchaos(&[
        "check",
        history.to_str().unwrap(),
        "--report",
        out_dir().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--report") && stderr.contains("is a directory"),
        "{stderr}"
    );
}
