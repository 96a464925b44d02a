//! `mapchaos run` and `mapchaos check` as a user runs them: exit statuses,
//! the text and JSON reports, a saved history re-checked, and bad input named
//! by its field.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::free_port;

fn mapchaos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mapchaos"))
        .args(args)
        .output()
        .expect("run mapchaos")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mapchaos-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small, hot storm that always races within its second.
fn storm_file(dir: &Path) -> PathBuf {
    let path = dir.join("storm.yaml");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: unrelated}\n---\n\
             apiVersion: mapchaos.io/v1alpha1\nkind: MapChaos\nmetadata: {name: hot}\n\
             spec:\n  duration: 1s\n  storm:\n    workers: 8\n    \
             mix: {del: 40, get: 40, set: 20}\n    keys: {count: 16, prefix: \"cli:\"}\n",
    )
    .unwrap();
    path
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_storm_on_the_correct_engine_passes_and_its_history_rechecks_clean() {
    let dir = scratch("pass");
    let file = storm_file(&dir);
    let history = dir.join("history.json");
    let output = mapchaos(&[
        "run",
        file.to_str().unwrap(),
        "--quiet",
        "--seed",
        "7",
        "--history",
        history.to_str().unwrap(),
    ]);
    let report = stdout(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{report}\n{}",
        stderr(&output)
    );
    assert!(report.contains("mapchaos storm report"), "{report}");
    assert!(report.contains("anomalies: none"), "{report}");
    assert!(report.contains("PASS"), "{report}");

    let output = mapchaos(&["check", history.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(stdout(&output).contains("PASS"));
}

#[test]
fn a_storm_on_the_lagging_engine_fails_with_witnesses_and_json_says_why() {
    let dir = scratch("fail");
    let file = storm_file(&dir);
    let output = mapchaos(&[
        "run",
        file.to_str().unwrap(),
        "--engine",
        "lagging",
        "--output",
        "json",
        "--quiet",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert_eq!(report["verdict"], "Fail");
    assert_eq!(report["target"], "in-process:lagging");
    let witnesses = report["check"]["witnesses"].as_array().expect("witnesses");
    assert!(!witnesses.is_empty());
    assert!(
        witnesses
            .iter()
            .all(|w| !w["explanation"].as_str().unwrap().is_empty())
    );
}

#[test]
fn bad_input_exits_2_and_names_the_field() {
    let dir = scratch("bad");
    let file = storm_file(&dir);
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("workers: 8", "workers: 0");
    std::fs::write(&file, text).unwrap();
    let output = mapchaos(&["run", file.to_str().unwrap(), "--quiet"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("spec.storm.workers"),
        "{}",
        stderr(&output)
    );

    let typo = dir.join("typo.yaml");
    std::fs::write(
        &typo,
        "apiVersion: mapchaos.io/v1alpha1\nkind: MapChaos\nmetadata: {name: t}\n\
         spec:\n  storm: {wrkers: 4}\n",
    )
    .unwrap();
    let output = mapchaos(&["run", typo.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("spec.storm"),
        "{}",
        stderr(&output)
    );
    assert!(stderr(&output).contains("wrkers"), "{}", stderr(&output));

    let output = mapchaos(&["run", dir.join("missing.yaml").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("cannot read"),
        "{}",
        stderr(&output)
    );

    let junk = dir.join("junk.json");
    std::fs::write(&junk, "{\"keys\": 3}").unwrap();
    let output = mapchaos(&["check", junk.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

#[test]
fn an_unreachable_target_exits_4() {
    let dir = scratch("unreachable");
    let file = storm_file(&dir);
    let port = free_port();
    let output = mapchaos(&[
        "run",
        file.to_str().unwrap(),
        "--target",
        &format!("redis://127.0.0.1:{port}"),
        "--quiet",
    ]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cannot reach --target"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn metrics_are_served_while_the_storm_runs() {
    let dir = scratch("metrics");
    let file = storm_file(&dir);
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mapchaos"))
        .args([
            "run",
            file.to_str().unwrap(),
            "--quiet",
            "--duration",
            "3s",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut body = String::new();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(50));
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
            continue;
        };
        use std::io::Write as _;
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        body.clear();
        stream.read_to_string(&mut body).unwrap();
        if body.contains("source=\"storm\"") {
            break;
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(body.contains("mapchaos_storm_active 1"), "{body}");
    assert!(
        body.lines().any(
            |l| l.starts_with("mapchaos_ops_total{op=\"del\",outcome=\"ok\",source=\"storm\"}")
        ),
        "{body}"
    );
}
