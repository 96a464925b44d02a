//! `mapchaos run --target` against a real Redis Cluster: three primaries of
//! Debian's redis-server joined by `redis-cli --cluster create`. A storm
//! passes with keys and operations on every primary; slots moved during a
//! storm (MIGRATING/IMPORTING, MIGRATE, SETSLOT NODE) make the servers
//! answer ASK and MOVED, which the storm follows and counts, and it still
//! passes; a primary that does not answer stops the run with exit 4,
//! naming it.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{RedisServer, manifest, scratch};
use serde_json::Value;

/// Three cluster-enabled servers joined into one cluster of primaries.
struct Cluster {
    nodes: Vec<RedisServer>,
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli is installed (redis-tools; scripts/test.sh installs it)");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|i| {
                let node_dir = dir.join(format!("node{i}"));
                std::fs::create_dir_all(&node_dir).unwrap();
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                    "--dir",
                    node_dir.to_str().unwrap(),
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli is installed");
        assert!(created.status.success(), "cluster create: {created:?}");
        let cluster = Cluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !cluster.nodes.iter().all(|n| {
            redis_cli(n.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
                && redis_cli(n.port, &["CLUSTER", "SLOTS"]).lines().count() > 0
        }) {
            assert!(Instant::now() < deadline, "the cluster did not settle");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    fn seed(&self) -> String {
        self.nodes[0].url()
    }

    fn addresses(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    fn id(&self, node: usize) -> String {
        redis_cli(self.nodes[node].port, &["CLUSTER", "MYID"])
    }

    fn dbsize(&self, node: usize) -> u64 {
        redis_cli(self.nodes[node].port, &["DBSIZE"])
            .parse()
            .unwrap()
    }
}

fn storm_manifest(dir: &Path, duration: &str, keys: u32) -> std::path::PathBuf {
    manifest(
        dir,
        "cluster-storm",
        &format!(
            "duration: {duration}\nseed: 7\nstorm:\n  workers: 4\n  pipeline: 4\n  \
             mix: {{del: 40, get: 30, set: 20, exists: 5, scan: 5}}\n  \
             keys: {{count: {keys}, preload: 0.5}}\n"
        ),
    )
}

fn run(file: &Path, target: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mapchaos"))
        .arg("run")
        .arg(file)
        .args(["--target", target, "--output", "json", "--quiet"])
        .output()
        .expect("run mapchaos")
}

fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "a JSON report ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The report's `cluster.nodes`, by address.
fn nodes(report: &Value) -> Vec<Value> {
    report["cluster"]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("a cluster section: {report:#}"))
        .clone()
}

#[test]
fn a_three_primary_cluster_passes_with_keys_and_ops_on_every_node() {
    let dir = scratch("redis-cluster", "pass");
    let cluster = Cluster::start(&dir);
    let file = storm_manifest(&dir, "3s", 600);
    let out = run(&file, &cluster.seed());
    let report = report(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}\nreport: {report:#}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["verdict"], "Pass", "{report:#}");
    assert!(
        report["target"]
            .as_str()
            .unwrap()
            .contains("Redis Cluster, 3 primaries"),
        "{}",
        report["target"]
    );
    let nodes = nodes(&report);
    let mut listed: Vec<String> = nodes
        .iter()
        .map(|n| n["node"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    let mut expected = cluster.addresses();
    expected.sort();
    assert_eq!(listed, expected, "every primary, by its address");
    let mut keys = 0;
    let mut slots = 0;
    for node in &nodes {
        for field in ["slots", "keys", "ops", "scanPages", "exposures"] {
            assert!(
                node[field].as_u64().unwrap_or(0) > 0,
                "{field} on {}: {node:#}",
                node["node"]
            );
        }
        keys += node["keys"].as_u64().unwrap();
        slots += node["slots"].as_u64().unwrap();
    }
    assert_eq!(keys, 600, "every storm key is counted on one node");
    assert_eq!(slots, 16384);
    let ops: u64 = nodes.iter().map(|n| n["ops"].as_u64().unwrap()).sum();
    assert!(
        ops >= report["ops"].as_u64().unwrap()
            - report["byOp"]["scan"]["ops"].as_u64().unwrap_or(0),
        "the nodes answered every single-key operation: {ops} < {}",
        report["ops"]
    );
    // The servers themselves hold the storm's keys, each its own share.
    for node in 0..3 {
        assert!(cluster.dbsize(node) > 0, "node {node} holds no key");
    }
    assert_eq!(
        report["cluster"]["moved"], 0,
        "a settled cluster redirects nothing"
    );
    assert_eq!(report["cluster"]["ask"], 0);
}

/// Move `slots` from node `from` to node `to` the way `redis-cli --cluster
/// reshard` does, holding each in migration for `hold` so clients meet ASK.
fn migrate(cluster: &Cluster, from: usize, to: usize, slots: &[String], hold: Duration) {
    let (from_id, to_id) = (cluster.id(from), cluster.id(to));
    let (from_port, to_port) = (cluster.nodes[from].port, cluster.nodes[to].port);
    for slot in slots {
        redis_cli(
            to_port,
            &["CLUSTER", "SETSLOT", slot, "IMPORTING", &from_id],
        );
        redis_cli(
            from_port,
            &["CLUSTER", "SETSLOT", slot, "MIGRATING", &to_id],
        );
        let started = Instant::now();
        loop {
            let keys = redis_cli(from_port, &["CLUSTER", "GETKEYSINSLOT", slot, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if !keys.is_empty() {
                let port = to_port.to_string();
                let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
                args.extend(keys);
                redis_cli(from_port, &args);
            }
            if started.elapsed() >= hold {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for node in &cluster.nodes {
            redis_cli(node.port, &["CLUSTER", "SETSLOT", slot, "NODE", &to_id]);
        }
    }
}

#[test]
fn slots_moved_during_the_storm_are_followed_through_ask_and_moved() {
    let dir = scratch("redis-cluster", "reshard");
    let cluster = Cluster::start(&dir);
    // A small keyspace: every key is hit many times while its slot moves.
    let file = storm_manifest(&dir, "10s", 60);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mapchaos"))
        .arg("run")
        .arg(&file)
        .args(["--target", &cluster.seed(), "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mapchaos");
    // Once the keys are preloaded (the storm is running), move the slots of
    // the storm keys node 0 holds to node 1.
    let deadline = Instant::now() + Duration::from_secs(10);
    let keys = loop {
        let keys = redis_cli(
            cluster.nodes[0].port,
            &["--scan", "--pattern", "mapchaos:*"],
        );
        if keys.lines().count() >= 5 {
            break keys;
        }
        assert!(Instant::now() < deadline, "no storm key reached node 0");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(500));
    let mut slots: Vec<String> = keys
        .lines()
        .map(|k| redis_cli(cluster.nodes[0].port, &["CLUSTER", "KEYSLOT", k]))
        .collect();
    slots.sort();
    slots.dedup();
    slots.truncate(6);
    migrate(&cluster, 0, 1, &slots, Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the slots moved while the storm ran"
    );

    let (status, report, stderr) = finish(child);
    assert_eq!(
        status.code(),
        Some(0),
        "stderr: {stderr}\nreport: {report:#}"
    );
    assert_eq!(report["verdict"], "Pass", "{report:#}");
    let cluster_report = &report["cluster"];
    let moved = cluster_report["moved"].as_u64().unwrap();
    let ask = cluster_report["ask"].as_u64().unwrap();
    assert!(moved > 0, "MOVED followed: {cluster_report:#}");
    assert!(ask > 0, "ASK followed: {cluster_report:#}");
    let nodes = nodes(&report);
    let from = nodes
        .iter()
        .find(|n| n["node"] == cluster.addresses()[0])
        .unwrap();
    assert!(
        from["moved"].as_u64().unwrap() > 0 && from["ask"].as_u64().unwrap() > 0,
        "the redirects came from the node the slots left: {from:#}"
    );
    let per_node: u64 = nodes.iter().map(|n| n["moved"].as_u64().unwrap()).sum();
    assert_eq!(per_node, moved, "the total is the sum over nodes");
    assert!(
        cluster_report["slotMapReads"].as_u64().unwrap() > 1,
        "the slot map was read again after MOVED: {cluster_report:#}"
    );
    // The moved slots are node 1's now, in the report as on the servers.
    let to = nodes
        .iter()
        .find(|n| n["node"] == cluster.addresses()[1])
        .unwrap();
    // `redis-cli --cluster create` gave node 0 slots 0-5460, node 1 5461-10922.
    let moved_slots = slots.len() as u64;
    assert_eq!(
        from["slots"].as_u64().unwrap(),
        5461 - moved_slots,
        "{from:#}"
    );
    assert_eq!(to["slots"].as_u64().unwrap(), 5462 + moved_slots, "{to:#}");
    for slot in &slots {
        assert_eq!(
            redis_cli(cluster.nodes[0].port, &["CLUSTER", "COUNTKEYSINSLOT", slot]),
            "0",
            "slot {slot} left node 0"
        );
    }
}

#[test]
fn an_unreachable_primary_stops_the_run_naming_it() {
    let dir = scratch("redis-cluster", "unreachable");
    let mut cluster = Cluster::start(&dir);
    let gone = cluster.nodes.pop().unwrap();
    let gone_address = format!("127.0.0.1:{}", gone.port);
    drop(gone);
    let file = storm_manifest(&dir, "2s", 100);
    let out = run(&file, &cluster.seed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("Redis Cluster node {gone_address}"))
            && stderr.contains("unreachable")
            && stderr.contains("slots "),
        "the message names the node and its slots: {stderr}"
    );
    assert!(out.stdout.is_empty(), "no storm ran");
}

/// `app:{i}` = `orig-{i}` for every `i < count`, through the cluster.
fn seed_keys(cluster: &Cluster, count: usize) {
    let commands: String = (0..count)
        .map(|i| format!("SET app:{i} orig-{i}\n"))
        .collect();
    feed(cluster.nodes[0].port, &commands);
}

/// Send `commands` (one a line) with `redis-cli -c`, which follows redirects.
fn feed(port: u16, commands: &str) {
    use std::io::Write;
    let mut cli = Command::new("redis-cli")
        .args(["-c", "-p", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-cli is installed");
    cli.stdin
        .take()
        .unwrap()
        .write_all(commands.as_bytes())
        .unwrap();
    assert!(cli.wait().unwrap().success());
}

/// What a key holds now, asked through the cluster.
fn value(cluster: &Cluster, key: &str) -> Option<String> {
    let out = redis_cli(cluster.nodes[0].port, &["-c", "GET", key]);
    (!out.is_empty()).then_some(out)
}

#[test]
fn the_restore_keeps_every_application_write_on_every_primary() {
    const KEYS: usize = 240;
    const APP_KEYS: usize = 30;
    let dir = scratch("redis-cluster", "restore");
    let cluster = Cluster::start(&dir);
    seed_keys(&cluster, KEYS);
    let file = manifest(
        &dir,
        "restore-cluster",
        &format!(
            "duration: 3s\nstorm:\n  workers: 4\n  pipeline: 4\n  \
             mix: {{del: 40, get: 20, set: 40}}\n  \
             keys: {{source: existing, pattern: \"app:*\", count: {KEYS}}}\n  \
             restore: true\ncheck: {{history: false}}\n"
        ),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_mapchaos"))
        .arg("run")
        .arg(&file)
        .args(["--target", &cluster.seed(), "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mapchaos");
    // The application writes its keys while the storm's workers run (and
    // go on storming them afterwards): SETs and DELs, the last of each key
    // remembered.
    std::thread::sleep(Duration::from_millis(800));
    let mut last: Vec<Option<String>> = vec![None; APP_KEYS];
    let mut commands = String::new();
    for round in 0..4 {
        for (i, last) in last.iter_mut().enumerate() {
            if (i + round) % 5 == 0 {
                commands.push_str(&format!("DEL app:{i}\n"));
                *last = None;
            } else {
                let v = format!("app-{i}-{round}");
                commands.push_str(&format!("SET app:{i} {v}\n"));
                *last = Some(v);
            }
        }
    }
    feed(cluster.nodes[1].port, &commands);

    let (status, report, stderr) = finish(child);
    assert_eq!(
        status.code(),
        Some(3),
        "no history checked: inconclusive; {stderr}"
    );
    let outcomes = report["restore"]["outcomes"].as_object().unwrap();
    for bad in [
        "failed",
        "restored_unwatched",
        "contended",
        "app_write_lost",
    ] {
        assert!(!outcomes.contains_key(bad), "{bad}: {outcomes:?}");
    }
    assert!(
        report["restore"]["guarantee"]
            .as_str()
            .unwrap()
            .starts_with("MONITOR on every primary"),
        "{report:#}"
    );
    assert!(
        outcomes["restored"].as_u64().unwrap() > 100,
        "the storm's damage was put back: {outcomes:?}"
    );
    assert!(
        outcomes
            .get("app_write_restored")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            > 0,
        "application writes the storm overwrote were put back: {outcomes:?}"
    );
    let mut wrong = Vec::new();
    for i in 0..KEYS {
        let key = format!("app:{i}");
        let want = if let Some(app) = last.get(i) {
            app.clone()
        } else {
            Some(format!("orig-{i}"))
        };
        let now = value(&cluster, &key);
        if now != want {
            wrong.push(format!("{key}: want {want:?}, now {now:?}"));
        }
    }
    assert!(wrong.is_empty(), "{} keys wrong: {wrong:?}", wrong.len());
    for node in nodes(&report) {
        assert!(node["keys"].as_u64().unwrap() > 0, "{node:#}");
    }
}

/// Wait for a `mapchaos run --output json` started with piped stdout and
/// stderr: its exit status, its JSON report and its stderr.
fn finish(child: std::process::Child) -> (std::process::ExitStatus, Value, String) {
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("a JSON report ({e}); stderr: {stderr}"));
    (output.status, report, stderr)
}
